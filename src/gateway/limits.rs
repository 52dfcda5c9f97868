//! Per-activity limits and per-method weights, and the token bucket that
//! enforces calls per second.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

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

    /// Bytes of request bodies held at once, across connections. Each body is
    /// bounded, but as many connections as are allowed could each send one:
    /// this budget (8 MiB, or one full body if larger) keeps their sum from
    /// growing the runtime's memory past its bound, whatever the flood.
    pub fn body_budget(&self) -> u32 {
        self.body_bytes.max(8 << 20)
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

/// Which limit refused a request, with the configured value, as the client
/// reads it in the error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub limit: &'static str,
    pub value: u32,
    /// Seconds until a retry can pass, for `Retry-After` (at least 1).
    pub retry_after: u64,
}

impl Refusal {
    pub fn new(limit: &'static str, value: u32) -> Refusal {
        Refusal {
            limit,
            value,
            retry_after: 1,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limit exceeded: {} ({})", self.limit, self.value)
    }
}

/// Millionths of a token, so that refill is exact integer arithmetic: one
/// microsecond at `rate` calls per second refills `rate` micro-tokens.
const MICRO: u64 = 1_000_000;

/// A token bucket for calls per second. A request of n calls takes n tokens
/// or none, so a batch is refused whole rather than half-served. Written here
/// rather than taken from governor because governor refuses a request larger
/// than the burst outright and cannot say how long to wait for a partial
/// refill, which `Retry-After` needs.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    capacity: u64,
    state: Mutex<(u64, Instant)>,
}

impl TokenBucket {
    /// Starts full, so a new activity may burst at once.
    pub fn new(calls_per_sec: u32, burst: u32) -> TokenBucket {
        let capacity = u64::from(burst).saturating_mul(MICRO);
        TokenBucket {
            rate: u64::from(calls_per_sec),
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes `calls` tokens, or says in whole seconds (at least 1) when that
    /// many will be there.
    pub fn take(&self, calls: u64) -> Result<(), u64> {
        let Ok(mut state) = self.state.lock() else {
            return Err(1);
        };
        let now = Instant::now();
        let micros = now.saturating_duration_since(state.1).as_micros();
        let refill = u64::try_from(micros)
            .unwrap_or(u64::MAX)
            .saturating_mul(self.rate);
        state.0 = state.0.saturating_add(refill).min(self.capacity);
        state.1 = now;
        let need = calls.saturating_mul(MICRO);
        if need <= state.0 {
            state.0 -= need;
            return Ok(());
        }
        let missing = need - state.0;
        let per_sec = self.rate.saturating_mul(MICRO);
        let secs = match per_sec {
            0 => u64::from(u32::MAX),
            _ => missing.div_ceil(per_sec),
        };
        Err(secs.max(1))
    }
}

/// Admission for one gateway: every limit but body size (which the readers
/// enforce as they read) is checked here, cheapest first, and a refused
/// message takes nothing.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    bucket: TokenBucket,
    in_flight: Arc<Semaphore>,
    websockets: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    body_budget: Arc<Semaphore>,
    body_budget_bytes: u32,
}

/// What an admitted request holds until its answers have all passed.
pub type InFlight = OwnedSemaphorePermit;

impl Gate {
    pub fn new(limits: &Limits) -> Gate {
        let permits = |n: u32| Arc::new(Semaphore::new(usize::try_from(n).unwrap_or(usize::MAX)));
        Gate {
            bucket: TokenBucket::new(limits.calls_per_sec, limits.burst),
            in_flight: permits(limits.in_flight),
            websockets: permits(limits.websockets),
            connections: permits(limits.connections()),
            body_budget: permits(limits.body_budget()),
            body_budget_bytes: limits.body_budget(),
            limits: limits.clone(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Admits a message of `calls` calls: batch size, then a slot in flight,
    /// then the tokens, which are spent only when everything else passed.
    pub fn admit(&self, calls: usize) -> Result<InFlight, Refusal> {
        let l = &self.limits;
        if calls > usize::try_from(l.batch).unwrap_or(usize::MAX) {
            return Err(Refusal::new("batch", l.batch));
        }
        let permit = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| Refusal::new("in_flight", l.in_flight))?;
        let tokens = u64::try_from(calls).unwrap_or(u64::MAX);
        match self.bucket.take(tokens) {
            Ok(()) => Ok(permit),
            Err(retry_after) => Err(Refusal {
                retry_after,
                ..Refusal::new("calls_per_sec", l.calls_per_sec)
            }),
        }
    }

    pub fn open_websocket(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        Arc::clone(&self.websockets)
            .try_acquire_owned()
            .map_err(|_| Refusal::new("websockets", self.limits.websockets))
    }

    /// Reserves room for a request body of `bytes` (at most `body_bytes`)
    /// while it is read and forwarded.
    pub fn reserve_body(&self, bytes: u64) -> Result<OwnedSemaphorePermit, Refusal> {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        Arc::clone(&self.body_budget)
            .try_acquire_many_owned(n)
            .map_err(|_| Refusal::new("body_budget", self.body_budget_bytes))
    }

    pub fn open_connection(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        Arc::clone(&self.connections)
            .try_acquire_owned()
            .map_err(|_| Refusal::new("connections", self.limits.connections()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_takes_all_its_tokens_or_none() {
        let bucket = TokenBucket::new(10, 20);
        assert_eq!(bucket.take(15), Ok(()));
        // 5 left (plus microseconds of refill): 10 more is refused whole.
        assert_eq!(bucket.take(10), Err(1));
        assert_eq!(bucket.take(5), Ok(()));
    }

    #[test]
    fn retry_after_is_the_whole_seconds_to_refill() {
        let bucket = TokenBucket::new(10, 100);
        assert_eq!(bucket.take(100), Ok(()));
        assert_eq!(bucket.take(35), Err(4));
        assert_eq!(TokenBucket::new(0, 0).take(1), Err(u64::from(u32::MAX)));
        // Saturates on absurd input instead of overflowing.
        assert!(TokenBucket::new(u32::MAX, 0).take(u64::MAX).is_err());
    }

    #[test]
    fn the_gate_checks_batch_then_in_flight_then_rate_and_spends_nothing_on_refusal() {
        let gate = Gate::new(&Limits {
            calls_per_sec: 1,
            burst: 10,
            in_flight: 1,
            batch: 5,
            ..Limits::default()
        });
        assert_eq!(gate.admit(6).map(drop), Err(Refusal::new("batch", 5)));
        let held = gate.admit(5);
        assert!(held.is_ok());
        assert_eq!(gate.admit(1).map(drop), Err(Refusal::new("in_flight", 1)));
        drop(held);
        assert!(gate.admit(5).is_ok());
        let refused = gate.admit(1).map(drop).unwrap_err();
        assert_eq!((refused.limit, refused.retry_after), ("calls_per_sec", 1));
    }

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

    #[test]
    fn refusals_read_as_hosted_services_word_them() {
        let r = Refusal::new("batch", 100);
        assert_eq!(r.to_string(), "limit exceeded: batch (100)");
        assert_eq!(r.retry_after, 1);
    }
}
