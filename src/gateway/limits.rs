//! What an activity may use of the node (limits), what each call costs
//! (weights, in compute units) and which methods it may call (policy), with
//! the defaults and the reason for each.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

/// What one activity may use of the shared node. Every value is at least 1,
/// by its type: 0 would allow nothing, so a configuration that means "off"
/// must say so with a large number. Built only by [`Limits::new`], which also
/// holds the rule between two limits that one value alone cannot state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Calls per second, refilled continuously. 200 by default: well above a
    /// dapp or indexer's steady need, and low enough that a flood leaves a
    /// 2-core node room for its neighbours (anvil serves a few thousand
    /// simple calls per second there).
    calls_per_sec: NonZeroU32,
    /// Calls that may be sent at once after a quiet spell. 400 by default, 2 s
    /// of the rate, so a full default batch (100) or a page of a UI's start-up
    /// calls never waits. At least `batch`, or a full batch could never pass.
    burst: NonZeroU32,
    /// Requests (HTTP requests, WebSocket messages) sent to the node and not
    /// yet answered. 32 by default: a slow method (eth_getLogs, traces) then
    /// holds at most 32 of the node's workers, which the rate alone cannot
    /// bound.
    in_flight: NonZeroU32,
    /// Calls in one batch. 100 by default, the common hosted-service figure;
    /// geth allows 1,000 and rpcdaemon has `--rpc.batch.limit`, but one 1,000-
    /// call batch is the unit of the neighbour starvation this limit prevents.
    batch: NonZeroU32,
    /// Open WebSockets. 16 by default: a client needs one or two; each costs a
    /// connection to the node and buffers, and 511 held ones once starved
    /// nginx's connections.
    websockets: NonZeroU32,
    /// Bytes of one HTTP body or WebSocket message. 1 MiB by default: enough
    /// for a full batch of eth_sendRawTransaction with large calldata, and it
    /// bounds what one request can make the gateway buffer.
    body_bytes: NonZeroU32,
    /// Compute units per second, refilled continuously: the node's work, where
    /// `calls_per_sec` counts calls whatever they cost. 5,000 by default: about
    /// 300 `eth_call`s (17 each in the shipped table) a second, or one
    /// `trace_replayBlockTransactions` (2,983) and change.
    cu_per_sec: NonZeroU32,
    /// Compute units that may be spent at once after a quiet spell. 10,000 by
    /// default, 2 s of the rate: a full batch of 100 `eth_getLogs` (7,500)
    /// passes; a request that weighs more can never pass and is refused for
    /// good, without `Retry-After`. At least the heaviest method's weight, or
    /// that method could never be called ([`Limits::fits`]).
    cu_burst: NonZeroU32,
    /// How long the node may take to answer a request (milliseconds). 30,000 by
    /// default, as hosted services cut calls; past it the calls get an error
    /// and are billed, since the node worked on them, and the node connection
    /// is closed, which makes Erigon cancel them.
    call_timeout_ms: NonZeroU32,
    /// Blocks one `eth_getLogs` may span when its range is explicit. 10,000 by
    /// default, Infura's figure: no node flag bounds it, and a wide range makes
    /// the node read every block's logs.
    logs_blocks: NonZeroU32,
    /// Subscriptions one activity may hold on its WebSockets (each WebSocket
    /// counted on its own, at most this many each). 32 by default: a client
    /// needs a few; each makes the node push every new head or matching log.
    subscriptions: NonZeroU32,
}

/// The limits as an operator writes them (`limits`, `networks.<name>.limits`):
/// any number, 0 included, and each key optional, taking [`Limits`]'
/// default. [`Limits::new`] is the only way on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    pub calls_per_sec: u32,
    pub burst: u32,
    pub in_flight: u32,
    pub batch: u32,
    pub websockets: u32,
    pub body_bytes: u32,
    pub cu_per_sec: u32,
    pub cu_burst: u32,
    pub call_timeout_ms: u32,
    pub logs_blocks: u32,
    pub subscriptions: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            calls_per_sec: 200,
            burst: 400,
            in_flight: 32,
            batch: 100,
            websockets: 16,
            body_bytes: 1 << 20,
            cu_per_sec: 5_000,
            cu_burst: 10_000,
            call_timeout_ms: 30_000,
            logs_blocks: 10_000,
            subscriptions: 32,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let d = RawLimits::default();
        // Every default is at least 1 and burst is above batch (the unit test
        // `the_defaults_are_limits` holds them to `new`); MIN is never taken.
        let one = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Limits {
            calls_per_sec: one(d.calls_per_sec),
            burst: one(d.burst),
            in_flight: one(d.in_flight),
            batch: one(d.batch),
            websockets: one(d.websockets),
            body_bytes: one(d.body_bytes),
            cu_per_sec: one(d.cu_per_sec),
            cu_burst: one(d.cu_burst),
            call_timeout_ms: one(d.call_timeout_ms),
            logs_blocks: one(d.logs_blocks),
            subscriptions: one(d.subscriptions),
        }
    }
}

impl Limits {
    /// The limits `raw` states, if each is at least 1 and `burst` is at least
    /// `batch`. An error names the key under `at` (`limits` or
    /// `networks.<name>.limits`) and what is accepted.
    pub fn new(raw: &RawLimits, at: &str) -> Result<Limits, String> {
        let one = |key: &str, n: u32| {
            NonZeroU32::new(n).ok_or_else(|| {
                format!(
                    "key `{at}.{key}` is 0; accepted: 1 to {} (0 would refuse every call)",
                    u32::MAX
                )
            })
        };
        let limits = Limits {
            calls_per_sec: one("calls_per_sec", raw.calls_per_sec)?,
            burst: one("burst", raw.burst)?,
            in_flight: one("in_flight", raw.in_flight)?,
            batch: one("batch", raw.batch)?,
            websockets: one("websockets", raw.websockets)?,
            body_bytes: one("body_bytes", raw.body_bytes)?,
            cu_per_sec: one("cu_per_sec", raw.cu_per_sec)?,
            cu_burst: one("cu_burst", raw.cu_burst)?,
            call_timeout_ms: one("call_timeout_ms", raw.call_timeout_ms)?,
            logs_blocks: one("logs_blocks", raw.logs_blocks)?,
            subscriptions: one("subscriptions", raw.subscriptions)?,
        };
        if limits.burst < limits.batch {
            return Err(format!(
                "key `{at}.burst` is {} but `{at}.batch` is {}: a full batch could never pass; accepted: burst at least batch",
                limits.burst, limits.batch
            ));
        }
        Ok(limits)
    }

    /// The rule between the limits and the weights: every method must fit in
    /// `cu_burst`, or it could never be called. Checked where both meet: the
    /// configuration's load (naming the key under `at`) and a gateway's spec.
    pub fn fits(&self, at: &str, weights: &Weights) -> Result<(), String> {
        let (method, heaviest) = weights.heaviest();
        if u64::from(self.cu_burst.get()) < heaviest {
            return Err(format!(
                "key `{at}.cu_burst` is {} but {method} weighs {heaviest} compute units (the compute-unit table, or `method_weights`): it could never be called; accepted: cu_burst at least the heaviest weight",
                self.cu_burst
            ));
        }
        Ok(())
    }

    /// The limits as written, for the offer and the tests.
    pub fn raw(&self) -> RawLimits {
        RawLimits {
            calls_per_sec: self.calls_per_sec.get(),
            burst: self.burst.get(),
            in_flight: self.in_flight.get(),
            batch: self.batch.get(),
            websockets: self.websockets.get(),
            body_bytes: self.body_bytes.get(),
            cu_per_sec: self.cu_per_sec.get(),
            cu_burst: self.cu_burst.get(),
            call_timeout_ms: self.call_timeout_ms.get(),
            logs_blocks: self.logs_blocks.get(),
            subscriptions: self.subscriptions.get(),
        }
    }

    pub fn calls_per_sec(&self) -> u32 {
        self.calls_per_sec.get()
    }
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }
    pub fn batch(&self) -> u32 {
        self.batch.get()
    }
    pub fn websockets(&self) -> u32 {
        self.websockets.get()
    }
    pub fn body_bytes(&self) -> u32 {
        self.body_bytes.get()
    }
    pub fn cu_per_sec(&self) -> u32 {
        self.cu_per_sec.get()
    }
    pub fn cu_burst(&self) -> u32 {
        self.cu_burst.get()
    }
    pub fn logs_blocks(&self) -> u32 {
        self.logs_blocks.get()
    }
    pub fn subscriptions(&self) -> u32 {
        self.subscriptions.get()
    }

    /// Connections the gateway keeps open at once. An HTTP/1.1 connection
    /// carries one request at a time, so twice the in-flight limit leaves room
    /// for idle keep-alive connections (nginx pools them) next to busy ones;
    /// the WebSockets have their own share. Past it, a new connection gets a
    /// 429 and is closed, so connection floods cannot grow the memory.
    pub fn connections(&self) -> u32 {
        self.in_flight()
            .saturating_mul(2)
            .saturating_add(self.websockets())
            .saturating_add(16)
    }

    /// Bytes of request bodies (and WebSocket messages) held at once, across
    /// connections. Each is bounded, but as many connections as are allowed
    /// could each send one: this budget (2 MiB, two full bodies at the
    /// default, or one full body if larger) keeps their sum from growing the
    /// runtime's memory past its 20 MB bound, whatever the flood.
    pub fn body_budget(&self) -> u32 {
        self.body_bytes().max(2 << 20)
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.call_timeout_ms.get()))
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

    /// The heaviest call's method (or "an unlisted method") and weight.
    pub fn heaviest(&self) -> (String, u64) {
        self.methods
            .iter()
            .filter(|(m, _)| *m != NOTIFICATION)
            .map(|(m, w)| (m.clone(), u64::from(*w)))
            .chain([("an unlisted method".to_string(), u64::from(self.default))])
            .fold(
                ("".into(), 0),
                |best, this| if this.1 > best.1 { this } else { best },
            )
    }
}

/// Namespaces no activity may ever call, whatever the configuration says:
/// they control the node rather than read the chain (accounts, mining, the
/// consensus client's engine API, and the dev nodes' chain controls, which
/// would let a requestor mine or rewrite an operator's dev chain).
pub const DENIED: [&str; 8] = [
    "admin", "personal", "miner", "engine", "clique", "anvil", "evm", "hardhat",
];

/// Which methods an activity may call: whole namespaces (`eth`) or single
/// methods (`debug_traceTransaction`). Anything else the gateway answers
/// itself with -32601, unbilled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    allow: Vec<String>,
}

impl Default for Policy {
    /// rpcdaemon's default `--http.api`.
    fn default() -> Self {
        Policy {
            allow: ["eth", "erigon", "web3", "net", "debug", "trace", "txpool"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Policy {
    /// A policy allowing `allow`; an entry in a denied namespace is refused,
    /// named.
    pub fn new(allow: Vec<String>) -> Result<Policy, String> {
        match allow
            .iter()
            .find(|entry| DENIED.contains(&namespace(entry)))
        {
            Some(entry) => Err(format!(
                "\"{entry}\" can never be allowed: the namespaces {} control the node",
                DENIED.join(", ")
            )),
            None => Ok(Policy { allow }),
        }
    }

    pub fn allowed(&self) -> &[String] {
        &self.allow
    }

    /// Whether a call to `method` may reach the node. A call without a method
    /// passes: the node answers it with an error, billed as any answer.
    pub fn allows(&self, method: Option<&str>) -> bool {
        let Some(method) = method else {
            return true;
        };
        let ns = namespace(method);
        !DENIED.contains(&ns) && self.allow.iter().any(|a| a == method || a == ns)
    }
}

/// A method's namespace: what comes before its first `_` (all of it if none).
fn namespace(method: &str) -> &str {
    method.split('_').next().unwrap_or(method)
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
        assert_eq!(w.heaviest(), ("eth_getLogs".to_string(), 20));
    }

    #[test]
    fn the_policy_allows_namespaces_and_methods_and_never_node_control() {
        let p = Policy::default();
        assert!(p.allows(Some("eth_call")));
        assert!(p.allows(Some("debug_traceTransaction")));
        assert!(p.allows(None));
        for denied in [
            "evm_mine",
            "anvil_setBalance",
            "admin_peers",
            "personal_sign",
            "engine_newPayloadV3",
            "hardhat_mine",
            "no_such_method",
            "eth",
            "",
        ] {
            assert_eq!(p.allows(Some(denied)), denied == "eth", "{denied}");
        }
        let p = Policy::new(vec!["eth_call".into(), "net".into()]).unwrap();
        assert!(p.allows(Some("eth_call")) && p.allows(Some("net_version")));
        assert!(!p.allows(Some("eth_getLogs")));
        let err = Policy::new(vec!["eth".into(), "evm_mine".into()]).unwrap_err();
        assert!(err.contains("\"evm_mine\" can never be allowed"), "{err}");
    }

    #[test]
    fn the_defaults_are_limits() {
        assert_eq!(
            Limits::new(&RawLimits::default(), "limits"),
            Ok(Limits::default())
        );
        assert_eq!(Limits::default().raw(), RawLimits::default());
    }

    #[test]
    fn limits_that_contradict_each_other_are_named() {
        let err = Limits::new(
            &RawLimits {
                burst: 50,
                ..RawLimits::default()
            },
            "limits",
        )
        .unwrap_err();
        assert!(
            err.contains("`limits.burst` is 50 but `limits.batch` is 100"),
            "{err}"
        );
        let err = Limits::new(
            &RawLimits {
                in_flight: 0,
                ..RawLimits::default()
            },
            "networks.dev.limits",
        )
        .unwrap_err();
        assert!(
            err.contains("key `networks.dev.limits.in_flight` is 0; accepted: 1 to"),
            "{err}"
        );
        let mut w = Weights::default();
        w.methods
            .insert("trace_replayBlockTransactions".into(), 20_000);
        let err = Limits::default()
            .fits("networks.dev.limits", &w)
            .unwrap_err();
        assert!(err.contains("`networks.dev.limits.cu_burst` is 10000 but trace_replayBlockTransactions weighs 20000"), "{err}");
        assert!(Limits::default()
            .fits("limits", &Weights::default())
            .is_ok());
    }
}
