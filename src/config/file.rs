//! The file's schema, its defaults, and its validation into a [`Config`], one section
//! at a time.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::check::{absolute, in_range, words};
use super::gateway::{network_limits, network_policies, validate_socket_dir};
use super::upstream::network_upstreams;
use super::{Config, CredentialSettings, ErigonConf, LogSettings, NodeSettings};
use crate::access::hash::HashScheme;
use crate::config::units::{Table, MAX_WEIGHT};
use crate::node::network::{NetworkSpec, Networks, NumberOrText, DEFAULT_NETWORKS};
use crate::node::spec::{ERIGON_FLAGS, RPCDAEMON_FLAGS};
use crate::text::printable;

/// The file's schema. Keys from the handbook example keep their meaning. A new key is
/// a field here with its default below, and the section of [`RawConfig::validate`]
/// that reads it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    /// Base of the URL a requestor's user calls (nginx on the provider).
    public_addr: String,
    /// Erigon datadirs live in `<data_dir>/<network>`.
    data_dir: PathBuf,
    /// Retired: entries are written natively now. Accepted so the handbook's file loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    passwd_tool_path: Option<String>,
    /// Retired as a file: each activity has its own htpasswd file now. Its folder is
    /// still the default `socket_dir`, so the handbook's file keeps working.
    passwd_file_path: String,
    password_default_length: usize,
    erigon_http_addr: String,
    #[serde(deserialize_with = "port_from_number_or_string")]
    erigon_http_port: u16,
    /// First of the ports erigon's own listeners use (p2p, torrent, authrpc, …).
    port_base: u16,
    erigon_path: Option<PathBuf>,
    rpcdaemon_path: Option<PathBuf>,
    networks: BTreeMap<String, NetworkSpec>,
    default_network: String,
    /// Scheme of the htpasswd entries: ssha (default), sha or bcrypt.
    password_hash: String,
    bcrypt_cost: u32,
    ready_timeout_secs: u64,
    stop_timeout_ms: u64,
    log_dir: Option<PathBuf>,
    log_max_bytes: u64,
    log_files: usize,
    http_api: Vec<String>,
    http_vhosts: Vec<String>,
    erigon_args: Vec<String>,
    rpcdaemon_args: Vec<String>,
    /// The installed nginx site, checked by `ya-runtime-erigon test`.
    nginx_site_path: PathBuf,
    /// The activities' folder: each one's htpasswd file, owner record and gateway
    /// socket. The folder of `passwd_file_path` by default, which the provider set-up
    /// makes reachable for nginx's group.
    socket_dir: Option<PathBuf>,
    /// Gateway sockets nginx keeps connections alive to (see `seat`); activities past
    /// them get a socket of their own, without keep-alive.
    seats: u16,
    /// Per-activity limits of every network (a network's `limits` overrides keys).
    limits: serde_json::Map<String, serde_json::Value>,
    /// Compute units per JSON-RPC method, over the compute-unit table's;
    /// `eth_subscription` is the weight of each subscription notification.
    method_weights: BTreeMap<String, u32>,
    /// The compute-unit table (see `units`): `compute-units.json` next to this file
    /// by default, and the shipped table when that file does not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    compute_units_file: Option<PathBuf>,
    /// What one call may make a managed rpcdaemon do (see `nodespec::CallBounds`).
    rpc_evm_timeout_ms: u64,
    rpc_gas_cap: u64,
    rpc_returndata_bytes: u64,
    rpc_batch_concurrency: u32,
    /// A file the runtimes keep current with the provider's metrics, in Prometheus'
    /// text format: node_exporter's textfile collector reads it (see `metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_file: Option<PathBuf>,
}

/// Under the user's data folder; a HOME that is not UTF-8 cannot be written into the
/// JSON file, so it falls back to the system path.
fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", crate::NAME)
        .map(|dirs| dirs.data_dir().join("data"))
        .filter(|dir| dir.to_str().is_some())
        .unwrap_or_else(|| PathBuf::from("/var/lib/ya-runtime-erigon"))
}

impl Default for RawConfig {
    fn default() -> Self {
        let data_dir = default_data_dir();
        Self {
            public_addr: "http://127.0.0.1:8545".into(),
            passwd_file_path: data_dir
                .join("auth")
                .join("{network}.htpasswd")
                .to_string_lossy()
                .into_owned(),
            data_dir,
            passwd_tool_path: None,
            password_default_length: 24,
            erigon_http_addr: "127.0.0.1".into(),
            erigon_http_port: 8555,
            port_base: 30303,
            erigon_path: None,
            rpcdaemon_path: None,
            networks: DEFAULT_NETWORKS
                .iter()
                .map(|(name, slot)| (name.to_string(), NetworkSpec::managed(*slot)))
                .collect(),
            default_network: "sepolia".into(),
            password_hash: "ssha".into(),
            bcrypt_cost: 5,
            ready_timeout_secs: 120,
            stop_timeout_ms: 3000,
            log_dir: None,
            log_max_bytes: 16 * 1024 * 1024,
            log_files: 4,
            http_api: ["eth", "erigon", "web3", "net", "debug", "trace", "txpool"]
                .map(String::from)
                .to_vec(),
            http_vhosts: vec!["localhost".into()],
            erigon_args: vec![],
            rpcdaemon_args: vec![],
            nginx_site_path: PathBuf::from("/etc/nginx/sites-enabled/ya-runtime-erigon.conf"),
            socket_dir: None,
            seats: crate::access::seat::DEFAULT_SEATS,
            limits: serde_json::Map::new(),
            method_weights: BTreeMap::new(),
            compute_units_file: None,
            metrics_file: None,
            // Just under the gateway's default call timeout (30 s): the node's own
            // error, naming the reason, arrives first, and the work stops there.
            rpc_evm_timeout_ms: 25_000,
            // Erigon's and geth's default, so that eth_estimateGas answers as on any
            // node; the EVM timeout bounds what it costs.
            rpc_gas_cap: 50_000_000,
            // rpcdaemon's default: a large eth_call answer is a bulk read in disguise.
            rpc_returndata_bytes: 100_000,
            // rpcdaemon's default: one batch takes at most two of its workers, so a
            // full batch cannot occupy the node the neighbours share.
            rpc_batch_concurrency: 2,
        }
    }
}

impl Default for ErigonConf {
    fn default() -> Self {
        // Only a path that is not UTF-8 fails to serialize, and `default_data_dir`
        // avoids those; should one slip through, `{}` loads as the same defaults.
        Self(
            serde_json::to_value(RawConfig::default())
                .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
        )
    }
}

impl Config {
    /// Types and validates what the SDK read from `file`. `runtime_dir` is where the
    /// runtime binary lives: erigon and rpcdaemon are looked up next to it by default.
    pub fn from_value(
        value: &serde_json::Value,
        file: &Path,
        runtime_dir: &Path,
    ) -> Result<Self, String> {
        let shown = file.display();
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                format!("configuration file {shown}: {}", e.inner())
            } else {
                format!("configuration file {shown}: key `{path}`: {}", e.inner())
            }
        })?;
        raw.validate(file, runtime_dir)
            .map_err(|e| format!("configuration file {shown}: {e}"))
    }
}

/// The handbook's file writes the port as a string ("8555"); newer files use a number.
fn port_from_number_or_string<'de, D: Deserializer<'de>>(de: D) -> Result<u16, D::Error> {
    let bad = |shown: String| {
        serde::de::Error::custom(format!(
            "{shown} is not a port; accepted: 1 to 65535, as a number or a string of digits"
        ))
    };
    match NumberOrText::deserialize(de).map_err(|_| bad("this value".into()))? {
        NumberOrText::Number(n) => u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(n.to_string())),
        // Digits only: `parse` would also take a leading `+`.
        NumberOrText::Text(s) => Some(s.as_str())
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("\"{}\"", printable(&s)))),
    }
}

pub const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 15..=128;
pub const BCRYPT_COST: std::ops::RangeInclusive<u32> = 4..=31;
pub const READY_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=86_400;
/// The ExeUnit SIGKILLs the runtime 5 s after Shutdown; revoking and answering need
/// some of that, so the wait for the node is capped below 4 s.
pub const STOP_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_800;
const LOG_MAX_BYTES: std::ops::RangeInclusive<u64> = 64 * 1024..=1 << 40;
const LOG_FILES: std::ops::RangeInclusive<usize> = 1..=100;

impl RawConfig {
    pub(super) fn validate(self, file: &Path, runtime_dir: &Path) -> Result<Config, String> {
        let RawConfig {
            public_addr,
            data_dir,
            passwd_tool_path,
            passwd_file_path,
            password_default_length,
            erigon_http_addr,
            erigon_http_port,
            port_base,
            erigon_path,
            rpcdaemon_path,
            networks,
            default_network,
            password_hash,
            bcrypt_cost,
            ready_timeout_secs,
            stop_timeout_ms,
            log_dir,
            log_max_bytes,
            log_files,
            http_api,
            http_vhosts,
            erigon_args,
            rpcdaemon_args,
            nginx_site_path,
            socket_dir,
            seats,
            limits,
            method_weights,
            compute_units_file,
            rpc_evm_timeout_ms,
            rpc_gas_cap,
            rpc_returndata_bytes,
            rpc_batch_concurrency,
            metrics_file,
        } = self;
        let public_addr = validate_public_addr(&public_addr)?;
        absolute("data_dir", &data_dir)?;
        absolute("nginx_site_path", &nginx_site_path)?;
        let socket_dir = validate_socket_dir(socket_dir, &passwd_file_path)?;
        in_range("seats", seats, 0..=crate::access::seat::MAX_SEATS, "")?;
        let credentials =
            CredentialSettings::validate(password_default_length, &password_hash, bcrypt_cost)?;
        let http_addr: IpAddr = erigon_http_addr.parse().map_err(|_| {
            format!(
                "key `erigon_http_addr`: \"{}\" is not an IP address; accepted: an IPv4 or IPv6 address such as 127.0.0.1",
                printable(&erigon_http_addr)
            )
        })?;
        if port_base == 0 {
            return Err("key `port_base` is 0; accepted: 1 to 65535".into());
        }
        if let Some(path) = &metrics_file {
            absolute("metrics_file", path)?;
            if path.extension().and_then(|e| e.to_str()) != Some("prom") {
                return Err(format!(
                    "key `metrics_file`: {} does not end in .prom, which node_exporter's textfile collector reads only; accepted: an absolute path ending in .prom, or no key",
                    path.display()
                ));
            }
        }
        let compute_units_file = match compute_units_file {
            Some(path) => absolute("compute_units_file", &path).map(|()| path)?,
            None => crate::config::units::path_next_to(file),
        };
        let mut weights = Table::load(&compute_units_file)?.weights();
        for (method, weight) in method_weights {
            in_range(
                &format!("method_weights.{method}"),
                weight,
                0..=MAX_WEIGHT,
                "",
            )?;
            weights.methods.insert(method, weight);
        }
        let limits = network_limits(&limits, &networks, &weights)?;
        let http_api = words("http_api", http_api, "_")?;
        let policies = network_policies(&networks, &http_api)?;
        let networks = Networks::new(networks, port_base, erigon_http_port)?;
        let upstreams = network_upstreams(&networks, http_addr)?;
        let default_network = networks
            .resolve(&default_network)
            .map_err(|e| format!("key `default_network`: {e}"))?;
        in_range(
            "ready_timeout_secs",
            ready_timeout_secs,
            READY_TIMEOUT_SECS,
            "",
        )?;
        in_range(
            "stop_timeout_ms",
            stop_timeout_ms,
            STOP_TIMEOUT_MS,
            " (the ExeUnit kills the runtime 5 s after Shutdown)",
        )?;
        let logs = LogSettings::validate(log_dir, &data_dir, log_max_bytes, log_files)?;
        in_range(
            "rpc_evm_timeout_ms",
            rpc_evm_timeout_ms,
            100..=3_600_000,
            "",
        )?;
        in_range("rpc_gas_cap", rpc_gas_cap, 21_000..=10_000_000_000, "")?;
        in_range(
            "rpc_returndata_bytes",
            rpc_returndata_bytes,
            1_000..=1 << 30,
            "",
        )?;
        in_range("rpc_batch_concurrency", rpc_batch_concurrency, 1..=256, "")?;
        let bounds = crate::node::spec::CallBounds {
            evm_timeout_ms: rpc_evm_timeout_ms,
            gas_cap: rpc_gas_cap,
            returndata_bytes: rpc_returndata_bytes,
            batch_concurrency: rpc_batch_concurrency,
        };
        let node = NodeSettings {
            erigon: binary("erigon_path", erigon_path, runtime_dir, "erigon")?,
            rpcdaemon: binary("rpcdaemon_path", rpcdaemon_path, runtime_dir, "rpcdaemon")?,
            http_addr,
            http_api,
            http_vhosts: words("http_vhosts", http_vhosts, ".-*:[]")?,
            erigon_args: managed_free("erigon_args", erigon_args, &ERIGON_FLAGS)?,
            rpcdaemon_args: managed_free("rpcdaemon_args", rpcdaemon_args, &RPCDAEMON_FLAGS)?,
            bounds,
        };
        Ok(Config {
            file: file.to_path_buf(),
            public_addr,
            data_dir,
            networks,
            upstreams,
            default_network,
            credentials,
            node,
            logs,
            ready_timeout: Duration::from_secs(ready_timeout_secs),
            stop_timeout: Duration::from_millis(stop_timeout_ms),
            nginx_site_path,
            passwd_tool_path,
            socket_dir,
            seats,
            limits,
            weights,
            policies,
            compute_units_file,
            metrics_file,
        })
    }
}

fn validate_public_addr(text: &str) -> Result<url::Url, String> {
    url::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .filter(|u| u.query().is_none() && u.fragment().is_none())
        .ok_or_else(|| {
            format!(
                "key `public_addr`: \"{}\" is not an http(s) URL with a host and no query; example: https://rpc.example.com:8545",
                printable(text)
            )
        })
}

impl CredentialSettings {
    fn validate(length: usize, hash: &str, bcrypt_cost: u32) -> Result<Self, String> {
        in_range(
            "password_default_length",
            length,
            PASSWORD_LENGTH,
            " characters",
        )?;
        in_range("bcrypt_cost", bcrypt_cost, BCRYPT_COST, "")?;
        Ok(Self {
            length,
            hash: HashScheme::from_config(hash, bcrypt_cost)?,
        })
    }
}

impl LogSettings {
    fn validate(
        dir: Option<PathBuf>,
        data_dir: &Path,
        max_bytes: u64,
        files: usize,
    ) -> Result<Self, String> {
        in_range("log_max_bytes", max_bytes, LOG_MAX_BYTES, "")?;
        in_range("log_files", files, LOG_FILES, "")?;
        let dir = match dir {
            Some(dir) => {
                absolute("log_dir", &dir)?;
                dir
            }
            None => data_dir.join("logs"),
        };
        Ok(Self {
            dir,
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            files,
        })
    }
}

/// The configured binary, or `name` next to the runtime.
fn binary(
    key: &str,
    given: Option<PathBuf>,
    runtime_dir: &Path,
    name: &str,
) -> Result<PathBuf, String> {
    match given {
        Some(path) => absolute(key, &path).map(|()| path),
        None => Ok(runtime_dir.join(name)),
    }
}

fn managed_free(key: &str, args: Vec<String>, managed: &[&str]) -> Result<Vec<String>, String> {
    crate::node::spec::refuse_managed(key, &args, managed).map(|()| args)
}
