//! What a node's logging costs the activity's calls: one connection's calls, one at a
//! time, through the shipped nginx site and the activity's gateway to the stand-in
//! rpcdaemon, while the stand-in erigon is quiet and while it logs as fast as the
//! runtime takes its output, into a log file a slow disk holds back (the file is a
//! FIFO that this benchmark reads 4 KiB every 2 ms: 2 MB/s). Quiet and flooding runs
//! alternate, round after round, so that a drift of the machine shows on both.
//!
//! Before the log pumps had threads of their own, the runtime's one thread wrote the
//! node's output, and a log write waiting for the disk held every call behind it.
//!
//! Usage: bench_logs [--rounds N] [--calls N] [--runtime PATH]
//! `--runtime` runs another build of the runtime (with the stand-ins of this one), to
//! compare. Prints a markdown table; exits 2 if the flood's median exceeds the quiet
//! median by more than a quarter plus 50 µs, 1 if the benchmark cannot run.

// Tests and tools are exempt from Cargo.toml's habits for src/: a failed unwrap is a
// failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::exeunit::creds;
use harness::process::{still_for, try_eventually_async};
use harness::provider::{assemble_plugin_dir, Provider};
use serde_json::json;

const USAGE: &str = "usage: bench_logs [--rounds N] [--calls N] [--runtime PATH]";
/// The slow disk: this much read from the FIFO, then a pause.
const DISK_CHUNK: usize = 4 << 10;
const DISK_PAUSE: Duration = Duration::from_millis(2);

struct Args {
    rounds: usize,
    calls: usize,
    runtime: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut parsed = Args {
        rounds: 5,
        calls: 400,
        runtime: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value; {USAGE}"));
        match arg.as_str() {
            "--rounds" => parsed.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--calls" => parsed.calls = value()?.parse().map_err(|e| format!("--calls: {e}"))?,
            "--runtime" => parsed.runtime = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {arg}; {USAGE}")),
        }
    }
    if parsed.rounds == 0 || parsed.calls < 10 {
        return Err(format!("at least 1 round of 10 calls; {USAGE}"));
    }
    Ok(parsed)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench_logs: {e}");
            return ExitCode::from(1);
        }
    };
    match bench(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("bench_logs: cannot run: {e}");
            ExitCode::from(1)
        }
    }
}

/// The slow disk: reads the FIFO at its pace, counting what it read.
fn slow_disk(fifo: PathBuf, read: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        use std::io::Read;
        // Blocks until the runtime opens the log for writing.
        let Ok(mut file) = std::fs::File::open(&fifo) else {
            return;
        };
        let mut buf = vec![0u8; DISK_CHUNK];
        while !stop.load(Ordering::Relaxed) {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    read.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            std::thread::sleep(DISK_PAUSE);
        }
    });
}

/// Waits until the disk has read `bytes` more than it had: the node's flood has
/// filled the pipe and the log is held back.
async fn backed_up(read: &AtomicU64, bytes: u64) -> Result<(), String> {
    let from = read.load(Ordering::Relaxed);
    try_eventually_async(Duration::from_secs(10), || {
        std::future::ready(read.load(Ordering::Relaxed) >= from + bytes)
    })
    .await
    .map_err(|e| format!("the stand-in's flood never reached the log: {e}"))
}

/// Waits until the disk has read nothing for 100 ms: the backlog is written.
async fn drained(read: &AtomicU64) -> Result<(), String> {
    let mut still = still_for(Duration::from_millis(100), || read.load(Ordering::Relaxed));
    try_eventually_async(Duration::from_secs(10), || std::future::ready(still()))
        .await
        .map(drop)
        .map_err(|e| format!("the log never drained: is the flood still on? {e}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

async fn bench(args: &Args) -> Result<bool, String> {
    let mut builder = Provider::builder().behind_nginx().config(json!({
        "log_max_bytes": 1u64 << 40,
        // One connection's calls one at a time go faster than a requestor may.
        "limits": {"calls_per_sec": 1_000_000, "burst": 1_000_000,
                   "cu_per_sec": 100_000_000, "cu_burst": 100_000_000},
    }));
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let examples = me.parent().ok_or("no examples folder")?.to_path_buf();
    let plugin_root = tempfile::tempdir().map_err(|e| e.to_string())?;
    if let Some(runtime) = &args.runtime {
        let dir = assemble_plugin_dir(runtime, &examples, plugin_root.path())?;
        builder = builder.runtime(dir.join("ya-runtime-erigon"));
    }
    let provider = builder.build();
    provider.set_behaviour("dev", json!({"erigon": {"log_flood": true}}));
    let log_dir = provider.data_dir.join("logs/dev");
    std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
    let fifo = log_dir.join("erigon.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o640))
        .map_err(|e| format!("mkfifo {}: {e}", fifo.display()))?;
    let read = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    slow_disk(fifo, Arc::clone(&read), Arc::clone(&stop));
    provider.deploy_ok();
    let nginx = provider.site().start();
    let activity = provider.start_on("bench", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    let url = nginx.url("/dev");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []});
    let call = || async {
        let started = Instant::now();
        let answer = client
            .post(&url)
            .basic_auth(&user, Some(&password))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        answer.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        Ok::<f64, String>(started.elapsed().as_secs_f64() * 1e6)
    };
    for _ in 0..100 {
        call().await?;
    }
    let toggle = provider.datadir("dev").join("flood");
    let mut quiet = Vec::new();
    let mut flood = Vec::new();
    for round in 0..args.rounds {
        let order = match round % 2 {
            0 => [false, true],
            _ => [true, false],
        };
        for flooding in order {
            if flooding {
                std::fs::write(&toggle, b"").map_err(|e| e.to_string())?;
                backed_up(&read, 256 << 10).await?;
            } else {
                let _ = std::fs::remove_file(&toggle);
                drained(&read).await?;
            }
            let into = if flooding { &mut flood } else { &mut quiet };
            for _ in 0..args.calls {
                into.push(call().await?);
            }
        }
    }
    let _ = std::fs::remove_file(&toggle);
    stop.store(true, Ordering::Relaxed);
    let logged = read.load(Ordering::Relaxed);
    activity.shutdown().await;
    drop(nginx);
    for samples in [&mut quiet, &mut flood] {
        samples.sort_by(f64::total_cmp);
    }
    let row = |name: &str, s: &[f64]| {
        format!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            s.len(),
            percentile(s, 0.5),
            percentile(s, 0.9),
            percentile(s, 0.99),
            s.last().copied().unwrap_or(f64::NAN)
        )
    };
    let runtime = args
        .runtime
        .as_deref()
        .map_or("this build".into(), |p: &Path| p.display().to_string());
    println!(
        "## A node logging into a slow disk\n\nOne connection's `eth_chainId`, one call at a time, through nginx and the gateway to the stand-in rpcdaemon ({runtime}); the stand-in erigon quiet, or writing its output as fast as the runtime takes it into a log file read at 2 MB/s; {} rounds alternating, {} calls each; {:.1} MB of the flood logged in all. Latency in µs.\n",
        args.rounds,
        args.calls,
        logged as f64 / 1e6
    );
    println!("| node | calls | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|");
    println!("{}", row("quiet", &quiet));
    println!("{}", row("logging into a slow disk", &flood));
    let (q, f) = (percentile(&quiet, 0.5), percentile(&flood, 0.5));
    let pass = f <= q * 1.25 + 50.0;
    println!(
        "\nThe flood's median is {:+.0} µs from the quiet one (target: at most a quarter plus 50 µs): {}.",
        f - q,
        if pass { "PASS" } else { "MISS" }
    );
    Ok(pass)
}
