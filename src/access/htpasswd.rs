//! The activities' folder: each activity's own htpasswd file, `<user>.htpasswd`, its
//! owner record, `<user>.owner`, and its gateway's socket, `<random part>.sock`.
//!
//! One file per activity keeps nginx's cost per request flat: its map names the file
//! from the user (see `provider::nginx`), so a request reads one line however many activities
//! are live. One shared file was read whole on every request: with 10,000 live entries
//! one activity got 0.054 of its req/s alone.
//!
//! Only the activity's runtime writes its files, so there is no lock. A file is written
//! to a temp sibling, fsynced, and linked into place without replacing anything: nginx
//! never sees half a file, and a name already taken is refused, never overwritten.
//! Revoking unlinks it; nginx's next open finds nothing.
//!
//! The owner record lets a later start sweep the files of a runtime that died without
//! revoking (see `owner`). It is written before the entry and removed after it, so a
//! crash between the two leaves at worst a record without an entry, never an entry
//! nobody will sweep.
//!
//! Every call here blocks on the disk (each new file is fsynced). An activity's own
//! entries are written, revoked and swept from tokio's blocking pool (see `credentials`
//! and `session`), so a slow disk never stalls the executor its gateway shares. The
//! one exception is `ensure_nobody_file`, which deploy and `test` call on the executor:
//! those invocations serve no gateway, and the file is written once per machine.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::owner::Owner;

/// Password files: owner read/write, group (nginx's, from the setgid folder) read.
const ENTRY_MODE: u32 = 0o640;
/// The owner record is the runtime's alone.
const OWNER_MODE: u32 = 0o600;
const ENTRY_SUFFIX: &str = ".htpasswd";
const OWNER_SUFFIX: &str = ".owner";
/// What nginx checks a user against when the user is no live activity's: an empty
/// file, so the answer is 401 like any wrong password (a missing file gives 403).
pub const NOBODY_FILE: &str = ".no-activity.htpasswd";

/// One activity's files in the activities' folder.
#[derive(Clone, Debug)]
pub struct ActivityFile {
    dir: PathBuf,
    user: String,
}

impl ActivityFile {
    /// `user` must be a name the runtime issued (`credentials::new_user`): it becomes
    /// part of file names.
    pub fn new(dir: &Path, user: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            user: user.to_owned(),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The htpasswd file nginx reads for this user.
    pub fn path(&self) -> PathBuf {
        entry_path(&self.dir, &self.user)
    }

    /// Writes the owner record, then the entry `user:hash`, and returns true; or
    /// returns false and leaves nothing if either name is taken, so a collision can
    /// never hand one activity another's entry. On error nothing is left either.
    pub fn create(&self, hash: &str, owner: &Owner) -> Result<bool, String> {
        let record = serde_json::to_string(owner).map_err(|e| e.to_string())?;
        let owner_path = owner_path(&self.dir, &self.user);
        if !write_new(&owner_path, &record, OWNER_MODE)? {
            return Ok(false);
        }
        let written = write_new(&self.path(), &format!("{}:{hash}\n", self.user), ENTRY_MODE);
        if !matches!(written, Ok(true)) {
            if let Err(e) = remove_if_present(&owner_path) {
                log::error!("{e}");
            }
        }
        written
    }

    /// Removes the entry, then the owner record. Idempotent.
    pub fn remove(&self) -> Result<(), String> {
        remove_if_present(&self.path())?;
        sync_dir(&self.dir)?;
        remove_if_present(&owner_path(&self.dir, &self.user))
    }
}

/// Removes the files and socket of every activity whose owner ran on this machine and
/// is gone, and returns their users. Files without an owner record are never touched.
/// Every step is idempotent, so sweeps running at once, or with a revocation, do no
/// harm.
pub fn sweep(dir: &Path, here: &Owner) -> Result<Vec<String>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(format!(
                "cannot list the activities' folder {}: {e}",
                dir.display()
            ))
        }
    };
    let mut dead = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(user) = name.to_str().and_then(|n| n.strip_suffix(OWNER_SUFFIX)) else {
            continue;
        };
        // A record being written is a temp file until complete; one unreadable now is
        // left for the next sweep.
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(owner) = serde_json::from_str::<Owner>(&text) else {
            continue;
        };
        if owner.is_dead_here(here) {
            // The socket first: its gateway died with the runtime, and a stale socket
            // only costs nginx a refused connection, but nobody else will remove it.
            // One activity's files that cannot be removed must not keep the others.
            match remove_if_present(&socket_path(dir, user))
                .and_then(|()| ActivityFile::new(dir, user).remove())
            {
                Ok(()) => dead.push(user.to_owned()),
                Err(e) => log::error!("the sweep could not remove {user}'s files: {e}"),
            }
        }
    }
    dead.sort();
    Ok(dead)
}

/// Creates the empty file nginx checks unknown users against, if missing.
pub fn ensure_nobody_file(dir: &Path) -> Result<(), String> {
    let path = dir.join(NOBODY_FILE);
    if path.exists() {
        return Ok(());
    }
    write_new(&path, "", ENTRY_MODE).map(|_| ())
}

/// The socket of the activity whose user is `user`, when it has no seat: named after
/// the user's random part, as nginx's map derives it from `$remote_user` (see
/// `nginx`), which keeps the path short (a Unix socket path is at most 107 bytes). A
/// seated activity's socket is its seat's (see `seat`); the sweep never removes those,
/// since the next holder rebinds them.
pub fn socket_path(dir: &Path, user: &str) -> PathBuf {
    let random = user.rsplit('-').next().unwrap_or(user);
    dir.join(format!("{random}.sock"))
}

fn entry_path(dir: &Path, user: &str) -> PathBuf {
    dir.join(format!("{user}{ENTRY_SUFFIX}"))
}

fn owner_path(dir: &Path, user: &str) -> PathBuf {
    dir.join(format!("{user}{OWNER_SUFFIX}"))
}

/// Writes `text` to `path` through a fsynced temp sibling linked into place; returns
/// false, and writes nothing, if `path` exists.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<bool, String> {
    let shown = path.display();
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        return Err(format!(
            "password file {shown}: folder {} does not exist (deploy creates it)",
            dir.display()
        ));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".htpasswd.")
        .tempfile_in(dir)
        .map_err(|e| {
            format!(
                "password file {shown}: cannot create a temp file in {}: {e}",
                dir.display()
            )
        })?;
    let file = tmp.as_file_mut();
    // In a setgid folder (the set-up's) the file has nginx's group already.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("password file {shown}: cannot write: {e}"))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(format!("password file {shown}: cannot create: {}", e.error)),
    }
    sync_dir(dir)?;
    Ok(true)
}

fn remove_if_present(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync the folder {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::ProcessIdentity;
    use std::os::unix::fs::MetadataExt;

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

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn creates_an_entry_0640_with_a_private_owner_record_and_removes_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = ActivityFile::new(dir.path(), "dev-a");
        assert!(file.create("HASH", &me()).unwrap());
        assert_eq!(
            std::fs::read_to_string(file.path()).unwrap(),
            "dev-a:HASH\n"
        );
        assert_eq!(names(dir.path()), ["dev-a.htpasswd", "dev-a.owner"]);
        let mode = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().mode() & 0o777;
        assert_eq!(mode("dev-a.htpasswd"), 0o640);
        assert_eq!(mode("dev-a.owner"), 0o600);
        file.remove().unwrap();
        file.remove().unwrap();
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_taken_name_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let file = ActivityFile::new(dir.path(), "dev-a");
        assert!(file.create("1", &me()).unwrap());
        assert!(!file.create("2", &me()).unwrap());
        assert_eq!(std::fs::read_to_string(file.path()).unwrap(), "dev-a:1\n");
        // An entry without a record (written by hand) is not overwritten either, and
        // the refused draw leaves no record behind.
        std::fs::write(dir.path().join("dev-b.htpasswd"), "dev-b:x\n").unwrap();
        assert!(!ActivityFile::new(dir.path(), "dev-b")
            .create("2", &me())
            .unwrap());
        assert!(!dir.path().join("dev-b.owner").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("dev-b.htpasswd")).unwrap(),
            "dev-b:x\n"
        );
    }

    #[test]
    fn sweep_removes_only_files_of_dead_owners_on_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = Owner {
            machine: "another-host".into(),
            ..dead()
        };
        for (user, owner) in [
            ("dev-live", me()),
            ("dev-gone", dead()),
            ("dev-remote", elsewhere),
        ] {
            assert!(ActivityFile::new(dir.path(), user)
                .create("h", &owner)
                .unwrap());
        }
        std::fs::write(dir.path().join("gone.sock"), "").unwrap();
        std::fs::write(dir.path().join("operator.htpasswd"), "alice:x\n").unwrap();
        std::fs::write(dir.path().join("garbage.owner"), "{not json").unwrap();
        assert_eq!(sweep(dir.path(), &me()).unwrap(), ["dev-gone"]);
        assert_eq!(
            names(dir.path()),
            [
                "dev-live.htpasswd",
                "dev-live.owner",
                "dev-remote.htpasswd",
                "dev-remote.owner",
                "garbage.owner",
                "operator.htpasswd"
            ]
        );
        assert!(sweep(dir.path(), &me()).unwrap().is_empty(), "idempotent");
        assert!(sweep(&dir.path().join("missing"), &me())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_read_only_folder_is_a_clear_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
        let result = ActivityFile::new(dir.path(), "dev-a").create("h", &me());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        if nix::unistd::geteuid().is_root() {
            // root writes anyway; the refusal is covered by tests/all/faults.rs as non-root.
            assert!(result.unwrap());
            return;
        }
        let err = result.unwrap_err();
        assert!(err.contains("cannot create a temp file"), "{err}");
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_folder_is_a_clear_error() {
        let err = ActivityFile::new(Path::new("/nonexistent-dir-x"), "u")
            .create("1", &me())
            .unwrap_err();
        assert!(
            err.contains("folder /nonexistent-dir-x does not exist"),
            "{err}"
        );
    }

    #[test]
    fn the_nobody_file_is_empty_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        ensure_nobody_file(dir.path()).unwrap();
        let path = dir.path().join(NOBODY_FILE);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        ensure_nobody_file(dir.path()).unwrap();
        assert_eq!(names(dir.path()), [NOBODY_FILE]);
    }
}
