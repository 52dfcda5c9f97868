//! What the two benchmarks of the gateway's hop in front of anvil (`bench_node`,
//! `bench_tls`) share: their options, the provider behind the site, a requestor's call
//! through the site, and wrk's latency percentiles. Included by each with `#[path]`, so each stays
//! one example.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The options both take.
pub struct Args {
    pub seconds: u32,
    pub connections: u32,
    pub rounds: usize,
    /// Set up, print where the paths are, and wait for stdin to close instead of
    /// measuring: for profiling by hand.
    pub hold: bool,
    /// Another build of the runtime to measure (an A/B against an older commit).
    pub runtime: Option<PathBuf>,
}

/// The command line's options; an error names the argument and ends with `usage`.
pub fn args(usage: &str) -> Result<Args, String> {
    let mut args = Args {
        seconds: 3,
        connections: 8,
        rounds: 5,
        hold: false,
        runtime: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "--hold" {
            args.hold = true;
            continue;
        }
        let value = argv
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {usage}"))?;
        let number = |what: &str| {
            value
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} {value:?}: not a positive {what}; {usage}"))
        };
        match flag.as_str() {
            "--runtime" => args.runtime = Some(value.into()),
            "--seconds" => args.seconds = number("number of seconds")?,
            "--connections" => args.connections = number("number of connections")?,
            "--rounds" => args.rounds = number("number of rounds")? as usize,
            _ => return Err(format!("unknown argument {flag:?}; {usage}")),
        }
    }
    Ok(args)
}

/// One call through the site at `url` with these Basic credentials: its JSON answer,
/// or an error naming the URL and the status.
pub async fn post(url: &str, user: &str, password: &str, body: &Value) -> Result<Value, String> {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?
        .post(url)
        .basic_auth(user, Some(password))
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST to {url}: {e}"))?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("POST to {url}: HTTP {status}: {value}"));
    }
    Ok(value)
}

/// A percentile of wrk's latency distribution (`--latency`), in µs.
pub fn percentile(text: &str, which: &str) -> Result<f64, String> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(which))
        .map(str::trim)
        .ok_or_else(|| format!("no {which} latency in wrk's output:\n{text}"))?;
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("wrk's {which} latency {value:?} has no unit"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("wrk's {which} latency {value:?} is not a number"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return Err(format!("wrk's {which} latency {value:?}: unknown unit")),
    };
    Ok(number * scale)
}

/// What every run needs before it starts: wrk (its absence named with the install
/// line), a tokio runtime for the ExeUnit's client and anvil's log reader beside the
/// blocking runs, and µs per clock tick of /proc's CPU times.
pub fn tools() -> Result<(tokio::runtime::Runtime, f64), String> {
    Command::new("wrk")
        .arg("--version")
        .output()
        .map_err(|e| format!("wrk is needed ({e}); install it: apt-get install -y wrk"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
    Ok((rt, 1e6 / crate::common::clock_ticks_per_sec()))
}

/// A provider of the runtime under test (`--runtime`, or this build's) behind the
/// shipped site ([`harness::provider::Provider::site`]), with `networks`, {SSHA}
/// passwords of 24 characters, and the per-activity limits lifted so that only the hop
/// is measured.
pub fn provider(args: &Args, networks: Value, default: &str) -> harness::provider::Provider {
    let mut builder = harness::provider::Provider::builder();
    if let Some(runtime) = &args.runtime {
        builder = builder.runtime(runtime);
    }
    builder
        .rust_log("info")
        .behind_nginx()
        .config(serde_json::json!({
            "networks": networks,
            "default_network": default,
            "password_hash": "ssha",
            "password_default_length": 24,
            "limits": {"calls_per_sec": u32::MAX, "burst": u32::MAX, "in_flight": 1024,
                "cu_per_sec": u32::MAX, "cu_burst": u32::MAX},
        }))
        .build()
}
