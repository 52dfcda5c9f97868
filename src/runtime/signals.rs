//! The signals that ask the runtime to stop: an operator's SIGTERM (and the parent-death
//! signal the runtime asks for, see `lib`), a terminal's Ctrl-C (SIGINT), and SIGHUP,
//! which the kernel sends when the terminal of a debugger (ya-runtime-dbg) goes away.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves with the first stop signal's name and the exit code a shell reports for
/// it. `None` when the handlers cannot be installed: then only Shutdown stops cleanly.
pub fn first_stop_signal() -> Option<impl std::future::Future<Output = (&'static str, i32)>> {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return None;
    };
    Some(async move {
        tokio::select! {
            _ = term.recv() => ("SIGTERM", 143),
            _ = int.recv() => ("SIGINT", 130),
            _ = hup.recv() => ("SIGHUP", 129),
        }
    })
}
