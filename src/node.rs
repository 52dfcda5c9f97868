//! The two node processes: `erigon` (the chain) and `rpcdaemon` (JSON-RPC over HTTP).
//!
//! Each child gets:
//! - its own process group, so signals aimed at the runtime's group (a terminal's
//!   Ctrl-C) reach the runtime, which then stops the node cleanly;
//! - `PR_SET_PDEATHSIG = SIGINT`, Erigon's clean-stop signal, so that a runtime killed
//!   by the ExeUnit (or crashing) takes its node down instead of orphaning it. The
//!   signal fires when the spawning *thread* exits, so children are spawned only from
//!   the main thread, which the runtime's current-thread executor keeps for its life;
//! - SIGPIPE ignored: its output is pumped by the runtime, and a node finishing its
//!   clean stop after the runtime died must not be killed by its next log line;
//! - only the environment it needs;
//! - the network lock's descriptor (see `netlock`).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::config::Config;
use crate::logging::RotatingLog;
use crate::network::{Network, Ports};

/// How long a node that failed to start gets for its clean stop before SIGKILL: a
/// failed start must leave no process, and a node minutes old has little to flush.
const ABORT_GRACE: Duration = Duration::from_secs(30);

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit(pub ExitStatus);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.code(), self.0.signal()) {
            (Some(code), _) => write!(f, "exited with status {code}"),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig).map_or("unknown", |s| s.as_str());
                write!(f, "was killed by signal {sig} ({name})")
            }
            _ => f.write_str("ended"),
        }
    }
}

/// One running child, reaped by its own task; its exit is published on a watch channel
/// so that any number of observers learn it without polling.
#[derive(Clone)]
pub struct Child {
    name: &'static str,
    pid: u32,
    log: PathBuf,
    exit: watch::Receiver<Option<Exit>>,
}

impl Child {
    fn spawn(
        name: &'static str,
        program: &Path,
        key: &str,
        args: &[String],
        log: RotatingLog,
        lock_fd: RawFd,
    ) -> Result<Self, String> {
        check_executable(program, key)?;
        log.banner(&format!(
            "starting {} {}",
            program.display(),
            args.join(" ")
        ));
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(child_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec and only makes raw syscalls
        // (prctl, getppid, signal, fcntl); it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT)?;
                // The runtime may have died between fork and prctl: then no signal comes.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("the runtime exited during spawn"));
                }
                nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn)?;
                nix::fcntl::fcntl(
                    lock_fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        let pid = child.id().unwrap_or_default();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, log.clone()));
        }
        let (tx, exit) = watch::channel(None);
        let log_path = log.path().to_path_buf();
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => {
                    log.banner(&format!("{name} (pid {pid}) {}", Exit(status)));
                    let _ = tx.send(Some(Exit(status)));
                }
                // Only if the pid was already reaped elsewhere; nothing to report then.
                Err(e) => log::error!("cannot wait for {name} (pid {pid}): {e}"),
            }
        });
        log::info!(
            "started {name}, pid {pid}, output in {}",
            log_path.display()
        );
        Ok(Self {
            name,
            pid,
            log: log_path,
            exit,
        })
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Resolves when the child has been reaped.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.clone();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The reaper task is gone without a status: it could not wait.
                return Exit(ExitStatus::from_raw(0xff00));
            }
        }
    }

    /// Signals the child's whole group, unless the child is already reaped (its pid
    /// may belong to someone else by then).
    fn signal(&self, signal: Signal) {
        if self.exited().is_none() {
            if let Err(e) = killpg(Pid::from_raw(self.pid as i32), signal) {
                log::warn!(
                    "cannot send {signal} to {} (pid {}): {e}",
                    self.name,
                    self.pid
                );
            }
        }
    }

    pub fn describe_exit(&self, exit: Exit) -> String {
        format!(
            "{} (pid {}) {exit}; its log is {}",
            self.name,
            self.pid,
            self.log.display()
        )
    }
}

async fn pump(mut from: impl AsyncRead + Unpin, to: RotatingLog) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        to.write(&buf[..n]);
    }
}

/// The whole environment the node binaries get, whoever runs them: PATH to find
/// helpers, HOME because Go's libraries look for it, TZ for log times.
pub fn child_env() -> Vec<(String, String)> {
    let mut env = vec![(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    )];
    for key in ["HOME", "TZ"] {
        if let Ok(value) = std::env::var(key) {
            env.push((key.to_string(), value));
        }
    }
    env
}

pub fn check_executable(program: &Path, key: &str) -> Result<(), String> {
    let meta = std::fs::metadata(program).map_err(|e| {
        format!(
            "{} not found ({e}); put it next to the runtime binary or set `{key}` in the configuration",
            program.display()
        )
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "{} is not an executable file; fix with: chmod +x {}",
            program.display(),
            program.display()
        ));
    }
    Ok(())
}

/// What stopping a node left behind.
#[derive(Debug, Default)]
pub struct StopReport {
    pub stopped: Vec<String>,
    pub left_running: Vec<String>,
}

/// A running erigon + rpcdaemon pair for one network.
pub struct Node {
    pub erigon: Child,
    pub rpcdaemon: Child,
    pub ports: Ports,
}

impl Node {
    /// Spawns erigon, waits for its private API (rpcdaemon exits at once without the
    /// files erigon writes on start-up), then spawns rpcdaemon. On failure nothing is
    /// left running.
    pub async fn start(
        config: &Config,
        network: &Network,
        lock_fd: RawFd,
        deadline: Instant,
    ) -> Result<Self, String> {
        let ports = Ports::for_network(network, config.port_base, config.http_port);
        let datadir = config.datadir(network);
        let logs = config.log_dir.join(network.name());
        let open_log = |name: &str| {
            RotatingLog::open(
                &logs.join(format!("{name}.log")),
                config.log_max_bytes,
                config.log_files,
            )
        };
        let erigon = Child::spawn(
            "erigon",
            &config.erigon_path,
            "erigon_path",
            &erigon_args(config, network, &datadir, &ports),
            open_log("erigon")?,
            lock_fd,
        )?;
        let private_api = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), ports.private_api);
        if let Err(e) = wait_for_listener(&erigon, private_api, deadline).await {
            abort(&[&erigon]).await;
            return Err(e);
        }
        let rpcdaemon = match open_log("rpcdaemon").and_then(|log| {
            Child::spawn(
                "rpcdaemon",
                &config.rpcdaemon_path,
                "rpcdaemon_path",
                &rpcdaemon_args(config, &datadir, &ports),
                log,
                lock_fd,
            )
        }) {
            Ok(child) => child,
            Err(e) => {
                abort(&[&erigon]).await;
                return Err(e);
            }
        };
        Ok(Self {
            erigon,
            rpcdaemon,
            ports,
        })
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
                Some(exit) => report.stopped.push(format!("{} {exit}", child.name)),
                None => report.left_running.push(format!(
                    "{} (pid {}) is still finishing its clean stop",
                    child.name, child.pid
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
                child.name,
                child.pid,
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
        let mut backoff = crate::health::Backoff::default();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            backoff.wait().await;
        }
    };
    tokio::select! {
        _ = probe => Ok(()),
        exit = child.wait() => Err(format!("{} during start", child.describe_exit(exit))),
        _ = tokio::time::sleep_until(deadline.into()) => Err(format!(
            "{} (pid {}) did not open its private API on {addr} before the ready timeout; its log is {}",
            child.name, child.pid, child.log.display()
        )),
    }
}

/// Flags the runtime sets on erigon for each network; configuration may not repeat
/// them (see `config`), because they carry the per-network isolation.
pub const ERIGON_FLAGS: [&str; 11] = [
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

/// Flags the runtime sets on rpcdaemon. `--ws` serves WebSocket upgrades on the HTTP
/// port; `--ws.port` set to the same port stops newer rpcdaemons from opening a second,
/// WebSocket-only listener on 8546, which would collide between networks.
pub const RPCDAEMON_FLAGS: [&str; 8] = [
    "--datadir",
    "--private.api.addr",
    "--http.addr",
    "--http.port",
    "--http.api",
    "--http.vhosts",
    "--ws",
    "--ws.port",
];

fn erigon_args(config: &Config, network: &Network, datadir: &Path, p: &Ports) -> Vec<String> {
    let values = [
        network.chain().to_string(),
        datadir.display().to_string(),
        "false".to_string(),
        p.p2p.to_string(),
        p.p2p_allowed(),
        p.torrent.to_string(),
        p.authrpc.to_string(),
        format!("127.0.0.1:{}", p.private_api),
        p.caplin_discovery.to_string(),
        p.caplin_tcp.to_string(),
        p.sentinel.to_string(),
    ];
    with_flags(&ERIGON_FLAGS, values, &config.erigon_args)
}

fn rpcdaemon_args(config: &Config, datadir: &Path, p: &Ports) -> Vec<String> {
    let values = [
        datadir.display().to_string(),
        format!("127.0.0.1:{}", p.private_api),
        config.http_addr.to_string(),
        p.http.to_string(),
        config.http_api.join(","),
        config.http_vhosts.join(","),
        "true".to_string(),
        p.http.to_string(),
    ];
    with_flags(&RPCDAEMON_FLAGS, values, &config.rpcdaemon_args)
}

/// `--flag=value`: urfave/cli reads `--http false` as a flag and a stray argument.
fn with_flags<const N: usize>(
    flags: &[&str; N],
    values: [String; N],
    extra: &[String],
) -> Vec<String> {
    flags
        .iter()
        .zip(values)
        .map(|(flag, value)| format!("{flag}={value}"))
        .chain(extra.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_descriptions_name_status_and_signal() {
        assert_eq!(
            Exit(ExitStatus::from_raw(3 << 8)).to_string(),
            "exited with status 3"
        );
        assert_eq!(
            Exit(ExitStatus::from_raw(9)).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn a_missing_or_non_executable_binary_says_how_to_fix_it() {
        let err = check_executable(Path::new("/nonexistent/erigon"), "erigon_path").unwrap_err();
        assert!(err.contains("set `erigon_path`"), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = check_executable(file.path(), "erigon_path").unwrap_err();
        assert!(err.contains("chmod +x"), "{err}");
    }
}
