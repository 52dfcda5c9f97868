//! One node process, spawned so that it cannot outlive the runtime by accident.
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
//! - its stdout and stderr on pipes of the runtime's own, each read by a thread of its
//!   own that writes (and rotates) the log file. The runtime's executor serves the
//!   activity's calls; a node logging as fast as it can, or a slow disk, must not
//!   stall them. A full pipe slows the node's logging instead, as a slow log file
//!   would if the node wrote it itself;
//! - only the environment it needs;
//! - the network lock's descriptor (see `node::lock`).

use std::io::Read;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::logging::RotatingLog;

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

/// What to run, and where its output and the inherited lock go.
pub struct Command<'a> {
    pub name: &'static str,
    pub program: &'a Path,
    /// The configuration key that sets `program`, for the error that names the fix.
    pub key: &'a str,
    pub args: Vec<String>,
    pub log: RotatingLog,
    pub lock_fd: RawFd,
}

/// One running child, reaped by its own task; its exit is published on a watch channel
/// so that any number of observers learn it without polling.
#[derive(Clone)]
pub struct Child {
    name: &'static str,
    /// Always a real child's pid (never 0 or negative): `killpg` of 0 would signal the
    /// runtime's own group.
    pid: Pid,
    log: PathBuf,
    exit: watch::Receiver<Option<Exit>>,
}

impl Child {
    // pre_exec is unsafe, and the only way to set PDEATHSIG and the inherited lock in
    // the child itself, between fork and exec (SAFETY note below).
    #[allow(unsafe_code)]
    pub fn spawn(spec: Command<'_>) -> Result<Self, String> {
        let Command {
            name,
            program,
            key,
            args,
            log,
            lock_fd,
        } = spec;
        check_executable(program, key)?;
        log.banner(&format!(
            "starting {} {}",
            program.display(),
            args.join(" ")
        ));
        let (out_read, out_write) = log_pipe(name)?;
        let (err_read, err_write) = log_pipe(name)?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&args)
            .env_clear()
            .envs(child_env())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_write))
            .stderr(Stdio::from(err_write))
            .process_group(0)
            .kill_on_drop(false);
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec and only makes raw syscalls
        // (prctl, getppid, signal, fcntl); errors are errno values, so it allocates
        // nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT)?;
                // The runtime may have died between fork and prctl: then no signal comes.
                if nix::unistd::getppid() != parent {
                    return Err(nix::errno::Errno::ESRCH.into());
                }
                nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn)?;
                nix::fcntl::fcntl(
                    lock_fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        // The command holds the pipes' write ends: once they are closed here, the
        // pumps read the end of the output when the child exits.
        drop(cmd);
        let mut child =
            spawned.map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        let Some(pid) = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .map(Pid::from_raw)
        else {
            let _ = child.start_kill();
            return Err(format!(
                "{name} ({}) started without a usable pid",
                program.display()
            ));
        };
        pump(name, out_read, log.clone());
        pump(name, err_read, log.clone());
        let (tx, exit) = watch::channel(None);
        let log_path = log.path().to_path_buf();
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => {
                    // Written off the executor, and before the exit is told, so
                    // that whoever learns of the exit finds it in the log.
                    let line = format!("{name} (pid {pid}) {}", Exit(status));
                    let _ = tokio::task::spawn_blocking(move || log.banner(&line)).await;
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

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn pid(&self) -> Pid {
        self.pid
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
    pub fn signal(&self, signal: Signal) {
        if self.exited().is_none() {
            if let Err(e) = killpg(self.pid, signal) {
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

/// A pipe for a child's output: the read end stays with the runtime, the write end
/// goes to the child; neither leaks into other children (close-on-exec; the spawn
/// duplicates the write end onto the child's stdout or stderr).
fn log_pipe(name: &str) -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot make a pipe for {name}'s output: {e}"))
}

/// How much of a child's output a pump reads at once.
const PUMP_BUFFER: usize = 16 << 10;

/// Copies a child's output into its log on a thread of its own until the child and
/// every holder of the write end are gone. Should the thread not start, the pipe is
/// closed: the child's writes then fail (it ignores SIGPIPE) and its output is lost,
/// which the runtime's log says.
fn pump(name: &'static str, from: OwnedFd, to: RotatingLog) {
    // Allocated here, so that the thread itself allocates nothing (and gets no malloc
    // arena of its own).
    let mut buf = vec![0u8; PUMP_BUFFER];
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-log"))
        .stack_size(64 << 10)
        .spawn(move || {
            let mut from = std::fs::File::from(from);
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => to.write(buf.get(..n).unwrap_or_default()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the thread that writes {name}'s output to its log ({e}); that output is lost");
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
