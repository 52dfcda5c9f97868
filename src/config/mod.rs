//! `ya-runtime-erigon.json`: what the operator writes, and the validated [`Config`] the
//! rest of the runtime uses.
//!
//! The SDK reads the file before our code runs and exits with a bare serde message when
//! a field has the wrong type. So the SDK only sees [`ErigonConf`], a JSON value, and all
//! typing and validation happens here, where every error can name the file and the key.
//!
//! `RawConfig` is the file's schema; [`Config`] is what it validates into, one
//! section at a time, and it builds what other modules need (a [`NodeSpec`], a
//! password file's path, a URL) rather than handing out its fields.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::access::hash::HashScheme;
use crate::gateway::{GatewaySpec, Limits, Policy, Weights};
use crate::node::network::{Network, Networks};
use crate::node::spec::{NodeParts, NodeSpec};
use crate::node::upstream::Upstream;

mod check;
mod file;
mod gateway;
#[cfg(test)]
mod tests;
pub mod units;
mod upstream;

/// What the SDK loads and, on first run, what we write back with the defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErigonConf(pub serde_json::Value);

/// How activities' credentials are made (where they are kept is `socket_dir`).
#[derive(Clone, Debug)]
struct CredentialSettings {
    length: usize,
    hash: HashScheme,
}

/// What every managed node of this provider shares.
#[derive(Clone, Debug)]
struct NodeSettings {
    erigon: PathBuf,
    rpcdaemon: PathBuf,
    http_addr: IpAddr,
    http_api: Vec<String>,
    http_vhosts: Vec<String>,
    erigon_args: Vec<String>,
    rpcdaemon_args: Vec<String>,
    bounds: crate::node::spec::CallBounds,
}

#[derive(Clone, Debug)]
struct LogSettings {
    dir: PathBuf,
    max_bytes: usize,
    files: usize,
}

/// The validated configuration. Paths are absolute, ports fit, networks are consistent.
/// Its fields are private to `config` (whose loader, a child module, fills them): the
/// rest of the runtime reads it only through the accessors and the specs it builds.
#[derive(Clone, Debug)]
pub struct Config {
    file: PathBuf,
    public_addr: url::Url,
    data_dir: PathBuf,
    networks: Networks,
    /// Each network's node, by name: every network has one.
    upstreams: std::collections::BTreeMap<String, Arc<Upstream>>,
    default_network: Network,
    credentials: CredentialSettings,
    node: NodeSettings,
    logs: LogSettings,
    ready_timeout: Duration,
    stop_timeout: Duration,
    nginx_site_path: PathBuf,
    /// Set when the file still names `passwd_tool_path`, so the log can say it is ignored.
    passwd_tool_path: Option<String>,
    socket_dir: PathBuf,
    seats: u16,
    /// Each network's per-activity limits, by name.
    limits: std::collections::BTreeMap<String, Limits>,
    weights: Weights,
    /// Each network's method policy, by name.
    policies: std::collections::BTreeMap<String, Policy>,
    compute_units_file: PathBuf,
    metrics_file: Option<PathBuf>,
}

impl Config {
    /// The file this configuration came from, for messages that tell where to fix it.
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    pub fn default_network(&self) -> &Network {
        &self.default_network
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn datadir(&self, network: &Network) -> PathBuf {
        self.data_dir.join(network.name())
    }

    pub fn log_dir(&self) -> &Path {
        &self.logs.dir
    }

    pub fn password_length(&self) -> usize {
        self.credentials.length
    }

    pub fn password_hash(&self) -> HashScheme {
        self.credentials.hash
    }

    pub fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }

    pub fn stop_timeout(&self) -> Duration {
        self.stop_timeout
    }

    /// Where a managed network's rpcdaemon listens (and a shared network's node
    /// answers when its `node` section does not say otherwise).
    pub fn rpc_addr(&self, network: &Network) -> SocketAddr {
        SocketAddr::new(self.node.http_addr, network.ports().http)
    }

    /// Where `network`'s node answers and how to reach it: the runtime's own
    /// rpcdaemon, or the operator's node wherever its `node` section says.
    pub fn upstream(&self, network: &Network) -> Arc<Upstream> {
        self.upstreams
            .get(network.name())
            .cloned()
            .unwrap_or_else(|| Arc::new(Upstream::local(self.rpc_addr(network))))
    }

    /// The URL a requestor's user calls: one route per network behind `public_addr`.
    pub fn public_url(&self, network: &Network) -> String {
        format!(
            "{}/{}",
            self.public_addr.as_str().trim_end_matches('/'),
            network.name()
        )
    }

    /// Whether requestors reach the endpoint over TLS.
    pub fn tls(&self) -> bool {
        self.public_addr.scheme() == "https"
    }

    pub fn http_api(&self) -> &[String] {
        &self.node.http_api
    }

    pub fn erigon_path(&self) -> &Path {
        &self.node.erigon
    }

    pub fn rpcdaemon_path(&self) -> &Path {
        &self.node.rpcdaemon
    }

    pub fn nginx_site_path(&self) -> &Path {
        &self.nginx_site_path
    }

    pub fn passwd_tool_path(&self) -> Option<&str> {
        self.passwd_tool_path.as_deref()
    }

    /// The activities' folder: each one's htpasswd file and owner record (see
    /// `htpasswd`) and its gateway's socket. nginx's group must reach it.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The socket of the activity whose user is `user`, when it has no seat.
    pub fn socket_path(&self, user: &str) -> PathBuf {
        crate::access::htpasswd::socket_path(&self.socket_dir, user)
    }

    /// How many seats (gateway sockets nginx keeps connections alive to) the routes
    /// file declares; see `seat`.
    pub fn seats(&self) -> u16 {
        self.seats
    }

    /// The per-activity limits on `network`.
    pub fn limits(&self, network: &Network) -> Limits {
        self.limits.get(network.name()).cloned().unwrap_or_default()
    }

    /// Compute units per method: the table with `method_weights` over it.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Where the compute-unit table is read from (and `calibrate --write` writes).
    pub fn compute_units_file(&self) -> &Path {
        &self.compute_units_file
    }

    /// The Prometheus text file the runtimes keep current, if the operator asked.
    pub fn metrics_file(&self) -> Option<&Path> {
        self.metrics_file.as_deref()
    }

    /// The configured networks' names.
    pub fn network_names(&self) -> Vec<String> {
        self.networks.all().map(|n| n.name().to_owned()).collect()
    }

    /// The methods `network`'s activities may call.
    pub fn policy(&self, network: &Network) -> Policy {
        self.policies
            .get(network.name())
            .cloned()
            .unwrap_or_default()
    }

    /// The gateway of the activity `user` on `network`: its socket (its seat's, or
    /// its own), the node it forwards to, its limits and the method weights.
    pub fn gateway_spec(
        &self,
        network: &Network,
        user: &str,
        seat: Option<u16>,
    ) -> Result<GatewaySpec, String> {
        let socket = match seat {
            Some(n) => crate::access::seat::socket_path(&self.socket_dir, n),
            None => self.socket_path(user),
        };
        GatewaySpec::new(
            socket,
            user.to_owned(),
            self.upstream(network),
            self.limits(network),
            self.weights.clone(),
            self.policy(network),
        )
    }

    /// Everything a managed node of `network` needs to run.
    pub fn node_spec(&self, network: &Network) -> Result<NodeSpec, String> {
        NodeSpec::new(NodeParts {
            network: network.clone(),
            erigon: self.node.erigon.clone(),
            rpcdaemon: self.node.rpcdaemon.clone(),
            datadir: self.datadir(network),
            log_dir: self.logs.dir.join(network.name()),
            log_max_bytes: self.logs.max_bytes,
            log_files: self.logs.files,
            rpc: self.rpc_addr(network),
            http_api: self.node.http_api.clone(),
            http_vhosts: self.node.http_vhosts.clone(),
            erigon_args: self.node.erigon_args.clone(),
            rpcdaemon_args: self.node.rpcdaemon_args.clone(),
            bounds: self.node.bounds.clone(),
        })
    }
}

/// Where the SDK reads the configuration (ya-runtime-sdk 0.4, `Context::try_with`):
/// the first of `ya-runtime-erigon.{toml,yaml,yml,json}` that exists in the user's
/// data folder, else the `.json`. The operator's commands (`calibrate`, `metrics`,
/// `top`) read the same file.
pub fn default_file() -> PathBuf {
    let name = crate::NAME;
    let dir = directories::ProjectDirs::from("", "", name)
        .map(|dirs| dirs.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(name));
    let json = dir.join(format!("{name}.json"));
    ["toml", "yaml", "yml"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|path| path.exists())
        .unwrap_or(json)
}

/// The configuration at `path` as the runtime's own start loads it, and the file's
/// JSON (for the keys `Config` does not hand out). `command` names the operator's
/// command in errors.
pub fn load_file(path: &Path, command: &str) -> Result<(Config, serde_json::Value), String> {
    let shown = path.display();
    let name = crate::NAME;
    if path.extension() != Some(std::ffi::OsStr::new("json")) {
        return Err(format!(
            "configuration file {shown}: {command} reads JSON only; write it as {name}.json"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "configuration file {shown} does not exist: {command} reads the provider's configuration (the runtime writes the defaults there on its first run)"
        ),
        _ => format!("cannot read configuration file {shown}: {e}"),
    })?;
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("configuration file {shown}: {e}"))?;
    let config = Config::from_value(&raw, path, &runtime_dir()?)?;
    Ok((config, raw))
}

/// The runtime binary's folder, where erigon and rpcdaemon are looked for by default:
/// the start and `calibrate` load the configuration with it alike.
pub fn runtime_dir() -> Result<PathBuf, String> {
    std::env::current_exe()
        .map_err(|e| format!("cannot find the runtime's own path: {e}"))?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "the runtime's own path has no folder".into())
}

/// Writes the defaults where the SDK looked for a file and found none, so an operator
/// has a complete file to edit. An existing file is never touched.
pub fn write_defaults_if_missing(path: &Path) -> Result<bool, String> {
    if path.exists() {
        return Ok(false);
    }
    let dir = path
        .parent()
        .ok_or_else(|| format!("configuration path {} has no parent folder", path.display()))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create configuration folder {}: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(&ErigonConf::default().0)
        .map_err(|e| format!("cannot serialize the default configuration: {e}"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut tmp, format!("{text}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // Another runtime may have written it meanwhile; theirs wins, both are defaults.
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!("cannot write {}: {}", path.display(), e.error)),
    }
}
