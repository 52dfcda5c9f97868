//! Per-activity basic-auth credentials: a fresh user and password, valid only while the
//! activity runs.
//!
//! A [`Credentials`] value owns its htpasswd file: [`Credentials::revoke`] removes it,
//! and dropping an unrevoked value removes it too, so no path out of an activity
//! (error, early return, panic unwinding) leaves a password working.
//!
//! fsync on a slow disk can take a while, and bcrypt is CPU work: issuing and revoking
//! run on tokio's blocking pool, so the runtime's single-threaded executor keeps
//! answering the ExeUnit meanwhile.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;

use crate::access::hash::HashScheme;
use crate::access::htpasswd::ActivityFile;
use crate::node::network::Network;
use crate::owner::Owner;

/// Random part of a username: 16 of [a-z0-9] is 82 bits, so two activities never draw
/// the same name in practice, and `issue` refuses the draw that does (a socket name still in use is drawn again, see `runtime::session`). nginx's map
/// (see `provider::nginx`) matches exactly this length.
pub const USER_RANDOM_LEN: usize = 16;

/// A password that never prints itself.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

pub struct Credentials {
    password: Secret,
    file: ActivityFile,
    /// Shared with revocations under way, which run without borrowing the value.
    revoked: Arc<AtomicBool>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user())
            .field("file", &self.file.path())
            .field("revoked", &self.is_revoked())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Draws a password from the OS CSPRNG and writes `user`'s own htpasswd file in
    /// `dir` (see [`new_user`]). A user that already has a file is an error, never
    /// shared.
    pub async fn issue(
        dir: &std::path::Path,
        user: &str,
        length: usize,
        scheme: HashScheme,
        owner: &Owner,
    ) -> Result<Self, String> {
        let owner = owner.clone();
        let file = ActivityFile::new(dir, user);
        off_executor(move || {
            let password = Secret(Alphanumeric.sample_string(&mut OsRng, length));
            let hash = scheme.hash(password.expose())?;
            if !file.create(&hash, &owner)? {
                return Err(format!(
                    "password file {}: user {} already exists",
                    file.path().display(),
                    file.user()
                ));
            }
            Ok(Self {
                password,
                file,
                revoked: Arc::new(AtomicBool::new(false)),
            })
        })
        .await
    }

    pub fn user(&self) -> &str {
        self.file.user()
    }

    pub fn password(&self) -> &Secret {
        &self.password
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// Removes the file. Idempotent; on error the value stays unrevoked so a later
    /// call (or the drop) tries again. The future borrows nothing, so the caller may
    /// release its hold on the activity's state while the file is rewritten.
    pub fn revoke(&self) -> impl Future<Output = Result<(), String>> + 'static {
        let (file, revoked) = (self.file.clone(), self.revoked.clone());
        async move {
            if revoked.load(Ordering::SeqCst) {
                return Ok(());
            }
            off_executor(move || remove(&file, &revoked)).await
        }
    }
}

/// The drop path: an error or an unwinding panic left the file in place. It blocks,
/// but only on a path where the activity is already lost.
impl Drop for Credentials {
    fn drop(&mut self) {
        if self.is_revoked() {
            return;
        }
        if let Err(e) = remove(&self.file, &self.revoked) {
            log::error!("could not revoke user {}: {e}", self.user());
        }
    }
}

fn remove(file: &ActivityFile, revoked: &AtomicBool) -> Result<(), String> {
    file.remove()?;
    if !revoked.swap(true, Ordering::SeqCst) {
        log::info!(
            "revoked credentials of user {} in {}",
            file.user(),
            file.path().display()
        );
    }
    Ok(())
}

/// Runs file work on tokio's blocking pool: fsync on a slow disk, or bcrypt's CPU work,
/// must not stall the executor that answers the ExeUnit.
async fn off_executor<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("password file work did not finish: {e}"))?
}

/// A fresh user of `network`: `<network>-<seat>-<16 of [a-z0-9]>` for an activity on a
/// seat (see `seat`), `<network>-<16 of [a-z0-9]>` for one with a socket of its own:
/// the shapes nginx's map accepts and turns into the upstream or the socket name.
pub fn new_user(network: &Network, seat: Option<u16>) -> String {
    let random = random_lower(USER_RANDOM_LEN);
    match seat {
        Some(n) => format!("{network}-{n}-{random}"),
        None => format!("{network}-{random}"),
    }
}

fn random_lower(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // `gen_range(0..len)` is below `len`: the index is always in the table.
    #[allow(clippy::indexing_slicing)]
    (0..len)
        .map(|_| char::from(CHARS[OsRng.gen_range(0..CHARS.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::network::test_network;

    fn sepolia() -> Network {
        test_network("sepolia", 1)
    }

    #[test]
    fn a_seated_user_carries_its_seat_before_the_random_part() {
        let user = new_user(&sepolia(), Some(17));
        let random = user.strip_prefix("sepolia-17-").unwrap();
        assert_eq!(random.len(), USER_RANDOM_LEN);
        assert!(random
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }

    #[tokio::test]
    async fn issues_a_verifiable_entry_and_revokes_it() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::issue(
            dir.path(),
            &new_user(&sepolia(), None),
            20,
            HashScheme::Bcrypt { cost: 4 },
            &Owner::current().unwrap(),
        )
        .await
        .unwrap();
        assert!(creds.user().starts_with("sepolia-"));
        assert_eq!(creds.user().len(), "sepolia-".len() + USER_RANDOM_LEN);
        let pw = creds.password().expose().to_owned();

        assert_eq!(pw.len(), 20);
        assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()));
        let path = dir.path().join(format!("{}.htpasswd", creds.user()));
        let text = std::fs::read_to_string(&path).unwrap();
        let hash = text
            .strip_suffix('\n')
            .and_then(|t| t.strip_prefix(&format!("{}:", creds.user())))
            .unwrap();
        assert!(hash.starts_with("$2y$04$"), "{hash}");
        assert!(bcrypt::verify(&pw, hash).unwrap());
        assert!(!format!("{creds:?}").contains(&pw));
        assert!(!creds.is_revoked());
        creds.revoke().await.unwrap();
        assert!(creds.is_revoked());
        creds.revoke().await.unwrap();
        assert!(!path.exists());
    }

    async fn issue(dir: &std::path::Path) -> Credentials {
        Credentials::issue(
            dir,
            &new_user(&sepolia(), None),
            15,
            HashScheme::Ssha,
            &Owner::current().unwrap(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn dropping_unrevoked_credentials_removes_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let a = issue(dir.path()).await;
        let b = issue(dir.path()).await;
        let file = |c: &Credentials| dir.path().join(format!("{}.htpasswd", c.user()));
        assert!(file(&a).exists() && file(&b).exists());
        assert_ne!(a.user(), b.user());
        assert_ne!(a.password().expose(), b.password().expose());
        let (a_file, b_file) = (file(&a), file(&b));
        drop(a);
        assert!(!a_file.exists() && b_file.exists());
        drop(b);
        assert!(!b_file.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no owner record left"
        );
    }
}
