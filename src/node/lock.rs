//! One node per network: an flock on `<data_dir>/<network>.lock`.
//!
//! The runtime takes the lock and its children inherit the locked descriptor. flock
//! belongs to the open file, not the process, so the lock stays held while *any* of
//! them lives: a node still finishing its clean stop after its runtime was killed keeps
//! the network busy, and the next start waits for it instead of racing it for the
//! datadir. The file also records who holds it, so a busy network is refused at once
//! while a stopping one is waited for.

use std::fs::{File, OpenOptions};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::node::network::Network;
use crate::owner::ProcessIdentity;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HolderState {
    Running,
    Stopping,
}

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    activity: String,
    runtime: ProcessIdentity,
    state: HolderState,
    since: String,
}

pub struct NetworkLock {
    /// Never dropped as a `Flock`: its drop calls LOCK_UN, which would release the lock
    /// for the children's inherited copies too. [`Drop`] closes only our descriptor.
    file: ManuallyDrop<Flock<File>>,
    holder: Holder,
}

impl Drop for NetworkLock {
    /// The lock is released when the last holder (this runtime or a child still
    /// finishing its stop) closes the file.
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.file.as_raw_fd());
    }
}

impl NetworkLock {
    pub fn path_for(data_dir: &Path, network: &Network) -> PathBuf {
        data_dir.join(format!("{network}.lock"))
    }

    /// Takes the lock by `deadline`. Refuses at once if a live activity runs a node on
    /// the network; waits while the previous node is stopping.
    pub async fn acquire(
        path: &Path,
        network: &Network,
        activity: &str,
        deadline: Instant,
    ) -> Result<Self, String> {
        let shown = path.display();
        let runtime = ProcessIdentity::current()
            .ok_or_else(|| "cannot read this process's /proc/self/stat".to_string())?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| format!("cannot open lock file {shown}: {e}"))?;
        let waited_from = Instant::now();
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => {
                    let mut lock = Self {
                        file: ManuallyDrop::new(locked),
                        holder: Holder {
                            activity: activity.to_owned(),
                            runtime,
                            state: HolderState::Running,
                            since: now(),
                        },
                    };
                    lock.record()?;
                    return Ok(lock);
                }
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    file = f;
                    let holder = read_holder(&file);
                    if let Some(h) = &holder {
                        if h.state == HolderState::Running && h.runtime.is_alive() {
                            return Err(format!(
                                "network {network} is busy: activity {} (runtime pid {}) has run a node on it since {}; a provider runs one node per network",
                                h.activity, h.runtime.pid, h.since
                            ));
                        }
                    }
                    if Instant::now() >= deadline {
                        let who = holder.map_or_else(
                            || "its previous node".to_string(),
                            |h| format!("the node of activity {}", h.activity),
                        );
                        return Err(format!(
                            "network {network}: {who} is still stopping after {} s (it holds {shown}); try again later",
                            waited_from.elapsed().as_secs()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((_, e)) => return Err(format!("cannot lock {shown}: {e}")),
            }
        }
    }

    /// From now on a start that finds the lock held waits instead of refusing.
    pub fn mark_stopping(&mut self) {
        self.holder.state = HolderState::Stopping;
        if let Err(e) = self.record() {
            log::warn!("{e}");
        }
    }

    /// The descriptor children inherit so that they hold the lock too.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn record(&mut self) -> Result<(), String> {
        let text = serde_json::to_vec(&self.holder).unwrap_or_default();
        self.file
            .set_len(0)
            .and_then(|_| self.file.write_all_at(&text, 0))
            .map_err(|e| format!("cannot record the lock holder: {e}"))
    }
}

fn read_holder(file: &File) -> Option<Holder> {
    let mut buf = vec![0u8; 4096];
    let n = file.read_at(&mut buf, 0).ok()?;
    serde_json::from_slice(buf.get(..n)?).ok()
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::network::test_network;

    fn dev_lock() -> (tempfile::TempDir, Network, PathBuf, Instant) {
        let dir = tempfile::tempdir().unwrap();
        let net = test_network("dev", 0);
        let path = dir.path().join("dev.lock");
        (dir, net, path, Instant::now() + Duration::from_secs(60))
    }

    #[tokio::test]
    async fn a_live_holder_is_refused_at_once() {
        let (_dir, net, path, far) = dev_lock();
        let mut first = NetworkLock::acquire(&path, &net, "a1", far).await.unwrap();
        let started = Instant::now();
        let err = NetworkLock::acquire(&path, &net, "a2", far)
            .await
            .err()
            .unwrap();
        assert!(err.contains("busy: activity a1"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        first.mark_stopping();
        let soon = Instant::now() + Duration::from_millis(300);
        let err = NetworkLock::acquire(&path, &net, "a3", soon)
            .await
            .err()
            .unwrap();
        assert!(err.contains("still stopping"), "{err}");
        drop(first);
        NetworkLock::acquire(&path, &net, "a4", soon).await.unwrap();
    }

    #[tokio::test]
    // pre_exec is unsafe: this child must inherit the lock as the node's children do.
    #[allow(unsafe_code)]
    async fn a_child_holding_the_inherited_descriptor_keeps_the_network_locked() {
        let (_dir, net, path, far) = dev_lock();
        let mut lock = NetworkLock::acquire(&path, &net, "a1", far).await.unwrap();
        lock.mark_stopping();
        let fd = lock.raw_fd();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: fcntl only, between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        drop(lock);
        let soon = Instant::now() + Duration::from_millis(300);
        let err = NetworkLock::acquire(&path, &net, "a2", soon).await.err();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(err.unwrap().contains("still stopping"));
        NetworkLock::acquire(&path, &net, "a3", soon).await.unwrap();
    }
}
