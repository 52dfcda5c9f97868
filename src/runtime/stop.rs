//! The one stop: Shutdown, a stop signal, the parent's death and the end of input all
//! run [`shutdown`]; the first does the work and the others wait for it.

use std::cell::RefCell;
use std::rc::Rc;

use super::activity::{mark_stopped, stop_timeout, Phase, Shared};

/// Revokes and stops whatever the activity holds, within the configured bound. The
/// first caller does the work; a caller that finds a start or another stop under way
/// asks it to stop and waits until everything is stopped.
pub(super) async fn shutdown(shared: &Rc<RefCell<Shared>>) {
    let (taken, stop_timeout, activity, mut stopped) = {
        let mut s = shared.borrow_mut();
        s.stop.request();
        let taken = match std::mem::replace(&mut s.phase, Phase::Stopping) {
            Phase::Ready(active) => Some(Some(active)),
            Phase::Failed { active, .. } => Some(active),
            busy @ (Phase::Starting | Phase::Stopping | Phase::Stopped) => {
                s.phase = busy;
                None
            }
        };
        (
            taken,
            stop_timeout(&s.config),
            s.activity.clone(),
            s.stopped.subscribe(),
        )
    };
    match taken {
        Some(Some(active)) => active.close(stop_timeout, &activity).await,
        Some(None) => log::info!("activity {activity}: stop with no node running"),
        None => {
            // The start or the stop under way marks the end; the sender lives in
            // `shared`, which this caller holds, so the wait cannot miss it.
            let _ = stopped.wait_for(|done| *done).await;
            return;
        }
    }
    mark_stopped(shared);
}

thread_local! {
    /// The activity of this process, for the stop at the end of the supervisor's input
    /// (the SDK has dropped the runtime by then).
    static CURRENT: RefCell<Option<Rc<RefCell<Shared>>>> = const { RefCell::new(None) };
}

/// Remembers the process's activity for [`stop_after_input_closed`].
pub(super) fn register(shared: &Rc<RefCell<Shared>>) {
    CURRENT.with(|current| *current.borrow_mut() = Some(shared.clone()));
}

/// The SDK returns from `start` when its input ends: the supervisor is gone (an
/// ExeUnit that died, a debugger that exited). What the activity still holds is
/// stopped exactly as a Shutdown would, within the same bound, before the process
/// exits.
pub async fn stop_after_input_closed() {
    let Some(shared) = CURRENT.with(|current| current.borrow_mut().take()) else {
        return;
    };
    let holding = matches!(
        shared.borrow().phase,
        Phase::Ready(_)
            | Phase::Failed {
                active: Some(_),
                ..
            }
    );
    if holding {
        let activity = shared.borrow().activity.clone();
        log::warn!(
            "activity {activity}: the supervisor's input closed; stopping as a Shutdown would"
        );
        shutdown(&shared).await;
    }
}

/// A stop signal (an operator, Ctrl-C in a local trial, a debugger's terminal closing,
/// the supervisor dying) stops the node and revokes the credentials before exiting,
/// like a Shutdown would; during a start it cancels the start.
pub(super) fn stop_on_signals(shared: Rc<RefCell<Shared>>) {
    let Some(signalled) = crate::runtime::signals::first_stop_signal() else {
        log::warn!("cannot listen for stop signals; only Shutdown stops the node cleanly");
        return;
    };
    tokio::task::spawn_local(async move {
        let (name, code) = signalled.await;
        log::warn!("got {name}: stopping the node and revoking credentials, then exiting");
        shutdown(&shared).await;
        crate::logging::flush(crate::logging::EXIT_FLUSH);
        std::process::exit(code);
    });
}
