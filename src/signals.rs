//! The signals that ask the runtime to stop: an operator's SIGTERM, a terminal's
//! Ctrl-C (SIGINT).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves with the first stop signal's name and the exit code a shell reports for
/// it. `None` when the handlers cannot be installed: then only Shutdown stops cleanly.
pub fn first_stop_signal() -> Option<impl std::future::Future<Output = (&'static str, i32)>> {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return None;
    };
    Some(async move {
        tokio::select! {
            _ = term.recv() => ("SIGTERM", 143),
            _ = int.recv() => ("SIGINT", 130),
        }
    })
}
