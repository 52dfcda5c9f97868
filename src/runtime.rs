//! The ya-runtime-sdk `Runtime`: deploy, start, RUN (STATUS) and stop, as glue over the
//! other modules, and the activity's state machine.
//!
//! A failed start does not return an error. The SDK turns that into a panic before
//! the ExeUnit's `hello`, and the requestor then learns only that the runtime died.
//! Instead the runtime cleans up (no process, no credential), logs the reason and
//! keeps answering: every RUN prints STATUS with `state: failed` and the reason, and
//! exits non-zero so the requestor's batch fails visibly.
//!
//! A stop can come from four places: the ExeUnit's Shutdown, a signal (SIGTERM,
//! SIGINT, SIGHUP, or the parent-death signal when the supervisor vanishes), and the
//! end of the supervisor's input. They all run one [`shutdown`]: the first does the
//! work, the others wait for it, so no caller exits in the middle of a stop. A stop
//! that comes during the start cancels the start's waits; the start then stops what
//! it began.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinHandle;
use ya_runtime_sdk::cli::CommandCli;
use ya_runtime_sdk::{
    Context, EmptyResponse, Error, EventEmitter, OutputResponse, ProcessIdResponse, RunProcess,
    Runtime, RuntimeDef, RuntimeMode,
};

use crate::cancel::{Cancel, StopRequest};
use crate::config::{Config, ErigonConf};
use crate::health;
use crate::session::Session;
use crate::status::{Stage, Status};
use crate::text::printable;

/// Used by a stop when the configuration itself is invalid (nothing ran then).
const FALLBACK_STOP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(RuntimeDef)]
#[conf(ErigonConf)]
pub struct ErigonRuntime {
    shared: Rc<RefCell<Shared>>,
}

struct Shared {
    config: Result<Config, String>,
    activity: String,
    phase: Phase,
    /// Asked by the first stop; cancels a start under way.
    stop: StopRequest,
    cancel: Cancel,
    /// True once the stop is complete, for the stops that wait for another.
    stopped: tokio::sync::watch::Sender<bool>,
}

/// Where the activity is, with what it holds there.
enum Phase {
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
struct Active {
    session: Session,
    watcher: Option<JoinHandle<()>>,
    counter: Option<JoinHandle<()>>,
    emitter: Option<EventEmitter>,
}

impl Active {
    fn launch(
        session: Session,
        emitter: Option<EventEmitter>,
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
            (Some(emitter), Some(billed)) => {
                Some(crate::billing::spawn_counter(emitter.clone(), billed))
            }
            _ => None,
        };
        Self {
            session,
            watcher,
            counter,
            emitter,
        }
    }

    /// Cuts the activity off and reports its final bill, then stops its node: the
    /// ExeUnit has the final count before the Shutdown answer.
    async fn close(mut self, stop_timeout: Duration, activity: &str) {
        for task in [self.watcher.take(), self.counter.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        let billed = self.session.cut_off().await;
        final_bill(self.emitter.as_ref(), billed, activity).await;
        self.session.close(stop_timeout, activity).await;
    }
}

/// The last report of the usage counter, once no call can be answered any more. An
/// activity that served nothing is not billed at all.
async fn final_bill(emitter: Option<&EventEmitter>, billed: Option<u64>, activity: &str) {
    let Some(total) = billed else {
        return;
    };
    log::info!("activity {activity}: {total} call unit(s) billed in all");
    if let (Some(emitter), true) = (emitter, total > 0) {
        crate::billing::report_final(emitter, total).await;
    }
}

impl ErigonRuntime {
    /// Built by the SDK's factory once it has read the configuration file.
    pub fn new(ctx: &mut Context<Self>) -> Self {
        match crate::config::write_defaults_if_missing(&ctx.conf_path) {
            Ok(true) => log::info!(
                "wrote the default configuration to {}",
                ctx.conf_path.display()
            ),
            Ok(false) => {}
            Err(e) => log::warn!("{e}"),
        }
        let config =
            runtime_dir().and_then(|dir| Config::from_value(&ctx.conf.0, &ctx.conf_path, &dir));
        match &config {
            Ok(c) if c.passwd_tool_path().is_some() => log::info!(
                "{}: `passwd_tool_path` is retired and ignored: entries are written natively",
                c.file().display()
            ),
            Ok(_) => {}
            Err(e) => log::error!("{e}"),
        }
        let activity = ctx
            .cli
            .workdir()
            .as_deref()
            .and_then(|w| w.file_name())
            .map(|n| crate::text::activity_id(&n.to_string_lossy()))
            .unwrap_or_else(|| "local".into());
        let (stop, cancel) = crate::cancel::pair();
        let shared = Rc::new(RefCell::new(Shared {
            config,
            activity,
            phase: Phase::Starting,
            stop,
            cancel,
            stopped: tokio::sync::watch::Sender::new(false),
        }));
        CURRENT.with(|current| *current.borrow_mut() = Some(shared.clone()));
        Self { shared }
    }

    fn config(&self) -> Result<Config, Error> {
        self.shared
            .borrow()
            .config
            .clone()
            .map_err(Error::from_string)
    }
}

impl Runtime for ErigonRuntime {
    fn deploy<'a>(&mut self, _ctx: &mut Context<Self>) -> OutputResponse<'a> {
        let config = self.config();
        async move {
            crate::deploy::prepare_all(&config?).map_err(Error::from_string)?;
            Ok(None)
        }
        .boxed_local()
    }

    fn start<'a>(&mut self, ctx: &mut Context<Self>) -> OutputResponse<'a> {
        let args = ctx.cli.command().args().clone();
        let emitter = ctx.emitter.clone();
        let shared = self.shared.clone();
        async move {
            stop_on_signals(shared.clone());
            start(&shared, &args, emitter).await;
            Ok(None)
        }
        .boxed_local()
    }

    fn stop<'a>(&mut self, _ctx: &mut Context<Self>) -> EmptyResponse<'a> {
        let shared = self.shared.clone();
        async move {
            shutdown(&shared).await;
            Ok(())
        }
        .boxed_local()
    }

    /// `STATUS` (any case, alone or as `sh -c STATUS`) prints the STATUS line; anything
    /// else is refused by name, so a requestor's typo is an error it can see rather
    /// than an answer it did not ask for (see `command`).
    fn run_command<'a>(
        &mut self,
        command: RunProcess,
        _mode: RuntimeMode,
        ctx: &mut Context<Self>,
    ) -> ProcessIdResponse<'a> {
        let crate::command::Command::Status =
            match crate::command::parse(&command.bin, &command.args) {
                Ok(known) => known,
                Err(refusal) => {
                    log::warn!("RUN refused: {refusal}");
                    return Error::response(refusal);
                }
            };
        log::info!("RUN {}", printable(&command.bin));
        let shared = self.shared.clone();
        ctx.command(move |mut run_ctx| async move {
            let (line, failure) = status(&shared).await;
            run_ctx.stdout(line).await;
            match failure {
                Some(reason) => Err(Error::from_string(reason)),
                None => Ok(()),
            }
        })
    }

    /// Run by ya-provider at start-up; a failure keeps the provider from starting, so
    /// every failure names its fix.
    fn test<'a>(&mut self, _ctx: &mut Context<Self>) -> EmptyResponse<'a> {
        let config = self.config();
        async move {
            let config = config?;
            crate::deploy::prepare_all(&config).map_err(Error::from_string)?;
            let warnings = crate::offer::self_test(&config)
                .await
                .map_err(Error::from_string)?;
            for warning in warnings {
                log::warn!("test: {warning}");
            }
            log::info!("test: ok ({})", config.file().display());
            Ok(())
        }
        .boxed_local()
    }

    fn offer<'a>(&mut self, _ctx: &mut Context<Self>) -> OutputResponse<'a> {
        let config = self.config();
        async move { Ok(Some(crate::offer::template(&config?).await)) }.boxed_local()
    }
}

async fn start(shared: &Rc<RefCell<Shared>>, args: &[String], emitter: Option<EventEmitter>) {
    let (config, activity, cancel) = {
        let s = shared.borrow();
        (s.config.clone(), s.activity.clone(), s.cancel.clone())
    };
    let stop_timeout = stop_timeout(&config);
    let opened = match config {
        Ok(config) => crate::session::open(&config, &activity, args, &cancel).await,
        Err(_) => {
            Err("the provider's runtime configuration is invalid; its log has the details".into())
        }
    };
    if cancel.is_cancelled() {
        // A stop came during the start and waits for it: close what opened, if it did.
        match opened {
            Ok(session) => {
                session.close(stop_timeout, &activity).await;
            }
            Err(reason) => log::warn!("activity {activity}: start abandoned: {reason}"),
        }
        mark_stopped(shared);
        return;
    }
    let phase = match opened {
        Ok(session) => {
            log::info!(
                "activity {activity}: {} node ready (chain id {}), user {}, url {}",
                session.network(),
                session.chain_id(),
                session.user(),
                session.url()
            );
            Phase::Ready(Active::launch(session, emitter, shared))
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
async fn fail(shared: &Rc<RefCell<Shared>>, reason: String) {
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
async fn status(shared: &Rc<RefCell<Shared>>) -> (String, Option<String>) {
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

/// Revokes and stops whatever the activity holds, within the configured bound. The
/// first caller does the work; a caller that finds a start or another stop under way
/// asks it to stop and waits until everything is stopped.
async fn shutdown(shared: &Rc<RefCell<Shared>>) {
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

fn mark_stopped(shared: &Rc<RefCell<Shared>>) {
    let s = &mut *shared.borrow_mut();
    s.phase = Phase::Stopped;
    s.stopped.send_replace(true);
}

fn stop_timeout(config: &Result<Config, String>) -> Duration {
    config
        .as_ref()
        .map_or(FALLBACK_STOP_TIMEOUT, Config::stop_timeout)
}

thread_local! {
    /// The activity of this process, for the stop at the end of the supervisor's input
    /// (the SDK has dropped the runtime by then).
    static CURRENT: RefCell<Option<Rc<RefCell<Shared>>>> = const { RefCell::new(None) };
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
fn stop_on_signals(shared: Rc<RefCell<Shared>>) {
    let Some(signalled) = crate::signals::first_stop_signal() else {
        log::warn!("cannot listen for stop signals; only Shutdown stops the node cleanly");
        return;
    };
    tokio::task::spawn_local(async move {
        let (name, code) = signalled.await;
        log::warn!("got {name}: stopping the node and revoking credentials, then exiting");
        shutdown(&shared).await;
        std::process::exit(code);
    });
}

fn runtime_dir() -> Result<std::path::PathBuf, String> {
    std::env::current_exe()
        .map_err(|e| format!("cannot find the runtime's own path: {e}"))?
        .parent()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| "the runtime's own path has no folder".into())
}
