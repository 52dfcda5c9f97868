//! Seats: a fixed set of gateway sockets that nginx keeps connections alive to.
//!
//! nginx keeps connections to a backend alive only for an `upstream` block, and an
//! upstream's address is fixed when nginx loads its configuration. A socket named
//! after each activity's user (`proxy_pass http://unix:…` through a map) therefore
//! costs a new connection per request on both sides, which was half of what the
//! gateway hop cost (`.ci/bench`). So the routes file declares `seats` upstream blocks,
//! `<n>.erigon-seat` → `<socket_dir>/seat-<n>.sock`, each with a small keep-alive
//! cache, and an activity that takes seat n puts n in its user name
//! (`<network>-<n>-<16 random>`), from which nginx's map picks the upstream.
//!
//! A seat is taken with an exclusive flock on `seat-<n>.lock`, held by the gateway for
//! the activity's life. The kernel releases it however the runtime ends, SIGKILL
//! included, so a dead runtime's seat needs no sweep: the next taker finds the lock
//! free and rebinds the socket. Seats are tried lowest first, because nginx looks an
//! upstream up by name in the order the blocks are declared.
//!
//! When every seat is taken, the activity gets a socket of its own named after its
//! user, as before seats: slower per request, but no start is refused for want of a
//! seat. A seat's socket can outlive its holder's credentials (a runtime SIGKILLed
//! before revoking leaves its file until a sweep), so the gateway also refuses any
//! request whose nginx-checked user is not its own (see `gateway::route`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The most seats a configuration may declare. nginx searches its upstream blocks one
/// by one for each request's name, so a seat's number is a per-request cost: about
/// 10 ns for each seat declared before it (`.ci/bench` measured 2.5 µs at seat 255,
/// against 19 µs for nginx's whole request). The lowest free seat is taken, so the
/// cost follows the number of activities live at once, up to `seats`.
pub const MAX_SEATS: u16 = 1024;
/// The default: a search of at most about 0.6 µs, and more activities at once than a
/// node on one machine usually serves; past them, activities still run, without
/// keep-alive.
pub const DEFAULT_SEATS: u16 = 64;
/// Idle connections each nginx worker keeps to one seat.
pub const KEEPALIVE: u32 = 8;
/// How long nginx keeps an idle connection to a seat. Under the gateway's own idle
/// limit (`gateway::IDLE_SECS`, 10 s; the gateway checks it at compile time), so that
/// nginx never sends a request on a connection the gateway is closing: that request
/// would fail with 502.
pub const KEEPALIVE_SECS: u32 = 4;

/// A seat held: released (the lock dropped) when the value is.
#[derive(Debug)]
pub struct Seat {
    number: u16,
    _lock: Flock<File>,
}

impl Seat {
    /// Takes the lowest free seat of `count` in `dir`; `None` if all are taken.
    pub fn take(dir: &Path, count: u16) -> Result<Option<Seat>, String> {
        for number in 0..count {
            let path = lock_path(dir, number);
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| {
                    format!(
                        "cannot open the seat lock {} ({e}); the activities' folder (`socket_dir`) must be writable",
                        path.display()
                    )
                })?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    return Ok(Some(Seat {
                        number,
                        _lock: lock,
                    }))
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
                Err((_, e)) => return Err(format!("cannot lock {}: {e}", path.display())),
            }
        }
        Ok(None)
    }

    pub fn number(&self) -> u16 {
        self.number
    }

    pub fn socket(&self, dir: &Path) -> PathBuf {
        socket_path(dir, self.number)
    }
}

pub fn socket_path(dir: &Path, number: u16) -> PathBuf {
    dir.join(format!("seat-{number}.sock"))
}

fn lock_path(dir: &Path, number: u16) -> PathBuf {
    dir.join(format!("seat-{number}.lock"))
}

/// The upstream block's name nginx's map derives from a seat's number. The number comes
/// first so that two names differ in their first bytes, which keeps nginx's search of
/// its upstream blocks cheap.
pub fn upstream_name(number: u16) -> String {
    format!("{number}.erigon-seat")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_taken_lowest_first_and_freed_by_dropping() {
        let dir = tempfile::tempdir().unwrap();
        let a = Seat::take(dir.path(), 2).unwrap().unwrap();
        let b = Seat::take(dir.path(), 2).unwrap().unwrap();
        assert_eq!((a.number(), b.number()), (0, 1));
        assert!(Seat::take(dir.path(), 2).unwrap().is_none(), "all taken");
        drop(a);
        let c = Seat::take(dir.path(), 2).unwrap().unwrap();
        assert_eq!(c.number(), 0, "the freed seat is taken again");
        assert!(Seat::take(dir.path(), 0).unwrap().is_none(), "no seats");
        assert_eq!(c.socket(dir.path()), dir.path().join("seat-0.sock"));
    }

    #[test]
    fn an_unwritable_folder_is_an_error_naming_the_key() {
        let e = Seat::take(Path::new("/nonexistent/seats"), 1).unwrap_err();
        assert!(
            e.contains("/nonexistent/seats/seat-0.lock") && e.contains("`socket_dir`"),
            "{e}"
        );
    }
}
