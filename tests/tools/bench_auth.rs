//! The data path's cost, measured (issue 9, "Flat cost, measured"). Run by `.ci/bench`.
//!
//! Why. The shipped design claims that what one activity pays does not grow with the
//! number of live activities: nginx checks each request against the activity's own
//! htpasswd file (the routes file's map names it from the user, so nginx reads one line
//! whatever the number of activities), the activity's gateway adds one hop, and a start
//! does the same work with 10,000 live activities as with one. This benchmark measures
//! those claims on the shipped pieces: the site in `conf/nginx/`, the routes file
//! `nginx::routes` renders, the activities' folder laid out as the runtime lays it out,
//! the gateway (`ya_runtime_erigon::gateway`) and `session::grant`.
//!
//! What is measured. One activity's JSON-RPC POSTs go through the shipped nginx site
//! (basic auth against the runtime's default `{SSHA}` entries) to the activity's own
//! gateway, then to a static backend: a second nginx answering a fixed JSON-RPC result.
//! In one run, with every baseline measured in the same run, it prints:
//!
//! 1. one activity's req/s with 1, 300 and 10,000 live activities, each against the
//!    1-live figure of the same round (target >= 0.90);
//! 2. the gateway hop: nginx -> gateway (on its seat, kept alive) -> backend against
//!    nginx -> backend directly, by TCP with keep-alive (how nginx reaches a node: the
//!    data path before the gateway) and by a Unix connection per request (the path
//!    past the seats). Target >= 0.75 for both. As information, a kept-alive Unix
//!    socket to the backend: the hop's whole cost, since no node is reached that way.
//!    The measured activity sits on seat 0 with 1 live, and on the last seat with
//!    300 and 10,000 live, the others holding the seats below (nginx's search for
//!    the seat's upstream is longest there); past the seats, the others have sockets
//!    of their own;
//! 3. a start with 10,000 live: `session::grant`, the whole runtime-side access step
//!    of a start (the gateway on a fresh user's socket, then the credentials file), as
//!    production calls it; median and max over `--starts` starts, each revoked and
//!    closed (untimed) before the next. Target: max under 50 ms. Beside it, as
//!    information, one synchronous `htpasswd::sweep` of the 10,000-live folder (a start
//!    runs it in the background, `session::sweep_dead_in_background`, and does not wait
//!    for it) and how many activities it removed, which must be none: every owner lives.
//!
//! Method. The machine is small and shared, so: every server process (the nginx fronts,
//! the gateways, the backend) is pinned to CPU 0 and wrk to CPU 1, at nice -10 when run
//! as root. The machine's speed also drifts, by 10-20% within minutes, so each row is
//! measured against runs of the baseline (the gateway path with 1 live) just before and
//! just after it: a round is B X B Y B ..., the other rows' order rotating each round,
//! and a row's ratio in a round is against the mean of the two baseline runs around
//! it, which cancels a steady drift. A figure is the median of the rounds' ratios. As
//! a second, steadier figure the CPU time each server process used (from
//! /proc) is divided by the requests served: microseconds of CPU per request.
//!
//! The activities' folder. Every row has its own, prepared as a provider's (nginx's
//! group, setgid) and filled as the runtime fills it: for each of N live activities
//! `<user>.htpasswd` (one `{SSHA}` entry) and `<user>.owner` (this process's `Owner`,
//! alive, so a sweep keeps them), and N sockets (N-1 socket files left by listeners,
//! plus the measured activity's live gateway); plus the empty file nginx checks unknown
//! users against (`htpasswd::ensure_nobody_file`). The measured activity's files are
//! written by the runtime's own `htpasswd::ActivityFile::create`, the others in the same
//! format, and checked against it. The configuration points the gateways at the static
//! backend (`erigon_http_port`) and lifts the per-activity limits, which are not what is
//! measured, so that `grant` builds the same gateway as the rows use.
//!
//! Printed: markdown tables for 1-3 (req/s, ratios, CPU µs per request of the front
//! nginx worker, the gateways and the backend worker; start and sweep milliseconds), a
//! summary table with a verdict per target, an "Overall" line, and a cross-check that
//! every answer wrk counted through a gateway was a call that gateway billed.
//!
//! Exit status: 0 if the targets are met (see the summary's "Overall" line), 2 if one is
//! missed, 1 if the benchmark could not run.
//!
//! Usage: bench_auth [--seconds N] [--connections N] [--rounds N] [--starts N]

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
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{
    clock_ticks_per_sec, max, median, min, nginx_version, set_mode, thousands, write, Cpu,
};
use harness::nginx::{free_port, is_root, prepare_auth_dir, Nginx};
use harness::process::{listens, try_eventually_blocking};
use serde_json::json;
use ya_runtime_erigon::access::credentials::new_user;
use ya_runtime_erigon::access::hash::HashScheme;
use ya_runtime_erigon::access::htpasswd::{ensure_nobody_file, ActivityFile, NOBODY_FILE};
use ya_runtime_erigon::access::seat::Seat;
use ya_runtime_erigon::config::Config;
use ya_runtime_erigon::gateway::Gateway;
use ya_runtime_erigon::node::network::Network;
use ya_runtime_erigon::owner::Owner;

#[path = "bench_common.rs"]
mod common;

const USAGE: &str = "usage: bench_auth [--seconds N] [--connections N] [--rounds N] [--starts N]";
/// The measured activity's password (24 characters, the runtime's default length).
const PASSWORD: &str = "benchPassw0rdOfTwentyFour";
const PASSWORD_LENGTH: usize = 24;
/// What the static backend answers, and what every measured request must get back.
const ANSWER: &str = r#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#;
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
/// Live activities per row; the last one is also the folder of the start measurement.
const LIVE: [usize; 3] = [1, 300, 10_000];
/// Share of the 1-live figure each N must keep (issue 9, item 5).
const FLAT_TARGET: f64 = 0.90;
/// Share of nginx -> backend the gateway hop must keep (issue 9, item 5).
const HOP_TARGET: f64 = 0.75;
/// Runtime-side work of one start with 10,000 live (issue 9, item 5).
const START_BUDGET_MS: f64 = 50.0;

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

struct Args {
    seconds: u32,
    connections: u32,
    rounds: usize,
    starts: usize,
}

fn args() -> Result<Args, String> {
    let mut parsed = Args {
        seconds: 2,
        connections: 8,
        rounds: 7,
        starts: 20,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| format!("{arg} needs a positive number; {USAGE}"));
        match arg.as_str() {
            "--seconds" => parsed.seconds = value?,
            "--connections" => parsed.connections = value?,
            "--rounds" => parsed.rounds = value? as usize,
            "--starts" => parsed.starts = value? as usize,
            other => return Err(format!("unknown argument {other}; {USAGE}")),
        }
    }
    Ok(parsed)
}

/// One measured path: an nginx front with the shipped site, and the measured activity's
/// gateway behind it.
struct Row {
    label: String,
    front: Nginx,
    /// The measured activity's gateway; `None` for the rows that bypass it.
    gateway: Option<Gateway>,
    /// The measured activity's user, its Basic credentials, and wrk's script with them.
    user: String,
    auth: String,
    lua: PathBuf,
    /// The other live activities' seats, held as their runtimes would hold them.
    _others: Vec<Seat>,
}

/// wrk's script: POSTs of [`BODY`] with the measured activity's credentials.
fn wrk_script(root: &Path, tag: &str, auth: &str) -> Result<PathBuf, String> {
    let lua = root.join(format!("post-{tag}.lua"));
    common::wrk_script(&lua, auth, BODY)?;
    Ok(lua)
}

/// `text` with `from` (which must be there) replaced by `to`.
fn swap(text: &str, from: &str, to: &str) -> Result<String, String> {
    if !text.contains(from) {
        return Err(format!(
            "the routes file has no `{from}`; update the benchmark"
        ));
    }
    Ok(text.replace(from, to))
}

fn bench() -> Result<bool, String> {
    let args = args()?;
    for (tool, package) in [("wrk", "wrk"), ("taskset", "util-linux")] {
        Command::new(tool).arg("--version").output().map_err(|e| {
            format!("{tool} is needed ({e}); install it: apt-get install -y {package}")
        })?;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2;
    if pinned {
        // Before any thread or child exists: all of them inherit CPU 0; wrk gets CPU 1.
        let me = std::process::id().to_string();
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &me])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("taskset: {e}"))?;
        if !status.success() {
            return Err(format!(
                "taskset could not pin this process to CPU 0: {status}"
            ));
        }
    }
    // The machine is shared: as root, this process and everything it starts (nginx,
    // the gateways' thread, wrk) run at nice -10 so that other work there (a build)
    // disturbs the measurement less. Threads inherit it from this one, made first.
    let boosted = is_root()
        && Command::new("renice")
            .args(["-n", "-10", "-p", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let tick_us = 1e6 / clock_ticks_per_sec();

    let dir = tempfile::Builder::new()
        .prefix("bench-auth-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary folder: {e}"))?;
    let root = dir.path();
    // nginx's workers (www-data when run as root) traverse it.
    set_mode(root, 0o755)?;

    let owner = Owner::current()?;
    let runtime = GatewayRuntime::start()?;
    let backend = Backend::start(&root.join("backend"))?;
    let upstream = SocketAddr::from(([127, 0, 0, 1], backend.port));

    // One provider per row, each with its own activities' folder.
    let configs = LIVE
        .iter()
        .map(|live| provider(root, &format!("live{live}"), backend.port))
        .collect::<Result<Vec<Config>, String>>()?;
    let network = configs[0].default_network().clone();
    for config in &configs {
        if config.rpc_addr(&network) != upstream {
            return Err(format!(
                "the configuration's node address is {}, not the static backend's {upstream}; update the benchmark",
                config.rpc_addr(&network)
            ));
        }
    }
    let scheme = configs[0].password_hash();

    println!(
        "# bench_auth: the data path's cost (issue 9, item 5)\n\n\
         nginx {} (1 worker) -> gateway -> static backend (nginx answering {ANSWER}); \
         wrk 1 thread, {} connections, POST with Basic auth; {} rounds of runs of {} s, each row between two runs of the baseline; \
         {}; one htpasswd file per activity, {PASSWORD_LENGTH}-character passwords, {} entries \
         (the runtime's default).",
        nginx_version(),
        args.connections,
        args.rounds,
        args.seconds,
        match (pinned, boosted) {
            (true, true) => "nginx, gateways and backend on CPU 0, wrk on CPU 1, all at nice -10",
            (true, false) => "nginx, gateways and backend on CPU 0, wrk on CPU 1",
            (false, _) => "ONE CPU: nothing pinned, figures are rough",
        },
        scheme_name(scheme),
    );

    eprintln!("bench_auth: writing 1 + 300 + 10,000 activities' files and sockets");
    let mut rows: Vec<Row> = Vec::new();
    for (config, live) in configs.iter().zip(LIVE) {
        let measured = populate(config, live, &owner)?;
        let spec = config.gateway_spec(&network, &measured.user, Some(measured.seat.number()))?;
        let auth = basic_auth(&measured.user, PASSWORD);
        let gateway = runtime.block_on(Gateway::start(spec, Some(measured.seat)))?;
        let routes = ya_runtime_erigon::provider::nginx::routes(config);
        let tag = format!("live{live}");
        rows.push(Row {
            label: format!("{} live", thousands(live as f64)),
            front: front(root, &tag, &routes)?,
            gateway: Some(gateway),
            lua: wrk_script(root, &tag, &auth)?,
            auth,
            user: measured.user,
            _others: measured.others,
        });
    }
    // nginx -> backend without the gateway, for the 1-live row's user (seat 0): its
    // seat's upstream block pointed at the backend, by Unix socket and by TCP, both
    // kept alive as a seat is; and, as before seats, a new Unix connection per
    // request through the variable `proxy_pass` (the path past the seats).
    let one = &configs[0];
    let routes = ya_runtime_erigon::provider::nginx::routes(one);
    let seat0 = format!(
        "server unix:{};",
        ya_runtime_erigon::access::seat::socket_path(one.socket_dir(), 0).display()
    );
    let (user, auth) = (rows[0].user.clone(), rows[0].auth.clone());
    for (tag, label, routes) in [
        (
            "direct-seat-unix",
            "nginx -> backend, the seat's upstream by Unix socket, kept alive",
            swap(
                &routes,
                &seat0,
                &format!("server unix:{};", backend.socket.display()),
            )?,
        ),
        (
            "direct-seat-tcp",
            "nginx -> backend, the seat's upstream by TCP, kept alive (the pre-gateway path)",
            swap(&routes, &seat0, &format!("server {upstream};"))?,
        ),
        (
            "direct-unix",
            "nginx -> backend, a Unix connection per request (the path past the seats)",
            replace_map(
                &routes,
                "map $remote_user $erigon_upstream {",
                &format!(
                    "map $remote_user $erigon_upstream {{\n    default \"unix:{}:\";\n}}\n",
                    backend.socket.display()
                ),
            )?,
        ),
    ] {
        rows.push(Row {
            label: label.into(),
            front: front(root, tag, &routes)?,
            gateway: None,
            lua: rows[0].lua.clone(),
            auth: auth.clone(),
            user: user.clone(),
            _others: Vec::new(),
        });
    }

    // Every row answers the measured activity, through its gateway or not, and refuses
    // a wrong password and a well-formed user without a file (the nobody file's 401).
    let stranger = basic_auth(&new_user(&network, Some(0)), PASSWORD);
    for row in &rows {
        let wrong = basic_auth(&row.user, &format!("not-{PASSWORD}"));
        let billed = |rows: &[Row]| -> u64 {
            rows.iter()
                .filter_map(|r| r.gateway.as_ref())
                .map(|g| g.billed().calls)
                .sum()
        };
        let before = billed(&rows);
        let ours = row.gateway.as_ref().map(|g| g.billed().calls);
        let (status, text) = post(row.front.port, &row.auth)?;
        if status != 200 || !text.contains(r#""result":"0x1""#) {
            return Err(format!(
                "{}: the measured activity got HTTP {status}, not the backend's answer:\n{text}\n{}",
                row.label,
                row.front.error_log()
            ));
        }
        let after = billed(&rows);
        match (ours, row.gateway.as_ref()) {
            (Some(was), Some(gateway))
                if gateway.billed().calls == was + 1 && after == before + 1 => {}
            (None, None) if after == before => {}
            _ => {
                return Err(format!(
                "{}: the call did not take the expected path (gateways billed {before} -> {after})",
                row.label
            ))
            }
        }
        for (who, auth) in [
            ("a wrong password", &wrong),
            ("a user without a file", &stranger),
        ] {
            let (status, _) = post(row.front.port, auth)?;
            if status != 401 {
                return Err(format!(
                    "{}: {who} got HTTP {status}, not 401; authentication is not measured",
                    row.label
                ));
            }
        }
    }
    eprintln!(
        "bench_auth: every row answers 200 through its path, and 401 to a wrong password and to a user without a file"
    );

    // The start measurements, on the 10,000-live folder and its front.
    let big = LIVE.len() - 1;
    let sweep = measure_sweep(&configs[big], &owner)?;
    let starts = measure_starts(
        &runtime,
        &configs[big],
        &rows[big].front,
        &owner,
        args.starts,
    )?;

    // Warm-up (not recorded), then the rounds.
    let servers = |row: &Row| ServerPids {
        front: row.front.pids().into_iter().skip(1).collect(),
        gateway_tid: runtime.tid,
        backend: backend.worker_pids(),
    };
    for row in &rows {
        wrk(
            row.front.port,
            1,
            args.connections,
            &row.lua,
            pinned,
            &servers(row),
            tick_us,
        )?;
    }
    // Each round runs the baseline, the measured activity through its gateway
    // with 1 live (row 0), first, then every other row in turn (the order rotates
    // each round), each followed by the baseline again: B X B Y B ... Each other
    // row is compared with the mean of the two baseline runs around it, so that a
    // drift of the machine's speed over those seconds cancels to first order.
    const BASE: usize = 0;
    let mut excess: Vec<i64> = Vec::new();
    let mut measure = |i: usize| -> Result<Sample, String> {
        let row = &rows[i];
        let billed = row.gateway.as_ref().map(|g| g.billed().calls);
        let sample = wrk(
            row.front.port,
            args.seconds,
            args.connections,
            &row.lua,
            pinned,
            &servers(row),
            tick_us,
        )
        .map_err(|e| format!("{}: {e}", row.label))?;
        if let (Some(before), Some(gateway)) = (billed, row.gateway.as_ref()) {
            // Every answer wrk counted was a call the gateway billed; a few more were
            // answered after wrk stopped counting.
            excess.push(gateway.billed().calls as i64 - before as i64 - sample.requests as i64);
        }
        Ok(sample)
    };
    let mut runs = Runs {
        samples: vec![Vec::new(); rows.len()],
        brackets: vec![Vec::new(); rows.len()],
    };
    let others = rows.len() - 1;
    for round in 0..args.rounds {
        eprintln!("bench_auth: round {} of {}", round + 1, args.rounds);
        let mut before = measure(BASE)?;
        runs.samples[BASE].push(before.clone());
        for k in 0..others {
            let i = 1 + (k + round) % others;
            let sample = measure(i)?;
            let after = measure(BASE)?;
            runs.samples[i].push(sample);
            runs.brackets[i].push(Sample::mean(&before, &after));
            runs.samples[BASE].push(after.clone());
            before = after;
        }
    }

    let verdict = report(&rows, &runs, &starts, &sweep);
    let counted: u64 = rows
        .iter()
        .zip(&runs.samples)
        .filter(|(r, _)| r.gateway.is_some())
        .flat_map(|(_, s)| s.iter().map(|s| s.requests))
        .sum();
    println!(
        "
Cross-check, the gateway path: over {} runs through a gateway, wrk counted {counted} \
         answers, and each run's gateway billed that many calls plus {}..{} (at most {} may be \
         answered after wrk stops counting).",
        excess.len(),
        excess.iter().min().copied().unwrap_or(0),
        excess.iter().max().copied().unwrap_or(0),
        args.connections
    );

    for row in rows {
        if let Some(gateway) = row.gateway {
            runtime.block_on(async { Ok::<_, String>(gateway.close().await) })?;
        }
    }
    drop(runtime);
    Ok(verdict)
}

/// A configuration as a provider writes it, with its activities' folder at
/// `root/<tag>/auth` (prepared as the provider set-up does). Its one network's node
/// address is the static backend, and the per-activity limits are lifted: they are not
/// what is measured, and none may refuse the benchmark's load.
fn provider(root: &Path, tag: &str, backend: u16) -> Result<Config, String> {
    let home = root.join(tag);
    if !home.join("auth").is_dir() {
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        prepare_auth_dir(&home);
    }
    Config::from_value(
        &json!({
            "data_dir": home.join("data"),
            "socket_dir": home.join("auth"),
            "erigon_http_port": backend,
            "port_base": 1025,
            "networks": {"bench": {"slot": 0}},
            "default_network": "bench",
            "password_default_length": PASSWORD_LENGTH,
            "limits": {"calls_per_sec": u32::MAX, "burst": u32::MAX, "in_flight": 1024,
                "cu_per_sec": u32::MAX, "cu_burst": u32::MAX},
        }),
        Path::new("bench.json"),
        Path::new("/nonexistent"),
    )
}

/// `live` activities in the row's folder, as the runtime lays them out: `live - 1`
/// others, each with its htpasswd file, its owner record (this process: alive, so a
/// sweep keeps them) and a socket file; then the measured activity's files, written by
/// the runtime's own `ActivityFile::create` (its socket is its gateway's, bound by the
/// caller); then the file nginx checks unknown users against.
fn populate(config: &Config, live: usize, owner: &Owner) -> Result<Measured, String> {
    let network = config.default_network();
    let folder = config.socket_dir();
    let scheme = config.password_hash();
    let record = serde_json::to_string(owner).map_err(|e| e.to_string())?;
    let mut others = Vec::new();
    for _ in 1..live {
        // The others take the seats first (all but the last), so that the measured
        // activity sits on the highest seat taken: nginx finds its upstream last.
        let seat = match others.len() + 1 < usize::from(config.seats()) {
            true => Seat::take(folder, config.seats())?,
            false => None,
        };
        let other = new_user(network, seat.as_ref().map(Seat::number));
        let socket = match &seat {
            Some(seat) => seat.socket(folder),
            None => config.socket_path(&other),
        };
        others.extend(seat);
        let hash = scheme.hash(&format!("{other}'s password"))?;
        write(
            &folder.join(format!("{other}.htpasswd")),
            &format!("{other}:{hash}\n"),
            0o640,
        )?;
        write(&folder.join(format!("{other}.owner")), &record, 0o600)?;
        // A socket file, as a live gateway's: the folder holds `live` sockets.
        std::os::unix::net::UnixListener::bind(&socket)
            .map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
    }
    let seat = Seat::take(folder, config.seats())?
        .ok_or_else(|| format!("no seat left in {}", folder.display()))?;
    let user = &new_user(network, Some(seat.number()));
    let measured = ActivityFile::new(folder, user);
    if !measured.create(&scheme.hash(PASSWORD)?, owner)? {
        return Err(format!("{} exists already", measured.path().display()));
    }
    ensure_nobody_file(folder)?;
    // The others were written by hand: they must look like the runtime's own.
    let (entry, owner_file) = (
        folder.join(format!("{user}.htpasswd")),
        folder.join(format!("{user}.owner")),
    );
    let runtime_record = std::fs::read_to_string(&owner_file).unwrap_or_default();
    let runtime_entry = std::fs::read_to_string(&entry).unwrap_or_default();
    let one_line = runtime_entry.starts_with(&format!("{user}:"))
        && runtime_entry.ends_with('\n')
        && runtime_entry.lines().count() == 1;
    if measured.path() != entry
        || !one_line
        || runtime_record != record
        || !folder.join(NOBODY_FILE).is_file()
    {
        return Err(format!(
            "the runtime lays out an activity's files differently from this benchmark ({} and {}); update the benchmark",
            measured.path().display(),
            owner_file.display()
        ));
    }
    Ok(Measured {
        user: user.clone(),
        seat,
        others,
    })
}

/// The measured activity of a row: its user and seat, and the seats the others hold.
struct Measured {
    user: String,
    seat: Seat,
    others: Vec<Seat>,
}

fn basic_auth(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn scheme_name(scheme: HashScheme) -> String {
    match scheme {
        HashScheme::Ssha => "{SSHA}".into(),
        HashScheme::Sha => "{SHA}".into(),
        HashScheme::Bcrypt { cost } => format!("bcrypt (cost {cost})"),
    }
}

/// `routes` with the map block that starts with `head` replaced by `block`.
fn replace_map(routes: &str, head: &str, block: &str) -> Result<String, String> {
    let start = routes.find(head).ok_or_else(|| {
        format!("the routes file has no `{head}`; update the benchmark:\n{routes}")
    })?;
    let end = routes[start..]
        .find("\n}\n")
        .map(|e| start + e + 3)
        .ok_or_else(|| format!("the routes file's `{head}` block does not end"))?;
    Ok(format!("{}{block}{}", &routes[..start], &routes[end..]))
}

/// The shipped site around `routes`, via the test harness.
fn front(root: &Path, tag: &str, routes: &str) -> Result<Nginx, String> {
    let file = root.join(format!("routes-{tag}.conf"));
    write(&file, routes, 0o644)?;
    Ok(Nginx::builder(&root.join(format!("front-{tag}")), &file, free_port()).start())
}

/// The static backend: nginx answering [`ANSWER`] on a TCP port and a Unix socket.
struct Backend {
    port: u16,
    socket: PathBuf,
    child: Child,
}

impl Backend {
    fn start(prefix: &Path) -> Result<Backend, String> {
        std::fs::create_dir_all(prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
        let port = free_port();
        let socket = prefix.join("backend.sock");
        let p = prefix.display();
        let conf = prefix.join("nginx.conf");
        write(
            &conf,
            &format!(
                "{user}worker_processes 1;\n\
                 pid {p}/nginx.pid;\n\
                 error_log {p}/error.log warn;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n\
                   access_log off;\n\
                   client_body_temp_path {p}/body;\n\
                   proxy_temp_path {p}/proxy;\n\
                   fastcgi_temp_path {p}/fastcgi;\n\
                   uwsgi_temp_path {p}/uwsgi;\n\
                   scgi_temp_path {p}/scgi;\n\
                   keepalive_requests 10000000;\n\
                   keepalive_timeout 300s;\n\
                   server {{\n\
                     listen 127.0.0.1:{port};\n\
                     listen unix:{socket};\n\
                     location / {{ default_type application/json; return 200 '{ANSWER}'; }}\n\
                   }}\n\
                 }}\n",
                user = if is_root() { "user www-data;\n" } else { "" },
                socket = socket.display(),
            ),
            0o644,
        )?;
        let child = harness::nginx::command(prefix, &conf)
            .spawn()
            .map_err(|e| format!("cannot start the backend nginx: {e}"))?;
        let mut backend = Backend {
            port,
            socket,
            child,
        };
        let log = || std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
        let listening =
            try_eventually_blocking(Duration::from_secs(10), || match backend.child.try_wait() {
                Ok(Some(status)) => Ok(Err(status)),
                _ if listens(port) && backend.socket.exists() => Ok(Ok(())),
                _ => Err(String::new()),
            });
        match listening {
            Ok(Ok(())) => {}
            Ok(Err(status)) => {
                return Err(format!(
                    "the backend nginx exited with {status}:\n{}",
                    log()
                ))
            }
            Err(failure) => {
                return Err(format!(
                    "the backend nginx did not listen: {failure}:\n{}",
                    log()
                ))
            }
        }
        // The master (root) made the socket; the fronts' workers must connect to it.
        set_mode(&backend.socket, 0o666)?;
        Ok(backend)
    }

    fn worker_pids(&self) -> Vec<u32> {
        let master = self.child.id();
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The gateways' executor: a current-thread tokio runtime, as the runtime's own, driven
/// by a thread of its own so that the gateways serve while this thread runs wrk.
struct GatewayRuntime {
    handle: tokio::runtime::Handle,
    /// The gateways' thread, whose context switches a run counts.
    tid: u32,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GatewayRuntime {
    fn start() -> Result<GatewayRuntime, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tid_tx, tid) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("gateways".into())
            .spawn(move || {
                let _ = tid_tx.send(nix::unistd::gettid().as_raw());
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| format!("cannot start the gateways' thread: {e}"))?;
        let tid = tid
            .recv()
            .ok()
            .and_then(|t| u32::try_from(t).ok())
            .ok_or("the gateways' thread did not say its id")?;
        Ok(GatewayRuntime {
            handle,
            tid,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `work` here; its I/O is driven by the gateways' thread.
    fn block_on<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        self.handle.block_on(work)
    }
}

impl Drop for GatewayRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One sweep of dead runtimes' files over a folder.
struct Sweep {
    ms: f64,
    /// Owner records in the folder (one per live activity).
    records: usize,
    removed: usize,
}

/// One synchronous `htpasswd::sweep` of the folder, the call a start leaves to the
/// blocking pool (`session::sweep_dead_in_background`). Every owner is this live
/// process, so it must remove nothing: a removal is an error, not a figure.
fn measure_sweep(config: &Config, owner: &Owner) -> Result<Sweep, String> {
    let folder = config.socket_dir();
    let records = names(folder)?
        .iter()
        .filter(|n| n.ends_with(".owner"))
        .count();
    eprintln!(
        "bench_auth: one sweep of {} owner records",
        thousands(records as f64)
    );
    let started = Instant::now();
    let removed = ya_runtime_erigon::access::htpasswd::sweep(folder, owner)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !removed.is_empty() {
        return Err(format!(
            "the sweep of {} removed {} of {records} live activities' files (their owner, this process, lives): {}",
            folder.display(),
            removed.len(),
            removed.join(", ")
        ));
    }
    Ok(Sweep {
        ms,
        records,
        removed: removed.len(),
    })
}

/// `count` starts with the folder's activities live: `session::grant` timed as a start
/// runs it, then, untimed, the credentials revoked and the gateway closed. The first
/// start's credentials are used once through the row's front, so what is timed is known
/// to grant working access; and the folder must hold what it held before.
fn measure_starts(
    runtime: &GatewayRuntime,
    config: &Config,
    front: &Nginx,
    owner: &Owner,
    count: usize,
) -> Result<Vec<f64>, String> {
    let network: &Network = config.default_network();
    let folder = config.socket_dir();
    let before = names(folder)?;
    eprintln!(
        "bench_auth: {count} starts (`session::grant`) with {} live",
        thousands(before.iter().filter(|n| n.ends_with(".owner")).count() as f64)
    );
    let mut ms = Vec::with_capacity(count);
    for start in 0..count {
        let started = Instant::now();
        let (credentials, gateway) = runtime.block_on(async {
            ya_runtime_erigon::runtime::session::grant(config, network, owner)
                .await
                .map_err(|e| e.text)
        })?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        if start == 0 {
            let auth = basic_auth(credentials.user(), credentials.password().expose());
            let (status, text) = post(front.port, &auth)?;
            if status != 200 || !text.contains(r#""result":"0x1""#) || gateway.billed().calls != 1 {
                return Err(format!(
                    "a granted activity got HTTP {status} through its gateway (billed {}), not the backend's answer:\n{text}\n{}",
                    gateway.billed().calls,
                    front.error_log()
                ));
            }
        }
        runtime.block_on(async {
            credentials.revoke().await?;
            gateway.close().await;
            Ok(())
        })?;
    }
    let after = names(folder)?;
    if after != before {
        return Err(format!(
            "{count} starts, revoked and closed, changed {}: {} files before, {} after",
            folder.display(),
            before.len(),
            after.len()
        ));
    }
    Ok(ms)
}

/// The sorted names in a folder.
fn names(folder: &Path) -> Result<Vec<String>, String> {
    let mut names = std::fs::read_dir(folder)
        .map_err(|e| format!("{}: {e}", folder.display()))?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| format!("{}: {e}", folder.display()))
        })
        .collect::<Result<Vec<String>, String>>()?;
    names.sort();
    Ok(names)
}

/// The server processes whose CPU time a run adds up, and the gateways' thread.
struct ServerPids {
    front: Vec<u32>,
    gateway_tid: u32,
    backend: Vec<u32>,
}

#[derive(Clone, Debug)]
struct Sample {
    rate: f64,
    requests: u64,
    /// CPU µs per request of the front nginx's worker, of this process (the gateways)
    /// and of the backend's worker.
    front_us: f64,
    gateway_us: f64,
    backend_us: f64,
    /// Context switches per request of the front nginx worker, the gateways'
    /// thread and the backend's worker: each one a process put off the CPU
    /// and another put on, the hop's largest single cost.
    switches: [f64; 3],
}

impl Sample {
    fn server_us(&self) -> f64 {
        self.front_us + self.gateway_us + self.backend_us
    }

    /// Two runs' mean, as if measured in the middle of them.
    fn mean(a: &Sample, b: &Sample) -> Sample {
        let mid = |x: f64, y: f64| (x + y) / 2.0;
        Sample {
            rate: mid(a.rate, b.rate),
            requests: (a.requests + b.requests) / 2,
            front_us: mid(a.front_us, b.front_us),
            gateway_us: mid(a.gateway_us, b.gateway_us),
            backend_us: mid(a.backend_us, b.backend_us),
            switches: [0, 1, 2].map(|k| mid(a.switches[k], b.switches[k])),
        }
    }
}

/// Every run of the rounds.
struct Runs {
    /// Each row's runs; the baseline row's are all its runs, before, between
    /// and after the others'.
    samples: Vec<Vec<Sample>>,
    /// For each other row's run, the mean of the baseline's runs just before
    /// and just after it (empty for the baseline row).
    brackets: Vec<Vec<Sample>>,
}

impl Runs {
    /// Row `i`'s runs, each with the baseline's bracketing it.
    fn paired(&self, i: usize) -> impl Iterator<Item = (&Sample, &Sample)> {
        self.samples[i].iter().zip(&self.brackets[i])
    }
}

fn wrk(
    port: u16,
    seconds: u32,
    connections: u32,
    lua: &Path,
    pinned: bool,
    pids: &ServerPids,
    tick_us: f64,
) -> Result<Sample, String> {
    let mut cmd = if pinned {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1", "wrk"]);
        cmd
    } else {
        Command::new("wrk")
    };
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "-s",
    ])
    .arg(lua)
    .arg(format!("http://127.0.0.1:{port}/bench"));
    // CPU: the front's and the backend's workers, and this process (the gateways);
    // switches: the same workers', and the gateways' thread's.
    let me = std::process::id();
    let cpu = || {
        let gateways = Cpu {
            switches: Cpu::thread(pids.gateway_tid).switches,
            ..Cpu::processes(&[me])
        };
        [
            Cpu::processes(&pids.front),
            gateways,
            Cpu::processes(&pids.backend),
        ]
    };
    let before = cpu();
    let out = cmd.output();
    let after = cpu();
    let (_, rate, requests) = common::wrk_output(out)?;
    let used = [0, 1, 2].map(|k| before[k].until(after[k]));
    let per_request = |k: usize| (used[k].user + used[k].system) as f64 * tick_us / requests as f64;
    Ok(Sample {
        rate,
        requests,
        front_us: per_request(0),
        gateway_us: per_request(1),
        backend_us: per_request(2),
        switches: used.map(|u| u.switches as f64 / requests as f64),
    })
}

/// One POST to `/bench` with these Basic credentials; the status and the whole answer.
fn post(port: u16, basic: &str) -> Result<(u16, String), String> {
    let fail = |e: std::io::Error| format!("POST to nginx on port {port}: {e}");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    write!(
        stream,
        "POST /bench HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )
    .map_err(fail)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(fail)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer from port {port}: {text:?}"))?;
    Ok((status, text))
}

/// Prints the tables; returns whether every target was met.
fn report(rows: &[Row], runs: &Runs, starts: &[f64], sweep: &Sweep) -> bool {
    let samples = &runs.samples;
    let rate = |i: usize| median(samples[i].iter().map(|s| s.rate).collect());
    let cpu_of = |i: usize, f: &dyn Fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    // Row i's ratios against the baseline runs around each of its runs: f(run,
    // baseline). The median is the figure; the lowest and highest show how much
    // the rounds disagree.
    let ratios = |i: usize, f: &dyn Fn(&Sample, &Sample) -> f64| -> Vec<f64> {
        runs.paired(i).map(|(x, b)| f(x, b)).collect()
    };
    let per_round = |i: usize, f: &dyn Fn(&Sample, &Sample) -> f64| median(ratios(i, f));
    let spread = |i: usize, f: &dyn Fn(&Sample, &Sample) -> f64| {
        let ratios = ratios(i, f);
        let low = min(&ratios);
        format!("{low:.2}–{:.2}", max(&ratios))
    };
    let verdict = |ratio: f64, target: f64| if ratio >= target { "PASS" } else { "MISS" };
    let mut summary = String::new();
    let _ = writeln!(summary, "| figure | value | ratio | target | verdict |");
    let _ = writeln!(summary, "|---|---|---|---|---|");

    println!(
        "\n## 1. One activity's throughput with N live activities\n\n\
         One htpasswd file per activity (the shipped site and routes). ratio: median of \
         the rounds' req/s ratios against the 1-live runs just before and after (rounds: the \
         lowest and highest of them). CPU ratio: the same for the front nginx worker's CPU µs per request (1-live µs / N-live µs), the \
         steadier figure.\n"
    );
    println!(
        "| live | req/s | ratio | rounds | nginx worker µs/req | CPU ratio | gateway µs/req | verdict |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut flat_ok = true;
    let flat = |x: &Sample, b: &Sample| x.rate / b.rate;
    for (i, live) in LIVE.into_iter().enumerate() {
        // The baseline row is itself: 1.00.
        let (ratio, cpu, rounds, v) = if i == 0 {
            (1.0, 1.0, "—".to_string(), "—")
        } else {
            let ratio = per_round(i, &flat);
            let cpu = per_round(i, &|x, b| b.front_us / x.front_us);
            (ratio, cpu, spread(i, &flat), verdict(ratio, FLAT_TARGET))
        };
        flat_ok &= v != "MISS";
        println!(
            "| {} | {} | {ratio:.2} | {rounds} | {:.1} | {cpu:.2} | {:.1} | {v} |",
            thousands(live as f64),
            thousands(rate(i)),
            cpu_of(i, &|s| s.front_us),
            cpu_of(i, &|s| s.gateway_us),
        );
        let _ = writeln!(
            summary,
            "| req/s, {} live | {} | {ratio:.2} (CPU {cpu:.2}) | {} | {v} |",
            thousands(live as f64),
            thousands(rate(i)),
            if i == 0 {
                "baseline".to_string()
            } else {
                format!(">= {FLAT_TARGET:.2}")
            },
        );
    }

    let gateway_row = 0;
    // The targets' baselines: nginx -> node as nginx reaches a node (TCP, kept alive;
    // the pre-gateway site), and the same per-request Unix connection the path past
    // the seats takes. The first direct row, a kept-alive Unix socket to the backend,
    // is information: no node's HTTP JSON-RPC is reached that way here, and it shows
    // the hop's whole cost on this machine.
    let direct = [LIVE.len(), LIVE.len() + 1, LIVE.len() + 2];
    let judged = |i: usize| i != LIVE.len();
    println!(
        "\n## 2. The gateway hop, static backend\n\n\
         The same site, 1 live activity. ratio: median of the rounds' req/s ratios \
         (the gateway runs just before and after / direct), rounds: their lowest and highest; CPU ratio: direct server µs / gateway server µs, server = \
         front nginx worker + gateway + backend worker, all on CPU 0; switches: the \
         context switches per request of each (front, gateway, backend).\n"
    );
    println!(
        "| path | req/s | front µs/req | gateway µs/req | backend µs/req | server µs/req | switches/req | ratio | rounds | CPU ratio | verdict |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // Gateway / direct, the gateway's runs being the baseline's around the direct run.
    let hop = |d: &Sample, g: &Sample| g.rate / d.rate;
    let line = |i: usize, label: &str, ratio: Option<(f64, f64)>| {
        let (r, rounds, c, v) = match ratio {
            Some((r, c)) => (
                format!("{r:.2}"),
                spread(i, &hop),
                format!("{c:.2}"),
                if judged(i) {
                    verdict(r, HOP_TARGET)
                } else {
                    "(info)"
                },
            ),
            None => ("—".into(), "—".into(), "—".into(), "—"),
        };
        let switches = [0, 1, 2].map(|k| format!("{:.2}", cpu_of(i, &|s| s.switches[k])));
        println!(
            "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {r} | {rounds} | {c} | {v} |",
            thousands(rate(i)),
            cpu_of(i, &|s| s.front_us),
            cpu_of(i, &|s| s.gateway_us),
            cpu_of(i, &|s| s.backend_us),
            cpu_of(i, &Sample::server_us),
            switches.join(", "),
        );
    };
    line(gateway_row, "nginx -> gateway -> backend", None);
    let mut hop_ok = true;
    for i in direct {
        let ratio = per_round(i, &hop);
        let cpu = per_round(i, &|d, g| d.server_us() / g.server_us());
        line(i, &rows[i].label, Some((ratio, cpu)));
        let (target, v) = if judged(i) {
            (format!(">= {HOP_TARGET:.2}"), verdict(ratio, HOP_TARGET))
        } else {
            ("(info)".into(), "—")
        };
        hop_ok &= v != "MISS";
        let _ = writeln!(
            summary,
            "| gateway hop vs {} | {} vs {} req/s | {ratio:.2} (CPU {cpu:.2}) | {target} | {v} |",
            rows[i].label,
            thousands(rate(gateway_row)),
            thousands(rate(i)),
        );
    }

    let live = thousands(LIVE[LIVE.len() - 1] as f64);
    println!(
        "\n## 3. Starting an activity with {live} live (runtime side)\n\n\
         `session::grant`: the gateway on a fresh user's socket, then `Credentials::issue` \
         (its htpasswd file and owner record, fsynced); {} starts, each revoked and closed \
         before the next. The sweep of dead runtimes' files runs beside a start, on the \
         blocking pool, and the start does not wait for it: its row is information, timed \
         once, synchronously, on a warm page cache.\n",
        starts.len()
    );
    println!("| step | runs | median ms | max ms | target | verdict |");
    println!("|---|---|---|---|---|---|");
    let (start_median, start_max) = (median(starts.to_vec()), max(starts));
    let start_ok = start_max < START_BUDGET_MS;
    let start_v = if start_ok { "PASS" } else { "MISS" };
    println!(
        "| `session::grant` | {} | {start_median:.2} | {start_max:.2} | max < {START_BUDGET_MS:.0} ms | {start_v} |",
        starts.len()
    );
    println!(
        "| `htpasswd::sweep` of {} owner records (background; removed {}) | 1 | {:.2} | {:.2} | (info) | — |",
        thousands(sweep.records as f64),
        sweep.removed,
        sweep.ms,
        sweep.ms
    );
    let _ = writeln!(
        summary,
        "| start with {live} live, `session::grant` | median {start_median:.1} ms, max {start_max:.1} ms | — | max < {START_BUDGET_MS:.0} ms | {start_v} |"
    );
    let _ = writeln!(
        summary,
        "| sweep of {} owner records, in the background of a start | {:.1} ms, removed {} | — | (info) | — |",
        thousands(sweep.records as f64),
        sweep.ms,
        sweep.removed
    );

    println!("\n## Summary\n\n{summary}");
    let ok = flat_ok && hop_ok && start_ok;
    let word = |ok: bool| if ok { "all PASS" } else { "some MISS" };
    println!(
        "Overall: {}. PASS needs every flat-cost row ({}), the gateway hop against both \
         judged baselines ({}) and the start ({}) within target.",
        if ok { "PASS" } else { "MISS" },
        word(flat_ok),
        word(hop_ok),
        word(start_ok),
    );
    ok
}
