//! One activity's hold on a network: its node (or access to the operator's), its
//! credentials and its billing, from a successful start to the end of its stop.

use std::time::{Duration, Instant};

use crate::access::credentials::{new_user, Credentials};
use crate::access::seat::Seat;
use crate::cancel::Cancel;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::node::health::{self, JsonRpc};
use crate::node::lock::NetworkLock;
use crate::node::managed::Node;
use crate::node::network::{Mode, Network};
use crate::owner::Owner;
use crate::runtime::status::Served;

/// How long a start waits for a shared node that does not answer: it is the
/// operator's and already running, so a slow answer means it is down.
const SHARED_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The activity's own node, and the network lock it holds.
struct OwnNode {
    node: Node,
    lock: NetworkLock,
}

/// Who serves the activity's calls.
enum Backend {
    Managed(Box<OwnNode>),
    /// The operator's node: access ends with the activity, the node runs on.
    Shared,
}

/// Everything one activity holds; dropping it revokes the credentials, then ends every
/// connection of its gateway (fields drop in this order).
pub struct Session {
    network: Network,
    backend: Backend,
    credentials: Credentials,
    /// `None` once the activity is cut off (see [`Session::cut_off`]).
    gateway: Option<Gateway>,
    rpc: JsonRpc,
    url: String,
    chain_id: String,
    started_at: String,
    ready_since: Instant,
}

/// Why a start failed: the step, as the operator's metrics count it
/// (`ya_runtime_erigon_start_failures_total{reason}`), and what happened.
#[derive(Debug)]
pub struct StartFailure {
    pub reason: &'static str,
    pub text: String,
}

/// Names the step a start failed at.
fn at(reason: &'static str) -> impl FnOnce(String) -> StartFailure {
    move |text| StartFailure { reason, text }
}

/// Starts (or checks) the node of the network the start arguments ask for, then
/// issues the activity's credentials. On error, or when `cancel` asks to stop during
/// a wait, nothing is left: no process, no entry.
pub async fn open(
    config: &Config,
    activity: &str,
    args: &[String],
    cancel: &Cancel,
) -> Result<Session, StartFailure> {
    let network = crate::runtime::request::network_from_start_args(
        args,
        config.networks(),
        config.default_network(),
    )
    .map_err(at("arguments"))?;
    log::info!("activity {activity}: starting a {network} node");
    let started = Instant::now();
    // `ready_timeout_secs` is at most a day (config), far inside Instant's range.
    #[allow(clippy::arithmetic_side_effects)]
    let deadline = started + config.ready_timeout();
    // Deploy prepared these; a start without deploy (or after an operator's clean-up)
    // prepares its own network's folders again.
    crate::provider::deploy::prepare_network(config, &network).map_err(at("folders"))?;
    crate::provider::deploy::prepare_activities_dir(config).map_err(at("folders"))?;
    let owner = Owner::current().map_err(at("folders"))?;
    sweep_dead_in_background(config.socket_dir(), &owner);
    let rpc = JsonRpc::new(config.upstream(&network));
    let (backend, chain_id) = match network.mode() {
        Mode::Shared => {
            // The operator's node: it must answer now; a start waits for nothing else.
            #[allow(clippy::arithmetic_side_effects)] // as `deadline` above
            let deadline = started + config.ready_timeout().min(SHARED_READY_TIMEOUT);
            let answer = health::wait_answer(&rpc, &network, deadline);
            let chain_id = cancel
                .unless("waiting for the shared node", answer)
                .await
                .map_err(|e| format!("the provider's shared {network} node: {e}"))
                .map_err(at("node"))?;
            (Backend::Shared, chain_id)
        }
        Mode::Managed => {
            // Checked when the configuration loaded: a refusal here takes nothing.
            let spec = config.node_spec(&network).map_err(at("node"))?;
            let lock_path = NetworkLock::path_for(config.data_dir(), &network);
            let acquire = NetworkLock::acquire(&lock_path, &network, activity, deadline);
            let lock = cancel
                .unless("waiting for the network", acquire)
                .await
                .map_err(at("network_busy"))?;
            let (node, chain_id) = Node::start(&spec, lock.raw_fd(), deadline, cancel)
                .await
                .map_err(at("node"))?;
            (Backend::Managed(Box::new(OwnNode { node, lock })), chain_id)
        }
    };
    let (credentials, gateway) = match grant(config, &network, &owner).await {
        Ok(opened) => opened,
        Err(e) => {
            if let Backend::Managed(own) = &backend {
                own.node.abort().await;
            }
            return Err(e);
        }
    };
    log::info!(
        "activity {activity}: {network} node answered in {} ms",
        started.elapsed().as_millis()
    );
    let session = Session {
        url: config.public_url(&network),
        network,
        backend,
        credentials,
        gateway: Some(gateway),
        rpc,
        chain_id,
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        ready_since: Instant::now(),
    };
    Ok(session)
}

/// The activity's access: its gateway on a seat's socket or its own, then its credentials.
/// The gateway binds before the credentials exist, so nginx never finds a user whose
/// socket is missing. This is all a start adds to the node's readiness, and it costs
/// the same however many activities are live (see `.ci/bench`).
pub async fn grant(
    config: &Config,
    network: &Network,
    owner: &Owner,
) -> Result<(Credentials, Gateway), StartFailure> {
    let (user, gateway) = open_gateway(config, network).await.map_err(at("gateway"))?;
    let credentials = Credentials::issue(
        config.socket_dir(),
        &user,
        config.password_length(),
        config.password_hash(),
        owner,
    )
    .await
    .map_err(at("credentials"))?;
    Ok((credentials, gateway))
}

/// The activity's gateway, on the lowest free seat's socket (see `seat`), or past
/// the seats on a fresh user's own socket. An own socket name another live gateway
/// holds (a draw of 82 random bits colliding) is drawn again.
async fn open_gateway(config: &Config, network: &Network) -> Result<(String, Gateway), String> {
    let mut last = String::new();
    for _ in 0..3 {
        let seat = Seat::take(config.socket_dir(), config.seats())?;
        let number = seat.as_ref().map(Seat::number);
        if seat.is_none() && config.seats() > 0 {
            log::warn!(
                "all {} seats are taken: this activity gets a socket of its own, without nginx's keep-alive (raise `seats` in {}, then reload nginx)",
                config.seats(),
                config.file().display()
            );
        }
        let user = new_user(network, number);
        let spec = config.gateway_spec(network, &user, number)?;
        match Gateway::start(spec, seat).await {
            Ok(gateway) => return Ok((user, gateway)),
            Err(e) => last = e,
        }
    }
    Err(format!("cannot open the activity's gateway: {last}"))
}

impl Session {
    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn user(&self) -> &str {
        self.credentials.user()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn rpc(&self) -> &JsonRpc {
        &self.rpc
    }

    /// The first of the activity's own node processes that has exited.
    pub fn node_failure(&self) -> Option<String> {
        match &self.backend {
            Backend::Managed(own) => own.node.failure(),
            Backend::Shared => None,
        }
    }

    /// Resolves when the activity's own node fails; `None` on a shared network.
    pub fn watch_node(&self) -> Option<impl std::future::Future<Output = String> + 'static> {
        match &self.backend {
            Backend::Managed(own) => Some(own.node.watch()),
            Backend::Shared => None,
        }
    }

    pub fn revoke(&self) -> impl std::future::Future<Output = Result<(), String>> + 'static {
        self.credentials.revoke()
    }

    /// The bill so far; `None` once cut off.
    pub fn billed(&self) -> Option<crate::gateway::Ledger> {
        self.gateway.as_ref().map(Gateway::ledger)
    }

    /// The gateway's counters for the operator; `None` once cut off.
    pub fn meters(&self) -> Option<std::sync::Arc<crate::metrics::Meters>> {
        self.gateway.as_ref().map(Gateway::meters)
    }

    /// Ends the activity's service: the password stops working, then every connection
    /// of the gateway is closed (keep-alive HTTP and WebSockets). The future resolves
    /// to the final bill, or `None` if the activity was cut off before. It borrows
    /// nothing, so the caller may release the activity's state.
    pub fn cut_off(
        &mut self,
    ) -> impl std::future::Future<Output = Option<crate::gateway::Bill>> + 'static {
        let revoke = self.credentials.revoke();
        let gateway = self.gateway.take();
        async move {
            if let Err(e) = revoke.await {
                log::error!("{e}");
            }
            Some(gateway?.close().await)
        }
    }

    pub fn served(&self) -> Served<'_> {
        Served {
            network: self.network.name(),
            url: &self.url,
            user: self.credentials.user(),
            password: self.credentials.password().expose(),
            revoked: self.credentials.is_revoked(),
            chain_id: &self.chain_id,
            started_at: &self.started_at,
            uptime_secs: self.ready_since.elapsed().as_secs(),
        }
    }

    /// Cuts the activity off (the requestor's service ends the moment stop begins),
    /// then asks the node to stop within `stop_timeout`, and reports what still runs.
    /// A caller that bills cuts the activity off first (see [`Session::cut_off`]);
    /// then this one finds nothing left to cut.
    pub async fn close(mut self, stop_timeout: Duration, activity: &str) {
        let started = Instant::now();
        self.cut_off().await;
        let network = &self.network;
        let Backend::Managed(own) = &mut self.backend else {
            log::info!(
                "activity {activity}: access to the shared {network} node revoked in {} ms",
                started.elapsed().as_millis()
            );
            return;
        };
        own.lock.mark_stopping();
        let report = own.node.stop(stop_timeout).await;
        for stopped in &report.stopped {
            log::info!("activity {activity}: {stopped}");
        }
        for left in &report.left_running {
            log::warn!(
                "activity {activity}: {left}; left running so it can finish, the next start on {network} waits for it"
            );
        }
        log::info!(
            "activity {activity}: stopped in {} ms",
            started.elapsed().as_millis()
        );
    }
}

/// Removes the files of runtimes that died without revoking (SIGKILL, a crash). It
/// runs beside the start, not before it: with 10,000 live activities it reads 10,000
/// owner records, which a start must not wait for. A failure here must not stop a
/// start either; the next start sweeps again.
pub fn sweep_dead_in_background(dir: &std::path::Path, here: &Owner) {
    let (dir, here) = (dir.to_path_buf(), here.clone());
    // Not awaited: a runtime that ends first leaves the rest to the next sweep.
    drop(tokio::task::spawn_blocking(
        move || match crate::access::htpasswd::sweep(&dir, &here) {
            Ok(users) if users.is_empty() => {}
            Ok(users) => log::warn!(
                "swept {} credential(s) of runtimes that died without stopping from {}: {}",
                users.len(),
                dir.display(),
                users.join(", ")
            ),
            Err(e) => log::error!("cannot sweep {}: {e}", dir.display()),
        },
    ));
}
