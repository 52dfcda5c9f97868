//! Networks a provider accepts, and the ports each one's node uses.
//!
//! Erigon locks its datadir, so a provider runs at most one node per network; the
//! ports are derived from a per-network `slot` so that nodes for different networks
//! never compete for a port, and an operator can predict every port from the config.

use std::collections::BTreeMap;
use std::fmt;

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

/// How many ports of `port_base` one slot owns. Erigon's own listeners use 11 of them;
/// the rest leave room for listeners a later Erigon may add without renumbering.
pub const SLOT_STRIDE: u16 = 20;
/// Erigon runs one devp2p sentry per protocol version on consecutive allowed ports.
const P2P_PORTS: u16 = 5;

/// A network name this provider accepts. Only [`Networks::resolve`] makes one, so a
/// `Network` in hand is known to be configured, and its name is safe as a path segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    name: String,
    slot: u16,
    chain: String,
    chain_id: Option<u64>,
    shared: bool,
}

impl Network {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Erigon's `--chain`: the network's name unless the configuration says otherwise.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Shared: the operator runs one long-lived node and activities only get access to
    /// it. Managed (the default): each activity runs its own node.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The eth_chainId the node must answer: configured, or known for Erigon's chains.
    /// A node answering another is serving the wrong network.
    pub fn expected_chain_id(&self) -> Option<u64> {
        self.chain_id.or_else(|| known_chain_id(&self.chain))
    }

    pub fn slot(&self) -> u16 {
        self.slot
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
    by_name: BTreeMap<String, u16>,
    chains: BTreeMap<String, String>,
    chain_ids: BTreeMap<String, u64>,
    shared: std::collections::BTreeSet<String>,
}

impl Networks {
    /// Checks names and slots; the error names the offending entry and what is accepted.
    pub fn new(
        entries: BTreeMap<String, u16>,
        port_base: u16,
        http_port: u16,
    ) -> Result<Self, String> {
        if entries.is_empty() {
            return Err("`networks` is empty; list at least one network".into());
        }
        let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
        for (name, &slot) in &entries {
            if !is_valid_name(name) {
                return Err(format!(
                    "`networks.{name}`: a network name is 1 to 32 characters of a-z, 0-9 and '-', starting with a letter or digit"
                ));
            }
            if let Some(other) = seen.insert(slot, name) {
                return Err(format!(
                    "`networks.{name}.slot` is {slot}, the same as `networks.{other}.slot`; every network needs its own slot"
                ));
            }
            if u32::from(port_base) + u32::from(slot + 1) * u32::from(SLOT_STRIDE) > 65_536
                || slot > 999
            {
                return Err(format!(
                    "`networks.{name}.slot` is {slot}: with `port_base` {port_base} its ports would pass 65535; use a smaller slot or port_base"
                ));
            }
            if u32::from(http_port) + u32::from(slot) > 65_535 {
                return Err(format!(
                    "`networks.{name}.slot` is {slot}: `erigon_http_port` {http_port} + slot passes 65535"
                ));
            }
        }
        let max_slot = *seen.keys().next_back().unwrap_or(&0);
        let erigon_range = (
            u32::from(port_base),
            u32::from(port_base) + (u32::from(max_slot) + 1) * u32::from(SLOT_STRIDE) - 1,
        );
        let http_range = (
            u32::from(http_port),
            u32::from(http_port) + u32::from(max_slot),
        );
        if http_range.0 <= erigon_range.1 && erigon_range.0 <= http_range.1 {
            return Err(format!(
                "`erigon_http_port` range {}-{} overlaps the node ports {}-{} derived from `port_base`; move one of them",
                http_range.0, http_range.1, erigon_range.0, erigon_range.1
            ));
        }
        Ok(Self {
            by_name: entries,
            chains: BTreeMap::new(),
            chain_ids: BTreeMap::new(),
            shared: Default::default(),
        })
    }

    /// Networks whose Erigon `--chain` differs from their name (`"ethereum"` served by
    /// `--chain=mainnet`, or a second datadir of one chain).
    pub fn with_chains(mut self, chains: BTreeMap<String, String>) -> Result<Self, String> {
        for (name, chain) in &chains {
            if !is_valid_name(chain) {
                return Err(format!(
                    "`networks.{name}.chain`: \"{}\" is not a chain name; accepted: 1 to 32 characters of a-z, 0-9 and '-'",
                    printable(chain)
                ));
            }
        }
        self.chains = chains;
        Ok(self)
    }

    /// Chain ids for chains Erigon knows under other names, or custom chains.
    pub fn with_chain_ids(mut self, chain_ids: BTreeMap<String, u64>) -> Self {
        self.chain_ids = chain_ids;
        self
    }

    /// Networks whose node the operator runs (see [`Network::is_shared`]).
    pub fn with_shared(mut self, shared: std::collections::BTreeSet<String>) -> Self {
        self.shared = shared;
        self
    }

    fn network(&self, name: &str, slot: u16) -> Network {
        Network {
            name: name.to_owned(),
            slot,
            chain: self
                .chains
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.to_owned()),
            chain_id: self.chain_ids.get(name).copied(),
            shared: self.shared.contains(name),
        }
    }

    /// Turns a requested name into a [`Network`], or says why not and what is accepted.
    pub fn resolve(&self, requested: &str) -> Result<Network, String> {
        if let Some(&slot) = self.by_name.get(requested) {
            return Ok(self.network(requested, slot));
        }
        let shown = printable(requested);
        if RETIRED.contains(&requested) {
            Err(format!(
                "network \"{shown}\" is retired and no longer served by Erigon; accepted: {}",
                self.accepted()
            ))
        } else {
            Err(format!(
                "network \"{shown}\" is not served by this provider; accepted: {}",
                self.accepted()
            ))
        }
    }

    pub fn accepted(&self) -> String {
        self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    pub fn all(&self) -> impl Iterator<Item = Network> + '_ {
        self.by_name
            .iter()
            .map(|(name, &slot)| self.network(name, slot))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// eth_chainId of the chains Erigon ships (see the facts file).
pub fn known_chain_id(chain: &str) -> Option<u64> {
    Some(match chain {
        "mainnet" => 1,
        "sepolia" => 11_155_111,
        "hoodi" => 560_048,
        "holesky" => 17_000,
        "gnosis" => 100,
        "chiado" => 10_200,
        "dev" => 1337,
        _ => return None,
    })
}

pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=32).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Shortens and escapes untrusted input before it is echoed in an error or a log line.
pub fn printable(input: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = input
        .chars()
        .take(MAX)
        .flat_map(char::escape_default)
        .collect();
    if input.chars().count() > MAX {
        out.push_str(&format!("… ({} bytes)", input.len()));
    }
    out
}

/// Every port one network's node listens on. Derived, never stored, so two networks
/// can only collide if their slots do, which [`Networks::new`] refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub p2p: u16,
    pub torrent: u16,
    pub authrpc: u16,
    pub private_api: u16,
    pub caplin_discovery: u16,
    pub caplin_tcp: u16,
    pub sentinel: u16,
    /// rpcdaemon's JSON-RPC port, the one nginx proxies to.
    pub http: u16,
}

impl Ports {
    pub fn for_network(network: &Network, port_base: u16, http_port: u16) -> Self {
        let base = port_base + network.slot * SLOT_STRIDE;
        Self {
            p2p: base,
            torrent: base + P2P_PORTS,
            authrpc: base + P2P_PORTS + 1,
            private_api: base + P2P_PORTS + 2,
            caplin_discovery: base + P2P_PORTS + 3,
            caplin_tcp: base + P2P_PORTS + 4,
            sentinel: base + P2P_PORTS + 5,
            http: http_port + network.slot,
        }
    }

    /// The value of erigon's `--p2p.allowed-ports`.
    pub fn p2p_allowed(&self) -> String {
        (self.p2p..self.p2p + P2P_PORTS)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Networks {
        let map = DEFAULT_NETWORKS
            .iter()
            .map(|(n, s)| (n.to_string(), *s))
            .collect();
        Networks::new(map, 30303, 8555).expect("defaults are valid")
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
            let p = Ports::for_network(&net, 30303, 8555);
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
            .chain(p.p2p..p.p2p + P2P_PORTS);
            for port in all {
                assert!(used.insert(port), "port {port} used twice");
            }
        }
        let mainnet = nets.resolve("mainnet").unwrap();
        let p = Ports::for_network(&mainnet, 30303, 8555);
        assert_eq!(p.p2p_allowed(), "30303,30304,30305,30306,30307");
        assert_eq!(p.http, 8555);
    }

    #[test]
    fn refuses_duplicate_slots_bad_names_and_overlapping_ranges() {
        let dup = [("a".to_string(), 1), ("b".to_string(), 1)].into();
        assert!(Networks::new(dup, 30303, 8555)
            .unwrap_err()
            .contains("same as"));
        let bad = [("Main Net".to_string(), 0)].into();
        assert!(Networks::new(bad, 30303, 8555).unwrap_err().contains("a-z"));
        let overlap = [("a".to_string(), 0)].into();
        assert!(Networks::new(overlap, 8550, 8555)
            .unwrap_err()
            .contains("overlaps"));
        let high = [("a".to_string(), 900)].into();
        assert!(Networks::new(high, 60000, 8555)
            .unwrap_err()
            .contains("65535"));
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("a\"b\n"), "a\\\"b\\n");
        let long = "x".repeat(10_000);
        let shown = printable(&long);
        assert!(
            shown.len() < 100 && shown.contains("10000 bytes"),
            "{shown}"
        );
    }
}
