//! A network's node: `erigon` (the chain) and `rpcdaemon` (JSON-RPC over HTTP and
//! WebSocket), started in order, watched, and stopped with Erigon's clean signal.
//!
//! The configuration builds a [`NodeSpec`] (see `node::spec`, which knows Erigon's flags);
//! this module knows the start-up order, and nothing about the configuration file.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::cancel::Cancel;
use crate::node::backoff::Backoff;
use crate::node::child::{Child, Command};
use crate::node::health::{self, JsonRpc};
use crate::node::network::Network;
use crate::node::spec::NodeSpec;
use crate::node::upstream::Upstream;

/// How long a node that failed to start gets for its clean stop before SIGKILL: a
/// failed start must leave no process, and a node minutes old has little to flush.
const ABORT_GRACE: Duration = Duration::from_secs(30);

/// `--version` and `--help` answer at once; a binary that hangs is broken.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What stopping a node left behind.
#[derive(Debug, Default)]
pub struct StopReport {
    pub stopped: Vec<String>,
    pub left_running: Vec<String>,
}

/// A running erigon + rpcdaemon pair for one network.
pub struct Node {
    erigon: Child,
    rpcdaemon: Child,
}

impl Node {
    /// Spawns erigon, waits for its private API (rpcdaemon exits at once without the
    /// files erigon writes on start-up), spawns rpcdaemon and waits until it answers
    /// `eth_chainId` for the right chain. Returns the node and the chain id it
    /// answered. On failure, or when `cancel` asks to stop first, nothing is left
    /// running.
    pub async fn start(
        spec: &NodeSpec,
        lock_fd: RawFd,
        deadline: Instant,
        cancel: &Cancel,
    ) -> Result<(Self, String), String> {
        let erigon = Child::spawn(Command {
            name: "erigon",
            program: spec.erigon(),
            key: "erigon_path",
            args: spec.erigon_command(),
            log: spec.open_log("erigon")?,
            lock_fd,
        })?;
        let listening = cancel.unless(
            "waiting for erigon",
            wait_for_listener(&erigon, spec.private_api(), deadline),
        );
        if let Err(e) = listening.await {
            abort(&[&erigon]).await;
            return Err(e);
        }
        let rpcdaemon = match spec.open_log("rpcdaemon").and_then(|log| {
            Child::spawn(Command {
                name: "rpcdaemon",
                program: spec.rpcdaemon(),
                key: "rpcdaemon_path",
                args: spec.rpcdaemon_command(),
                log,
                lock_fd,
            })
        }) {
            Ok(child) => child,
            Err(e) => {
                abort(&[&erigon]).await;
                return Err(e);
            }
        };
        let node = Self { erigon, rpcdaemon };
        let rpc = JsonRpc::new(Arc::new(Upstream::local(spec.rpc())));
        let waiting = node.wait_ready(&rpc, spec.network(), deadline);
        let ready = cancel.unless("waiting for rpcdaemon", waiting).await;
        match ready {
            Ok(chain_id) => Ok((node, chain_id)),
            Err(e) => {
                node.abort().await;
                Err(e)
            }
        }
    }

    /// Waits until rpcdaemon answers `eth_chainId` for the right chain while both
    /// children live; fails naming the child that exited, or the timeout.
    async fn wait_ready(
        &self,
        rpc: &JsonRpc,
        network: &Network,
        deadline: Instant,
    ) -> Result<String, String> {
        let last_error = std::cell::RefCell::new(String::from("no answer yet"));
        tokio::select! {
            id = health::poll_chain_id(rpc, &last_error) => {
                let id = id?;
                health::check_chain(&id, network).map(|()| id)
            }
            failure = self.watch() => Err(format!("{failure} during start")),
            _ = tokio::time::sleep_until(deadline.into()) => Err(format!(
                "rpcdaemon did not answer JSON-RPC at {} before the ready timeout (last: {}); logs: {} and {}",
                rpc.url(),
                last_error.borrow(),
                self.erigon.log().display(),
                self.rpcdaemon.log().display()
            )),
        }
    }

    /// The first child that has exited, described for the requestor and the log.
    pub fn failure(&self) -> Option<String> {
        [&self.erigon, &self.rpcdaemon]
            .into_iter()
            .find_map(|c| c.exited().map(|exit| c.describe_exit(exit)))
    }

    /// Resolves when either child exits, with its description.
    pub fn watch(&self) -> impl std::future::Future<Output = String> + 'static {
        let erigon = self.erigon.clone();
        let rpcdaemon = self.rpcdaemon.clone();
        async move {
            tokio::select! {
                exit = erigon.wait() => erigon.describe_exit(exit),
                exit = rpcdaemon.wait() => rpcdaemon.describe_exit(exit),
            }
        }
    }

    /// SIGINT to both, then waits up to `timeout`. A node still finishing its clean
    /// stop is left to finish: SIGKILL could damage its database.
    pub async fn stop(&self, timeout: Duration) -> StopReport {
        let children = [&self.erigon, &self.rpcdaemon];
        for child in children {
            child.signal(Signal::SIGINT);
        }
        let _ = tokio::time::timeout(
            timeout,
            futures::future::join(self.erigon.wait(), self.rpcdaemon.wait()),
        )
        .await;
        let mut report = StopReport::default();
        for child in children {
            match child.exited() {
                Some(exit) => report.stopped.push(format!("{} {exit}", child.name())),
                None => report.left_running.push(format!(
                    "{} (pid {}) is still finishing its clean stop",
                    child.name(),
                    child.pid()
                )),
            }
        }
        report
    }

    /// For a start that failed: the node must not survive it.
    pub async fn abort(&self) {
        abort(&[&self.erigon, &self.rpcdaemon]).await;
    }
}

async fn abort(children: &[&Child]) {
    for child in children {
        child.signal(Signal::SIGINT);
    }
    for child in children {
        if tokio::time::timeout(ABORT_GRACE, child.wait())
            .await
            .is_err()
        {
            log::warn!(
                "{} (pid {}) ignored SIGINT for {} s after a failed start; sending SIGKILL",
                child.name(),
                child.pid(),
                ABORT_GRACE.as_secs()
            );
            child.signal(Signal::SIGKILL);
            child.wait().await;
        }
    }
}

/// Polls a loopback TCP port until it accepts, the child exits, or the deadline passes.
async fn wait_for_listener(
    child: &Child,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<(), String> {
    let probe = async {
        let mut backoff = Backoff::default();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            backoff.wait().await;
        }
    };
    tokio::select! {
        _ = probe => Ok(()),
        exit = child.wait() => Err(format!("{} during start", child.describe_exit(exit))),
        _ = tokio::time::sleep_until(deadline.into()) => Err(format!(
            "{} (pid {}) did not open its private API on {addr} before the ready timeout; its log is {}",
            child.name(), child.pid(), child.log().display()
        )),
    }
}

/// `erigon version 3.0.17-7d3cab29` → `3.0.17-7d3cab29`.
pub async fn erigon_version(erigon: &Path) -> Result<String, String> {
    let out = run_once(erigon, "--version").await?;
    out.lines()
        .find_map(|l| l.split_once(" version ").map(|(_, v)| v.trim().to_owned()))
        .ok_or_else(|| format!("{} --version printed no version: {out:?}", erigon.display()))
}

/// Both binaries are there, executable, and run: `erigon --version` names a version
/// and `rpcdaemon --help` (it has no --version) succeeds. Returns erigon's version.
pub async fn check_binaries(erigon: &Path, rpcdaemon: &Path) -> Result<String, String> {
    for (path, key) in [(erigon, "erigon_path"), (rpcdaemon, "rpcdaemon_path")] {
        crate::node::child::check_executable(path, key)?;
    }
    let version = erigon_version(erigon).await.map_err(|e| {
        format!(
            "{e}; put an Erigon 3 release binary at {}",
            erigon.display()
        )
    })?;
    run_once(rpcdaemon, "--help").await.map_err(|e| {
        format!(
            "{e}; put the rpcdaemon of the same Erigon release at {}",
            rpcdaemon.display()
        )
    })?;
    Ok(version)
}

async fn run_once(program: &Path, arg: &str) -> Result<String, String> {
    let child = tokio::process::Command::new(program)
        .arg(arg)
        .env_clear()
        .envs(crate::node::child::child_env())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PROBE_TIMEOUT, child)
        .await
        .map_err(|_| {
            format!(
                "{} {arg} did not finish in {} s",
                program.display(),
                PROBE_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot run {} {arg}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {arg} exited with {}: {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
