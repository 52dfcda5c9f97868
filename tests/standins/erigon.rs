//! Stand-in `erigon` (see common.rs). Like the real one it locks `<datadir>/LOCK`,
//! writes the snapshot salt files rpcdaemon needs, listens on every port it is given
//! (so two nodes given the same port fail loudly), serves nothing over HTTP
//! (`--http=false`), and stops cleanly on SIGINT.

// Tests and tools are exempt from Cargo.toml's habits for src/: a failed unwrap is a
// failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

#[path = "common.rs"]
mod common;

use std::fs::OpenOptions;
use std::net::{TcpListener, UdpSocket};

use common::*;

/// The flags this stand-in accepts, written out rather than taken from the runtime's
/// `nodespec`: it checks the runtime's command line against its own idea of erigon,
/// so a flag the runtime misspells or invents fails here instead of agreeing with itself.
const FLAGS: &[&str] = &[
    "--chain",
    "--datadir",
    "--http",
    "--port",
    "--p2p.allowed-ports",
    "--torrent.port",
    "--authrpc.port",
    "--private.api.addr",
    "--caplin.discovery.port",
    "--caplin.discovery.tcpport",
    "--sentinel.port",
];

fn main() {
    let flags = parse_flags("erigon", FLAGS, FLAGS);
    let datadir = datadir(&flags);
    let chain = &flags["--chain"];
    if chain_id(chain).is_none() {
        fail(&format!("unknown chain {chain}"));
    }
    if flags["--http"] != "false" {
        fail("stand-in erigon expects --http=false: rpcdaemon serves JSON-RPC");
    }
    record(&datadir, "erigon");
    let behaviour = Behaviour::load(&datadir, "erigon");
    if let Some(code) = behaviour.number("exit_at_start") {
        fail_with(code as i32, "stand-in erigon told to fail at start");
    }
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(datadir.join("LOCK"))
        .unwrap_or_else(|e| fail(&format!("cannot open LOCK: {e}")));
    // flock(LOCK_EX | LOCK_NB), as Erigon's gofrs/flock does.
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .unwrap_or_else(|_| {
            fail(&format!(
                "datadir already used by another process: {}",
                datadir.display()
            ))
        });
    let snapshots = datadir.join("snapshots");
    for salt in ["salt-state.txt", "salt-blocks.txt"] {
        if std::fs::create_dir_all(&snapshots)
            .and_then(|_| std::fs::write(snapshots.join(salt), "1234"))
            .is_err()
        {
            fail("cannot write salt files");
        }
    }
    let mut held = Vec::new();
    let p2p = port(&flags, "--port");
    let allowed: Vec<u16> = flags["--p2p.allowed-ports"]
        .split(',')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| fail("bad --p2p.allowed-ports"))
        })
        .collect();
    if allowed.first() != Some(&p2p) || allowed.len() < 2 {
        fail("--p2p.allowed-ports must start at --port and allow a second sentry");
    }
    for tcp in [
        p2p,
        allowed[1],
        port(&flags, "--torrent.port"),
        port(&flags, "--authrpc.port"),
        port(&flags, "--caplin.discovery.tcpport"),
        port(&flags, "--sentinel.port"),
    ] {
        held.push(listen(&format!("127.0.0.1:{tcp}")));
    }
    let udp = port(&flags, "--caplin.discovery.port");
    let _udp = UdpSocket::bind(("127.0.0.1", udp))
        .unwrap_or_else(|e| fail(&format!("cannot bind udp {udp}: {e}")));
    // rpcdaemon dials the private API; accept and hold connections.
    let private = listen(&flags["--private.api.addr"]);
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in private.incoming().flatten() {
            open.push(stream);
        }
    });
    say(&format!(
        "stand-in erigon: chain={chain} datadir={} pid={}",
        datadir.display(),
        std::process::id()
    ));
    eprintln!("stand-in erigon: this line goes to stderr");
    if behaviour.flag("log_flood") {
        flood_stdout(datadir.join("flood"));
    }
    schedule_exit(&behaviour);
    wait_for_stop_signal(&behaviour);
}

/// `log_flood`: while `<datadir>/flood` exists, writes log lines to stdout as fast
/// as the runtime takes them (a node syncing at full speed logs a lot); checked every
/// 64 KiB, so the flood can be turned on and off while the node runs. stdout is locked
/// for each chunk only: the main thread must still be able to say it got a stop signal
/// (held for good, the lock left a stopped node waiting on it, orphaned, for ever).
fn flood_stdout(toggle: std::path::PathBuf) {
    use std::io::Write;
    let line = format!("{:<99}\n", "stand-in erigon: a log line of the flood");
    let chunk = line.repeat((64 << 10) / line.len());
    std::thread::spawn(move || {
        let out = std::io::stdout();
        loop {
            if toggle.exists() {
                if out.lock().write_all(chunk.as_bytes()).is_err() {
                    return;
                }
            } else {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    });
}

fn listen(addr: &str) -> TcpListener {
    TcpListener::bind(addr).unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")))
}

fn fail_with(code: i32, message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(code);
}
