//! The gateway's hop in front of a real node (issue 20). Run by `.ci/bench`.
//!
//! Why. What a requestor compares us with is nginx in front of a node, and what a call
//! costs through us is that plus the activity's gateway. A static backend answers in a
//! few microseconds and makes the hop look larger than it is; anvil, a real Ethereum
//! JSON-RPC node, answers from real state, as the operator's node would. So this
//! benchmark puts the shipped pieces in front of anvil and compares three paths:
//!
//! - **direct**: the shipped site (`conf/nginx/`) with the activity's own htpasswd file,
//!   its seat's upstream pointed at anvil by TCP, kept alive: nginx checking the same
//!   user and password and proxying to the node, the data path without the gateway;
//! - **relay (floor)**: the same, the seat's upstream at a relay that copies bytes both
//!   ways between each nginx connection and a node connection of its own, on a
//!   current-thread tokio runtime as the runtime's, and does nothing else: no HTTP, no
//!   JSON, no metering. No hop through a process of its own can cost less, so it shows
//!   what the targets leave for the gateway's own work;
//! - **gateway**: the same site and routes as deploy writes them, to the activity's
//!   gateway in the real runtime binary (release build), started by ya-runtime-api's
//!   client as the ExeUnit starts it, in shared mode on anvil.
//!
//! Method. Nothing is pinned and nginx runs `worker_processes auto`, as Debian ships it
//! and a provider runs it; the per-activity limits are lifted (they are not what is
//! measured). The machine's speed drifts, so each method's runs go D, then per round the
//! relay and the gateway (their order alternating) and D again; each hop's run is
//! compared with the mean of the direct runs just before and after it. The figure is
//! the median of those ratios. CPU per call of each process
//! (front nginx workers, the runtime or the relay thread, anvil) comes from /proc over
//! the same runs, with context switches.
//! Latency: one connection, one call at a time (wrk -c1 --latency), paths alternating;
//! the added median is the median of the rounds' differences.
//!
//! Calls: `eth_blockNumber`, and an `eth_call` to a contract the benchmark deploys
//! (its code returns 42), at the latest block.
//!
//! Targets (issue 20): the gateway path keeps >= 0.80 of the direct path's req/s for
//! both methods, and adds <= 30 µs to the median latency. Exit status: 0 if met, 2 if
//! one is missed, 1 if the benchmark could not run.
//!
//! Usage: bench_node [--seconds N] [--connections N] [--rounds N] [--hold] [--runtime FILE]
//! (`--runtime`: another build of the runtime, for an A/B against an older commit.)
//! (`--hold`: set up, print the three paths' wrk command lines and the processes, then
//! wait for stdin to close, for profiling by hand.)

// Tests and tools are exempt from Cargo.toml's habits for src/: a failed unwrap is a
// failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode};

use base64::Engine;
use common::{max, median, min, nginx_version, thousands, Cpu};
use harness::anvil::Anvil;
use harness::exeunit::creds;
use harness::nginx::{free_port, Nginx};
use harness::process::try_eventually_async;
use serde_json::{json, Value};

#[path = "bench_common.rs"]
mod common;
#[path = "bench_hop.rs"]
mod hop;

const USAGE: &str =
    "usage: bench_node [--seconds N] [--connections N] [--rounds N] [--hold] [--runtime FILE]";
/// Share of the direct path's req/s the gateway path must keep (issue 20).
const HOP_TARGET: f64 = 0.80;
/// Most the gateway may add to one connection's median latency, in µs (issue 20).
const LATENCY_TARGET_US: f64 = 30.0;
/// Init code of a contract whose code returns 42 in a 32-byte word
/// (`PUSH1 42 PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN`).
const CONTRACT_INIT: &str = "0x600a600c600039600a6000f3602a60005260206000f3";
const FORTY_TWO: &str = "0x000000000000000000000000000000000000000000000000000000000000002a";

fn main() -> ExitCode {
    match bench() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("bench_node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The paths compared, in the order of the tables.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Route {
    /// nginx -> anvil: the baseline.
    Direct,
    /// nginx -> a relay of bytes (no HTTP, no JSON) -> anvil: the floor of any hop
    /// through a process of its own.
    Relay,
    /// nginx -> the activity's gateway -> anvil: what we ship.
    Gateway,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Relay => "relay (floor)",
            Route::Gateway => "gateway",
        }
    }
}

/// One run's figures.
#[derive(Clone, Debug, Default)]
struct Sample {
    rate: f64,
    requests: u64,
    /// CPU µs per call of the front nginx's workers, the hop (the runtime, or the
    /// relay's thread; none on the direct path), and anvil; the hop's split into user
    /// and system time.
    nginx_us: f64,
    hop_us: f64,
    hop_user_us: f64,
    node_us: f64,
    /// Context switches per call of the same three.
    switches: [f64; 3],
    /// wrk's median and 99th percentile latency, µs (the latency runs only).
    p50_us: f64,
    p99_us: f64,
}

impl Sample {
    fn total_us(&self) -> f64 {
        self.nginx_us + self.hop_us + self.node_us
    }
}

/// What a run goes through, and whose CPU it counts.
struct Target<'a> {
    route: Route,
    front: &'a Nginx,
    /// The runtime's pid, or the relay's thread id.
    hop: u32,
    node: u32,
}

impl Target<'_> {
    fn cpu(&self) -> [Cpu; 3] {
        let workers: Vec<u32> = self.front.pids().into_iter().skip(1).collect();
        let hop = match self.route {
            Route::Direct => Cpu::default(),
            Route::Relay => Cpu::thread(self.hop),
            Route::Gateway => Cpu::processes(&[self.hop]),
        };
        [Cpu::processes(&workers), hop, Cpu::processes(&[self.node])]
    }
}

/// The routes with the user's seat upstream at `server` (kept alive as the seat is),
/// and the path `/` sent upstream, as a node expects. With a variable `proxy_pass`,
/// the request's path goes upstream as it came (`/dev`: the gateway ignores it, anvil
/// answers 404); a path in the variable's value replaces it.
fn seat_at(routes: &str, user: &str, server: &str) -> Result<String, String> {
    let seat = user
        .split('-')
        .nth(1)
        .filter(|s| s.len() < 5 && s.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{user} has no seat; the benchmark compares kept-alive paths"))?;
    let head = format!("upstream {seat}.erigon-seat {{ server unix:");
    let line = routes
        .lines()
        .find(|l| l.starts_with(&head))
        .ok_or_else(|| format!("the routes file has no `{head}`; update the benchmark"))?;
    let rest = line
        .split_once("; ")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("unexpected upstream line `{line}`; update the benchmark"))?;
    let seat_value = "\"$erigon_s.erigon-seat\"";
    if !routes.contains(seat_value) {
        return Err(format!(
            "the routes file has no {seat_value}; update the benchmark"
        ));
    }
    Ok(routes
        .replace(
            line,
            &format!("upstream {seat}.erigon-seat {{ server {server}; {rest}"),
        )
        .replace(seat_value, "\"$erigon_s.erigon-seat/\""))
}

/// The floor of a hop: bytes copied both ways between each nginx connection and a
/// connection of its own to the node, on a current-thread tokio runtime (as the
/// runtime's), on a thread of this process. Returns the thread's id.
fn relay(socket: &Path, node: SocketAddr) -> Result<u32, String> {
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    // nginx's workers (www-data when run as root) connect to it.
    common::set_mode(socket, 0o666)?;
    let (tid_tx, tid) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
                    return;
                };
                while let Ok((mut from, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Ok(mut to) = tokio::net::TcpStream::connect(node).await {
                            let _ = to.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut from, &mut to).await;
                        }
                    });
                }
            });
        })
        .map_err(|e| format!("cannot start the relay's thread: {e}"))?;
    tid.recv()
        .ok()
        .and_then(|t| u32::try_from(t).ok())
        .ok_or_else(|| "the relay's thread did not say its id".to_string())
}

fn bench() -> Result<bool, String> {
    let args = hop::args(USAGE)?;
    let (rt, tick_us) = hop::tools()?;

    let networks = json!({"dev": {"slot": 0, "mode": "shared"}});
    let provider = hop::provider(&args, networks, "dev");
    // Mining on demand: the contract's deployment is mined at once.
    let node = rt.block_on(
        Anvil::builder()
            .port(provider.http_port)
            .chain_id(1337)
            .start(),
    );
    let node_pid = node.pid();
    provider.deploy_ok();
    let gateway_front = provider.site().workers("auto").start();
    let activity = rt.block_on(provider.start_on("bench", "dev"));
    let status = rt.block_on(activity.ready_status());
    let (user, password) = creds(&status);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));

    // The direct and relay fronts: the same site and routes, the user's seat upstream
    // at anvil or at the relay. The gateway sets the node's Content-Type itself; nginx
    // passes no header of the client's (`proxy_pass_request_headers off`), and anvil
    // refuses a body without it.
    let routes = std::fs::read_to_string(provider.data_dir.join("nginx/routes.conf"))
        .map_err(|e| format!("the routes deploy wrote: {e}"))?;
    let root = provider.root.path();
    let relay_socket = root.join("relay.sock");
    let relay_tid = relay(&relay_socket, node.addr)?;
    let pass = "proxy_set_header Host localhost;";
    let mut fronts = Vec::new();
    for (tag, server) in [
        ("direct", node.addr.to_string()),
        ("relay", format!("unix:{}", relay_socket.display())),
    ] {
        let file = root.join(format!("routes-{tag}.conf"));
        common::write(&file, &seat_at(&routes, &user, &server)?, 0o644)?;
        fronts.push(
            Nginx::builder(&root.join(format!("nginx-{tag}")), &file, free_port())
                .workers("auto")
                .edit(
                    pass,
                    &format!("{pass}\n    proxy_set_header Content-Type application/json;"),
                )
                .start(),
        );
    }
    let (direct_front, relay_front) = (&fronts[0], &fronts[1]);
    let runtime = activity.pid();
    let target = |route: Route| Target {
        route,
        front: match route {
            Route::Direct => direct_front,
            Route::Relay => relay_front,
            Route::Gateway => &gateway_front,
        },
        hop: match route {
            Route::Relay => relay_tid,
            _ => runtime,
        },
        node: node_pid,
    };
    const ROUTES: [Route; 3] = [Route::Direct, Route::Relay, Route::Gateway];

    // The calls: eth_blockNumber, and eth_call to a contract deployed here.
    let contract = rt.block_on(deploy_contract(&node))?;
    let calls = [
        (
            "eth_blockNumber",
            json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}),
            None,
        ),
        (
            "eth_call",
            json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                "params": [{"to": contract, "data": "0x"}, "latest"]}),
            Some(FORTY_TWO),
        ),
    ];
    let mut scripts = Vec::new();
    for (method, body, expect) in &calls {
        let lua = root.join(format!("{method}.lua"));
        common::wrk_script(&lua, &basic, &body.to_string())?;
        for route in ROUTES {
            let label = route.label();
            let answer = rt
                .block_on(hop::post(
                    &target(route).front.url("/dev"),
                    &user,
                    &password,
                    body,
                ))
                .map_err(|e| format!("{method} through the {label} path: {e}"))?;
            let ok = match expect {
                Some(want) => answer["result"] == *want,
                None => answer["result"].is_string(),
            };
            if !ok {
                return Err(format!(
                    "{method} through the {label} path answered {answer}, not the node's result"
                ));
            }
        }
        scripts.push((*method, lua));
    }
    // Calls through the gateway so far: the checks above.
    let mut counted = scripts.len() as u64;
    // How many more the gateway may have answered than wrk counted: one per
    // connection per run, answered after wrk stopped counting.
    let mut slack = 0u64;

    if args.hold {
        for route in ROUTES {
            let front = target(route).front;
            for (method, lua) in &scripts {
                println!(
                    "{} {method}: wrk -t1 -c{} -d10s -s {} {}",
                    route.label(),
                    args.connections,
                    lua.display(),
                    front.url("/dev")
                );
            }
            println!("{} nginx workers: {:?}", route.label(), &front.pids()[1..]);
        }
        println!(
            "runtime {runtime}, relay thread {relay_tid} of {}, anvil {node_pid}; close stdin to end",
            std::process::id()
        );
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        return Ok(true);
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# bench_node: the gateway's hop in front of a real node (issue 20)\n\n\
         anvil {} (unpinned), nginx {} (`worker_processes auto`: {cpus} workers), the runtime \
         ({}) as the ExeUnit starts it; wrk 1 thread, {} connections, POST with Basic \
         auth ({{SSHA}}, the runtime's default); {} rounds of {} s runs per method, each round \
         the relay and the gateway (their order alternating) then the direct path again.",
        harness::anvil::version(),
        nginx_version(),
        provider.runtime.display(),
        args.connections,
        args.rounds,
        args.seconds,
    );

    let mut run = |route: Route, lua: &Path, seconds: u32, connections: u32, latency: bool| {
        let sample = wrk(&target(route), lua, seconds, connections, latency, tick_us)
            .map_err(|e| format!("{}: {e}", route.label()))?;
        if route == Route::Gateway {
            counted += sample.requests;
            slack += u64::from(connections);
        }
        Ok::<Sample, String>(sample)
    };
    // Warm-up, not recorded.
    for (_, lua) in &scripts {
        for route in ROUTES {
            run(route, lua, 1, args.connections, false)?;
        }
    }
    // Each method's rounds, then one connection's latency: D, then per round the two
    // hops (order alternating) and D again; each hop's run is compared with the mean
    // of the direct runs around it, which cancels a steady drift of the machine.
    let mut tables = Vec::new();
    let latency_lua = scripts[0].1.clone();
    let jobs = scripts
        .iter()
        .map(|(method, lua)| (method.to_string(), lua.clone(), args.connections, false))
        .chain([("latency".to_string(), latency_lua, 1, true)]);
    for (name, lua, connections, latency) in jobs {
        eprintln!("bench_node: {name}, {} rounds", args.rounds);
        let mut runs: [Vec<Sample>; 3] = Default::default();
        for round in 0..=args.rounds {
            let hops = match (round == args.rounds, round % 2) {
                (true, _) => vec![],
                (false, 0) => vec![Route::Relay, Route::Gateway],
                (false, _) => vec![Route::Gateway, Route::Relay],
            };
            for route in std::iter::once(Route::Direct).chain(hops) {
                let sample = run(route, &lua, args.seconds, connections, latency)?;
                runs[route as usize].push(sample);
            }
        }
        tables.push((name, runs));
    }

    let verdict = report(&tables);

    // Every answer wrk counted through the gateway was billed (a few more may be
    // answered after wrk stops counting, at most one per connection per run).
    let billed =
        rt.block_on(activity.shutdown_billed(ya_runtime_erigon::provider::billing::COUNTER));
    println!(
        "\nCross-check: {counted} answers came through the gateway (the checks and wrk's \
         counts); the runtime billed {billed:.0} calls (at most {slack} more may be answered \
         after wrk stops counting)."
    );
    if billed < counted as f64 || billed > (counted + slack) as f64 {
        return Err(format!(
            "the gateway billed {billed} calls for {counted} answers counted (slack {slack})"
        ));
    }
    Ok(verdict)
}

async fn rpc(url: &str, body: &Value) -> Result<Value, String> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST to {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("POST to {url}: {e}"))
}

/// Deploys the contract from anvil's first account; its address.
async fn deploy_contract(node: &Anvil) -> Result<String, String> {
    let url = node.url();
    let call = |method: &str, params: Value| json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let accounts = rpc(&url, &call("eth_accounts", json!([]))).await?;
    let from = accounts["result"][0]
        .as_str()
        .ok_or_else(|| format!("anvil has no account: {accounts}"))?
        .to_owned();
    let sent = rpc(
        &url,
        &call(
            "eth_sendTransaction",
            json!([{"from": from, "data": CONTRACT_INIT}]),
        ),
    )
    .await?;
    let hash = sent["result"]
        .as_str()
        .ok_or_else(|| format!("the deployment was refused: {sent}"))?;
    // Mined on demand, a moment after it is sent: the receipt is null until then.
    let (url, receipt) = (&url, call("eth_getTransactionReceipt", json!([hash])));
    let receipt = &receipt;
    try_eventually_async(std::time::Duration::from_secs(10), || async move {
        let receipt = rpc(url, receipt).await?;
        match receipt["result"]["contractAddress"].as_str() {
            Some(address) => Ok(address.to_owned()),
            None => Err(format!("the receipt: {receipt}")),
        }
    })
    .await
    .map_err(|failure| format!("no contract address in the receipt: {failure}"))
}

/// One wrk run through `target`'s front: its figures and the CPU of each process.
fn wrk(
    target: &Target,
    lua: &Path,
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
    cmd.arg("-s").arg(lua).arg(target.front.url("/dev"));
    let before = target.cpu();
    let out = cmd.output();
    let after = target.cpu();
    let (text, rate, requests) = common::wrk_output(out)?;
    let used = [0, 1, 2].map(|k| before[k].until(after[k]));
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
        nginx_us: per_call(used[0].user + used[0].system),
        hop_us: per_call(used[1].user + used[1].system),
        hop_user_us: per_call(used[1].user),
        node_us: per_call(used[2].user + used[2].system),
        switches: used.map(|u| u.switches as f64 / requests as f64),
        p50_us,
        p99_us,
    })
}

/// A hop's runs against the mean of the direct runs around each: `f(hop, direct)`.
fn ratios(direct: &[Sample], hop: &[Sample], f: impl Fn(&Sample, &Sample) -> f64) -> Vec<f64> {
    hop.iter()
        .zip(direct.iter().zip(direct.iter().skip(1)))
        .map(|(h, (a, b))| (f(h, a) + f(h, b)) / 2.0)
        .collect()
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(samples.iter().map(f).collect())
}

/// Prints the tables; whether every target was met.
fn report(tables: &[(String, [Vec<Sample>; 3])]) -> bool {
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "| figure | gateway | relay (floor) | target | verdict |"
    );
    let _ = writeln!(summary, "|---|---|---|---|---|");
    let mut all = true;
    println!(
        "\n## The gateway's hop in front of anvil\n\n\
         req/s: median of the runs. ratio: median over the rounds of the path's req/s against \
         the direct runs just before and after it (rounds: lowest and highest). CPU µs per call \
         from /proc over the same runs: the front nginx's workers, the hop (the runtime; the \
         relay's thread), anvil; total: their sum; switches: context switches per call of the \
         same three. The relay copies bytes and nothing else: no hop through a process of its \
         own can cost less.\n"
    );
    println!(
        "| method | path | req/s | ratio | rounds | nginx µs | hop µs (user) | node µs | total µs | switches/call | target | verdict |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, runs) in tables.iter().filter(|(name, _)| name != "latency") {
        let direct = &runs[0];
        let mut figures = Vec::new();
        for route in [Route::Direct, Route::Relay, Route::Gateway] {
            let samples = &runs[route as usize];
            let (ratio, rounds) = if route == Route::Direct {
                (1.0, "—".to_string())
            } else {
                let r = ratios(direct, samples, |h, d| h.rate / d.rate);
                (median(r.clone()), format!("{:.2}–{:.2}", min(&r), max(&r)))
            };
            let (target, v) = match route {
                Route::Gateway => {
                    let ok = ratio >= HOP_TARGET;
                    all &= ok;
                    (format!(">= {HOP_TARGET:.2}"), verdict(ok))
                }
                Route::Relay => ("(floor)".to_string(), "—"),
                Route::Direct => ("baseline".to_string(), "—"),
            };
            figures.push((ratio, v));
            let switches =
                [0, 1, 2].map(|k| format!("{:.1}", median_of(samples, |s| s.switches[k])));
            println!(
                "| `{name}` | {} | {} | {ratio:.2} | {rounds} | {:.1} | {:.1} ({:.1}) | {:.1} | {:.1} | {} | {target} | {v} |",
                route.label(),
                thousands(median_of(samples, |s| s.rate)),
                median_of(samples, |s| s.nginx_us),
                median_of(samples, |s| s.hop_us),
                median_of(samples, |s| s.hop_user_us),
                median_of(samples, |s| s.node_us),
                median_of(samples, Sample::total_us),
                switches.join(", "),
            );
        }
        let _ = writeln!(
            summary,
            "| `{name}` req/s against direct | {:.2} | {:.2} | >= {HOP_TARGET:.2} | {} |",
            figures[2].0, figures[1].0, figures[2].1,
        );
    }
    if let Some((_, runs)) = tables.iter().find(|(name, _)| name == "latency") {
        println!(
            "\nOne connection, one `eth_blockNumber` at a time (wrk -c1 --latency): the median \
             and 99th percentile of each run, medians over the runs; added: median over the \
             rounds of the path's median minus the direct runs' around it.\n"
        );
        println!("| path | p50 µs | p99 µs | added p50 µs | rounds | target | verdict |");
        println!("|---|---|---|---|---|---|---|");
        let mut added_of = [0.0; 3];
        for route in [Route::Direct, Route::Relay, Route::Gateway] {
            let samples = &runs[route as usize];
            let (added, rounds) = if route == Route::Direct {
                (0.0, "—".to_string())
            } else {
                let a = ratios(&runs[0], samples, |h, d| h.p50_us - d.p50_us);
                (median(a.clone()), format!("{:.0}–{:.0}", min(&a), max(&a)))
            };
            added_of[route as usize] = added;
            let (target, v) = match route {
                Route::Gateway => {
                    let ok = added <= LATENCY_TARGET_US;
                    all &= ok;
                    (format!("<= {LATENCY_TARGET_US:.0}"), verdict(ok))
                }
                Route::Relay => ("(floor)".to_string(), "—"),
                Route::Direct => ("baseline".to_string(), "—"),
            };
            println!(
                "| {} | {:.0} | {:.0} | {added:.0} | {rounds} | {target} | {v} |",
                route.label(),
                median_of(samples, |s| s.p50_us),
                median_of(samples, |s| s.p99_us),
            );
        }
        let ok = added_of[2] <= LATENCY_TARGET_US;
        let _ = writeln!(
            summary,
            "| added median latency, one connection | {:.0} µs | {:.0} µs | <= {LATENCY_TARGET_US:.0} µs | {} |",
            added_of[2],
            added_of[1],
            verdict(ok)
        );
    }
    println!("\n### Summary, the hop in front of anvil\n\n{summary}");
    println!("Overall (bench_node): {}.", verdict(all));
    all
}
