//! Who issued an htpasswd entry or holds a network lock, told apart from any later
//! process that happens to get the same pid.
//!
//! A runtime killed with SIGKILL (as the ExeUnit does 5 s after Shutdown) cannot revoke
//! its credentials. The next start on the provider sweeps them: an entry whose owner is
//! on this machine and is not alive any more is removed. "Alive" compares the pid *and*
//! the process's start time, so a recycled pid neither keeps a stale entry nor removes a
//! live one; the boot id covers pids and start times repeating after a reboot. Entries
//! of other machines sharing the file are never judged.

use serde::{Deserialize, Serialize};

/// A process named by pid *and* start time, so a recycled pid is not mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// Clock ticks after boot, field 22 of `/proc/<pid>/stat`.
    pub start_ticks: u64,
}

impl ProcessIdentity {
    pub fn current() -> Option<Self> {
        Self::of(std::process::id())
    }

    pub fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses; fields resume after the last ')'.
        let (_, rest) = stat.rsplit_once(')')?;
        let start_ticks = rest.split_whitespace().nth(19)?.parse().ok()?;
        Some(Self { pid, start_ticks })
    }

    /// Alive and the same process (not a later one that got the pid). A zombie counts
    /// as gone: it holds nothing but its exit status.
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ticks = fields.nth(18).and_then(|t| t.parse::<u64>().ok());
        state != Some("Z") && ticks == Some(self.start_ticks)
    }
}

/// The owner of a credential: a runtime process on a machine, in one boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub machine: String,
    pub boot_id: String,
    #[serde(flatten)]
    pub process: ProcessIdentity,
}

impl Owner {
    /// This runtime.
    pub fn current() -> Result<Self, String> {
        Ok(Self {
            machine: machine_id()?,
            boot_id: boot_id()?,
            process: ProcessIdentity::current()
                .ok_or("cannot read this process's /proc/self/stat")?,
        })
    }

    /// True only when the owner certainly cannot revoke any more: it ran on this
    /// machine and is gone (another boot, or no live process with its identity).
    pub fn is_dead_here(&self, here: &Owner) -> bool {
        self.machine == here.machine && (self.boot_id != here.boot_id || !self.process.is_alive())
    }
}

fn machine_id() -> Result<String, String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .map(|h| h.to_string_lossy().into_owned())
        })
        .ok_or_else(|| "cannot identify this machine (no /etc/machine-id, no hostname)".into())
}

fn boot_id() -> Result<String, String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read the boot id: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tells_this_process_from_a_recycled_pid() {
        let me = ProcessIdentity::current().unwrap();
        assert!(me.is_alive());
        let impostor = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!impostor.is_alive());
        assert!(ProcessIdentity::of(u32::MAX).is_none());
    }

    #[test]
    fn only_a_dead_owner_on_this_machine_is_dead() {
        let here = Owner::current().unwrap();
        assert!(!here.is_dead_here(&here), "this runtime is alive");
        let recycled = Owner {
            process: ProcessIdentity {
                start_ticks: here.process.start_ticks + 1,
                ..here.process
            },
            ..here.clone()
        };
        assert!(recycled.is_dead_here(&here), "same pid, another process");
        let rebooted = Owner {
            boot_id: "another-boot".into(),
            ..here.clone()
        };
        assert!(rebooted.is_dead_here(&here));
        let elsewhere = Owner {
            machine: "another-host".into(),
            ..recycled
        };
        assert!(
            !elsewhere.is_dead_here(&here),
            "other machines are never judged"
        );
    }
}
