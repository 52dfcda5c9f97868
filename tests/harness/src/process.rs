//! Processes the tests did not spawn themselves (the runtime's children, nginx): signals,
//! liveness, and waiting for them to go; and waiting for any state that offers no
//! notification (`eventually`).

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

/// Whether `condition` comes to hold within `within`, checked every 5 ms: for state
/// that offers no notification (another process's, a log file, a gateway's spare
/// connections).
pub async fn holds_within(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// [`holds_within`], failing the test with `what` when it does not.
pub async fn eventually(what: &str, within: Duration, condition: impl FnMut() -> bool) {
    assert!(
        holds_within(within, condition).await,
        "{what}: not within {within:?}"
    );
}
