//! One activity's live counters, kept by its gateway as the calls go by.
//!
//! Every call of every request touches them, so they are plain relaxed atomics in
//! one fixed-size block, allocated once when the gateway starts: no lock, no map,
//! nothing that grows with what a requestor sends. A method outside the
//! compute-unit table counts under one shared label ([`OTHER`]), so a crafted
//! method name cannot add a series. The runtime reads them once a second into a
//! [`Reading`] (see `publish`), which is what the files, `metrics` and `top` carry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The label of every method outside the compute-unit table.
pub const OTHER: &str = "other";

/// Why the gateway refused a call (or, before its body was read, a request): the
/// limit's key in the configuration, or `policy` for a method the activity may not
/// call. A closed set, so that the label cannot grow.
pub const REASONS: [&str; 13] = [
    "calls_per_sec",
    "cu_per_sec",
    "cu_burst",
    "in_flight",
    "batch",
    "body_bytes",
    "body_budget",
    "logs_blocks",
    "subscriptions",
    "websockets",
    "connections",
    "pings",
    "policy",
];

/// The upper bounds of the node-time histogram's buckets, in microseconds: from a
/// cached read on a local node (100 µs) to the call timeout's order (30 s).
pub const BUCKETS_MICROS: [u64; 17] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// The methods that get a label of their own: the compute-unit table's, sorted, so
/// that a call's label is found by binary search once, when its request is read.
#[derive(Clone, Debug, Default)]
pub struct Methods(Arc<[Box<str>]>);

/// A method's place in [`Methods`], or the shared [`OTHER`] place past the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MethodSlot(u16);

impl Methods {
    /// At most `u16::MAX - 1` names are kept (a table that large is refused long
    /// before, by its 1 MiB bound); the rest count as [`OTHER`].
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Methods {
        let mut names: Vec<Box<str>> = names.into_iter().map(Box::from).collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(usize::from(u16::MAX - 1));
        Methods(names.into())
    }

    pub fn slot(&self, method: Option<&str>) -> MethodSlot {
        let found = method.and_then(|m| self.0.binary_search_by(|n| (**n).cmp(m)).ok());
        let at = found.unwrap_or(self.0.len());
        MethodSlot(u16::try_from(at).unwrap_or(u16::MAX - 1))
    }

    /// The label of each slot, [`OTHER`] last.
    pub fn labels(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.iter().map(|n| &**n).chain([OTHER])
    }

    fn slots(&self) -> usize {
        self.0.len().saturating_add(1)
    }
}

/// The counters. Gauges (WebSockets, subscriptions) move both ways; everything
/// else only grows.
#[derive(Debug)]
pub struct Meters {
    methods: Methods,
    /// Calls the node answered, by method slot: their sum is the calls billed.
    calls: Box<[AtomicU64]>,
    refused: [AtomicU64; REASONS.len()],
    /// Answers the node gave with an `error` member.
    node_errors: AtomicU64,
    /// Requests the node did not answer at all (unreachable, a 5xx).
    node_unavailable: AtomicU64,
    /// Calls that ran past the call timeout.
    node_timeouts: AtomicU64,
    /// The node's answer time per request, bucket by bucket (not cumulative), the
    /// last one past every bound.
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
    node_micros: AtomicU64,
    websockets: AtomicU64,
    subscriptions: AtomicU64,
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        // Relaxed and wrapping-free: at a billion a second a u64 lasts 584 years.
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

impl Meters {
    pub fn new(methods: Methods) -> Meters {
        let calls = (0..methods.slots()).map(|_| AtomicU64::new(0)).collect();
        Meters {
            methods,
            calls,
            refused: Default::default(),
            node_errors: AtomicU64::new(0),
            node_unavailable: AtomicU64::new(0),
            node_timeouts: AtomicU64::new(0),
            buckets: Default::default(),
            node_micros: AtomicU64::new(0),
            websockets: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        }
    }

    pub fn methods(&self) -> &Methods {
        &self.methods
    }

    /// One call answered (and billed).
    pub fn answered(&self, method: MethodSlot, error: bool) {
        if let Some(counter) = self.calls.get(usize::from(method.0)) {
            add(counter, 1);
        }
        if error {
            add(&self.node_errors, 1);
        }
    }

    /// `n` calls refused for `reason` (one of [`REASONS`]; any other counts as
    /// `policy`, which a test rules out for every refusal the gateway makes).
    pub fn refused(&self, reason: &str, n: usize) {
        let at = REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REASONS.len().saturating_sub(1));
        if let Some(counter) = self.refused.get(at) {
            add(counter, u64::try_from(n).unwrap_or(u64::MAX));
        }
    }

    pub fn unavailable(&self) {
        add(&self.node_unavailable, 1);
    }

    /// `n` calls given up at the call timeout (they are billed: see `meter`).
    pub fn timed_out(&self, methods: impl IntoIterator<Item = MethodSlot>) {
        for method in methods {
            self.answered(method, false);
            add(&self.node_timeouts, 1);
        }
    }

    /// How long the node took to start answering one request.
    pub fn node_time(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let at = BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        if let Some(bucket) = self.buckets.get(at) {
            add(bucket, 1);
        }
        let _ = self
            .node_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(micros))
            });
    }

    pub fn received(&self, bytes: usize) {
        add(
            &self.received_bytes,
            u64::try_from(bytes).unwrap_or(u64::MAX),
        );
    }

    pub fn sent(&self, bytes: usize) {
        add(&self.sent_bytes, u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Counts a WebSocket open until the guard drops, with the subscriptions it
    /// reports (which end with it).
    pub fn websocket(self: &Arc<Self>) -> WebSocketGauge {
        add(&self.websockets, 1);
        WebSocketGauge {
            meters: Arc::clone(self),
            subscriptions: 0,
        }
    }

    /// The counters as plain numbers, each read once (relaxed: a reading may
    /// straddle a call, never tear a number).
    pub fn read(&self) -> Reading {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let calls = self
            .methods
            .labels()
            .zip(self.calls.iter())
            .filter_map(|(name, c)| Some((name.to_owned(), load(c))).filter(|(_, n)| *n > 0))
            .collect();
        let refused = REASONS
            .iter()
            .zip(self.refused.iter())
            .filter_map(|(r, c)| Some(((*r).to_owned(), load(c))).filter(|(_, n)| *n > 0))
            .collect();
        Reading {
            calls,
            refused,
            node_errors: load(&self.node_errors),
            node_unavailable: load(&self.node_unavailable),
            node_timeouts: load(&self.node_timeouts),
            node_buckets: self.buckets.iter().map(load).collect(),
            node_micros: load(&self.node_micros),
            websockets: load(&self.websockets),
            subscriptions: load(&self.subscriptions),
            received_bytes: load(&self.received_bytes),
            sent_bytes: load(&self.sent_bytes),
            ..Reading::default()
        }
    }
}

/// An open WebSocket, counted until dropped.
#[derive(Debug)]
pub struct WebSocketGauge {
    meters: Arc<Meters>,
    subscriptions: u64,
}

impl WebSocketGauge {
    /// The WebSocket's live subscriptions are now `live`.
    pub fn subscriptions(&mut self, live: usize) {
        let live = u64::try_from(live).unwrap_or(u64::MAX);
        let counter = &self.meters.subscriptions;
        match live.cmp(&self.subscriptions) {
            std::cmp::Ordering::Greater => add(counter, live.saturating_sub(self.subscriptions)),
            std::cmp::Ordering::Less => sub(counter, self.subscriptions.saturating_sub(live)),
            std::cmp::Ordering::Equal => {}
        }
        self.subscriptions = live;
    }
}

impl Drop for WebSocketGauge {
    fn drop(&mut self) {
        sub(&self.meters.websockets, 1);
        sub(&self.meters.subscriptions, self.subscriptions);
    }
}

/// One activity's counters at one moment, as plain numbers: what the runtime
/// writes to its file once a second, and what `metrics` and `top` read back. Maps
/// hold only what is not zero. `calls` and `units` are the bill itself (the
/// gateway's ledger), so the metrics and the invoice cannot disagree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reading {
    /// Calls answered, by method label; they sum to `billed_calls`.
    pub calls: std::collections::BTreeMap<String, u64>,
    pub billed_calls: u64,
    pub billed_units: u64,
    pub refused: std::collections::BTreeMap<String, u64>,
    pub node_errors: u64,
    pub node_unavailable: u64,
    pub node_timeouts: u64,
    /// Per bucket of [`BUCKETS_MICROS`] (not cumulative), then the overflow.
    pub node_buckets: Vec<u64>,
    pub node_micros: u64,
    pub websockets: u64,
    pub subscriptions: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
}

impl Reading {
    /// Requests timed, the count of the node-time histogram.
    pub fn node_count(&self) -> u64 {
        self.node_buckets
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    pub fn refusals(&self) -> u64 {
        self.refused
            .values()
            .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    /// The `q` quantile (0..=1) of the node's answer time over the requests
    /// counted in `self` and not in `before`, interpolated within its bucket as
    /// Prometheus' `histogram_quantile` does; `None` when no request was timed.
    pub fn node_quantile(&self, before: Option<&Reading>, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .node_buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let was = before.and_then(|b| b.node_buckets.get(i)).copied();
                n.saturating_sub(was.unwrap_or(0))
            })
            .collect();
        let total = counts.iter().fold(0u64, |s, n| s.saturating_add(*n));
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, n) in counts.iter().enumerate() {
            let below = seen;
            seen = seen.saturating_add(*n);
            if (seen as f64) < rank || *n == 0 {
                continue;
            }
            let lower = i
                .checked_sub(1)
                .and_then(|j| BUCKETS_MICROS.get(j))
                .copied()
                .unwrap_or(0);
            // Past the last bound: the last bound is all that is known.
            let Some(&upper) = BUCKETS_MICROS.get(i) else {
                return Some(Duration::from_micros(lower));
            };
            let within = (rank - below as f64) / *n as f64;
            let micros = lower as f64 + (upper.saturating_sub(lower)) as f64 * within;
            return Some(Duration::from_micros(micros as u64));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_or_crafted_method_shares_one_label() {
        let methods = Methods::new(["eth_call", "eth_chainId", "eth_call"]);
        let meters = Meters::new(methods.clone());
        meters.answered(methods.slot(Some("eth_call")), false);
        meters.answered(methods.slot(Some("eth_call")), true);
        for crafted in ["x\"}\n# HELP", "eth_calL", "", "eth_subscription"] {
            meters.answered(methods.slot(Some(crafted)), false);
        }
        meters.answered(methods.slot(None), false);
        let r = meters.read();
        assert_eq!(r.calls.get("eth_call"), Some(&2));
        assert_eq!(r.calls.get(OTHER), Some(&5));
        assert_eq!(r.calls.len(), 2, "{:?}", r.calls);
        assert_eq!(r.node_errors, 1);
        assert_eq!(
            methods.labels().collect::<Vec<_>>(),
            ["eth_call", "eth_chainId", OTHER]
        );
    }

    #[test]
    fn every_refusal_the_gateway_names_has_its_own_reason() {
        let meters = Meters::new(Methods::default());
        for reason in REASONS {
            meters.refused(reason, 2);
        }
        let r = meters.read();
        assert_eq!(r.refused.len(), REASONS.len());
        assert!(r.refused.values().all(|n| *n == 2));
    }

    #[test]
    fn websockets_and_their_subscriptions_end_with_the_guard() {
        let meters = Arc::new(Meters::new(Methods::default()));
        let mut one = meters.websocket();
        let mut two = meters.websocket();
        one.subscriptions(3);
        two.subscriptions(2);
        one.subscriptions(1);
        assert_eq!(
            (meters.read().websockets, meters.read().subscriptions),
            (2, 3)
        );
        drop(two);
        assert_eq!(
            (meters.read().websockets, meters.read().subscriptions),
            (1, 1)
        );
        drop(one);
        assert_eq!(
            (meters.read().websockets, meters.read().subscriptions),
            (0, 0)
        );
    }

    #[test]
    fn node_time_lands_in_its_bucket_and_quantiles_interpolate() {
        let meters = Meters::new(Methods::default());
        for _ in 0..99 {
            meters.node_time(Duration::from_micros(80));
        }
        meters.node_time(Duration::from_secs(60));
        let r = meters.read();
        assert_eq!(r.node_buckets.first(), Some(&99));
        assert_eq!(r.node_buckets.last(), Some(&1));
        assert_eq!(r.node_count(), 100);
        assert_eq!(r.node_micros, 99 * 80 + 60_000_000);
        let p50 = r.node_quantile(None, 0.5).unwrap();
        assert!(p50 <= Duration::from_micros(100), "{p50:?}");
        assert_eq!(r.node_quantile(None, 1.0), Some(Duration::from_secs(30)));
        assert_eq!(r.node_quantile(Some(&r), 0.5), None, "nothing new");
    }

    #[test]
    fn an_activity_costs_a_few_kilobytes() {
        // The shipped table's methods: their counters, and the labels' names.
        let weights = crate::config::units::Table::shipped().unwrap().weights();
        let methods = Methods::new(weights.methods.keys().map(String::as_str));
        let names: usize = methods
            .labels()
            .map(|n| n.len() + std::mem::size_of::<Box<str>>())
            .sum();
        let slots = methods.slots();
        let meters = Meters::new(methods);
        let counters = std::mem::size_of::<Meters>() + slots * std::mem::size_of::<AtomicU64>();
        assert!(counters < 1024, "{counters} bytes of counters");
        assert!(counters + names < 4096, "{counters} + {names} bytes");
        eprintln!("counters {counters} B, label names {names} B");
        drop(meters);
    }
}
