//! The activity's state machine: where it is (`Phase`), what a running one holds
//! (`Active`), and the start, the failure and the STATUS that move it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use ya_runtime_sdk::EventEmitter;

use crate::cancel::{Cancel, StopRequest};
use crate::config::Config;
use crate::metrics::Event;
use crate::node::health;
use crate::runtime::session::Session;

use super::publish::{Counting, Publisher};
use crate::runtime::status::{Stage, Status};

/// Used by a stop when the configuration itself is invalid (nothing ran then).
const FALLBACK_STOP_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct Shared {
    pub(super) config: Result<Config, String>,
    pub(super) activity: String,
    pub(super) phase: Phase,
    /// Asked by the first stop; cancels a start under way.
    pub(super) stop: StopRequest,
    pub(super) cancel: Cancel,
    /// True once the stop is complete, for the stops that wait for another.
    pub(super) stopped: tokio::sync::watch::Sender<bool>,
}

/// Where the activity is, with what it holds there.
pub(super) enum Phase {
    Starting,
    Ready(Active),
    /// `active` is `None` when the start failed (nothing is held), and the failed
    /// activity's session otherwise: its node still needs a clean stop.
    Failed {
        reason: String,
        active: Option<Active>,
    },
    Stopping,
    Stopped,
}

/// A running activity: its session, the tasks that watch its node and bill it, and
/// the channel its final bill goes out on.
pub(super) struct Active {
    session: Session,
    watcher: Option<JoinHandle<()>>,
    counter: Option<JoinHandle<()>>,
    emitter: Option<EventEmitter>,
    /// The operator's metrics of this activity, and the task that keeps them.
    publisher: Option<Arc<Publisher>>,
    publishing: Option<JoinHandle<()>>,
}

impl Active {
    pub(super) fn launch(
        session: Session,
        emitter: Option<EventEmitter>,
        counting: Counting,
        shared: &Rc<RefCell<Shared>>,
    ) -> Self {
        let watcher = session.watch_node().map(|failed| {
            let watched = shared.clone();
            tokio::task::spawn_local(async move {
                let failure = failed.await;
                fail(&watched, format!("node failed: {failure}")).await;
            })
        });
        let counter = match (&emitter, session.billed()) {
            (Some(emitter), Some(billed)) => Some(crate::provider::billing::spawn_counter(
                emitter.clone(),
                billed,
            )),
            _ => None,
        };
        let activity = shared.borrow().activity.clone();
        let publisher = Publisher::new(counting, &session, &activity).map(Arc::new);
        let publishing = publisher.clone().map(Publisher::spawn);
        Self {
            session,
            watcher,
            counter,
            emitter,
            publisher,
            publishing,
        }
    }

    /// Cuts the activity off and reports its final bill, then stops its node: the
    /// ExeUnit has the final count before the Shutdown answer.
    pub(super) async fn close(mut self, stop_timeout: Duration, activity: &str) {
        for task in [
            self.watcher.take(),
            self.counter.take(),
            self.publishing.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        let billed = self.session.cut_off().await;
        final_bill(self.emitter.as_ref(), billed, activity).await;
        if let Some(publisher) = self.publisher.take() {
            publisher.finish().await;
        }
        self.session.close(stop_timeout, activity).await;
    }
}

/// The last report of the usage counter, once no call can be answered any more. An
/// activity that served nothing is not billed at all.
pub(super) async fn final_bill(
    emitter: Option<&EventEmitter>,
    billed: Option<crate::gateway::Bill>,
    activity: &str,
) {
    let Some(bill) = billed else {
        return;
    };
    log::info!(
        "activity {activity}: {} call(s), {} compute unit(s) billed in all",
        bill.calls,
        bill.units
    );
    if let (Some(emitter), true) = (emitter, bill != crate::gateway::Bill::default()) {
        crate::provider::billing::report_final(emitter, bill).await;
    }
}

pub(super) async fn start(
    shared: &Rc<RefCell<Shared>>,
    args: &[String],
    emitter: Option<EventEmitter>,
) {
    let (config, activity, cancel) = {
        let s = shared.borrow();
        (s.config.clone(), s.activity.clone(), s.cancel.clone())
    };
    let stop_timeout = stop_timeout(&config);
    // The metrics count starts and failed starts; a start with an invalid
    // configuration has no metrics folder to count in.
    let opened = match config {
        Ok(config) => {
            let counting = Counting::new(&config);
            match crate::runtime::session::open(&config, &activity, args, &cancel).await {
                Ok(session) => Ok((session, counting)),
                Err(failed) => {
                    if !cancel.is_cancelled() {
                        counting.count(Event::StartFailed {
                            reason: failed.reason,
                        });
                    }
                    Err(failed.text)
                }
            }
        }
        Err(_) => {
            Err("the provider's runtime configuration is invalid; its log has the details".into())
        }
    };
    if cancel.is_cancelled() {
        // A stop came during the start and waits for it: close what opened, if it did.
        match opened {
            Ok((session, _)) => {
                session.close(stop_timeout, &activity).await;
            }
            Err(reason) => log::warn!("activity {activity}: start abandoned: {reason}"),
        }
        mark_stopped(shared);
        return;
    }
    let phase = match opened {
        Ok((session, counting)) => {
            log::info!(
                "activity {activity}: {} node ready (chain id {}), user {}, url {}",
                session.network(),
                session.chain_id(),
                session.user(),
                session.url()
            );
            counting.count(Event::Started {
                network: session.network().name().to_owned(),
            });
            Phase::Ready(Active::launch(session, emitter, counting, shared))
        }
        Err(reason) => {
            log::error!("activity {activity}: start failed: {reason}");
            Phase::Failed {
                reason,
                active: None,
            }
        }
    };
    shared.borrow_mut().phase = phase;
}

/// The activity is over for the requestor: its password stops working and its
/// connections close now. Only a ready activity can fail; the cut-off is awaited, so
/// whoever reports the failure next reports a password that no longer works.
pub(super) async fn fail(shared: &Rc<RefCell<Shared>>, reason: String) {
    let (cut_off, emitter, activity) = {
        let mut s = shared.borrow_mut();
        if !matches!(s.phase, Phase::Ready(_)) {
            return;
        }
        let Phase::Ready(mut active) = std::mem::replace(&mut s.phase, Phase::Stopped) else {
            return;
        };
        log::error!("activity {}: {reason}", s.activity);
        let cut_off = active.session.cut_off();
        let emitter = active.emitter.clone();
        s.phase = Phase::Failed {
            reason,
            active: Some(active),
        };
        (cut_off, emitter, s.activity.clone())
    };
    final_bill(emitter.as_ref(), cut_off.await, &activity).await;
}

/// The STATUS line, and the failure reason when failed. Read live: a child that
/// died since the last look fails the activity even before the watcher runs, and so
/// does a node answering for another chain.
pub(super) async fn status(shared: &Rc<RefCell<Shared>>) -> (String, Option<String>) {
    // Ask the node outside the borrow; the answer decides syncing, ready or failed.
    let rpc = match &shared.borrow().phase {
        Phase::Ready(active) if active.session.node_failure().is_none() => {
            Some(active.session.rpc().clone())
        }
        _ => None,
    };
    let report = match rpc {
        Some(rpc) => Some(health::probe(&rpc).await),
        None => None,
    };
    let failure = match &shared.borrow().phase {
        Phase::Ready(active) => active
            .session
            .node_failure()
            .map(|f| format!("node failed: {f}"))
            .or_else(|| {
                let answered = report.as_ref()?.chain_id.as_deref()?;
                health::check_chain(answered, active.session.network()).err()
            }),
        _ => None,
    };
    if let Some(reason) = failure {
        fail(shared, reason).await;
    }
    // A failure another task is revoking is revoked by the time this line is printed.
    let pending = match &shared.borrow().phase {
        Phase::Failed {
            active: Some(active),
            ..
        } => Some(active.session.revoke()),
        _ => None,
    };
    if let Some(revocation) = pending {
        if let Err(e) = revocation.await {
            log::error!("{e}");
        }
    }
    let s = shared.borrow();
    let (stage, served) = match &s.phase {
        Phase::Starting => (Stage::Starting, None),
        Phase::Ready(active) => (Stage::Running, Some(active.session.served())),
        Phase::Failed { reason, active } => (
            Stage::Failed { reason },
            active.as_ref().map(|a| a.session.served()),
        ),
        Phase::Stopping | Phase::Stopped => (Stage::Stopping, None),
    };
    let status = Status::derive(stage, served, report.as_ref());
    (status.to_line(), status.reason.map(str::to_owned))
}

pub(super) fn mark_stopped(shared: &Rc<RefCell<Shared>>) {
    let s = &mut *shared.borrow_mut();
    s.phase = Phase::Stopped;
    s.stopped.send_replace(true);
}

pub(super) fn stop_timeout(config: &Result<Config, String>) -> Duration {
    config
        .as_ref()
        .map_or(FALLBACK_STOP_TIMEOUT, Config::stop_timeout)
}
