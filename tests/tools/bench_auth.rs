//! Authenticated throughput through the shipped nginx site, per htpasswd scheme, against
//! the {PLAIN} and no-auth baselines measured in the same run, with 1 and with 10,000
//! other entries in the file. Run by `.ci/bench`; prints a table.
//!
//! The backend is a static JSON-RPC answer from the same nginx, so what is measured is
//! the front end: reading the user file and hashing the password on every request.
//! Entries are written with the runtime's own schemes, routes with its own generator.
//!
//! On a small machine wrk and nginx compete for the CPUs, so nginx runs on CPU 0 and
//! wrk on CPU 1, rows are measured in interleaved rounds, and each scheme is compared
//! with the {PLAIN} row of the same round: the table shows the median rate and the
//! median of those per-round ratios.
//!
//! Usage: bench_auth [--seconds N] [--connections N] [--rounds N]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode};

use base64::Engine;
use harness::nginx::{free_port, Nginx};
use serde_json::json;
use ya_runtime_erigon::config::Config;
use ya_runtime_erigon::hash::HashScheme;

const PASSWORD: &str = "benchPassw0rdOfTwentyFour";
/// The share of {PLAIN}'s throughput the default scheme must keep (issue 3).
const DEFAULT_MUST_KEEP: f64 = 0.90;

#[derive(Clone, Copy)]
enum Entry {
    Plain,
    Scheme(HashScheme),
}

impl Entry {
    fn name(&self) -> String {
        match self {
            Self::Plain => "{PLAIN}".into(),
            Self::Scheme(HashScheme::Ssha) => "{SSHA} (default)".into(),
            Self::Scheme(HashScheme::Sha) => "{SHA}".into(),
            Self::Scheme(s) => s.to_string(),
        }
    }

    fn hash(&self) -> Result<String, String> {
        match self {
            Self::Plain => Ok(format!("{{PLAIN}}{PASSWORD}")),
            Self::Scheme(s) => s.hash(PASSWORD),
        }
    }
}

fn main() -> ExitCode {
    match bench() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("bench_auth: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<bool, String> {
    let mut seconds = 5u32;
    let mut connections = 8u32;
    let mut rounds = 5u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = || -> Result<u32, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--seconds" => seconds = number()?,
            "--connections" => connections = number()?,
            "--rounds" => rounds = number()?.max(1),
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: bench_auth [--seconds N] [--connections N] [--rounds N]"
                ))
            }
        }
    }
    Command::new("wrk")
        .arg("--version")
        .output()
        .map_err(|e| format!("wrk is needed ({e}); install it: apt-get install -y wrk"))?;

    let dir = tempfile::Builder::new()
        .prefix("bench-auth-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let root = dir.path();
    // nginx's workers (www-data when run as root) read the user file under here.
    set_mode(root, 0o755)?;
    std::fs::create_dir_all(root.join("auth")).map_err(|e| e.to_string())?;
    set_mode(&root.join("auth"), 0o755)?;

    let backend = free_port();
    let config = Config::from_value(
        &json!({
            "data_dir": root.join("data"),
            "passwd_file_path": root.join("auth/{network}.htpasswd"),
            "erigon_http_port": backend,
            "port_base": 1025,
            "networks": {"bench": {"slot": 0}},
            "default_network": "bench",
        }),
        Path::new("bench.json"),
        Path::new("/nonexistent"),
    )?;
    let routes = root.join("routes.conf");
    std::fs::write(&routes, ya_runtime_erigon::nginx::routes(&config))
        .map_err(|e| e.to_string())?;
    let static_backend = format!(
        "server {{ listen 127.0.0.1:{backend}; access_log off; location / {{ default_type application/json; return 200 '{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"0x539\"}}'; }} }}"
    );
    let quiet = format!("{static_backend}\naccess_log off;");
    let lua = root.join("post.lua");
    std::fs::write(
        &lua,
        "wrk.method = \"POST\"\nwrk.body = '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\",\"params\":[]}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .map_err(|e| e.to_string())?;

    let entries = [
        Entry::Plain,
        Entry::Scheme(HashScheme::Ssha),
        Entry::Scheme(HashScheme::Sha),
        Entry::Scheme(HashScheme::Bcrypt { cost: 4 }),
        Entry::Scheme(HashScheme::Bcrypt { cost: 5 }),
    ];
    let run = |port: u16, auth: bool| -> Result<f64, String> {
        wrk(port, auth, seconds, connections, &lua)
    };

    println!(
        "nginx 1 worker, wrk 1 thread {connections} connections, median of {rounds} rounds of {seconds} s; backend: static JSON-RPC answer through the shipped site"
    );
    let no_auth = {
        let port = free_port();
        let front = Nginx::builder(&root.join("nginx-noauth"), &routes, port)
            .extra_http(&quiet)
            .without_auth()
            .start();
        pin(&front.pids(), "0");
        median(
            (0..rounds)
                .map(|_| run(port, false))
                .collect::<Result<_, _>>()?,
        )
    };
    let port = free_port();
    let front = Nginx::builder(&root.join("nginx"), &routes, port)
        .extra_http(&quiet)
        .start();
    pin(&front.pids(), "0");
    let file = config.passwd_file(config.default_network());
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| entry | other entries | req/s | vs {{PLAIN}} | vs no auth |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|");
    let _ = writeln!(table, "| no auth_basic | — | {no_auth:.0} | — | 1.00 |");
    let mut verdict = true;
    for others in [1usize, 10_000] {
        let mut samples = vec![Vec::new(); entries.len()];
        for _ in 0..rounds {
            for (i, entry) in entries.iter().enumerate() {
                write_file(&file, *entry, others)?;
                samples[i].push(run(port, true)?);
            }
        }
        for (entry, rates) in entries.into_iter().zip(&samples) {
            let share = median(rates.iter().zip(&samples[0]).map(|(r, p)| r / p).collect());
            let rate = median(rates.clone());
            let _ = writeln!(
                table,
                "| {} | {others} | {rate:.0} | {share:.2} | {:.3} |",
                entry.name(),
                rate / no_auth
            );
            if matches!(entry, Entry::Scheme(HashScheme::Ssha)) && share < DEFAULT_MUST_KEEP {
                verdict = false;
            }
        }
    }
    println!("{table}");
    println!(
        "default scheme {{SSHA}} keeps >= {:.0}% of {{PLAIN}} at 1 and 10,000 other entries: {}",
        DEFAULT_MUST_KEEP * 100.0,
        if verdict { "yes" } else { "NO" }
    );
    Ok(verdict)
}

/// `others` entries for other users as the runtime writes them by default ({SSHA}), then
/// the benchmark user last (nginx scans the file line by line, so this is the worst
/// case). Only the benchmark user's line changes between rows, so each row compares
/// the same entry stored in another scheme.
fn write_file(path: &Path, entry: Entry, others: usize) -> Result<(), String> {
    let other = HashScheme::Ssha.hash("another activity's password")?;
    let mut text = String::with_capacity((others + 1) * (other.len() + 24));
    for i in 0..others {
        let _ = writeln!(text, "sepolia-other{i:07}:{other}");
    }
    let _ = writeln!(text, "bench-user:{}", entry.hash()?);
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    set_mode(path, 0o644)
}

/// Keeps processes on one CPU so that wrk, on the other, does not steal nginx's time.
fn pin(pids: &[u32], cpu: &str) {
    for pid in pids {
        let _ = Command::new("taskset")
            .args(["-p", "-c", cpu, &pid.to_string()])
            .output();
    }
}

fn wrk(port: u16, auth: bool, seconds: u32, connections: u32, lua: &Path) -> Result<f64, String> {
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        "1",
        "wrk",
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "-s",
    ])
    .arg(lua);
    if auth {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("bench-user:{PASSWORD}"));
        cmd.args(["-H", &format!("Authorization: Basic {basic}")]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}/bench"))
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        return Err(format!(
            "some answers were not 200, the measurement is void:\n{text}"
        ));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}
