//! The htpasswd file nginx checks on every request, shared by every activity, and its
//! `<file>.owners` record of which runtime issued which entry.
//!
//! nginx re-reads the file per request, so it must never see a half-written file:
//! each change is written to a sibling temp file and renamed over the original. The
//! rename replaces the inode, so the exclusive lock lives on a separate, stable
//! `<file>.lock`; locking the data file itself would not exclude a writer that opened
//! the new inode. Lines the runtime does not own (comments, other tools' entries, CRLF
//! endings) are carried over byte for byte.
//!
//! The owners file lets the next start sweep the entries of a runtime that died without
//! revoking (see `owner`). On add it is written before the entry and on remove after
//! it, so a crash between the two leaves at worst an owner record without an entry,
//! never an entry nobody will sweep.
//!
//! Every call here blocks: on the lock, which another runtime may hold, and on fsync.
//! The runtime makes them from tokio's blocking pool (see `credentials` and `session`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::owner::Owner;

/// New password files: owner read/write, group (nginx's) read, nothing for others.
const NEW_FILE_MODE: u32 = 0o640;
/// The owners file is the runtime's alone.
const OWNERS_MODE: u32 = 0o600;
const LOCK_WAIT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
struct OwnerRecord {
    user: String,
    #[serde(flatten)]
    owner: Owner,
}

#[derive(Clone, Debug)]
pub struct HtpasswdFile {
    path: PathBuf,
}

impl HtpasswdFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `user:hash` owned by `owner` and returns true, or returns false and changes
    /// nothing if `user` is already present, so a collision can never hand one activity
    /// another's entry.
    pub fn add(&self, user: &str, hash: &str, owner: &Owner) -> Result<bool, String> {
        self.locked(|| {
            let mut lines = read_lines(&self.path)?;
            if lines.iter().any(|l| entry_user(l) == Some(user)) {
                return Ok(false);
            }
            let mut owners = read_lines(&self.owners_path())?;
            owners.retain(|l| record_user(l).as_deref() != Some(user));
            let record = OwnerRecord {
                user: user.to_owned(),
                owner: owner.clone(),
            };
            owners.push(serde_json::to_string(&record).map_err(|e| e.to_string())?);
            write_lines(&self.owners_path(), &owners, OWNERS_MODE)?;
            lines.push(format!("{user}:{hash}"));
            write_lines(&self.path, &lines, NEW_FILE_MODE)?;
            Ok(true)
        })
    }

    /// Removes every entry of `user` and its owner record; returns how many entries.
    pub fn remove(&self, user: &str) -> Result<usize, String> {
        self.locked(|| {
            let removed = self.remove_users(&[user])?;
            Ok(removed)
        })
    }

    /// Removes the entries whose owner ran on this machine and is gone; returns their
    /// users. Entries without an owner record (the operator's, other tools') and those
    /// of other machines are never touched.
    pub fn sweep(&self, here: &Owner) -> Result<Vec<String>, String> {
        if !self.owners_path().exists() {
            return Ok(vec![]);
        }
        self.locked(|| {
            let dead: Vec<String> = read_lines(&self.owners_path())?
                .iter()
                .filter_map(|l| serde_json::from_str::<OwnerRecord>(l).ok())
                .filter(|r| r.owner.is_dead_here(here))
                .map(|r| r.user)
                .collect();
            if !dead.is_empty() {
                let users: Vec<&str> = dead.iter().map(String::as_str).collect();
                self.remove_users(&users)?;
            }
            Ok(dead)
        })
    }

    /// Creates the file empty if it is missing: nginx answers 403 instead of 401 for
    /// credentials checked against a file that does not exist.
    pub fn ensure_exists(&self) -> Result<(), String> {
        if self.path.exists() {
            return Ok(());
        }
        self.locked(|| {
            if !self.path.exists() {
                write_lines(&self.path, &[], NEW_FILE_MODE)?;
            }
            Ok(())
        })
    }

    /// Whether `user` has an entry now (read without the lock: renames are atomic).
    pub fn contains(&self, user: &str) -> Result<bool, String> {
        Ok(read_lines(&self.path)?
            .iter()
            .any(|l| entry_user(l) == Some(user)))
    }

    /// Entry first, then owner record (see the module docs). Call under the lock.
    fn remove_users(&self, users: &[&str]) -> Result<usize, String> {
        let mut lines = read_lines(&self.path)?;
        let before = lines.len();
        lines.retain(|l| !entry_user(l).is_some_and(|u| users.contains(&u)));
        let removed = before - lines.len();
        if removed > 0 {
            write_lines(&self.path, &lines, NEW_FILE_MODE)?;
        }
        let mut owners = read_lines(&self.owners_path())?;
        let before = owners.len();
        owners.retain(|l| !record_user(l).is_some_and(|u| users.contains(&u.as_str())));
        if owners.len() != before {
            write_lines(&self.owners_path(), &owners, OWNERS_MODE)?;
        }
        Ok(removed)
    }

    fn locked<T>(&self, work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
        let dir = self
            .path
            .parent()
            .ok_or_else(|| format!("password file {} has no folder", self.path.display()))?;
        if !dir.is_dir() {
            return Err(format!(
                "password file {}: folder {} does not exist (deploy creates it)",
                self.path.display(),
                dir.display()
            ));
        }
        let _lock = lock(&self.sibling("lock"))?;
        work()
    }

    fn owners_path(&self) -> PathBuf {
        self.sibling("owners")
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".");
        name.push(suffix);
        self.path.with_file_name(name)
    }
}

/// Atomically replaces `path` with `lines`: a sibling temp file, fsynced, renamed over,
/// and the folder fsynced. An existing file keeps its mode and group (what the operator
/// set up for nginx); a read-only one is refused rather than silently replaced.
fn write_lines(path: &Path, lines: &[String], new_mode: u32) -> Result<(), String> {
    let shown = path.display();
    let dir = path.parent().unwrap_or(Path::new("/"));
    let old = std::fs::metadata(path).ok();
    if let Some(meta) = &old {
        if meta.mode() & 0o200 == 0 {
            return Err(format!(
                "password file {shown} is read-only (mode {:o}); the runtime will not replace it. Make it writable: chmod u+w {shown}",
                meta.mode() & 0o7777
            ));
        }
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".htpasswd.")
        .tempfile_in(dir)
        .map_err(|e| format!("password file {shown}: cannot create a temp file: {e}"))?;
    let mut text = lines.join("\n");
    // Every line ends in a newline, a blank one too (a file of one blank line is "\n").
    if !lines.is_empty() {
        text.push('\n');
    }
    let file = tmp.as_file_mut();
    let mode = old.as_ref().map_or(new_mode, |m| m.mode() & 0o7777);
    // In a setgid folder (the recommended set-up) the new file has the group already,
    // and a provider user outside nginx's group could not set it.
    let new_gid = file
        .metadata()
        .map_err(|e| format!("password file {shown}: {e}"))?
        .gid();
    if let Some(meta) = old.as_ref().filter(|m| m.gid() != new_gid) {
        nix::unistd::fchown(
            std::os::fd::AsRawFd::as_raw_fd(file),
            None,
            Some(nix::unistd::Gid::from_raw(meta.gid())),
        )
        .map_err(|e| {
            format!(
                "password file {shown}: cannot keep its group {} on the new file: {e}",
                meta.gid()
            )
        })?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("password file {shown}: cannot write (left as it was): {e}"))?;
    tmp.persist(path).map_err(|e| {
        format!(
            "password file {shown}: cannot replace (left as it was): {}",
            e.error
        )
    })?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("password file {shown}: cannot sync its folder: {e}"))
}

/// Waits up to [`LOCK_WAIT`] for the exclusive lock; holders keep it for milliseconds.
fn lock(path: &Path) -> Result<Flock<File>, String> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(OWNERS_MODE)
        .open(path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    let deadline = Instant::now() + LOCK_WAIT;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, e)) => {
                return Err(format!(
                    "cannot lock {} within {} s: {e}",
                    path.display(),
                    LOCK_WAIT.as_secs()
                ))
            }
        }
    }
}

/// Lines without their `\n`; a `\r` before it stays part of the line, so CRLF files
/// keep their endings on lines we do not touch.
fn read_lines(path: &Path) -> Result<Vec<String>, String> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => f
            .read_to_string(&mut text)
            .map_err(|e| format!("password file {}: cannot read: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            return Err(format!(
                "password file {}: cannot read: {e}",
                path.display()
            ))
        }
    };
    if text.is_empty() {
        return Ok(vec![]);
    }
    let body = text.strip_suffix('\n').unwrap_or(&text);
    Ok(body.split('\n').map(str::to_owned).collect())
}

/// The user an htpasswd line grants, or `None` for comments and blank lines.
pub fn entry_user(line: &str) -> Option<&str> {
    let line = line.trim_end_matches('\r');
    if line.trim_start().starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(user, _)| user)
}

fn record_user(line: &str) -> Option<String> {
    serde_json::from_str::<OwnerRecord>(line)
        .ok()
        .map(|r| r.user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::ProcessIdentity;

    fn me() -> Owner {
        Owner::current().unwrap()
    }

    /// An owner on this machine whose process is gone: same pid, other start time.
    fn dead() -> Owner {
        let mut owner = me();
        owner.process = ProcessIdentity {
            start_ticks: owner.process.start_ticks + 1,
            ..owner.process
        };
        owner
    }

    #[test]
    fn sweep_removes_only_entries_of_dead_owners_on_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        std::fs::write(&path, "# operator\r\nalice:{PLAIN}x\r\n").unwrap();
        let file = HtpasswdFile::new(path.clone());
        let elsewhere = Owner {
            machine: "another-host".into(),
            ..dead()
        };
        assert!(file.add("live", "1", &me()).unwrap());
        assert!(file.add("gone", "2", &dead()).unwrap());
        assert!(file.add("remote", "3", &elsewhere).unwrap());
        assert_eq!(file.sweep(&me()).unwrap(), vec!["gone".to_string()]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# operator\r\nalice:{PLAIN}x\r\nlive:1\nremote:3\n"
        );
        let owners = std::fs::read_to_string(dir.path().join("h.owners")).unwrap();
        assert!(
            !owners.contains("\"gone\"") && owners.contains("\"live\""),
            "{owners}"
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("h.owners"))
                .unwrap()
                .mode()
                & 0o777,
            0o600
        );
        assert!(file.sweep(&me()).unwrap().is_empty(), "idempotent");
        assert_eq!(file.remove("live").unwrap(), 1);
        let owners = std::fs::read_to_string(dir.path().join("h.owners")).unwrap();
        assert!(
            !owners.contains("\"live\""),
            "remove drops the owner record too"
        );
    }

    /// Found by the htpasswd fuzz target: a file of one blank line lost it.
    #[test]
    fn blank_lines_survive_an_add_and_remove() {
        for original in ["\n", "\n\n", "\r\n", "a:x\n\n"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("h");
            std::fs::write(&path, original).unwrap();
            let file = HtpasswdFile::new(path.clone());
            assert!(file.add("u", "1", &me()).unwrap());
            assert_eq!(file.remove("u").unwrap(), 1);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                original,
                "{original:?}"
            );
        }
    }

    #[test]
    fn a_read_only_file_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        std::fs::write(&path, "alice:{PLAIN}x\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        let err = HtpasswdFile::new(path.clone())
            .add("u", "1", &me())
            .unwrap_err();
        assert!(
            err.contains("is read-only (mode 440)") && err.contains("chmod u+w"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "alice:{PLAIN}x\n");
    }

    #[test]
    fn keeps_foreign_lines_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        let original = "# managed by hand\r\n\r\nalice:{PLAIN}x\r\nbob:$apr1$abc\n";
        std::fs::write(&path, original).unwrap();
        let file = HtpasswdFile::new(path.clone());
        file.add("sepolia-abc", "HASH", &me()).unwrap();
        assert!(file.contains("sepolia-abc").unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{original}sepolia-abc:HASH\n")
        );
        assert_eq!(file.remove("sepolia-abc").unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    }

    #[test]
    fn refuses_a_duplicate_user_and_creates_0640() {
        let dir = tempfile::tempdir().unwrap();
        let file = HtpasswdFile::new(dir.path().join("h"));
        assert!(file.add("u", "1", &me()).unwrap());
        assert!(!file.add("u", "2", &me()).unwrap());
        assert_eq!(std::fs::read_to_string(file.path()).unwrap(), "u:1\n");
        let mode = std::fs::metadata(file.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn keeps_an_existing_stricter_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        HtpasswdFile::new(path.clone())
            .add("u", "1", &me())
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_missing_folder_is_a_clear_error() {
        let file = HtpasswdFile::new(PathBuf::from("/nonexistent-dir-x/h"));
        let err = file.add("u", "1", &me()).unwrap_err();
        assert!(
            err.contains("folder /nonexistent-dir-x does not exist"),
            "{err}"
        );
    }

    #[test]
    fn comment_lines_are_not_entries() {
        assert_eq!(entry_user("#u:x"), None);
        assert_eq!(entry_user(""), None);
        assert_eq!(entry_user("u:x\r"), Some("u"));
    }
}
