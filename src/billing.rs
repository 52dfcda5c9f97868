//! Per-request billing: how many requests this activity's credentials got through.
//!
//! nginx writes one short line per request to `<data_dir>/nginx/requests.log`
//! (`$remote_user $status $erigon_network`, see `conf/nginx/`). Each runtime tails it
//! from where the file ended when its activity started, so a poll costs the bytes added
//! since the last poll, never the log's total size. A line counts when its user is this
//! activity's and its status is not 401: `$remote_user` is logged for wrong passwords
//! too, and those must not be billed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ya_runtime_sdk::{EventEmitter, RuntimeCounter};

/// The usage counter, declared in the plugin descriptor and priced in the preset.
pub const COUNTER: &str = "golem.usage.erigon.requests";

pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("nginx").join("requests.log")
}

pub struct RequestLog {
    path: PathBuf,
    inode: u64,
    offset: u64,
    partial: Vec<u8>,
}

impl RequestLog {
    /// Starts at the current end of the log: earlier lines belong to earlier activities.
    pub fn open_at_end(path: PathBuf) -> Self {
        let (inode, offset) = std::fs::metadata(&path).map_or((0, 0), |m| (m.ino(), m.len()));
        Self {
            path,
            inode,
            offset,
            partial: Vec::new(),
        }
    }

    /// Counts the lines of `user` added since the last call. A rotated log (another
    /// inode, or a shorter file) is read from its start.
    pub fn count_new(&mut self, user: &str) -> u64 {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return 0;
        };
        if meta.ino() != self.inode || meta.len() < self.offset {
            self.inode = meta.ino();
            self.offset = 0;
            self.partial.clear();
        }
        if meta.len() == self.offset {
            return 0;
        }
        let mut added = Vec::new();
        let read = File::open(&self.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(self.offset))?;
            f.take(meta.len().saturating_sub(self.offset))
                .read_to_end(&mut added)
        });
        if read.is_err() {
            return 0;
        }
        self.offset = self
            .offset
            .saturating_add(u64::try_from(added.len()).unwrap_or(u64::MAX));
        self.partial.extend_from_slice(&added);
        // Only complete lines; a line nginx is still writing waits for the next poll.
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return 0;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&complete)
            .lines()
            .filter(|line| counts(line, user))
            .count() as u64
    }
}

/// Emits the activity's cumulative request count every second as the usage counter
/// the descriptor declares; the ExeUnit keeps the last value.
pub fn spawn_counter(
    mut emitter: EventEmitter,
    mut log: RequestLog,
    user: String,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let mut total = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            total = total.saturating_add(log.count_new(&user));
            emitter
                .counter(RuntimeCounter {
                    name: COUNTER.to_owned(),
                    value: total as f64,
                })
                .await;
        }
    })
}

/// `<user> <status> …`: this user's request, and not a failed authentication.
pub fn counts(line: &str, user: &str) -> bool {
    let mut fields = line.split(' ');
    fields.next() == Some(user) && fields.next().is_some_and(|status| status != "401")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn counts_only_this_users_authenticated_requests() {
        assert!(counts("dev-abc 200 dev", "dev-abc"));
        assert!(
            counts("dev-abc 502 dev", "dev-abc"),
            "served, even if the node failed"
        );
        assert!(
            !counts("dev-abc 401 dev", "dev-abc"),
            "a wrong password is not billed"
        );
        assert!(!counts("dev-abcd 200 dev", "dev-abc"));
        assert!(!counts("- 401 dev", "dev-abc"));
    }

    #[test]
    fn tails_from_the_end_across_partial_lines_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.log");
        std::fs::write(&path, "u 200 dev\nu 200 dev\n").unwrap();
        let mut log = RequestLog::open_at_end(path.clone());
        assert_eq!(
            log.count_new("u"),
            0,
            "earlier lines are not this activity's"
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"u 200 dev\nv 200 dev\nu 401 dev\nu 20")
            .unwrap();
        assert_eq!(log.count_new("u"), 1, "the half-written line waits");
        f.write_all(b"0 dev\n").unwrap();
        assert_eq!(log.count_new("u"), 1);
        // logrotate moves the file away and nginx reopens a new one.
        std::fs::rename(&path, dir.path().join("requests.log.1")).unwrap();
        std::fs::write(&path, "u 200 dev\n").unwrap();
        assert_eq!(log.count_new("u"), 1);
        assert_eq!(log.count_new("u"), 0);
    }
}
