//! The htpasswd file nginx checks on every request, shared by every activity.
//!
//! nginx re-reads the file per request, so it must never see a half-written file:
//! each change is written to a sibling temp file and renamed over the original. The
//! rename replaces the inode, so the exclusive lock lives on a separate, stable
//! `<file>.lock`; locking the data file itself would not exclude a writer that opened
//! the new inode. Lines the runtime does not own (comments, other tools' entries, CRLF
//! endings) are carried over byte for byte.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

/// New files get owner read/write and group read (for nginx's group), nothing for others.
const NEW_FILE_MODE: u32 = 0o640;
const LOCK_WAIT: Duration = Duration::from_secs(10);

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

    /// Adds `user:hash` and returns true, or returns false and changes nothing if `user`
    /// is already present, so a collision can never hand one activity another's entry.
    pub fn add(&self, user: &str, hash: &str) -> Result<bool, String> {
        let mut added = false;
        self.update(|lines| {
            if !lines.iter().any(|l| entry_user(l) == Some(user)) {
                lines.push(format!("{user}:{hash}"));
                added = true;
            }
            Ok(())
        })?;
        Ok(added)
    }

    /// Removes every entry of `user`; returns how many were removed.
    pub fn remove(&self, user: &str) -> Result<usize, String> {
        let mut removed = 0;
        self.update(|lines| {
            let before = lines.len();
            lines.retain(|l| entry_user(l) != Some(user));
            removed = before - lines.len();
            Ok(())
        })?;
        Ok(removed)
    }

    /// Creates the file empty if it is missing: nginx answers 403 instead of 401 for
    /// credentials checked against a file that does not exist.
    pub fn ensure_exists(&self) -> Result<(), String> {
        if self.path.exists() {
            return Ok(());
        }
        self.update(|_| Ok(()))
    }

    /// Whether `user` has an entry now (read without the lock: renames are atomic).
    pub fn contains(&self, user: &str) -> Result<bool, String> {
        Ok(read_lines(&self.path)?
            .iter()
            .any(|l| entry_user(l) == Some(user)))
    }

    /// Locks, reads, lets `change` edit the lines, and atomically replaces the file.
    fn update(
        &self,
        change: impl FnOnce(&mut Vec<String>) -> Result<(), String>,
    ) -> Result<(), String> {
        let shown = self.path.display();
        let dir = self
            .path
            .parent()
            .ok_or_else(|| format!("password file {shown} has no folder"))?;
        if !dir.is_dir() {
            return Err(format!(
                "password file {shown}: folder {} does not exist (deploy creates it)",
                dir.display()
            ));
        }
        let _lock = lock(&self.lock_path())?;
        let mut lines = read_lines(&self.path)?;
        change(&mut lines).map_err(|e| format!("password file {shown}: {e}"))?;
        let old = std::fs::metadata(&self.path).ok();
        let mut tmp = tempfile::Builder::new()
            .prefix(".htpasswd.")
            .tempfile_in(dir)
            .map_err(|e| format!("password file {shown}: cannot create a temp file: {e}"))?;
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let file = tmp.as_file_mut();
        // Keep what the operator set up for nginx: the group that may read, and the mode.
        // In a setgid folder (the recommended set-up) the new file has the group already,
        // and a provider user outside nginx's group could not set it.
        let mode = old.as_ref().map_or(NEW_FILE_MODE, |m| m.mode() & 0o7777);
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
            .map_err(|e| format!("password file {shown}: cannot write: {e}"))?;
        tmp.persist(&self.path)
            .map_err(|e| format!("password file {shown}: cannot replace: {}", e.error))?;
        // The rename is durable only once the folder is synced.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("password file {shown}: cannot sync its folder: {e}"))?;
        Ok(())
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        self.path.with_file_name(name)
    }
}

/// Waits up to [`LOCK_WAIT`] for the exclusive lock; holders keep it for milliseconds.
fn lock(path: &Path) -> Result<Flock<File>, String> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(NEW_FILE_MODE)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_foreign_lines_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        let original = "# managed by hand\r\n\r\nalice:{PLAIN}x\r\nbob:$apr1$abc\n";
        std::fs::write(&path, original).unwrap();
        let file = HtpasswdFile::new(path.clone());
        file.add("sepolia-abc", "HASH").unwrap();
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
        assert!(file.add("u", "1").unwrap());
        assert!(!file.add("u", "2").unwrap());
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
        HtpasswdFile::new(path.clone()).add("u", "1").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_missing_folder_is_a_clear_error() {
        let file = HtpasswdFile::new(PathBuf::from("/nonexistent-dir-x/h"));
        let err = file.add("u", "1").unwrap_err();
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
