//! Shared parts of the stand-in `erigon` and `rpcdaemon` the test suite builds.
//!
//! Stand-ins, not mocks of the runtime: they are separate executables found next to the
//! runtime binary exactly like the real ones. They accept only the flags the real
//! binaries would get from the runtime (in `--flag=value` form), refuse anything else the
//! way urfave/cli and cobra do, record their arguments and environment in the datadir,
//! and read `<datadir>/standin.json` to be told to misbehave.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

/// Parses `--flag=value` arguments: every flag must be in `allowed`, appear once, and
/// every flag in `required` must be present. Exits 1 like the real CLI libraries.
pub fn parse_flags(name: &str, allowed: &[&str], required: &[&str]) -> BTreeMap<String, String> {
    let mut flags = BTreeMap::new();
    for arg in std::env::args().skip(1) {
        if arg == "--version" && name == "erigon" {
            say(&format!("{name} version 3.1.0-standin-7d3cab29"));
            std::process::exit(0);
        }
        if arg == "--help" {
            say(&format!("{name} stand-in; flags: {}", allowed.join(" ")));
            std::process::exit(0);
        }
        let Some((flag, value)) = arg.split_once('=') else {
            fail(&format!(
                "{name} stand-in: argument {arg:?} is not in --flag=value form"
            ));
        };
        if !allowed.contains(&flag) {
            fail(&format!("flag provided but not defined: {flag}"));
        }
        if flags.insert(flag.to_string(), value.to_string()).is_some() {
            fail(&format!("{name} stand-in: {flag} given twice"));
        }
    }
    for flag in required {
        if !flags.contains_key(*flag) {
            fail(&format!("{name} stand-in: required flag {flag} missing"));
        }
    }
    flags
}

pub fn port(flags: &BTreeMap<String, String>, flag: &str) -> u16 {
    flags[flag]
        .parse()
        .unwrap_or_else(|_| fail(&format!("invalid value {:?} for {flag}", flags[flag])))
}

/// What `<datadir>/standin.json` says this stand-in (`erigon` or `rpcdaemon`) should do.
pub struct Behaviour(Value);

impl Behaviour {
    pub fn load(datadir: &Path, name: &str) -> Self {
        let file = datadir.join("standin.json");
        let all: Value = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        Self(all.get(name).cloned().unwrap_or(Value::Null))
    }

    pub fn flag(&self, key: &str) -> bool {
        self.0.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    pub fn number(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(Value::as_u64)
    }
}

/// Writes `<datadir>/standin-<name>.json` with pid, arguments and environment.
pub fn record(datadir: &Path, name: &str) {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let record = json!({"pid": std::process::id(), "args": args, "env": env});
    let path = datadir.join(format!("standin-{name}.json"));
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, record.to_string())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .is_err()
    {
        fail(&format!("cannot write {}", path.display()));
    }
}

/// Applies `exit_after_ms`/`exit_code`: the process dies on its own, as a crash would.
pub fn schedule_exit(behaviour: &Behaviour) {
    if let Some(ms) = behaviour.number("exit_after_ms") {
        let code = behaviour.number("exit_code").unwrap_or(1) as i32;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            say(&format!("stand-in exiting by request with status {code}"));
            std::process::exit(code);
        });
    }
}

/// Blocks until SIGINT or SIGTERM, then (after `stop_delay_ms`) exits 0. With
/// `ignore_sigint` the stand-in logs each signal and carries on, like a hung node.
pub fn wait_for_stop_signal(behaviour: &Behaviour) -> ! {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .unwrap_or_else(|e| fail(&format!("cannot listen for signals: {e}")));
    for signal in signals.forever() {
        if behaviour.flag("ignore_sigint") {
            say(&format!("stand-in ignoring signal {signal}"));
            continue;
        }
        say("Got interrupt, shutting down...");
        if let Some(ms) = behaviour.number("stop_delay_ms") {
            std::thread::sleep(Duration::from_millis(ms));
        }
        say("stand-in stopped cleanly");
        std::process::exit(0);
    }
    std::process::exit(0);
}

/// Logging that never panics on a closed pipe (the runtime may be gone).
pub fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

pub fn fail(message: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "{message}");
    std::process::exit(1);
}

pub fn datadir(flags: &BTreeMap<String, String>) -> PathBuf {
    let dir = PathBuf::from(&flags["--datadir"]);
    if !dir.is_dir() {
        fail(&format!("datadir {} does not exist", dir.display()));
    }
    dir
}

/// eth_chainId of the chains Erigon knows, as the stand-in rpcdaemon reports them.
pub fn chain_id(chain: &str) -> Option<u64> {
    Some(match chain {
        "mainnet" => 1,
        "sepolia" => 11_155_111,
        "hoodi" => 560_048,
        "holesky" => 17_000,
        "gnosis" => 100,
        "chiado" => 10_200,
        "dev" => 1337,
        _ => return None,
    })
}
