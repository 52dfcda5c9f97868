//! What an activity may use of the node (limits) and what each call costs
//! (weights), with the defaults and the reason for each.

use std::collections::BTreeMap;

/// What one activity may use of the shared node. Every value is taken
/// literally: 0 allows nothing, so a configuration that means "off" must say
/// so with a large number.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Calls per second, refilled continuously. 200 by default: well above a
    /// dapp or indexer's steady need, and low enough that a flood leaves a
    /// 2-core node room for its neighbours (anvil serves a few thousand
    /// simple calls per second there).
    pub calls_per_sec: u32,
    /// Calls that may be sent at once after a quiet spell. 400 by default, 2 s
    /// of the rate, so a full default batch (100) or a page of a UI's start-up
    /// calls never waits. It should be at least `batch`, or a full batch can
    /// never pass.
    pub burst: u32,
    /// Requests (HTTP requests, WebSocket messages) sent to the node and not
    /// yet answered. 32 by default: a slow method (eth_getLogs, traces) then
    /// holds at most 32 of the node's workers, which the rate alone cannot
    /// bound.
    pub in_flight: u32,
    /// Calls in one batch. 100 by default, the common hosted-service figure;
    /// geth allows 1,000 and rpcdaemon has `--rpc.batch.limit`, but one 1,000-
    /// call batch is the unit of the neighbour starvation this limit prevents.
    pub batch: u32,
    /// Open WebSockets. 16 by default: a client needs one or two; each costs a
    /// connection to the node and buffers, and 511 held ones once starved
    /// nginx's connections.
    pub websockets: u32,
    /// Bytes of one HTTP body or WebSocket message. 1 MiB by default: enough
    /// for a full batch of eth_sendRawTransaction with large calldata, and it
    /// bounds what one request can make the gateway buffer.
    pub body_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            calls_per_sec: 200,
            burst: 400,
            in_flight: 32,
            batch: 100,
            websockets: 16,
            body_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// Connections the gateway keeps open at once. An HTTP/1.1 connection
    /// carries one request at a time, so twice the in-flight limit leaves room
    /// for idle keep-alive connections (nginx pools them) next to busy ones;
    /// the WebSockets have their own share. Past it, a new connection gets a
    /// 429 and is closed, so connection floods cannot grow the memory.
    pub fn connections(&self) -> u32 {
        self.in_flight
            .saturating_mul(2)
            .saturating_add(self.websockets)
            .saturating_add(16)
    }

    /// Bytes of request bodies (and WebSocket messages) held at once, across
    /// connections. Each is bounded, but as many connections as are allowed
    /// could each send one: this budget (2 MiB, two full bodies at the
    /// default, or one full body if larger) keeps their sum from growing the
    /// runtime's memory past its 20 MB bound, whatever the flood.
    pub fn body_budget(&self) -> u32 {
        self.body_bytes.max(2 << 20)
    }
}

/// The JSON-RPC method name of subscription notifications; its entry in
/// [`Weights::methods`] is the weight of each notification the node pushes.
pub const NOTIFICATION: &str = "eth_subscription";

/// Compute units per call: what `golem.usage.erigon.requests` adds for each
/// answered call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weights {
    /// Units of a call whose method is not in `methods`. 1 by default, so the
    /// counter counts calls.
    pub default: u32,
    /// Units per method. The key "eth_subscription" is the weight of a
    /// subscription notification the node pushes (0 when absent: the
    /// subscription call itself was billed, and the requestor does not choose
    /// how many blocks or logs arrive).
    pub methods: BTreeMap<String, u32>,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            default: 1,
            methods: BTreeMap::from([(NOTIFICATION.to_string(), 0)]),
        }
    }
}

impl Weights {
    /// A call's weight. A client's own call named "eth_subscription" takes
    /// the default, or sending it would be free.
    pub fn call(&self, method: Option<&str>) -> u64 {
        let listed = method
            .filter(|m| *m != NOTIFICATION)
            .and_then(|m| self.methods.get(m));
        u64::from(*listed.unwrap_or(&self.default))
    }

    /// The weight of one notification the node pushes.
    pub fn notification(&self) -> u64 {
        u64::from(*self.methods.get(NOTIFICATION).unwrap_or(&0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_default_to_one_and_notifications_to_zero() {
        let mut w = Weights::default();
        assert_eq!(w.call(Some("eth_chainId")), 1);
        assert_eq!(w.call(None), 1);
        assert_eq!(w.notification(), 0);
        // A client cannot make its own calls free by naming them like notifications.
        assert_eq!(w.call(Some(NOTIFICATION)), 1);
        w.methods.insert("eth_getLogs".into(), 20);
        w.methods.insert(NOTIFICATION.into(), 2);
        assert_eq!(w.call(Some("eth_getLogs")), 20);
        assert_eq!(w.notification(), 2);
        w.methods.remove(NOTIFICATION);
        assert_eq!(w.notification(), 0);
    }
}
