//! The gateway's hop to a node over TLS against the same hop over plain HTTP, measured
//! in the same run, interleaved, against a real node. Run by `.ci/bench`.
//!
//! Why. A shared network may name its node at an `https://` URL (issue "Shared nodes
//! anywhere"), and the gateway then dials it with rustls. "Connections stay kept
//! alive ... a TLS handshake per call would be a regression: measure it"; and the README
//! wants "the bench's hop figures over TLS beside plain HTTP". The gateway keeps one node
//! connection per nginx connection (`gateway::link`), so over TLS a handshake is paid
//! once per connection, not per call: this benchmark counts them.
//!
//! Set-up. One anvil (a real Ethereum JSON-RPC node, unpinned, chain id 1337) and two
//! fronts in front of it, the same plain nginx (`harness::nodefront`), one terminating
//! TLS with a certificate of a private CA and one plain HTTP, so that the only
//! difference between the two paths is TLS. One provider (the release runtime, started
//! as the ExeUnit starts it) with two shared networks on anvil's chain: `plain`, whose
//! node is the plain front's `http://` URL, and `tls`, whose node is the TLS front's
//! `https://` URL with the CA as `node.ca_file`; the per-activity limits lifted, the
//! shipped nginx site with `worker_processes auto`, one activity on each network.
//!
//! Method. wrk (1 thread, `--connections`, default 8) POSTs `eth_blockNumber` through
//! the shipped site with each activity's Basic credentials, `--seconds` (3) per run;
//! per round one run on each path, their order alternating; `--rounds` (5) rounds. The
//! TLS/plain ratio of req/s is taken within each round, and its median reported. Then
//! one connection's latency (wrk -c1 --latency), the paths again interleaved; the added
//! p50 and p99 are the medians of the rounds' differences. CPU per call of each
//! activity's runtime (user + system) comes from /proc over the same runs.
//!
//! Handshakes. Each front's access log names its client connections (nginx's serial
//! numbers): a connection number not seen before is a new connection, on the TLS front
//! one TLS handshake made by the runtime. New connections during a path's runs divided
//! by the calls wrk counted on it are the handshakes per call; one per call would be 1.
//! Expected: near 0. nginx retires a kept connection to the gateway after
//! `keepalive_requests` calls (1000 by default; the shipped seats do not set it) and
//! closes one idle for `seat::KEEPALIVE_SECS`; the gateway then parks that connection's
//! node connection as a spare for the next nginx connection (`gateway::link`), so a
//! node connection outlives the nginx connections it serves (the front's
//! `$connection_requests` shows how many calls one carried). Before the spares, each
//! retirement cost a handshake, which stalled one call for its length, and wrk's latency
//! correction (`stats_correct`: a call slower than the mean interval adds samples down
//! to it) turned those few stalls into much of the TLS path's p99 at one connection.
//! The count also holds the runtime's own node-state probes (`runtime::publish`: five
//! calls, each on a new connection, every 15 s per network).
//!
//! Context: what a handshake costs. 400 calls each way, interleaved, straight to the
//! fronts through the runtime's own dialer (`upstream::Upstream`, rustls) and hyper: on a
//! kept connection, plain and TLS; and on a new connection per call, plain, TLS resuming
//! a session (what the runtime's connector would do) and TLS with a full handshake. (curl,
//! tried first, gave the same order, 9 ms to a new TLS connection, but it cannot resume
//! a session as the runtime's connector does, nor dial as the runtime dials.)
//!
//! Cross-check: the calls each activity billed at shutdown lie between wrk's answered
//! count and that plus one per connection per run.
//!
//! No target on the figures. Exit status: 2 if the TLS path made more than 0.01
//! handshakes per call (a handshake per call: a regression), 1 if the benchmark could
//! not run (or an activity's billing disagrees with the calls counted), 0 otherwise.
//!
//! Usage: bench_tls [--seconds N] [--connections N] [--rounds N] [--hold] [--runtime FILE]
//! (`--runtime`: another build of the runtime, for an A/B against an older commit.)
//! (`--hold`: set up, print the two paths' wrk command lines, the fronts and the
//! processes, then wait for stdin to close, for profiling by hand.)

// Tests and tools are exempt from Cargo.toml's habits for src/: a failed unwrap is a
// failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::{max, median, min, nginx_version, thousands, Cpu};
use harness::anvil::Anvil;
use harness::exeunit::creds;
use harness::nodefront::{NodeFront, Pki};
use harness::process::{still_for, try_eventually_blocking};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use serde_json::json;
use ya_runtime_erigon::node::upstream::{NodeKeys, Upstream};

// Shared with the other benchmarks; this one uses no thread's CPU (`Cpu::thread`).
#[path = "bench_common.rs"]
#[allow(dead_code)]
mod common;
#[path = "bench_hop.rs"]
mod hop;

const USAGE: &str =
    "usage: bench_tls [--seconds N] [--connections N] [--rounds N] [--hold] [--runtime FILE]";
/// Most TLS handshakes per call the TLS path may make: one per call would be 1; kept
/// alive, it makes at most one per connection, a few per tens of thousands of calls.
const HANDSHAKE_LIMIT: f64 = 0.01;
/// Calls timed per way of calling, for the cost of one handshake.
const DIALS: usize = 400;
/// The front's path in front of the node.
const NODE_PATH: &str = "/rpc/";

fn main() -> ExitCode {
    // The harness panics when a piece cannot start (nginx, anvil, openssl): that too
    // is "cannot run".
    match std::panic::catch_unwind(bench) {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::from(2),
        Ok(Err(e)) => {
            eprintln!("bench_tls: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("bench_tls: could not run (see the panic above)");
            ExitCode::FAILURE
        }
    }
}

/// The two paths, in the order of the tables.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Hop {
    /// The gateway -> the plain front -> anvil.
    Plain,
    /// The gateway -> (TLS) the TLS front -> anvil.
    Tls,
}

const HOPS: [Hop; 2] = [Hop::Plain, Hop::Tls];

impl Hop {
    fn label(self) -> &'static str {
        match self {
            Hop::Plain => "plain HTTP",
            Hop::Tls => "TLS",
        }
    }

    /// The network (and the shipped site's path) of the path's activity.
    fn network(self) -> &'static str {
        match self {
            Hop::Plain => "plain",
            Hop::Tls => "tls",
        }
    }
}

/// One run's figures.
#[derive(Clone, Debug, Default)]
struct Sample {
    rate: f64,
    requests: u64,
    /// CPU µs per call of the path's runtime, and its user share.
    runtime_us: f64,
    runtime_user_us: f64,
    /// wrk's median and 99th percentile latency, µs (the latency runs only).
    p50_us: f64,
    p99_us: f64,
    /// What the path's front logged over the run: connections not seen before (on the
    /// TLS front, handshakes; those resumed from a session the runtime kept), and the
    /// requests.
    new_connections: u64,
    resumed: u64,
    front_requests: u64,
    /// The most calls the front logged on one connection (nginx's
    /// `$connection_requests`): how long a connection lasts.
    longest: u64,
}

/// How far a front's access log has been read, and the connections seen so far.
#[derive(Default)]
struct LogCursor {
    lines: usize,
    seen: BTreeSet<u64>,
}

/// What a front's access log gained since the last look.
#[derive(Default)]
struct LogDelta {
    requests: u64,
    new_connections: u64,
    resumed: u64,
    longest: u64,
    /// Whether every new line came over TLS (`ssl_session_reused` not `-`).
    all_tls: bool,
    all_plain: bool,
}

impl LogCursor {
    fn advance(&mut self, front: &NodeFront) -> LogDelta {
        let accesses = front.accesses();
        let mut delta = LogDelta {
            all_tls: true,
            all_plain: true,
            ..LogDelta::default()
        };
        for access in accesses.iter().skip(self.lines) {
            delta.requests += 1;
            delta.longest = delta.longest.max(access.request);
            let tls = access.ssl_session_reused != "-";
            delta.all_tls &= tls;
            delta.all_plain &= !tls;
            if self.seen.insert(access.connection) {
                delta.new_connections += 1;
                if access.ssl_session_reused == "r" {
                    delta.resumed += 1;
                }
            }
        }
        self.lines = self.lines.max(accesses.len());
        delta
    }
}

/// One path as a run sees it.
struct Lane<'a> {
    hop: Hop,
    front: &'a NodeFront,
    runtime: u32,
    /// The shipped site's URL for the path's network.
    url: String,
    lua: std::path::PathBuf,
}

fn bench() -> Result<bool, String> {
    let args = hop::args(USAGE)?;
    let (rt, tick_us) = hop::tools()?;

    // The node, and the two fronts in front of it.
    let node = rt.block_on(Anvil::builder().chain_id(1337).start());
    let dir = tempfile::Builder::new()
        .prefix("bench-tls-")
        .tempdir()
        .map_err(|e| format!("a temporary folder: {e}"))?;
    if harness::nginx::is_root() {
        // The fronts' workers (www-data) reach their prefixes under it.
        common::set_mode(dir.path(), 0o711)?;
    }
    let pki = Pki::new(&dir.path().join("pki"));
    let plain_front = NodeFront::plain(&dir.path().join("front-plain"), node.addr, NODE_PATH);
    let tls_front = NodeFront::tls(
        &dir.path().join("front-tls"),
        node.addr,
        &pki.good,
        NODE_PATH,
    );

    // The provider: two shared networks on anvil's chain, one per front.
    let networks = json!({
        "plain": {"slot": 0, "mode": "shared", "chain": "dev",
                  "node": {"http": plain_front.url("http")}},
        "tls": {"slot": 1, "mode": "shared", "chain": "dev",
                "node": {"http": tls_front.url("https"), "ca_file": pki.ca_file()}},
    });
    let provider = hop::provider(&args, networks, "plain");
    provider.deploy_ok();
    let site = provider.site().workers("auto").start();
    let (plain_activity, tls_activity) = rt.block_on(async {
        tokio::join!(
            provider.start_on("bench-plain", Hop::Plain.network()),
            provider.start_on("bench-tls", Hop::Tls.network())
        )
    });
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});
    let mut paths = Vec::new();
    for (hop, activity, front) in [
        (Hop::Plain, &plain_activity, &plain_front),
        (Hop::Tls, &tls_activity, &tls_front),
    ] {
        let status = rt.block_on(activity.ready_status());
        let (user, password) = creds(&status);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let lua = provider.root.path().join(format!("{}.lua", hop.network()));
        common::wrk_script(&lua, &basic, &body.to_string())?;
        let url = site.url(&format!("/{}", hop.network()));
        let answer = rt
            .block_on(hop::post(&url, &user, &password, &body))
            .map_err(|e| format!("the {} path: {e}", hop.label()))?;
        if !answer["result"].is_string() {
            return Err(format!(
                "eth_blockNumber through the {} path answered {answer}, not the node's result",
                hop.label()
            ));
        }
        paths.push(Lane {
            hop,
            front,
            runtime: activity.pid(),
            url,
            lua,
        });
    }
    // Each path's check went through its own front, over TLS or not. nginx logs a
    // request once it has answered it, maybe after the client has read the answer: wait
    // for a line in each front's log (none is reported below, with what was logged).
    let _ = try_eventually_blocking(Duration::from_secs(10), || {
        paths
            .iter()
            .all(|path| !path.front.access_lines().is_empty())
    });
    let mut cursors = [LogCursor::default(), LogCursor::default()];
    for path in &paths {
        let delta = cursors[path.hop as usize].advance(path.front);
        let over = match path.hop {
            Hop::Plain => delta.all_plain,
            Hop::Tls => delta.all_tls,
        };
        if delta.requests == 0 || !over {
            return Err(format!(
                "the {} front did not see the check's call as expected ({} requests, all TLS: {}, all plain: {})",
                path.hop.label(),
                delta.requests,
                delta.all_tls,
                delta.all_plain
            ));
        }
    }
    // Calls through each gateway so far: the check; and how many more each may have
    // answered than wrk counted: one per connection per run.
    let mut counted = [1u64, 1u64];
    let mut slack = [0u64, 0u64];

    if args.hold {
        for path in &paths {
            println!(
                "{}: wrk -t1 -c{} -d10s -s {} {}\n  front {} (access log under {}), runtime {}",
                path.hop.label(),
                args.connections,
                path.lua.display(),
                path.url,
                path.front.url("http"),
                dir.path().display(),
                path.runtime,
            );
        }
        println!("anvil at {}; close stdin to end", node.addr);
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        return Ok(true);
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# bench_tls: the gateway's hop to a node over TLS beside plain HTTP\n\n\
         anvil {} (unpinned) behind two nginx {} fronts (one worker each, the same \
         configuration, one terminating TLS 1.2/1.3 with an EC P-256 certificate of a private \
         CA, one plain HTTP); the shipped site (`worker_processes auto`: {cpus} workers) in \
         front of one activity per path of the runtime ({}) as the ExeUnit starts it, each a \
         shared network whose `node.http` is one front. wrk 1 thread, {} connections, POST \
         `eth_blockNumber` with Basic auth ({{SSHA}}); {} rounds of {} s runs, one per path \
         per round, their order alternating; then one connection's latency, likewise.",
        harness::anvil::version(),
        nginx_version(),
        provider.runtime.display(),
        args.connections,
        args.rounds,
        args.seconds,
    );

    let mut run = |path: &Lane, seconds: u32, connections: u32, latency: bool| {
        let sample = wrk(path, seconds, connections, latency, tick_us)
            .map_err(|e| format!("{}: {e}", path.hop.label()));
        // nginx logs a request when it ends, the calls wrk stopped waiting for too: let
        // the last ones land, until the front's log has stopped growing for 100 ms.
        let landed = try_eventually_blocking(
            Duration::from_secs(10),
            still_for(Duration::from_millis(100), || path.front.access_log_bytes()),
        );
        let delta = cursors[path.hop as usize].advance(path.front);
        let mut sample = sample?;
        landed.map_err(|e| format!("{}: the front's access log: {e}", path.hop.label()))?;
        sample.new_connections = delta.new_connections;
        sample.resumed = delta.resumed;
        sample.longest = delta.longest;
        sample.front_requests = delta.requests;
        counted[path.hop as usize] += sample.requests;
        slack[path.hop as usize] += u64::from(connections);
        Ok::<Sample, String>(sample)
    };

    // Warm-up, not recorded: its runs open the connections the measured runs keep.
    let mut warm_up = [Sample::default(), Sample::default()];
    for path in &paths {
        warm_up[path.hop as usize] = run(path, 1, args.connections, false)?;
    }
    // req/s, then one connection's latency: per round one run on each path, their
    // order alternating.
    let mut tables: Vec<[Vec<Sample>; 2]> = Vec::new();
    for (name, connections, latency) in [
        ("eth_blockNumber", args.connections, false),
        ("latency", 1, true),
    ] {
        eprintln!("bench_tls: {name}, {} rounds", args.rounds);
        let mut runs: [Vec<Sample>; 2] = Default::default();
        for round in 0..args.rounds {
            let order = if round % 2 == 0 {
                [&paths[0], &paths[1]]
            } else {
                [&paths[1], &paths[0]]
            };
            for path in order {
                let sample = run(path, args.seconds, connections, latency)?;
                runs[path.hop as usize].push(sample);
            }
        }
        tables.push(runs);
    }

    let handshakes_ok = report(&args, &tables, &warm_up);

    // Context: what a handshake costs, with the runtime's own dialer, each front
    // directly.
    eprintln!("bench_tls: {DIALS} calls per way of calling, each front directly");
    let fronts = [&plain_front, &tls_front];
    let timings = dial_timings(fronts, pki.ca_file(), node.addr, &body.to_string())?;
    // Each of these calls is logged once its front has answered it, maybe after the
    // call has read the answer: wait for all of them (and any probe of the runtimes').
    let calls = [2 * DIALS, 3 * DIALS + 1];
    for k in [0, 1] {
        let (front, want) = (fronts[k], cursors[k].lines + calls[k]);
        try_eventually_blocking(Duration::from_secs(10), || {
            let logged = front.access_lines().len();
            match logged >= want {
                true => Ok(()),
                false => Err(format!("{logged} lines, {want} expected")),
            }
        })
        .map_err(|e| format!("the calls straight to the fronts: the access log: {e}"))?;
    }
    let seen = [0, 1].map(|k| cursors[k].advance(fronts[k]));
    report_dials(&timings, &seen, &tables[1]);

    // Every answer wrk counted through a gateway was billed (a few more may be
    // answered after wrk stops counting, at most one per connection per run).
    println!(
        "\n### Cross-check, billing\n\n\
         | path | answers counted (check + wrk) | billed at shutdown | slack (one per connection per run) | verdict |\n\
         |---|---|---|---|---|"
    );
    let mut mismatch = Vec::new();
    for (hop, activity) in [(Hop::Plain, plain_activity), (Hop::Tls, tls_activity)] {
        let billed =
            rt.block_on(activity.shutdown_billed(ya_runtime_erigon::provider::billing::COUNTER));
        let (c, s) = (counted[hop as usize], slack[hop as usize]);
        let ok = billed >= c as f64 && billed <= (c + s) as f64;
        println!(
            "| {} | {c} | {billed:.0} | {s} | {} |",
            hop.label(),
            if ok { "agrees" } else { "DISAGREES" }
        );
        if !ok {
            mismatch.push(format!(
                "the {} gateway billed {billed} calls for {c} answers counted (slack {s})",
                hop.label()
            ));
        }
    }
    println!(
        "\nOverall (bench_tls): {}.",
        if handshakes_ok {
            "PASS (no handshake per call)"
        } else {
            "MISS (the TLS path made a handshake per call or more)"
        }
    );
    if !mismatch.is_empty() {
        return Err(mismatch.join("; "));
    }
    Ok(handshakes_ok)
}

/// One wrk run through the shipped site on `path`, with its runtime's CPU.
fn wrk(
    path: &Lane,
    seconds: u32,
    connections: u32,
    latency: bool,
    tick_us: f64,
) -> Result<Sample, String> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")]);
    if latency {
        cmd.arg("--latency");
    }
    cmd.arg("-s").arg(&path.lua).arg(&path.url);
    let before = Cpu::processes(&[path.runtime]);
    let out = cmd.output();
    let used = before.until(Cpu::processes(&[path.runtime]));
    let (text, rate, requests) = common::wrk_output(out)?;
    let per_call = |ticks: u64| ticks as f64 * tick_us / requests as f64;
    let (p50_us, p99_us) = if latency {
        (
            hop::percentile(&text, "50%")?,
            hop::percentile(&text, "99%")?,
        )
    } else {
        (0.0, 0.0)
    };
    Ok(Sample {
        rate,
        requests,
        runtime_us: per_call(used.user + used.system),
        runtime_user_us: per_call(used.user),
        p50_us,
        p99_us,
        ..Sample::default()
    })
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(samples.iter().map(f).collect())
}

/// Per round, `f(tls run, plain run)`.
fn per_round(runs: &[Vec<Sample>; 2], f: impl Fn(&Sample, &Sample) -> f64) -> Vec<f64> {
    runs[Hop::Tls as usize]
        .iter()
        .zip(&runs[Hop::Plain as usize])
        .map(|(t, p)| f(t, p))
        .collect()
}

/// Prints the tables; whether the TLS path made at most [`HANDSHAKE_LIMIT`] handshakes
/// per call.
fn report(args: &hop::Args, tables: &[[Vec<Sample>; 2]], warm_up: &[Sample; 2]) -> bool {
    let (rate, latency) = (&tables[0], &tables[1]);
    println!(
        "\n## Throughput, `eth_blockNumber`, {} connections\n\n\
         req/s: median of the runs (lowest–highest). TLS/plain: median over the rounds of \
         the TLS run's req/s against the plain run's of the same round (lowest–highest). \
         Runtime CPU µs per call: the path's activity's runtime, user + system (user), \
         medians of the runs.\n",
        args.connections
    );
    println!("| path | req/s | runs | TLS/plain | rounds | runtime µs/call (user) |");
    println!("|---|---|---|---|---|---|");
    let ratios = per_round(rate, |t, p| t.rate / p.rate);
    for hop in HOPS {
        let samples = &rate[hop as usize];
        let rates: Vec<f64> = samples.iter().map(|s| s.rate).collect();
        let (ratio, rounds) = match hop {
            Hop::Plain => ("1.00".to_string(), "—".to_string()),
            Hop::Tls => (
                format!("{:.3}", median(ratios.clone())),
                format!("{:.3}–{:.3}", min(&ratios), max(&ratios)),
            ),
        };
        println!(
            "| {} | {} | {}–{} | {ratio} | {rounds} | {:.1} ({:.1}) |",
            hop.label(),
            thousands(median(rates.clone())),
            thousands(min(&rates)),
            thousands(max(&rates)),
            median_of(samples, |s| s.runtime_us),
            median_of(samples, |s| s.runtime_user_us),
        );
    }

    println!(
        "\nPer round (the first path of each round ran first):\n\n\
         | round | first | plain req/s | TLS req/s | TLS/plain | new conns plain | new conns TLS |\n\
         |---|---|---|---|---|---|---|"
    );
    for (i, (p, t)) in rate[0].iter().zip(&rate[1]).enumerate() {
        println!(
            "| {} | {} | {} | {} | {:.3} | {} | {} |",
            i + 1,
            if i % 2 == 0 { "plain" } else { "TLS" },
            thousands(p.rate),
            thousands(t.rate),
            t.rate / p.rate,
            p.new_connections,
            t.new_connections,
        );
    }

    println!(
        "\n## Latency, one connection, one `eth_blockNumber` at a time (wrk -c1 --latency)\n\n\
         p50, p99: medians over the runs; added: median over the rounds of the TLS run's \
         figure minus the plain run's of the same round (lowest–highest). wrk corrects its \
         histogram for coordinated omission: a call slower than the mean interval adds \
         samples from its latency down to that interval, so the one stalled call per new \
         node connection (a TLS handshake, see below) weighs in the p99 far beyond its count.\n"
    );
    println!("| path | p50 µs | p99 µs | added p50 µs | rounds | added p99 µs | rounds | runtime µs/call (user) |");
    println!("|---|---|---|---|---|---|---|---|");
    let added50 = per_round(latency, |t, p| t.p50_us - p.p50_us);
    let added99 = per_round(latency, |t, p| t.p99_us - p.p99_us);
    for hop in HOPS {
        let samples = &latency[hop as usize];
        let added = |a: &Vec<f64>| match hop {
            Hop::Plain => ("—".to_string(), "—".to_string()),
            Hop::Tls => (
                format!("{:.0}", median(a.clone())),
                format!("{:.0}–{:.0}", min(a), max(a)),
            ),
        };
        let ((a50, r50), (a99, r99)) = (added(&added50), added(&added99));
        println!(
            "| {} | {:.0} | {:.0} | {a50} | {r50} | {a99} | {r99} | {:.1} ({:.1}) |",
            hop.label(),
            median_of(samples, |s| s.p50_us),
            median_of(samples, |s| s.p99_us),
            median_of(samples, |s| s.runtime_us),
            median_of(samples, |s| s.runtime_user_us),
        );
    }

    println!(
        "\n## Handshakes per call\n\n\
         New connections: connection numbers the path's front had not logged before, over \
         the measured runs (req/s and latency); on the TLS front each is one TLS handshake \
         by the runtime (resumed: of those, the ones resuming a TLS session), the gateway's \
         or the node-state probes' (five calls on new connections every 15 s). Longest: the \
         most calls the front logged on one connection (nginx's `$connection_requests`): \
         the site retires a kept connection to the gateway after nginx's default \
         `keepalive_requests`, 1000 calls, and the gateway parks its node connection as a \
         spare for the next one (`gateway::link`), so a node connection outlives it. Calls: \
         the calls wrk counted on those runs (the front logged: its access log's lines over the \
         same runs). Warm-up: the 1 s run per path before them, which opens the \
         connections the measured runs keep. Limit on the TLS path: <= {HANDSHAKE_LIMIT} \
         per call (one per call would be 1).\n"
    );
    println!("| path | new connections | resumed | most in one run | longest | calls | front logged | handshakes per call | warm-up: new connections / calls | limit | verdict |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    for hop in HOPS {
        let samples: Vec<&Sample> = tables.iter().flat_map(|t| &t[hop as usize]).collect();
        let new: u64 = samples.iter().map(|s| s.new_connections).sum();
        let resumed: u64 = samples.iter().map(|s| s.resumed).sum();
        let most = samples.iter().map(|s| s.new_connections).max().unwrap_or(0);
        let longest = samples.iter().map(|s| s.longest).max().unwrap_or(0);
        let calls: u64 = samples.iter().map(|s| s.requests).sum();
        let logged: u64 = samples.iter().map(|s| s.front_requests).sum();
        let per_call = new as f64 / calls.max(1) as f64;
        let warm = &warm_up[hop as usize];
        let (limit, verdict) = match hop {
            Hop::Plain => ("—".to_string(), "—"),
            Hop::Tls => {
                let pass = per_call <= HANDSHAKE_LIMIT;
                ok &= pass;
                (
                    format!("<= {HANDSHAKE_LIMIT}"),
                    if pass { "PASS" } else { "MISS" },
                )
            }
        };
        println!(
            "| {} | {new} | {} | {most} | {longest} | {} | {} | {per_call:.6} | {} / {} | {limit} | {verdict} |",
            hop.label(),
            match hop {
                Hop::Plain => "—".to_string(),
                Hop::Tls => resumed.to_string(),
            },
            thousands(calls as f64),
            thousands(logged as f64),
            warm.new_connections,
            thousands(warm.requests as f64),
        );
    }
    ok
}

/// The ways of calling the node timed for context, in the order of the table.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Way {
    /// One call on a kept connection, plain HTTP.
    KeptPlain,
    /// One call on a kept TLS connection.
    KeptTls,
    /// A new TCP connection, then one call.
    FreshPlain,
    /// A new TLS connection resuming a session (the runtime's connector keeps rustls's
    /// session cache), then one call: what a handshake per call would cost the runtime.
    FreshResumed,
    /// A new TLS connection with a full handshake (a new connector, with no session to
    /// resume), then one call.
    FreshFull,
}

const WAYS: [Way; 5] = [
    Way::KeptPlain,
    Way::KeptTls,
    Way::FreshPlain,
    Way::FreshResumed,
    Way::FreshFull,
];

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::KeptPlain => "kept connection, plain HTTP",
            Way::KeptTls => "kept connection, TLS",
            Way::FreshPlain => "new connection per call, plain HTTP",
            Way::FreshResumed => "new connection per call, TLS, session resumed",
            Way::FreshFull => "new connection per call, TLS, full handshake",
        }
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

/// A connection to `node`'s JSON-RPC endpoint through the runtime's own dialer (TCP
/// without Nagle, then rustls with the node's connector), with hyper's HTTP/1.1 on it.
async fn open(node: &Upstream) -> Result<Sender, String> {
    let io = node
        .dial(node.http())
        .await
        .map_err(|e| format!("{}: {e}", node.http().url()))?;
    let (sender, connection) = http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", node.http().url()))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One call on `sender`, its answer read whole; an error unless it is 200.
async fn call(sender: &mut Sender, node: &Upstream, body: &Bytes) -> Result<(), String> {
    let endpoint = node.http();
    let req = endpoint.post(body.clone());
    sender.ready().await.map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{}: {e}", endpoint.url()))?;
    let status = answer.status();
    answer
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{}: {e}", endpoint.url()))?;
    if status != hyper::StatusCode::OK {
        return Err(format!("{}: HTTP {status}", endpoint.url()));
    }
    Ok(())
}

/// [`DIALS`] calls each way (see [`Way`]), the ways interleaved, on a current-thread
/// tokio runtime as the runtime's, straight to the fronts (no site, no gateway): each
/// way's call times in µs.
fn dial_timings(
    fronts: [&NodeFront; 2],
    ca: &Path,
    local: std::net::SocketAddr,
    body: &str,
) -> Result<[Vec<f64>; 5], String> {
    let (plain_url, tls_url) = (fronts[0].url("http"), fronts[1].url("https"));
    let upstream = |url: &str, ca: Option<&Path>| {
        Upstream::configured(
            NodeKeys {
                at: "bench_tls",
                http: Some(url),
                ws: None,
                ca_file: ca,
            },
            local,
        )
        .map_err(|e| format!("{url}: {e}"))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
    let body = Bytes::from(body.to_owned());
    rt.block_on(async {
        let plain = upstream(&plain_url, None)?;
        let tls = upstream(&tls_url, Some(ca))?;
        let mut kept = [open(&plain).await?, open(&tls).await?];
        // The first TLS connection made the session the resumed ones resume.
        call(&mut kept[1], &tls, &body).await?;
        let mut timings: [Vec<f64>; 5] = Default::default();
        for _ in 0..DIALS {
            for way in WAYS {
                // A full handshake's connector is made before the clock starts, as the
                // runtime makes its own once, when the configuration loads.
                let fresh_tls = match way {
                    Way::FreshFull => Some(upstream(&tls_url, Some(ca))?),
                    _ => None,
                };
                let started = std::time::Instant::now();
                match way {
                    Way::KeptPlain => call(&mut kept[0], &plain, &body).await?,
                    Way::KeptTls => call(&mut kept[1], &tls, &body).await?,
                    Way::FreshPlain => call(&mut open(&plain).await?, &plain, &body).await?,
                    Way::FreshResumed => call(&mut open(&tls).await?, &tls, &body).await?,
                    Way::FreshFull => {
                        let node = fresh_tls.as_ref().unwrap_or(&tls);
                        call(&mut open(node).await?, node, &body).await?
                    }
                }
                timings[way as usize].push(started.elapsed().as_secs_f64() * 1e6);
            }
            // Let the dropped connections close.
            tokio::task::yield_now().await;
        }
        Ok(timings)
    })
}

/// The `q` quantile (0..=1) of `samples`, nearest rank.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn report_dials(timings: &[Vec<f64>; 5], seen: &[LogDelta; 2], latency: &[Vec<Sample>; 2]) {
    println!(
        "\n## Context: a handshake per call would cost this\n\n\
         {DIALS} calls (`eth_blockNumber`) each way, the ways interleaved, straight to the \
         fronts (no site, no gateway) through the runtime's own dialer (`upstream::Upstream`: \
         TCP, then rustls with ring, the CA as `node.ca_file`) and hyper, on a current-thread \
         tokio runtime: each call's time from before the connection (if new) to the end of \
         the answer, µs. Added: the way's p50 minus the kept plain connection's.\n"
    );
    println!("| way | p50 µs | p90 µs | p99 µs | added p50 µs |");
    println!("|---|---|---|---|---|");
    let base = quantile(&timings[Way::KeptPlain as usize], 0.5);
    for way in WAYS {
        let t = &timings[way as usize];
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            way.label(),
            quantile(t, 0.5),
            quantile(t, 0.9),
            quantile(t, 0.99),
            quantile(t, 0.5) - base,
        );
    }
    let p50 = |way: Way| quantile(&timings[way as usize], 0.5);
    let kept_added = median(per_round(latency, |t, p| t.p50_us - p.p50_us));
    println!(
        "\nThe fronts logged {} new plain connections and {} new TLS connections over these \
         calls ({} of them resuming a session; expected: {} and {}, {} resumed, plus any of \
         the runtimes' node-state probes, five calls on new connections every 15 s per \
         network). A new TLS \
         connection per call would add about {:.0} µs to each call resumed, {:.0} µs with a \
         full handshake, against a kept TLS connection's {:.0} µs over plain here; through \
         the site and the gateway, the kept TLS hop added {kept_added:.0} µs to one \
         connection's median (above).",
        seen[0].new_connections,
        seen[1].new_connections,
        seen[1].resumed,
        DIALS + 1,
        2 * DIALS + 1,
        DIALS,
        p50(Way::FreshResumed) - p50(Way::KeptTls),
        p50(Way::FreshFull) - p50(Way::KeptTls),
        p50(Way::KeptTls) - p50(Way::KeptPlain),
    );
}
