//! Processes the tests did not spawn themselves (the runtime's children, nginx): signals,
//! liveness, and waiting for them to go; and the one way the tests and tools wait for a
//! state that offers no notification: [`eventually`] and its twins.
//!
//! # Waiting for a state that offers no notification
//!
//! Another process's state, a log file, a gateway's spare connections, a port that
//! starts to listen: nothing tells a test when these change, so it looks again and
//! again, bounded. Every such wait goes through the two loops here
//! ([`try_eventually_async`] in async code, [`try_eventually_blocking`] on a plain
//! thread); a sleep never stands in for a state that can be awaited or looked at.
//!
//! A look returns whatever implements [`Look`]: `bool`; `Option<T>` (the wait returns
//! the `T`); or `Result<T, String>`, whose error says what is still missing and ends up
//! in the failure's message. The `eventually*` functions fail the test with `what`; the
//! `try_*` ones return the failure, for the tools, which report rather than panic. A
//! look that finds a reason to stop waiting (the process it waits for has exited)
//! returns it as found, `Ok(Err(reason))`, for the caller to tell apart.
//! [`still_for`] turns "stops changing" (a log that every late line has reached) into a
//! look.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sends a real signal, as a crash, an operator or the ExeUnit would.
pub fn send(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("cannot send {signal} to {pid}: {e}"));
}

/// Alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state, Some(rest) if rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Whether something accepts TCP connections on loopback `port` now (nginx, a node
/// or an exporter, none of which says when it starts to listen).
pub fn listens(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Waits for `pid` to be gone. /proc offers no notification for a non-child, so this
/// polls, bounded by `within`.
pub async fn gone_within(pid: u32, within: Duration) -> bool {
    holds_within(within, || !alive(pid)).await
}

/// Waits until `pid` is reaped by its parent (no /proc entry, not even a zombie).
pub async fn reaped_within(pid: u32, within: Duration) -> bool {
    holds_within(within, || !Path::new(&format!("/proc/{pid}")).exists()).await
}

/// Waits until the file at `path` (a log) contains `needle`. Files offer no
/// notification this portable, so this polls, bounded by `within`.
pub async fn file_contains_within(path: &Path, needle: &str, within: Duration) -> bool {
    holds_within(within, || {
        std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle))
    })
    .await
}

/// What one look at a polled state says: there (with what was found), or not yet
/// (with what is still missing, for the message should the wait fail; empty if there
/// is nothing to add).
pub trait Look {
    type Found;
    fn look(self) -> Result<Self::Found, String>;
}

impl Look for bool {
    type Found = ();
    fn look(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Look for Option<T> {
    type Found = T;
    fn look(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T> Look for Result<T, String> {
    type Found = T;
    fn look(self) -> Result<T, String> {
        self
    }
}

/// The pauses between looks: 5 ms, doubling up to 50 ms, so that a state that comes
/// quickly is seen quickly, and a slow one whose look costs something (a process to
/// run, a page to scrape, a screen to capture) is looked at 20 times a second at most.
/// The last pause ends at the deadline, where the last look is taken.
struct Pauses {
    deadline: Instant,
    next: Duration,
}

impl Pauses {
    fn new(within: Duration) -> Self {
        Pauses {
            deadline: Instant::now() + within,
            next: Duration::from_millis(5),
        }
    }

    /// The pause before the next look, or `None` once the deadline has passed.
    fn next(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let pause = self.next.min(left);
        self.next = (self.next * 2).min(Duration::from_millis(50));
        Some(pause)
    }
}

/// The failure of a wait bounded by `within`, with what the last look missed.
fn missed(within: Duration, missing: String) -> String {
    if missing.is_empty() {
        format!("not within {within:?}")
    } else {
        format!("not within {within:?}: {missing}")
    }
}

/// Looks (`look().await`) until it finds what it looks for, at most `within` (a first
/// look always, a last one at the deadline): what it found, or the failure with what
/// the last look missed. One of the two poll loops (the other:
/// [`try_eventually_blocking`]).
pub async fn try_eventually_async<L, F>(
    within: Duration,
    mut look: impl FnMut() -> F,
) -> Result<L::Found, String>
where
    L: Look,
    F: Future<Output = L>,
{
    let mut pauses = Pauses::new(within);
    loop {
        let missing = match look().await.look() {
            Ok(found) => return Ok(found),
            Err(missing) => missing,
        };
        match pauses.next() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => return Err(missed(within, missing)),
        }
    }
}

/// [`try_eventually_async`] on a thread with no async runtime (a blocking test,
/// nginx's start, a benchmark's main thread): the same looks, the pauses slept.
pub fn try_eventually_blocking<L: Look>(
    within: Duration,
    mut look: impl FnMut() -> L,
) -> Result<L::Found, String> {
    let mut pauses = Pauses::new(within);
    loop {
        let missing = match look().look() {
            Ok(found) => return Ok(found),
            Err(missing) => missing,
        };
        match pauses.next() {
            Some(pause) => std::thread::sleep(pause),
            None => return Err(missed(within, missing)),
        }
    }
}

/// [`try_eventually_async`], failing the test with `what` when the state does not
/// come within `within`: `{what}: not within {within:?}[: what the last look missed]`.
pub async fn eventually_async<L, F>(
    what: &str,
    within: Duration,
    look: impl FnMut() -> F,
) -> L::Found
where
    L: Look,
    F: Future<Output = L>,
{
    try_eventually_async(within, look)
        .await
        .unwrap_or_else(|failure| panic!("{what}: {failure}"))
}

/// [`eventually_async`] for a look that needs no `.await` (a file, /proc, a counter).
pub async fn eventually<L: Look>(
    what: &str,
    within: Duration,
    mut look: impl FnMut() -> L,
) -> L::Found {
    eventually_async(what, within, || std::future::ready(look())).await
}

/// [`eventually`] on a thread with no async runtime.
pub fn eventually_blocking<L: Look>(
    what: &str,
    within: Duration,
    look: impl FnMut() -> L,
) -> L::Found {
    try_eventually_blocking(within, look).unwrap_or_else(|failure| panic!("{what}: {failure}"))
}

/// Whether `condition` comes to hold within `within` (see [`eventually`]): for the
/// callers that say themselves what failed.
pub async fn holds_within(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    try_eventually_async(within, || std::future::ready(condition()))
        .await
        .is_ok()
}

/// A look that holds once `observe` has given the same value for `quiet` (looks
/// spanning at least that long): for a state that stops changing with no sign that it
/// has (a log that the last late lines reach, a disk that has written its backlog).
/// Its miss names the last value.
pub fn still_for<T: PartialEq + std::fmt::Debug>(
    quiet: Duration,
    mut observe: impl FnMut() -> T,
) -> impl FnMut() -> Result<T, String> {
    let mut last: Option<(T, Instant)> = None;
    move || {
        let now = observe();
        match last.take() {
            Some((seen, since)) if seen == now => {
                if since.elapsed() >= quiet {
                    return Ok(now);
                }
                last = Some((seen, since));
            }
            _ => last = Some((now, Instant::now())),
        }
        Err(format!(
            "still changing (last {:?})",
            last.as_ref().map(|(seen, _)| seen)
        ))
    }
}
