//! Networks a provider accepts, and the ports each one's node uses.
//!
//! Erigon locks its datadir, so a provider runs at most one node per network; the
//! ports are derived from a per-network `slot` so that nodes for different networks
//! never compete for a port, and an operator can predict every port from the config.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::node::ports::{Ports, PortsError, SLOT_STRIDE};
use crate::text::printable;

/// Chains the Erigon project has shut down or removed. Requests for them get a specific
/// answer instead of "unknown network", because requestors still send them.
pub const RETIRED: &[&str] = &[
    "goerli",
    "rinkeby",
    "ropsten",
    "kovan",
    "mumbai",
    "holesky",
    "bor-mainnet",
    "amoy",
];

/// The default set: every live chain Erigon 3 supports, with a stable slot each.
pub const DEFAULT_NETWORKS: &[(&str, u16)] = &[
    ("mainnet", 0),
    ("sepolia", 1),
    ("hoodi", 2),
    ("gnosis", 3),
    ("chiado", 4),
    ("dev", 5),
];

/// Who runs a network's node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The runtime starts a node for each activity and stops it at the end.
    #[default]
    Managed,
    /// The operator runs one long-lived node on the network's rpcdaemon port, and
    /// activities only get access to it.
    Shared,
}

impl Mode {
    fn is_managed(&self) -> bool {
        *self == Mode::Managed
    }
}

/// One entry of the configuration's `networks` map, exactly as the operator writes it.
/// A new per-network key is a field here and nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub slot: u16,
    /// Erigon's `--chain`, when it differs from the network's name (`"ethereum"` served
    /// by `--chain=mainnet`, or a second datadir of one chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// The eth_chainId the node must answer, for chains the runtime does not know: a
    /// number, or a hex string as nodes answer it (`"0x539"`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "chain_id_number_or_hex"
    )]
    pub chain_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Mode::is_managed")]
    pub mode: Mode,
    /// This network's per-activity limits, over the configuration's `limits` (see
    /// `config`); checked there, where the error can name the key.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub limits: serde_json::Map<String, serde_json::Value>,
    /// Which methods this network's activities may call (see `gateway::Policy`);
    /// `http_api`'s namespaces when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<MethodsSpec>,
    /// Where a shared network's node answers, when not on this machine's
    /// `erigon_http_addr` (see `upstream`); checked in `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeAddress>,
}

/// A shared network's `node` section: the operator's node at its own URLs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    /// `http://` or `https://`, with a host, an optional port and an optional path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `ws://` or `wss://`; derived from `http` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<String>,
    /// A PEM file of CAs trusted besides the system's, for a node with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// A network's `methods` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodsSpec {
    /// Namespaces (`eth`) or whole method names (`debug_traceTransaction`).
    pub allow: Vec<String>,
}

impl NetworkSpec {
    /// A managed network on `slot`, with its name as its chain.
    pub fn managed(slot: u16) -> Self {
        Self {
            slot,
            chain: None,
            chain_id: None,
            mode: Mode::Managed,
            limits: serde_json::Map::new(),
            methods: None,
            node: None,
        }
    }
}

/// A value operators write either as a JSON number or as a string (a port copied from
/// the handbook's file, a chain id copied from a node's answer).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(u64),
    Text(String),
}

fn chain_id_number_or_hex<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    let bad = |shown: String| {
        serde::de::Error::custom(format!(
            "{shown} is not a chain id; accepted: a number such as 1337 or a hex string such as \"0x539\""
        ))
    };
    match NumberOrText::deserialize(de).map_err(|_| bad("this value".into()))? {
        NumberOrText::Number(n) => Ok(Some(n)),
        NumberOrText::Text(s) => s
            .strip_prefix("0x")
            .filter(|h| !h.is_empty() && h.len() <= 16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .map(Some)
            .ok_or_else(|| bad(format!("\"{}\"", printable(&s)))),
    }
}

/// A network name this provider accepts. Only [`Networks`] makes one, so a `Network`
/// in hand is known to be configured, its name is safe as a path segment, and its
/// ports fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    name: String,
    spec: NetworkSpec,
    ports: Ports,
}

impl Network {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Erigon's `--chain`: the network's name unless the configuration says otherwise.
    pub fn chain(&self) -> &str {
        self.spec.chain.as_deref().unwrap_or(&self.name)
    }

    pub fn mode(&self) -> Mode {
        self.spec.mode
    }

    pub fn is_shared(&self) -> bool {
        self.spec.mode == Mode::Shared
    }

    /// The eth_chainId the node must answer: configured, or known for Erigon's chains.
    /// A node answering another is serving the wrong network.
    pub fn expected_chain_id(&self) -> Option<u64> {
        self.spec.chain_id.or_else(|| known_chain_id(self.chain()))
    }

    pub fn slot(&self) -> u16 {
        self.spec.slot
    }

    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The operator's `node` section, as written.
    pub fn node_address(&self) -> Option<&NodeAddress> {
        self.spec.node.as_ref()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The accepted networks, validated once when the configuration is loaded.
#[derive(Clone, Debug)]
pub struct Networks {
    by_name: BTreeMap<String, Network>,
}

impl Networks {
    /// Checks names, chains, slots and the ports they give with `port_base` and
    /// `http_port`; the error names the offending entry and what is accepted.
    pub fn new(
        specs: BTreeMap<String, NetworkSpec>,
        port_base: u16,
        http_port: u16,
    ) -> Result<Self, String> {
        if specs.is_empty() {
            return Err("key `networks` is empty; accepted: at least one network".into());
        }
        let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for (name, spec) in &specs {
            let slot = spec.slot;
            if !is_valid_name(name) {
                return Err(format!(
                    "key `networks.{}`: not a network name; accepted: 1 to 32 characters of a-z, 0-9 and '-', starting with a letter or digit",
                    printable(name)
                ));
            }
            if let Some(chain) = spec.chain.as_deref().filter(|c| !is_valid_name(c)) {
                return Err(format!(
                    "key `networks.{name}.chain`: \"{}\" is not a chain name; accepted: 1 to 32 characters of a-z, 0-9 and '-', starting with a letter or digit",
                    printable(chain)
                ));
            }
            if let Some(other) = seen.insert(slot, name) {
                return Err(format!(
                    "key `networks.{name}.slot` is {slot}, the same as `networks.{other}.slot`; accepted: a slot no other network has"
                ));
            }
            let ports = Ports::new(slot, port_base, http_port).map_err(|e| match e {
                PortsError::Slot => format!(
                    "key `networks.{name}.slot` is {slot}; accepted: 0 to {}",
                    super::ports::MAX_SLOT
                ),
                PortsError::Node => format!(
                    "key `networks.{name}.slot` is {slot}: with `port_base` {port_base} its ports would pass 65535; accepted: a slot whose ports, `port_base` + 20 × slot + 19, stay within 65535 (or a smaller `port_base`)"
                ),
                PortsError::Http => format!(
                    "key `networks.{name}.slot` is {slot}: `erigon_http_port` {http_port} + slot passes 65535; accepted: a slot that keeps it within 65535 (or a smaller `erigon_http_port`)"
                ),
            })?;
            let network = Network {
                name: name.clone(),
                spec: spec.clone(),
                ports,
            };
            by_name.insert(name.clone(), network);
        }
        let max_slot = u32::from(*seen.keys().next_back().unwrap_or(&0));
        // u16 inputs: none of these sums can overflow a u32.
        #[allow(clippy::arithmetic_side_effects)]
        let erigon_range = (
            u32::from(port_base),
            u32::from(port_base) + (max_slot + 1) * u32::from(SLOT_STRIDE) - 1,
        );
        #[allow(clippy::arithmetic_side_effects)]
        let http_range = (u32::from(http_port), u32::from(http_port) + max_slot);
        if http_range.0 <= erigon_range.1 && erigon_range.0 <= http_range.1 {
            return Err(format!(
                "key `erigon_http_port`: its range {}-{} overlaps the node ports {}-{} derived from `port_base`; accepted: ports outside that range (move one of them)",
                http_range.0, http_range.1, erigon_range.0, erigon_range.1
            ));
        }
        Ok(Self { by_name })
    }

    /// Turns a requested name into a [`Network`], or says why not and what is accepted.
    pub fn resolve(&self, requested: &str) -> Result<Network, String> {
        if let Some(network) = self.by_name.get(requested) {
            return Ok(network.clone());
        }
        let shown = printable(requested);
        let why = if RETIRED.contains(&requested) {
            "is retired and no longer served by Erigon"
        } else {
            "is not served by this provider"
        };
        Err(format!(
            "network \"{shown}\" {why}; accepted: {}",
            self.accepted()
        ))
    }

    pub fn accepted(&self) -> String {
        self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    pub fn all(&self) -> impl Iterator<Item = &Network> + '_ {
        self.by_name.values()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// eth_chainId of the chains Erigon 3 ships. Retired chains are not listed: a network
/// may still name one with `chain`, and then its `chain_id` must be configured.
pub fn known_chain_id(chain: &str) -> Option<u64> {
    Some(match chain {
        "mainnet" => 1,
        "sepolia" => 11_155_111,
        "hoodi" => 560_048,
        "gnosis" => 100,
        "chiado" => 10_200,
        "dev" => 1337,
        _ => return None,
    })
}

pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=32).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// A network of its own on `slot`, with the default ports, for other modules' tests.
#[cfg(test)]
pub fn test_network(name: &str, slot: u16) -> Network {
    let specs = [(name.to_string(), NetworkSpec::managed(slot))].into();
    match Networks::new(specs, 30303, 8555).and_then(|n| n.resolve(name)) {
        Ok(network) => network,
        Err(e) => panic!("test network {name}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(entries: &[(&str, u16)]) -> BTreeMap<String, NetworkSpec> {
        entries
            .iter()
            .map(|(n, s)| (n.to_string(), NetworkSpec::managed(*s)))
            .collect()
    }

    fn defaults() -> Networks {
        Networks::new(managed(DEFAULT_NETWORKS), 30303, 8555).expect("defaults are valid")
    }

    #[test]
    fn resolves_configured_and_refuses_retired_with_the_list() {
        let nets = defaults();
        assert_eq!(nets.resolve("sepolia").map(|n| n.slot()), Ok(1));
        let err = nets.resolve("goerli").unwrap_err();
        assert!(err.contains("retired"), "{err}");
        assert!(err.contains("accepted: chiado, dev, gnosis, hoodi, mainnet, sepolia"));
        let err = nets.resolve("../../x").unwrap_err();
        assert!(err.contains("not served"), "{err}");
    }

    #[test]
    fn ports_of_different_slots_never_overlap() {
        let nets = defaults();
        let mut used = std::collections::HashSet::new();
        for net in nets.all() {
            let p = net.ports();
            let all = [
                p.torrent,
                p.authrpc,
                p.private_api,
                p.caplin_discovery,
                p.caplin_tcp,
                p.sentinel,
                p.http,
            ]
            .into_iter()
            .chain(p.p2p..p.p2p + 5);
            for port in all {
                assert!(used.insert(port), "port {port} used twice");
            }
        }
        let p = nets.resolve("mainnet").unwrap().ports();
        assert_eq!(p.p2p_allowed(), "30303,30304,30305,30306,30307");
        assert_eq!(p.http, 8555);
    }

    #[test]
    fn refuses_duplicate_slots_bad_names_and_overlapping_ranges() {
        let new = |entries: &[(&str, u16)], base, http| {
            Networks::new(managed(entries), base, http).unwrap_err()
        };
        assert!(new(&[("a", 1), ("b", 1)], 30303, 8555).contains("same as"));
        assert!(new(&[("Main Net", 0)], 30303, 8555).contains("a-z"));
        assert!(new(&[("a", 0)], 8550, 8555).contains("overlaps"));
        assert!(new(&[("a", 900)], 60000, 8555).contains("65535"));
        assert!(new(&[("a", 1000)], 1000, 2000)
            .contains("key `networks.a.slot` is 1000; accepted: 0 to 999"));
    }

    /// `slot + 1` in u16 once panicked here in a debug build; every edge now gives an
    /// error that names the key.
    #[test]
    fn slots_and_ports_at_u16_edges_are_errors_not_panics() {
        for (slot, base, http) in [
            (u16::MAX, 30303, 8555),
            (u16::MAX - 1, 1, 8555),
            (1000, 1, 8555),
            (0, u16::MAX, 8555),
            (1, 30303, u16::MAX),
            (999, 1, u16::MAX - 999 + 1),
        ] {
            let err = Networks::new(managed(&[("a", slot)]), base, http).unwrap_err();
            assert!(
                err.contains("`networks.a.slot`"),
                "{slot} {base} {http}: {err}"
            );
        }
        let top = Networks::new(managed(&[("a", 0)]), 65_516, 8555).unwrap();
        assert_eq!(top.resolve("a").unwrap().ports().sentinel, 65_526);
    }

    #[test]
    fn a_chain_id_is_a_number_or_a_hex_string() {
        let parse = |v: serde_json::Value| serde_json::from_value::<NetworkSpec>(v);
        let spec = parse(serde_json::json!({"slot": 0, "chain_id": "0x539"})).unwrap();
        assert_eq!(spec.chain_id, Some(1337));
        let spec = parse(serde_json::json!({"slot": 0, "chain_id": 1337})).unwrap();
        assert_eq!(spec.chain_id, Some(1337));
        for bad in [
            serde_json::json!("539"),
            serde_json::json!("0x"),
            serde_json::json!("0xzz"),
            serde_json::json!("0x11111111111111111"),
            serde_json::json!(-1),
            serde_json::json!(true),
        ] {
            let err = parse(serde_json::json!({"slot": 0, "chain_id": bad}))
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not a chain id; accepted"), "{bad}: {err}");
        }
    }
}
