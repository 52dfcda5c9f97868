//! The billing counter, and the matching of the node's answers to the calls
//! that asked for them.
//!
//! A call is billed when its answer is handed to the client: a call the node
//! answered with a JSON-RPC error object counts too, since the node did the
//! work, but a call the node never answered (refused connection, 5xx,
//! timeout, a stop in between) does not. A notification (a call without id)
//! gets no answer, so it is billed when the node accepted it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use super::jsonrpc::{id_key, Call};
use super::limits::Weights;

/// Cumulative billed units of one gateway, shared with whoever reports them.
/// A plain atomic: every answer adds to it, so it must cost no lock and wake
/// nobody; the reporter reads it on its own schedule (see `billing`).
#[derive(Clone, Debug, Default)]
pub struct Ledger(Arc<AtomicU64>);

impl Ledger {
    pub fn add(&self, units: u64) {
        if units > 0 {
            // Saturates rather than wrapping on absurd weights.
            let _ = self
                .0
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_add(units))
                });
        }
    }

    pub fn billed(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The calls of one request that still wait for an answer, with the weight
/// each will bill.
#[derive(Debug, Default)]
pub struct Expected {
    /// A lone call's id and weight. Most requests are one call: they are
    /// matched by comparing ids, without the map and its text keys.
    lone: Option<(Value, u64)>,
    /// By id key, in request order (a client may repeat an id).
    by_id: HashMap<String, VecDeque<u64>>,
    /// Elements that are not objects: the node answers each with a null id.
    anonymous: usize,
    anonymous_weight: u64,
    remaining: usize,
}

impl Expected {
    /// The answers `calls` expect, and the units of its notifications.
    pub fn new(calls: &[Call], weights: &Weights) -> (Expected, u64) {
        let mut expected = Expected {
            anonymous_weight: weights.call(None),
            ..Expected::default()
        };
        let mut notifications = 0u64;
        for call in calls {
            let weight = weights.call(call.method.as_deref());
            match &call.id {
                _ if !call.object => expected.anonymous = expected.anonymous.saturating_add(1),
                None => notifications = notifications.saturating_add(weight),
                Some(id) if calls.len() == 1 => expected.lone = Some((id.clone(), weight)),
                Some(id) => expected
                    .by_id
                    .entry(id_key(id))
                    .or_default()
                    .push_back(weight),
            }
        }
        let keyed: usize = expected.by_id.values().map(VecDeque::len).sum::<usize>()
            + usize::from(expected.lone.is_some());
        expected.remaining = keyed.saturating_add(expected.anonymous);
        (expected, notifications)
    }

    /// The weight of the call this answer (by its id) answers, if it still
    /// waits for one.
    pub fn answer_by_id(&mut self, id: Option<&Value>) -> Option<u64> {
        let id = id?;
        if self.lone.as_ref().is_some_and(|(lone, _)| lone == id) {
            self.remaining = self.remaining.saturating_sub(1);
            return self.lone.take().map(|(_, weight)| weight);
        }
        if self.by_id.is_empty() {
            return None;
        }
        let key = id_key(id);
        let queue = self.by_id.get_mut(&key)?;
        let weight = queue.pop_front()?;
        if queue.is_empty() {
            self.by_id.remove(&key);
        }
        self.remaining = self.remaining.saturating_sub(1);
        Some(weight)
    }

    /// An answer no id matched (the node answers a malformed element with a
    /// null id): it bills the default weight while malformed elements are
    /// owed answers, and nothing after, so answers never outnumber calls.
    pub fn answer_anonymous(&mut self) -> Option<u64> {
        if self.anonymous == 0 {
            return None;
        }
        self.anonymous -= 1;
        self.remaining = self.remaining.saturating_sub(1);
        Some(self.anonymous_weight)
    }

    /// An answer: matched by id first, else as an anonymous one.
    pub fn answer(&mut self, id: Option<&Value>) -> Option<u64> {
        self.answer_by_id(id).or_else(|| self.answer_anonymous())
    }

    pub fn done(&self) -> bool {
        self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::jsonrpc::parse;
    use serde_json::json;

    #[test]
    fn bills_each_answered_call_once_by_its_weight() {
        let mut weights = Weights::default();
        weights.methods.insert("eth_getLogs".into(), 10);
        let m = parse(
            br#"[{"id":1,"method":"eth_getLogs"},{"id":1,"method":"eth_chainId"},
                {"method":"eth_chainId"},{"id":"a","method":"x"},7]"#,
            100,
        )
        .unwrap();
        let (mut e, notifications) = Expected::new(m.calls(), &weights);
        assert_eq!(notifications, 1);
        assert_eq!(e.answer(Some(&json!(1))), Some(10));
        assert_eq!(e.answer(Some(&json!(1))), Some(1));
        // A third answer with id 1 matches nothing but the malformed element's.
        assert_eq!(e.answer(Some(&json!(1))), Some(1));
        assert_eq!(e.answer(Some(&Value::Null)), None);
        assert!(!e.done());
        assert_eq!(e.answer(Some(&json!("a"))), Some(1));
        assert!(e.done());
        assert_eq!(e.answer(Some(&json!("a"))), None);
    }

    #[test]
    fn the_ledger_adds_and_saturates_and_its_clones_read_it() {
        let ledger = Ledger::default();
        let reader = ledger.clone();
        ledger.add(0);
        ledger.add(3);
        assert_eq!(reader.billed(), 3);
        ledger.add(u64::MAX);
        assert_eq!(reader.billed(), u64::MAX);
    }
}
