//! The ports of one network's node, derived from its slot.
//!
//! Every sum here is of u16 values computed in u32, where none can overflow, and each
//! port is checked back into u16: a slot at u16's edge is a configuration error, not
//! a panic.

/// How many ports of `port_base` one slot owns. Erigon's own listeners use 11 of them;
/// the rest leave room for listeners a later Erigon may add without renumbering.
pub const SLOT_STRIDE: u16 = 20;
/// Erigon runs one devp2p sentry per protocol version on consecutive allowed ports.
const P2P_PORTS: u16 = 5;
/// Slots above this would only matter for a provider with a thousand networks; the
/// bound keeps every port computation far from u16's edge.
pub const MAX_SLOT: u16 = 999;

/// Every port one network's node listens on, computed once when the network is
/// validated, so two networks can only collide if their slots do, which
/// `Networks::new` refuses.
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

/// Which range a slot pushed past 65535: erigon's own ports, or rpcdaemon's.
pub enum PortsError {
    /// Above `MAX_SLOT`.
    Slot,
    Node,
    Http,
}

impl Ports {
    // Sums of u16 values in u32 (see the module's note): none can overflow.
    #[allow(clippy::arithmetic_side_effects)]
    pub fn new(slot: u16, port_base: u16, http_port: u16) -> Result<Self, PortsError> {
        if slot > MAX_SLOT {
            return Err(PortsError::Slot);
        }
        // In u32, where no sum of these u16 values can overflow; each port is then
        // checked back into u16.
        let base = u32::from(port_base) + u32::from(slot) * u32::from(SLOT_STRIDE);
        if base + u32::from(SLOT_STRIDE) > 65_536 {
            return Err(PortsError::Node);
        }
        let at =
            |offset: u16| u16::try_from(base + u32::from(offset)).map_err(|_| PortsError::Node);
        Ok(Self {
            p2p: at(0)?,
            torrent: at(P2P_PORTS)?,
            authrpc: at(P2P_PORTS + 1)?,
            private_api: at(P2P_PORTS + 2)?,
            caplin_discovery: at(P2P_PORTS + 3)?,
            caplin_tcp: at(P2P_PORTS + 4)?,
            sentinel: at(P2P_PORTS + 5)?,
            http: http_port.checked_add(slot).ok_or(PortsError::Http)?,
        })
    }

    /// The value of erigon's `--p2p.allowed-ports`.
    pub fn p2p_allowed(&self) -> String {
        (0..P2P_PORTS)
            .filter_map(|i| self.p2p.checked_add(i))
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}
