//! The ya-runtime-sdk `Runtime`: deploy, start, RUN (STATUS) and stop, wired from the
//! other modules.
//!
//! A failed start does not return an error. The SDK turns that into a panic before
//! the ExeUnit's `hello`, and the requestor then learns only that the runtime died.
//! Instead the runtime cleans up (no process, no credential), logs the reason and
//! keeps answering: every RUN prints STATUS with `state: failed` and the reason, and
//! exits non-zero so the requestor's batch fails visibly.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use ya_runtime_sdk::cli::CommandCli;
use ya_runtime_sdk::{
    Context, EmptyResponse, Error, OutputResponse, ProcessIdResponse, RunProcess, Runtime,
    RuntimeDef, RuntimeMode,
};

use crate::config::{Config, ErigonConf};
use crate::credentials::Credentials;
use crate::health::{self, JsonRpc, NodeReport};
use crate::htpasswd::HtpasswdFile;
use crate::netlock::NetworkLock;
use crate::network::{printable, Network};
use crate::node::Node;
use crate::status::{Auth, State, Status};

#[derive(RuntimeDef)]
#[conf(ErigonConf)]
pub struct ErigonRuntime {
    shared: Rc<RefCell<Shared>>,
}

struct Shared {
    config: Result<Config, String>,
    activity: String,
    phase: Phase,
    session: Option<Session>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    counter: Option<tokio::task::JoinHandle<()>>,
}

enum Phase {
    Starting,
    Ready,
    Failed(String),
    Stopping,
}

/// A node this activity runs, with the network lock it holds.
struct ManagedNode {
    node: Node,
    lock: NetworkLock,
}

/// Everything one activity holds; dropping it revokes the credentials.
struct Session {
    network: Network,
    /// The activity's own node, or None on a shared network (the operator's node).
    node: Option<ManagedNode>,
    credentials: Credentials,
    rpc: JsonRpc,
    /// Taken by the request counter once the activity is up.
    request_log: Option<crate::billing::RequestLog>,
    url: String,
    chain_id: String,
    started_at: String,
    ready_since: Instant,
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
            Ok(c) if c.passwd_tool_path.is_some() => log::info!(
                "{}: `passwd_tool_path` is retired and ignored: entries are written natively",
                c.file.display()
            ),
            Ok(_) => {}
            Err(e) => log::error!("{e}"),
        }
        let activity = ctx
            .cli
            .workdir()
            .as_deref()
            .and_then(|w| w.file_name())
            .map(|n| sanitize(&n.to_string_lossy()))
            .unwrap_or_else(|| "local".into());
        Self {
            shared: Rc::new(RefCell::new(Shared {
                config,
                activity,
                phase: Phase::Starting,
                session: None,
                watcher: None,
                counter: None,
            })),
        }
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
            prepare_dirs(&config?).map_err(Error::from_string)?;
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
            let (config, activity) = {
                let s = shared.borrow();
                (s.config.clone(), s.activity.clone())
            };
            let opened = match config {
                Ok(config) => open_session(&config, &activity, &args).await,
                Err(_) => Err(
                    "the provider's runtime configuration is invalid; its log has the details"
                        .into(),
                ),
            };
            match opened {
                Ok(mut session) => {
                    log::info!(
                        "activity {activity}: {} node ready (chain id {}), user {}, url {}",
                        session.network,
                        session.chain_id,
                        session.credentials.user(),
                        session.url
                    );
                    let watcher = session.node.as_ref().map(|managed| {
                        let failed = managed.node.watch();
                        let watched = shared.clone();
                        tokio::task::spawn_local(async move {
                            let failure = failed.await;
                            node_failed(&watched, failure);
                        })
                    });
                    let counter = match (emitter, session.request_log.take()) {
                        (Some(emitter), Some(log)) => Some(count_requests(
                            emitter,
                            log,
                            session.credentials.user().to_owned(),
                        )),
                        _ => None,
                    };
                    let mut s = shared.borrow_mut();
                    s.session = Some(session);
                    s.watcher = watcher;
                    s.counter = counter;
                    s.phase = Phase::Ready;
                }
                Err(reason) => {
                    log::error!("activity {activity}: start failed: {reason}");
                    shared.borrow_mut().phase = Phase::Failed(reason);
                }
            }
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

    /// `STATUS` (any case) prints the STATUS line; anything else is refused by name, so
    /// a requestor's typo is an error it can see rather than an answer it did not ask for.
    fn run_command<'a>(
        &mut self,
        command: RunProcess,
        _mode: RuntimeMode,
        ctx: &mut Context<Self>,
    ) -> ProcessIdResponse<'a> {
        if command.bin.trim().is_empty() {
            log::warn!("RUN refused: empty command");
            return Error::response("empty command; the only command is STATUS");
        }
        if !command.bin.eq_ignore_ascii_case("STATUS") {
            let shown = printable(&command.bin);
            log::warn!("RUN refused: unknown command \"{shown}\"");
            return Error::response(format!(
                "unknown command \"{shown}\"; the only command is STATUS"
            ));
        }
        log::info!("RUN {}", printable(&command.bin));
        let shared = self.shared.clone();
        ctx.command(move |mut run_ctx| async move {
            // Ask the node outside the borrow; the answer decides syncing, ready or failed.
            let rpc = shared.borrow().probe_target();
            let report = match rpc {
                Some(rpc) => Some(health::probe(&rpc).await),
                None => None,
            };
            let (line, failure) = shared.borrow_mut().status(report);
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
            prepare_dirs(&config).map_err(Error::from_string)?;
            let warnings = crate::offer::self_test(&config)
                .await
                .map_err(Error::from_string)?;
            for warning in warnings {
                log::warn!("test: {warning}");
            }
            log::info!("test: ok ({})", config.file.display());
            Ok(())
        }
        .boxed_local()
    }

    fn offer<'a>(&mut self, _ctx: &mut Context<Self>) -> OutputResponse<'a> {
        let config = self.config();
        async move { Ok(Some(crate::offer::template(&config?).await)) }.boxed_local()
    }
}

/// How long a start waits for a shared node that does not answer: it is the
/// operator's and already running, so a slow answer means it is down.
const SHARED_READY_TIMEOUT: Duration = Duration::from_secs(10);

impl Session {
    fn failure(&self) -> Option<String> {
        self.node.as_ref()?.node.failure()
    }
}

impl Shared {
    /// The node to ask, while the activity is up and its processes live.
    fn probe_target(&self) -> Option<JsonRpc> {
        let session = self.session.as_ref()?;
        (matches!(self.phase, Phase::Ready) && session.failure().is_none())
            .then(|| session.rpc.clone())
    }

    /// The STATUS line, and the failure reason when failed. Read live: a child that
    /// died since the last look shows as failed even before the watcher runs, and a node
    /// answering for another chain fails the activity (and loses its credentials).
    fn status(&mut self, report: Option<NodeReport>) -> (String, Option<String>) {
        if let (Some(report), Some(session)) = (&report, self.session.as_ref()) {
            if let Some(Err(wrong)) = report
                .chain_id
                .as_deref()
                .map(|id| health::check_chain(id, &session.network))
            {
                self.fail(wrong);
            }
        }
        let session = self.session.as_ref();
        let (state, reason) = match &self.phase {
            Phase::Starting => (State::Starting, None),
            Phase::Ready => match session.and_then(Session::failure) {
                Some(failure) => (State::Failed, Some(failure)),
                None if report.as_ref().is_some_and(NodeReport::is_syncing) => {
                    (State::Syncing, None)
                }
                None => (State::Ready, None),
            },
            Phase::Failed(reason) => (State::Failed, Some(reason.clone())),
            Phase::Stopping => (State::Stopping, None),
        };
        let serving = matches!(state, State::Ready | State::Syncing);
        let live = session.filter(|s| serving && !s.credentials.is_revoked());
        let status = Status {
            url: live.map(|s| s.url.clone()),
            auth: live.map(|s| Auth {
                user: s.credentials.user(),
                password: s.credentials.password().expose(),
            }),
            network: session.map(|s| s.network.name()),
            state,
            reason: reason.clone(),
            chain_id: session.map(|s| s.chain_id.as_str()),
            started_at: session.map(|s| s.started_at.as_str()),
            uptime_secs: session.map(|s| s.ready_since.elapsed().as_secs()),
            node: report.as_ref().filter(|_| serving),
            runtime_version: env!("CARGO_PKG_VERSION"),
        };
        (status.to_line(), reason)
    }

    /// The activity is over for the requestor: its password stops working now.
    fn fail(&mut self, reason: String) {
        if !matches!(self.phase, Phase::Ready) {
            return;
        }
        log::error!("activity {}: {reason}", self.activity);
        if let Some(session) = self.session.as_mut() {
            if let Err(e) = session.credentials.revoke() {
                log::error!("{e}");
            }
        }
        self.phase = Phase::Failed(reason);
    }
}

async fn open_session(config: &Config, activity: &str, args: &[String]) -> Result<Session, String> {
    let network =
        crate::request::network_from_start_args(args, &config.networks, &config.default_network)?;
    log::info!("activity {activity}: starting a {network} node");
    let started = Instant::now();
    let deadline = started + config.ready_timeout;
    // Deploy prepared these; a start without deploy (or after an operator's clean-up)
    // prepares its own network's folders again.
    prepare_network_dirs(config, &network)?;
    let owner = crate::owner::Owner::current()?;
    sweep_dead_credentials(config, &owner);
    let rpc = JsonRpc::new(config.http_addr, config.rpc_port(&network))?;
    let (node, chain_id) = if network.is_shared() {
        // The operator's node: it must answer now; a start waits for nothing else.
        let deadline = started + config.ready_timeout.min(SHARED_READY_TIMEOUT);
        let chain_id = health::wait_answer(&rpc, &network, deadline)
            .await
            .map_err(|e| format!("the provider's shared {network} node: {e}"))?;
        (None, chain_id)
    } else {
        let lock_path = NetworkLock::path_for(&config.data_dir, &network);
        let lock = NetworkLock::acquire(&lock_path, &network, activity, deadline).await?;
        let node = Node::start(config, &network, lock.raw_fd(), deadline).await?;
        match health::wait_ready(&rpc, &node, &network, deadline).await {
            Ok(chain_id) => (Some(ManagedNode { node, lock }), chain_id),
            Err(e) => {
                node.abort().await;
                return Err(e);
            }
        }
    };
    // Requests are counted from here: the log's earlier lines are other activities'.
    let request_log =
        crate::billing::RequestLog::open_at_end(crate::billing::log_path(&config.data_dir));
    let file = HtpasswdFile::new(config.passwd_file(&network));
    let credentials = match Credentials::issue(
        file,
        &network,
        config.password_length,
        config.password_hash,
        &owner,
    ) {
        Ok(credentials) => credentials,
        Err(e) => {
            if let Some(managed) = &node {
                managed.node.abort().await;
            }
            return Err(e);
        }
    };
    log::info!(
        "activity {activity}: {network} node answered in {} ms",
        started.elapsed().as_millis()
    );
    Ok(Session {
        url: config.public_url(&network),
        network,
        node,
        credentials,
        rpc,
        request_log: Some(request_log),
        chain_id,
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        ready_since: Instant::now(),
    })
}

/// Removes the credentials of runtimes that died without revoking them (SIGKILL, a
/// crash), from every network's password file. A failure here must not stop a start.
fn sweep_dead_credentials(config: &Config, here: &crate::owner::Owner) {
    let mut files: Vec<_> = config
        .networks
        .all()
        .map(|n| config.passwd_file(&n))
        .collect();
    files.dedup();
    for path in files {
        match HtpasswdFile::new(path.clone()).sweep(here) {
            Ok(users) if users.is_empty() => {}
            Ok(users) => log::warn!(
                "swept {} credential(s) of runtimes that died without stopping from {}: {}",
                users.len(),
                path.display(),
                users.join(", ")
            ),
            Err(e) => log::error!("cannot sweep {}: {e}", path.display()),
        }
    }
}

/// Emits the activity's cumulative request count every second as the usage counter
/// the descriptor declares; the ExeUnit keeps the last value.
fn count_requests(
    mut emitter: ya_runtime_sdk::EventEmitter,
    mut log: crate::billing::RequestLog,
    user: String,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let mut total = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            total += log.count_new(&user);
            emitter
                .counter(ya_runtime_sdk::RuntimeCounter {
                    name: crate::billing::COUNTER.to_owned(),
                    value: total as f64,
                })
                .await;
        }
    })
}

/// A child died while the activity ran: its password stops working now, not at stop.
fn node_failed(shared: &Rc<RefCell<Shared>>, failure: String) {
    shared.borrow_mut().fail(format!("node failed: {failure}"));
}

/// Revokes first (the activity is over for the requestor the moment stop begins), then
/// asks the node to stop within `stop_timeout`, and reports what is still running.
async fn shutdown(shared: &Rc<RefCell<Shared>>) {
    let (session, stop_timeout, activity) = {
        let mut s = shared.borrow_mut();
        if let Some(watcher) = s.watcher.take() {
            watcher.abort();
        }
        if let Some(counter) = s.counter.take() {
            counter.abort();
        }
        s.phase = Phase::Stopping;
        let timeout = s
            .config
            .as_ref()
            .map_or(Duration::from_secs(3), |c| c.stop_timeout);
        (s.session.take(), timeout, s.activity.clone())
    };
    let Some(mut session) = session else {
        log::info!("activity {activity}: stop with no node running");
        return;
    };
    let started = Instant::now();
    if let Err(e) = session.credentials.revoke() {
        log::error!("activity {activity}: {e}");
    }
    // A shared node is the operator's: access ends, the node runs on.
    let Some(managed) = session.node.as_mut() else {
        log::info!(
            "activity {activity}: access to the shared {} node revoked in {} ms",
            session.network,
            started.elapsed().as_millis()
        );
        return;
    };
    managed.lock.mark_stopping();
    let report = managed.node.stop(stop_timeout).await;
    for stopped in &report.stopped {
        log::info!("activity {activity}: {stopped}");
    }
    for left in &report.left_running {
        log::warn!(
            "activity {activity}: {left}; left running so it can finish, the next start on {} waits for it",
            session.network
        );
    }
    log::info!(
        "activity {activity}: stopped in {} ms",
        started.elapsed().as_millis()
    );
}

/// SIGTERM or SIGINT to the runtime (an operator, or Ctrl-C in a local trial) stops the
/// node and revokes the credentials before exiting, like a Shutdown would.
fn stop_on_signals(shared: Rc<RefCell<Shared>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::warn!("cannot listen for SIGTERM/SIGINT; only Shutdown stops the node cleanly");
        return;
    };
    tokio::task::spawn_local(async move {
        let (name, code) = tokio::select! {
            _ = term.recv() => ("SIGTERM", 143),
            _ = int.recv() => ("SIGINT", 130),
        };
        log::warn!("got {name}: stopping the node and revoking credentials, then exiting");
        shutdown(&shared).await;
        std::process::exit(code);
    });
}

/// Deploy (and `test`): every accepted network's folders and password file, and the
/// nginx routes, so a problem shows before any start.
fn prepare_dirs(config: &Config) -> Result<(), String> {
    for network in config.networks.all() {
        prepare_network_dirs(config, &network)?;
        HtpasswdFile::new(config.passwd_file(&network)).ensure_exists()?;
    }
    crate::nginx::write_routes(config)?;
    Ok(())
}

/// The datadir, the log folder and a writable folder for the password file.
fn prepare_network_dirs(config: &Config, network: &Network) -> Result<(), String> {
    let create = |dir: &std::path::Path, what: &str| {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {what} {}: {e}", dir.display()))
    };
    create(&config.datadir(network), "datadir")?;
    create(&config.log_dir, "log folder")?;
    let file = config.passwd_file(network);
    let dir = file.parent().unwrap_or(std::path::Path::new("/"));
    create(dir, "password file folder")?;
    tempfile::tempfile_in(dir).map_err(|e| {
        format!(
            "password file folder {} is not writable ({e}); `passwd_file_path` in {} must point to a folder this user can write",
            dir.display(),
            config.file.display()
        )
    })?;
    Ok(())
}

fn runtime_dir() -> Result<std::path::PathBuf, String> {
    std::env::current_exe()
        .map_err(|e| format!("cannot find the runtime's own path: {e}"))?
        .parent()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| "the runtime's own path has no folder".into())
}

/// The activity id comes from the work folder's name; keep it safe for logs and files.
fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "local".into()
    } else {
        clean
    }
}
