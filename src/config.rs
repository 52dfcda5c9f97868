//! `ya-runtime-erigon.json`: what the operator writes, and the validated [`Config`] the
//! rest of the runtime uses.
//!
//! The SDK reads the file before our code runs and exits with a bare serde message when
//! a field has the wrong type. So the SDK only sees [`ErigonConf`], a JSON value, and all
//! typing and validation happens here, where every error can name the file and the key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::network::{Network, Networks, DEFAULT_NETWORKS};

/// What the SDK loads and, on first run, what we write back with the defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErigonConf(pub serde_json::Value);

impl Default for ErigonConf {
    fn default() -> Self {
        // Serializing a plain struct of strings, numbers and maps cannot fail.
        Self(serde_json::to_value(RawConfig::default()).unwrap_or_default())
    }
}

/// The file's schema. Keys from the handbook example keep their meaning.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    /// Base of the URL a requestor's user calls (nginx on the provider).
    public_addr: String,
    /// Erigon datadirs live in `<data_dir>/<network>`.
    data_dir: PathBuf,
    /// Retired: entries are written natively now. Accepted so the handbook's file loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    passwd_tool_path: Option<String>,
    /// htpasswd file nginx reads; `{network}` in it gives each network its own file.
    passwd_file_path: String,
    password_default_length: usize,
    erigon_http_addr: String,
    #[serde(deserialize_with = "port_from_number_or_string")]
    erigon_http_port: u16,
    /// First of the ports erigon's own listeners use (p2p, torrent, authrpc, …).
    port_base: u16,
    erigon_path: Option<PathBuf>,
    rpcdaemon_path: Option<PathBuf>,
    networks: BTreeMap<String, NetworkEntry>,
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkEntry {
    slot: u16,
    /// Erigon's `--chain`, when it differs from the network's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<String>,
    /// The eth_chainId the node must answer, for chains the runtime does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain_id: Option<u64>,
    /// `managed` (the runtime runs a node per activity) or `shared` (the operator runs
    /// one node on the network's rpcdaemon port and activities share it).
    #[serde(default, skip_serializing_if = "Mode::is_managed")]
    mode: Mode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Managed,
    Shared,
}

impl Mode {
    fn is_managed(&self) -> bool {
        *self == Mode::Managed
    }
}

fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", crate::NAME)
        .map(|dirs| dirs.data_dir().join("data"))
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
                .map(|(name, slot)| {
                    (
                        name.to_string(),
                        NetworkEntry {
                            slot: *slot,
                            chain: None,
                            chain_id: None,
                            mode: Mode::Managed,
                        },
                    )
                })
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
        }
    }
}

/// The handbook's file writes the port as a string ("8555"); newer files use a number.
fn port_from_number_or_string<'de, D: Deserializer<'de>>(de: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u64),
        Text(String),
    }
    let bad = |shown: String| {
        serde::de::Error::custom(format!(
            "{shown} is not a port; accepted: 1 to 65535, as a number or a string of digits"
        ))
    };
    match Port::deserialize(de).map_err(|_| bad("this value".into()))? {
        Port::Number(n) => u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(n.to_string())),
        Port::Text(s) => s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("\"{}\"", crate::network::printable(&s)))),
    }
}

pub const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 15..=128;
pub const BCRYPT_COST: std::ops::RangeInclusive<u32> = 4..=31;
pub const READY_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=86_400;
/// The ExeUnit SIGKILLs the runtime 5 s after Shutdown; revoking and answering need
/// some of that, so the wait for the node is capped below 4 s.
pub const STOP_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_800;

/// The validated configuration. Paths are absolute, ports fit, networks are consistent.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub public_addr: url::Url,
    pub data_dir: PathBuf,
    pub passwd_file_path: String,
    pub password_length: usize,
    pub http_addr: IpAddr,
    pub http_port: u16,
    pub port_base: u16,
    pub erigon_path: PathBuf,
    pub rpcdaemon_path: PathBuf,
    pub networks: Networks,
    pub default_network: Network,
    pub password_hash: crate::hash::HashScheme,
    pub ready_timeout: std::time::Duration,
    pub stop_timeout: std::time::Duration,
    pub log_dir: PathBuf,
    pub log_max_bytes: usize,
    pub log_files: usize,
    pub http_api: Vec<String>,
    pub http_vhosts: Vec<String>,
    pub erigon_args: Vec<String>,
    pub rpcdaemon_args: Vec<String>,
    pub nginx_site_path: PathBuf,
    /// Set when the file still names `passwd_tool_path`, so the log can say it is ignored.
    pub passwd_tool_path: Option<String>,
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

    /// The htpasswd file nginx checks for this network.
    pub fn passwd_file(&self, network: &Network) -> PathBuf {
        PathBuf::from(self.passwd_file_path.replace("{network}", network.name()))
    }

    /// The rpcdaemon port of `network`: the runtime's own node, or the operator's for a
    /// shared network (which must listen there, as the nginx routes assume).
    pub fn rpc_port(&self, network: &Network) -> u16 {
        crate::network::Ports::for_network(network, self.port_base, self.http_port).http
    }

    pub fn datadir(&self, network: &Network) -> PathBuf {
        self.data_dir.join(network.name())
    }

    /// The URL a requestor's user calls: one route per network behind `public_addr`.
    pub fn public_url(&self, network: &Network) -> String {
        format!(
            "{}/{}",
            self.public_addr.as_str().trim_end_matches('/'),
            network.name()
        )
    }
}

impl RawConfig {
    fn validate(self, _file: &Path, runtime_dir: &Path) -> Result<Config, String> {
        let public_addr = url::Url::parse(&self.public_addr)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .filter(|u| u.query().is_none() && u.fragment().is_none())
            .ok_or_else(|| {
                format!(
                    "key `public_addr`: \"{}\" is not an http(s) URL with a host and no query; example: https://rpc.example.com:8545",
                    crate::network::printable(&self.public_addr)
                )
            })?;
        let absolute = |key: &str, path: &Path| {
            if path.is_absolute() {
                Ok(())
            } else {
                Err(format!(
                    "key `{key}`: \"{}\" is a relative path; accepted: an absolute path",
                    path.display()
                ))
            }
        };
        absolute("data_dir", &self.data_dir)?;
        absolute("nginx_site_path", &self.nginx_site_path)?;
        absolute("passwd_file_path", Path::new(&self.passwd_file_path))?;
        let unsafe_char = self
            .passwd_file_path
            .replace("{network}", "")
            .chars()
            .find(|c| c.is_control() || "\"\\$;{}".contains(*c));
        if let Some(c) = unsafe_char {
            return Err(format!(
                "key `passwd_file_path`: {c:?} is not accepted in a path nginx reads; the only placeholder is {{network}}"
            ));
        }
        if Path::new(&self.passwd_file_path).file_name().is_none()
            || self.passwd_file_path.ends_with('/')
        {
            return Err(format!(
                "key `passwd_file_path`: \"{}\" names a folder; accepted: a file path",
                self.passwd_file_path
            ));
        }
        in_range(
            "password_default_length",
            self.password_default_length,
            PASSWORD_LENGTH,
            " characters",
        )?;
        let http_addr: IpAddr = self.erigon_http_addr.parse().map_err(|_| {
            format!(
                "key `erigon_http_addr`: \"{}\" is not an IP address; accepted: an IPv4 or IPv6 address such as 127.0.0.1",
                crate::network::printable(&self.erigon_http_addr)
            )
        })?;
        if self.port_base == 0 {
            return Err("key `port_base` is 0; accepted: 1 to 65535".into());
        }
        let slots = self
            .networks
            .iter()
            .map(|(name, entry)| (name.clone(), entry.slot))
            .collect();
        let chains = self
            .networks
            .iter()
            .filter_map(|(name, entry)| Some((name.clone(), entry.chain.clone()?)))
            .collect();
        let chain_ids = self
            .networks
            .iter()
            .filter_map(|(name, entry)| Some((name.clone(), entry.chain_id?)))
            .collect();
        let networks = Networks::new(slots, self.port_base, self.erigon_http_port)?
            .with_chains(chains)?
            .with_chain_ids(chain_ids)
            .with_shared(
                self.networks
                    .iter()
                    .filter(|(_, entry)| entry.mode == Mode::Shared)
                    .map(|(name, _)| name.clone())
                    .collect(),
            );
        let default_network = networks
            .resolve(&self.default_network)
            .map_err(|e| format!("key `default_network`: {e}"))?;
        in_range("bcrypt_cost", self.bcrypt_cost, BCRYPT_COST, "")?;
        let password_hash =
            crate::hash::HashScheme::from_config(&self.password_hash, self.bcrypt_cost)?;
        in_range(
            "ready_timeout_secs",
            self.ready_timeout_secs,
            READY_TIMEOUT_SECS,
            "",
        )?;
        in_range(
            "stop_timeout_ms",
            self.stop_timeout_ms,
            STOP_TIMEOUT_MS,
            " (the ExeUnit kills the runtime 5 s after Shutdown)",
        )?;
        in_range("log_max_bytes", self.log_max_bytes, 64 * 1024..=1 << 40, "")?;
        in_range("log_files", self.log_files, 1..=100, "")?;
        let word = |key: &str, list: &[String], extra: &str| match list.iter().find(|w| {
            w.is_empty()
                || !w
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        }) {
            Some(bad) => Err(format!(
                "key `{key}`: \"{}\" is not accepted; accepted: letters, digits and {extra:?}",
                crate::network::printable(bad)
            )),
            None if list.is_empty() => Err(format!("key `{key}` is empty")),
            None => Ok(()),
        };
        word("http_api", &self.http_api, "_")?;
        word("http_vhosts", &self.http_vhosts, ".-*:[]")?;
        refuse_managed("erigon_args", &self.erigon_args, &crate::node::ERIGON_FLAGS)?;
        refuse_managed(
            "rpcdaemon_args",
            &self.rpcdaemon_args,
            &crate::node::RPCDAEMON_FLAGS,
        )?;
        let binary = |key: &str, given: Option<PathBuf>, name: &str| match given {
            Some(path) => absolute(key, &path).map(|_| path),
            None => Ok(runtime_dir.join(name)),
        };
        let log_dir = match self.log_dir {
            Some(dir) => {
                absolute("log_dir", &dir)?;
                dir
            }
            None => self.data_dir.join("logs"),
        };
        Ok(Config {
            file: _file.to_path_buf(),
            public_addr,
            passwd_file_path: self.passwd_file_path,
            password_length: self.password_default_length,
            http_addr,
            http_port: self.erigon_http_port,
            port_base: self.port_base,
            erigon_path: binary("erigon_path", self.erigon_path, "erigon")?,
            rpcdaemon_path: binary("rpcdaemon_path", self.rpcdaemon_path, "rpcdaemon")?,
            networks,
            default_network,
            password_hash,
            ready_timeout: std::time::Duration::from_secs(self.ready_timeout_secs),
            stop_timeout: std::time::Duration::from_millis(self.stop_timeout_ms),
            log_dir,
            log_max_bytes: usize::try_from(self.log_max_bytes).unwrap_or(usize::MAX),
            log_files: self.log_files,
            http_api: self.http_api,
            http_vhosts: self.http_vhosts,
            erigon_args: self.erigon_args,
            rpcdaemon_args: self.rpcdaemon_args,
            nginx_site_path: self.nginx_site_path,
            passwd_tool_path: self.passwd_tool_path,
            data_dir: self.data_dir,
        })
    }
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    accepted: std::ops::RangeInclusive<T>,
    note: &str,
) -> Result<(), String> {
    if accepted.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "key `{key}` is {value}; accepted: {} to {}{note}",
            accepted.start(),
            accepted.end()
        ))
    }
}

fn refuse_managed(key: &str, args: &[String], managed: &[&str]) -> Result<(), String> {
    for arg in args {
        let flag = arg.split('=').next().unwrap_or_default();
        if managed.contains(&flag) {
            return Err(format!(
                "key `{key}`: \"{flag}\" is set by the runtime for each network and cannot be overridden; managed flags: {}",
                managed.join(" ")
            ));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(value: serde_json::Value) -> Result<Config, String> {
        Config::from_value(&value, Path::new("/etc/x.json"), Path::new("/opt/rt"))
    }

    #[test]
    fn the_handbook_example_file_loads_unchanged() {
        let cfg = load(json!({
          "public_addr": "https://0.erigon.golem.network:8545",
          "data_dir": "/data/erigon",
          "passwd_tool_path": "htpasswd",
          "passwd_file_path": "/etc/nginx/erigon_htpasswd",
          "password_default_length": 15,
          "erigon_http_addr": "127.0.0.1",
          "erigon_http_port": "8555"
        }))
        .expect("the seed's file is valid");
        assert_eq!(cfg.http_port, 8555);
        assert_eq!(cfg.password_length, 15);
        assert_eq!(cfg.erigon_path, Path::new("/opt/rt/erigon"));
        assert_eq!(cfg.rpcdaemon_path, Path::new("/opt/rt/rpcdaemon"));
        assert_eq!(cfg.log_dir, Path::new("/data/erigon/logs"));
        let sepolia = cfg.networks.resolve("sepolia").unwrap();
        assert_eq!(
            cfg.passwd_file(&sepolia),
            Path::new("/etc/nginx/erigon_htpasswd")
        );
        assert_eq!(
            cfg.public_url(&sepolia),
            "https://0.erigon.golem.network:8545/sepolia"
        );
    }

    #[test]
    fn a_network_may_name_a_different_erigon_chain() {
        let cfg = load(json!({
            "networks": {"ethereum": {"slot": 0, "chain": "mainnet"}, "dev": {"slot": 1}},
            "default_network": "ethereum"
        }))
        .unwrap();
        assert_eq!(cfg.default_network.chain(), "mainnet");
        assert_eq!(cfg.networks.resolve("dev").unwrap().chain(), "dev");
    }

    #[test]
    fn a_network_is_managed_or_shared() {
        let cfg = load(json!({
            "networks": {"a": {"slot": 0, "mode": "shared"}, "b": {"slot": 1}},
            "default_network": "a"
        }))
        .unwrap();
        assert!(cfg.default_network.is_shared());
        assert!(!cfg.networks.resolve("b").unwrap().is_shared());
        let err =
            load(json!({"networks": {"a": {"slot": 0, "mode": "pooled"}}, "default_network": "a"}))
                .unwrap_err();
        assert!(
            err.contains("key `networks.a.mode`") && err.contains("expected `managed` or `shared`"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let cfg = load(ErigonConf::default().0).expect("defaults are valid");
        assert_eq!(cfg.default_network.name(), "sepolia");
        assert_eq!(cfg.password_hash, crate::hash::HashScheme::Ssha);
        let dev = cfg.networks.resolve("dev").unwrap();
        assert!(cfg.passwd_file(&dev).ends_with("auth/dev.htpasswd"));
    }

    #[test]
    fn every_bad_value_names_its_key_and_what_is_accepted() {
        let cases = [
            (json!({"colour": 1}), "unknown field `colour`"),
            (
                json!({"password_default_length": "x"}),
                "key `password_default_length`",
            ),
            (json!({"password_default_length": 0}), "accepted: 15 to 128"),
            (
                json!({"password_default_length": 10000}),
                "accepted: 15 to 128",
            ),
            (json!({"erigon_http_port": "80a"}), "\"80a\" is not a port"),
            (json!({"erigon_http_port": 70000}), "70000 is not a port"),
            (json!({"erigon_http_port": 0}), "0 is not a port"),
            (
                json!({"data_dir": "data"}),
                "key `data_dir`: \"data\" is a relative path",
            ),
            (json!({"passwd_file_path": "x"}), "key `passwd_file_path`"),
            (
                json!({"passwd_file_path": "/a/$x;"}),
                "'$' is not accepted in a path nginx reads",
            ),
            (
                json!({"passwd_file_path": "/a/{user}"}),
                "'{' is not accepted",
            ),
            (json!({"public_addr": "ftp://x"}), "key `public_addr`"),
            (
                json!({"erigon_http_addr": "localhost"}),
                "not an IP address",
            ),
            (
                json!({"default_network": "goerli"}),
                "key `default_network`: network \"goerli\" is retired",
            ),
            (json!({"networks": {}}), "`networks` is empty"),
            (
                json!({"networks": {"a": {"slot": "1"}}}),
                "key `networks.a.slot`",
            ),
            (
                json!({"networks": {"a": {"slot": 1, "x": 2}}}),
                "key `networks.a.x`: unknown field `x`, expected one of `slot`, `chain`, `chain_id`, `mode`",
            ),
            (json!({"bcrypt_cost": 3}), "accepted: 4 to 31"),
            (
                json!({"password_hash": "md5"}),
                "key `password_hash`: \"md5\" is not a scheme",
            ),
            (json!({"stop_timeout_ms": 5000}), "accepted: 100 to 3800"),
            (json!({"ready_timeout_secs": 0}), "key `ready_timeout_secs`"),
            (json!({"log_files": 0}), "key `log_files`"),
            (json!({"http_api": ["eth;rm"]}), "key `http_api`"),
            (
                json!({"erigon_args": ["--datadir=/x"]}),
                "cannot be overridden",
            ),
            (
                json!({"rpcdaemon_args": ["--http.port", "1"]}),
                "cannot be overridden",
            ),
            (json!({"erigon_path": "erigon"}), "key `erigon_path`"),
            (json!([1, 2]), "configuration file /etc/x.json"),
        ];
        for (value, expected) in cases {
            let err = load(value.clone()).expect_err(&value.to_string());
            assert!(err.starts_with("configuration file /etc/x.json: "), "{err}");
            assert!(err.contains(expected), "for {value}: {err}");
        }
    }

    #[test]
    fn writes_defaults_once_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ya-runtime-erigon.json");
        assert_eq!(write_defaults_if_missing(&path), Ok(true));
        std::fs::write(&path, "{\"bcrypt_cost\": 6}").unwrap();
        assert_eq!(write_defaults_if_missing(&path), Ok(false));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"bcrypt_cost\": 6}"
        );
    }
}
