//! Admission: the token bucket and the counted slots that enforce the
//! limits, and the refusal that says which limit a request exceeded. The
//! gate only decides; how the client is answered and the refusal counted is
//! `error`'s, so that each limit reads the same wherever it is met.

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::limits::Limits;

/// Which limit refused a request, with the configured value, as the client
/// reads it in the error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub limit: &'static str,
    pub value: u32,
    /// Seconds until a retry can pass, for `Retry-After` (at least 1); `None`
    /// for a request that can never pass as it is (too large a batch, body or
    /// weight), which must be split or changed rather than retried.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal a retry may pass in a second (a slot that frees, a rate).
    pub fn new(limit: &'static str, value: u32) -> Refusal {
        Refusal {
            limit,
            value,
            retry_after: Some(1),
        }
    }

    /// A refusal no retry of the same request can pass.
    pub fn permanent(limit: &'static str, value: u32) -> Refusal {
        Refusal {
            limit,
            value,
            retry_after: None,
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
/// rather than taken from governor: one bucket per gateway needs neither
/// keyed state nor a clock crate, and integer micro-tokens make the refill
/// and `Retry-After` exact.
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

    /// Whether `n` tokens can ever be there at once.
    pub fn fits(&self, n: u64) -> bool {
        n.saturating_mul(MICRO) <= self.capacity
    }

    /// Gives back tokens taken for a request refused by another bucket.
    pub fn refund(&self, n: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.0 = state
                .0
                .saturating_add(n.saturating_mul(MICRO))
                .min(self.capacity);
        }
    }

    /// Takes `calls` tokens, or says in whole seconds (at least 1) when that
    /// many will be there.
    pub fn take(&self, calls: u64) -> Result<(), u64> {
        self.take_at(Instant::now(), calls)
    }

    /// [`TokenBucket::take`] at `now`, so that a request that takes from
    /// two buckets reads the clock once.
    fn take_at(&self, now: Instant, calls: u64) -> Result<(), u64> {
        let Ok(mut state) = self.state.lock() else {
            return Err(1);
        };
        let micros = now.saturating_duration_since(state.1).as_micros();
        let refill = u64::try_from(micros)
            .unwrap_or(u64::MAX)
            .saturating_mul(self.rate);
        state.0 = state.0.saturating_add(refill).min(self.capacity);
        state.1 = now;
        let need = calls.saturating_mul(MICRO);
        if let Some(left) = state.0.checked_sub(need) {
            state.0 = left;
            return Ok(());
        }
        let missing = need.saturating_sub(state.0);
        let per_sec = self.rate.saturating_mul(MICRO);
        let secs = match per_sec {
            0 => u64::from(u32::MAX),
            _ => missing.div_ceil(per_sec),
        };
        Err(secs.max(1))
    }
}

/// Admission for one gateway: the counted slots (connections, WebSockets,
/// requests in flight, bytes of bodies held) and the token bucket. The size
/// of one body is enforced by the readers as they read. A refused message
/// takes nothing.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    bucket: TokenBucket,
    units: TokenBucket,
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
            bucket: TokenBucket::new(limits.calls_per_sec(), limits.burst()),
            units: TokenBucket::new(limits.cu_per_sec(), limits.cu_burst()),
            in_flight: permits(limits.in_flight()),
            websockets: permits(limits.websockets()),
            connections: permits(limits.connections()),
            body_budget: permits(limits.body_budget()),
            body_budget_bytes: limits.body_budget(),
            limits: limits.clone(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether a message of `len` calls may be read on: a longer batch can
    /// never pass. Asked before screening, since the parse keeps no more than
    /// `batch` calls and admission sees only those that passed.
    pub fn batch(&self, len: usize) -> Result<(), Refusal> {
        match len > usize::try_from(self.limits.batch()).unwrap_or(usize::MAX) {
            true => Err(Refusal::permanent("batch", self.limits.batch())),
            false => Ok(()),
        }
    }

    /// Admits `calls` calls (no more than [`Gate::batch`] lets through)
    /// weighing `units`: what can never pass (the weight), then a slot in
    /// flight, then both buckets' tokens, which are spent only when
    /// everything else passed.
    pub fn admit(&self, calls: usize, units: u64) -> Result<InFlight, Refusal> {
        let l = &self.limits;
        if !self.units.fits(units) {
            return Err(Refusal::permanent("cu_burst", l.cu_burst()));
        }
        let permit = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| Refusal::new("in_flight", l.in_flight()))?;
        let tokens = u64::try_from(calls).unwrap_or(u64::MAX);
        let now = Instant::now();
        if let Err(secs) = self.bucket.take_at(now, tokens) {
            return Err(Refusal {
                retry_after: Some(secs),
                ..Refusal::new("calls_per_sec", l.calls_per_sec())
            });
        }
        if let Err(secs) = self.units.take_at(now, units) {
            self.bucket.refund(tokens);
            return Err(Refusal {
                retry_after: Some(secs),
                ..Refusal::new("cu_per_sec", l.cu_per_sec())
            });
        }
        Ok(permit)
    }

    pub fn open_websocket(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        Arc::clone(&self.websockets)
            .try_acquire_owned()
            .map_err(|_| Refusal::new("websockets", self.limits.websockets()))
    }

    /// Reserves room for a request body of `bytes` (at most `body_bytes`)
    /// while it is read and forwarded.
    pub fn reserve_body(&self, bytes: u64) -> Result<OwnedSemaphorePermit, Refusal> {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        Arc::clone(&self.body_budget)
            .try_acquire_many_owned(n)
            .map_err(|_| Refusal::new("body_budget", self.body_budget_bytes))
    }

    /// Waits for room for a WebSocket message of `bytes` (at most
    /// `body_bytes`): a WebSocket is a stream, so while the activity's other
    /// requests hold the budget its sender is slowed rather than refused.
    pub async fn wait_body(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes).ok()?;
        Arc::clone(&self.body_budget)
            .acquire_many_owned(n)
            .await
            .ok()
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
    use crate::gateway::RawLimits;

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
    fn the_gate_checks_batch_and_in_flight_then_rate_and_spends_nothing_on_refusal() {
        let gate = Gate::new(
            &Limits::new(
                &RawLimits {
                    calls_per_sec: 1,
                    burst: 10,
                    in_flight: 1,
                    batch: 5,
                    ..RawLimits::default()
                },
                "limits",
            )
            .unwrap(),
        );
        assert_eq!(gate.batch(6), Err(Refusal::permanent("batch", 5)));
        assert_eq!(gate.batch(5), Ok(()));
        let held = gate.admit(5, 5);
        assert!(held.is_ok());
        assert_eq!(
            gate.admit(1, 1).map(drop),
            Err(Refusal::new("in_flight", 1))
        );
        drop(held);
        assert!(gate.admit(5, 5).is_ok());
        let refused = gate.admit(1, 1).map(drop).unwrap_err();
        assert_eq!(
            (refused.limit, refused.retry_after),
            ("calls_per_sec", Some(1))
        );
    }

    #[test]
    fn compute_units_are_a_second_bucket_and_too_heavy_is_for_good() {
        let gate = Gate::new(
            &Limits::new(
                &RawLimits {
                    cu_per_sec: 100,
                    cu_burst: 300,
                    ..RawLimits::default()
                },
                "limits",
            )
            .unwrap(),
        );
        let refused = gate.admit(1, 301).map(drop).unwrap_err();
        assert_eq!(refused, Refusal::permanent("cu_burst", 300));
        assert!(gate.admit(2, 250).is_ok());
        let refused = gate.admit(1, 100).map(drop).unwrap_err();
        assert_eq!(
            (refused.limit, refused.retry_after),
            ("cu_per_sec", Some(1))
        );
        // The call tokens of the refused request were given back.
        for _ in 0..398 {
            assert!(gate.admit(1, 0).is_ok());
        }
    }

    #[test]
    fn refusals_read_as_hosted_services_word_them() {
        let r = Refusal::new("in_flight", 32);
        assert_eq!(r.to_string(), "limit exceeded: in_flight (32)");
        assert_eq!(r.retry_after, Some(1));
    }
}
