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
//! end of the supervisor's input. They all run one `stop::shutdown`: the first does the
//! work, the others wait for it, so no caller exits in the middle of a stop. A stop
//! that comes during the start cancels the start's waits; the start then stops what
//! it began.

//!
//! - `activity`: the state machine (`Shared`, `Phase`, `Active`): start, failure,
//!   STATUS;
//! - `publish`: the activity's part of the operator's metrics;
//! - `stop`: the one stop every way of stopping runs.

mod activity;
pub mod command;
mod publish;
pub mod request;
pub mod session;
mod signals;
pub mod status;
mod stop;

use std::cell::RefCell;
use std::rc::Rc;

use futures::FutureExt;
use ya_runtime_sdk::cli::CommandCli;
use ya_runtime_sdk::{
    Context, EmptyResponse, Error, OutputResponse, ProcessIdResponse, RunProcess, Runtime,
    RuntimeDef, RuntimeMode,
};

use crate::config::{Config, ErigonConf};
use crate::text::printable;
use activity::{start, Phase, Shared};
use stop::{register, shutdown, stop_on_signals};

pub use stop::stop_after_input_closed;

#[derive(RuntimeDef)]
#[conf(ErigonConf)]
pub struct ErigonRuntime {
    shared: Rc<RefCell<Shared>>,
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
        let config = crate::config::runtime_dir()
            .and_then(|dir| Config::from_value(&ctx.conf.0, &ctx.conf_path, &dir));
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
        register(&shared);
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
            crate::provider::deploy::prepare_all(&config?).map_err(Error::from_string)?;
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
        let crate::runtime::command::Command::Status =
            match crate::runtime::command::parse(&command.bin, &command.args) {
                Ok(known) => known,
                Err(refusal) => {
                    log::warn!("RUN refused: {refusal}");
                    return Error::response(refusal);
                }
            };
        log::info!("RUN {}", printable(&command.bin));
        let shared = self.shared.clone();
        ctx.command(move |mut run_ctx| async move {
            let (line, failure) = activity::status(&shared).await;
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
            crate::provider::deploy::prepare_all(&config).map_err(Error::from_string)?;
            let warnings = crate::provider::offer::self_test(&config)
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
        async move { Ok(Some(crate::provider::offer::template(&config?).await)) }.boxed_local()
    }
}
