//! The bill, and the matching of the node's answers to the calls that asked
//! for them.
//!
//! **The invariant**: each answer object the node sends for a request bills
//! one call (`calls`) and that call's weight (`units`, compute units), as the
//! piece that ends it is handed to the client, and never more answers than
//! the request owed. An answer whose id matches a call still owed bills that
//! call's weight; one that matches none (`"id": null`, an id the node
//! rewrote, a long id it re-encoded) bills the earliest call still owed. So
//! the number billed is exactly the number of answers the node gave, whatever
//! the ids, and when every call is answered the units are exactly the sum of
//! their weights. A notification (a call without id) gets no answer: its
//! weight is billed when the node accepted it. A call the node never answered
//! (refused connection, 5xx, a stop in between) is not billed; one it did not
//! answer within the call timeout is, at its weight, since the node worked on
//! it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use super::ids::MAX_ID;
use super::jsonrpc::Call;
use super::limits::Weights;
use crate::metrics::{MethodSlot, Methods};

/// What a gateway billed: calls answered, and their compute units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bill {
    pub calls: u64,
    pub units: u64,
}

/// The cumulative bill of one gateway, shared with whoever reports it. Plain
/// atomics: every answer adds to them, so they must cost no lock and wake
/// nobody; the reporter reads them on its own schedule (see `provider::billing`).
#[derive(Clone, Debug, Default)]
pub struct Ledger(Arc<[AtomicU64; 2]>);

impl Ledger {
    pub fn add(&self, bill: Bill) {
        for (counter, n) in self.0.iter().zip([bill.calls, bill.units]) {
            if n > 0 {
                // Saturates rather than wrapping on absurd weights.
                let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_add(n))
                });
            }
        }
    }

    pub fn billed(&self) -> Bill {
        let [calls, units] = &*self.0;
        Bill {
            calls: calls.load(Ordering::Relaxed),
            units: units.load(Ordering::Relaxed),
        }
    }
}

impl Bill {
    /// One answered call of `weight` units.
    pub fn call(weight: u64) -> Bill {
        Bill {
            calls: 1,
            units: weight,
        }
    }

    pub fn units(units: u64) -> Bill {
        Bill { calls: 0, units }
    }

    pub fn plus(self, other: Bill) -> Bill {
        Bill {
            calls: self.calls.saturating_add(other.calls),
            units: self.units.saturating_add(other.units),
        }
    }
}

/// What an answered call was, for the WebSocket's subscription count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Subscribe,
    Unsubscribe,
}

impl Kind {
    pub fn of(method: Option<&str>) -> Kind {
        match method {
            Some("eth_subscribe") => Kind::Subscribe,
            Some("eth_unsubscribe") => Kind::Unsubscribe,
            _ => Kind::Plain,
        }
    }
}

/// One call owed an answer.
#[derive(Debug)]
struct Owed {
    key: Option<u64>,
    weight: u64,
    kind: Kind,
    /// Its method's label in the metrics.
    method: MethodSlot,
    /// Its id, for an answer of the gateway's own (a timeout); kept only when
    /// short, so that what waits costs little (a long one is answered as null).
    id: Value,
}

/// An answered call: its weight and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    pub weight: u64,
    pub kind: Kind,
    pub method: MethodSlot,
}

/// The calls of one request that still wait for an answer, in request order.
#[derive(Debug, Default)]
pub struct Expected {
    owed: Vec<Option<Owed>>,
    /// Every call before this one is answered: where the search for the
    /// earliest owed call starts, and where a match by key is tried first
    /// (nodes answer in order, so this is usually the one).
    next: usize,
    remaining: usize,
}

impl Expected {
    /// The answers `calls` expect, and the units of its notifications.
    #[cfg(test)]
    pub fn new(calls: &[Call], weights: &Weights) -> (Expected, u64) {
        let (expected, notifications, _) = Expected::weighed(calls, weights, &Methods::default());
        (expected, notifications)
    }

    /// The answers `calls` expect, the units of its notifications, and what
    /// all the calls weigh together (what the request takes from the
    /// `cu_per_sec` bucket): each weight looked up once, and each method's
    /// label in `methods`.
    pub fn weighed(calls: &[Call], weights: &Weights, methods: &Methods) -> (Expected, u64, u64) {
        let mut total = 0u64;
        let mut notifications = 0u64;
        let mut owed = Vec::with_capacity(calls.len());
        for call in calls {
            let weight = weights.call(call.method.as_deref());
            total = total.saturating_add(weight);
            if call.is_notification() {
                notifications = notifications.saturating_add(weight);
                continue;
            }
            let id = match &call.id {
                Some(id) if short(id) => id.clone(),
                _ => Value::Null,
            };
            owed.push(Some(Owed {
                key: call.key,
                weight,
                kind: Kind::of(call.method.as_deref()),
                method: methods.slot(call.method.as_deref()),
                id,
            }));
        }
        let remaining = owed.len();
        let expected = Expected {
            owed,
            next: 0,
            remaining,
        };
        (expected, notifications, total)
    }

    /// The call an answer with this key answers, if one owed has it.
    pub fn answer_by_key(&mut self, key: Option<u64>) -> Option<Answered> {
        let key = key?;
        // Every call before `next` is answered.
        let found = (self.next..self.owed.len())
            .find(|&i| matches!(self.owed.get(i), Some(Some(o)) if o.key == Some(key)))?;
        self.take(found)
    }

    /// The earliest call still owed, for an answer no key matched.
    pub fn answer_first(&mut self) -> Option<Answered> {
        let found =
            (self.next..self.owed.len()).find(|&i| matches!(self.owed.get(i), Some(Some(_))))?;
        self.take(found)
    }

    /// An answer: matched by key, else the earliest call still owed; `None`
    /// once every call is answered.
    pub fn answer(&mut self, key: Option<u64>) -> Option<Answered> {
        self.answer_by_key(key).or_else(|| self.answer_first())
    }

    fn take(&mut self, i: usize) -> Option<Answered> {
        let owed = self.owed.get_mut(i)?.take()?;
        self.remaining = self.remaining.saturating_sub(1);
        while matches!(self.owed.get(self.next), Some(None)) {
            self.next = self.next.saturating_add(1);
        }
        Some(Answered {
            weight: owed.weight,
            kind: owed.kind,
            method: owed.method,
        })
    }

    /// Ends the wait for every call still owed (the call timeout): their
    /// bill, the ids their errors carry, and their methods' labels.
    pub fn give_up(&mut self) -> GivenUp {
        let mut given = GivenUp::default();
        for owed in self.owed.iter_mut().filter_map(Option::take) {
            given.bill = given.bill.plus(Bill::call(owed.weight));
            given.ids.push(owed.id);
            given.methods.push(owed.method);
        }
        self.remaining = 0;
        self.next = self.owed.len();
        given
    }

    /// Subscriptions among the calls still owed.
    pub fn subscribes(&self) -> usize {
        self.owed
            .iter()
            .flatten()
            .filter(|o| o.kind == Kind::Subscribe)
            .count()
    }

    pub fn done(&self) -> bool {
        self.remaining == 0
    }
}

/// The calls given up at the call timeout (see [`Expected::give_up`]).
#[derive(Debug, Default)]
pub struct GivenUp {
    pub bill: Bill,
    pub ids: Vec<Value>,
    pub methods: Vec<MethodSlot>,
}

/// Whether the node took a request's notifications, judged by the first
/// byte of its answer (`None`: it answered nothing): a batch answered with a
/// single object was refused whole (anvil answers a batch holding one
/// malformed element so), and its notifications were never run.
pub fn notifications_taken(request_batch: bool, answer_batch: Option<bool>) -> bool {
    !(request_batch && answer_batch == Some(false))
}

/// What [`exchange`] found.
#[derive(Debug)]
pub struct Exchanged {
    pub bill: Bill,
    /// How many calls were owed an answer.
    pub owed: usize,
    /// The answered calls as the operator's metrics count them, by method: they
    /// must sum to `bill.calls`.
    pub counted: u64,
}

/// The bill the gateway makes of one exchange over HTTP: `request` as the
/// client sent it, `answer` as the node sent it (a 2xx), read in pieces of
/// `piece` bytes. `None` for a request the gateway answers itself (not
/// JSON-RPC). The same parse, scanner, matcher and metrics the gateway runs, for
/// the fuzz target and the property test.
pub fn exchange(
    request: &[u8],
    answer: &[u8],
    piece: usize,
    weights: &Weights,
) -> Option<Exchanged> {
    let message = super::jsonrpc::parse(request, usize::MAX).ok()?;
    let (calls, batch) = match message {
        super::jsonrpc::Message::Single(call) => (vec![call], false),
        super::jsonrpc::Message::Batch { calls, .. } => (calls, true),
    };
    let methods = Methods::new(weights.methods.keys().map(String::as_str));
    let meters = crate::metrics::Meters::new(methods.clone());
    let (mut expected, notifications, _) = Expected::weighed(&calls, weights, &methods);
    let owed = expected.remaining;
    let mut bill = Bill::default();
    let mut scanner = super::scan::Scanner::default();
    for chunk in answer.chunks(piece.max(1)) {
        scanner.feed(chunk, |found| {
            if let Some(a) = expected.answer(found.key) {
                bill = bill.plus(Bill::call(a.weight));
                meters.answered(a.method, found.error);
            }
        });
    }
    let shape = scanner.started().then(|| scanner.is_batch());
    if notifications_taken(batch, shape) {
        bill = bill.plus(Bill::units(notifications));
    }
    let counted = meters.read().calls.values().sum();
    Some(Exchanged {
        bill,
        owed,
        counted,
    })
}

fn short(id: &Value) -> bool {
    match id {
        Value::String(s) => s.len() <= MAX_ID,
        Value::Array(_) | Value::Object(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ids::key_of;
    use crate::gateway::jsonrpc::parse;
    use proptest::prelude::*;

    /// The model: the request and the answer parsed whole with serde_json; each
    /// answer object takes the first call still owed whose id equals its id,
    /// else the earliest call still owed; notifications bill their weight.
    fn model(request: &Value, answer: &str, weights: &Weights) -> Bill {
        let elements = match request {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        let weight = |e: &Value| weights.call(e.get("method").and_then(Value::as_str));
        let notification = |e: &Value| {
            e.is_object() && e.get("id").is_none() && e.get("method").is_some_and(Value::is_string)
        };
        let mut bill = Bill::default();
        let mut owed: Vec<Option<&Value>> = Vec::new();
        let parsed = serde_json::from_str::<Value>(answer).ok();
        // A batch answered with one object was refused whole.
        let refused = request.is_array() && parsed.as_ref().is_some_and(Value::is_object);
        for e in &elements {
            if notification(e) {
                if !refused {
                    bill = bill.plus(Bill::units(weight(e)));
                }
            } else {
                owed.push(Some(e));
            }
        }
        let answers = match parsed {
            Some(Value::Array(items)) => items,
            Some(one @ Value::Object(_)) => vec![one],
            _ => vec![],
        };
        for a in answers.iter().filter(|a| a.is_object()) {
            let by_id = a.get("id").and_then(|id| {
                owed.iter()
                    .position(|o| o.is_some_and(|e| e.get("id") == Some(id)))
            });
            let Some(i) = by_id.or_else(|| owed.iter().position(Option::is_some)) else {
                continue;
            };
            if let Some(e) = owed[i].take() {
                bill = bill.plus(Bill::call(weight(e)));
            }
        }
        bill
    }

    /// Ids of every JSON type and size, as a hostile client writes them.
    fn id() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e30f64..1e30).prop_map(Value::from),
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            "[a-z\\\"\u{0}-\u{1f}é]{0,8}".prop_map(Value::from),
            (250usize..400, "[a-z]").prop_map(|(n, c)| Value::from(c.repeat(n))),
            Just(Value::from("z".repeat(5_000))),
            (0u8..4).prop_map(|n| serde_json::json!({"k": [n, {"n": null}], "s": "x".repeat(300)})),
            Just(serde_json::json!([1, "two", [3]])),
        ]
    }

    /// One element of a batch: a call, a notification, or no call at all.
    fn element() -> impl Strategy<Value = Value> {
        let method = prop_oneof![
            Just(Some("eth_chainId")),
            Just(Some("eth_call")),
            Just(Some("debug_traceTransaction")),
            Just(None),
        ];
        prop_oneof![
            6 => (id(), method.clone()).prop_map(|(id, m)| {
                let mut o = serde_json::json!({"jsonrpc": "2.0", "id": id});
                if let Some(m) = m { o["method"] = m.into(); }
                o
            }),
            2 => method.prop_map(|m| match m {
                Some(m) => serde_json::json!({"jsonrpc": "2.0", "method": m}),
                None => serde_json::json!({}),
            }),
            1 => prop_oneof![Just(Value::from(1)), Just(Value::from("x")), Just(Value::Null), Just(serde_json::json!([]))],
        ]
    }

    /// What the node does with each owed call's id.
    #[derive(Clone, Copy, Debug)]
    enum Echo {
        Same,
        Null,
        Rewritten,
        Dropped,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Calls billed are exactly the answers the node gave (never more than
        /// were owed), and the units are the model's, in any chunking, order,
        /// rewriting or loss of the ids.
        #[test]
        fn the_bill_matches_the_model(
            elements in prop::collection::vec(element(), 1..40),
            single in any::<bool>(),
            echoes in prop::collection::vec(
                prop_oneof![6 => Just(Echo::Same), 1 => Just(Echo::Null), 1 => Just(Echo::Rewritten), 1 => Just(Echo::Dropped)],
                40,
            ),
            extra in 0usize..3,
            shuffle in any::<prop::sample::Index>(),
            pretty in any::<bool>(),
            piece in 1usize..300,
            refused_whole in prop::bool::weighted(0.1),
        ) {
            let mut weights = Weights { default: 7, ..Weights::default() };
            weights.methods.insert("eth_chainId".into(), 3);
            weights.methods.insert("eth_call".into(), 26);
            weights.methods.insert("debug_traceTransaction".into(), 309);
            let request = match (single, elements.as_slice()) {
                (true, [one, ..]) if one.is_object() => one.clone(),
                _ => Value::Array(elements.clone()),
            };
            let text = match pretty {
                true => serde_json::to_string_pretty(&request).unwrap(),
                false => request.to_string(),
            };
            let owed_ids: Vec<Value> = match &request {
                Value::Array(items) => items.clone(),
                one => vec![one.clone()],
            }
            .into_iter()
            .filter(|e| !(e.is_object() && e.get("id").is_none() && e.get("method").is_some_and(Value::is_string)))
            .map(|e| e.get("id").cloned().unwrap_or(Value::Null))
            .collect();
            let mut answers: Vec<Value> = owed_ids
                .iter()
                .zip(&echoes)
                .filter_map(|(id, echo)| match echo {
                    Echo::Same => Some(id.clone()),
                    Echo::Null => Some(Value::Null),
                    Echo::Rewritten => Some(Value::from("rewritten")),
                    Echo::Dropped => None,
                })
                .chain(std::iter::repeat(Value::Null).take(extra))
                .map(|id| serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"id": 5, "s": "]}"}}))
                .collect();
            if !answers.is_empty() {
                let n = shuffle.index(answers.len());
                answers.rotate_left(n);
            }
            if refused_whole && request.is_array() {
                // anvil's answer to a batch holding one malformed element.
                answers = vec![serde_json::json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": -32600, "message": "Invalid request"}})];
            }
            let answer = match (&request, answers.as_slice()) {
                (Value::Array(_), [one]) if refused_whole => one.to_string(),
                (Value::Array(_), _) => Value::Array(answers.clone()).to_string(),
                (_, [one, ..]) => one.to_string(),
                (_, []) => String::new(),
            };
            let Some(Exchanged { bill, owed, counted }) = exchange(text.as_bytes(), answer.as_bytes(), piece, &weights) else {
                return Err(TestCaseError::fail(format!("the request was refused: {text}")));
            };
            prop_assert_eq!(counted, bill.calls, "the metrics count what the bill bills");
            let given = match &request { Value::Array(_) => answers.len(), _ => answers.len().min(1) };
            prop_assert_eq!(bill.calls, given.min(owed) as u64, "answers given {} owed {}", given, owed);
            // The model reads the request from the text sent, as the gateway
            // does: serde_json's float parsing does not round-trip exactly.
            let sent: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(bill, model(&sent, &answer, &weights));
        }
    }

    fn key(id: &str) -> Option<u64> {
        key_of(id.as_bytes())
    }

    #[test]
    fn bills_each_answer_once_by_its_call_or_the_earliest_owed() {
        let mut weights = Weights::default();
        weights.methods.insert("eth_getLogs".into(), 10);
        weights.methods.insert("eth_call".into(), 5);
        let m = parse(
            br#"[{"id":1,"method":"eth_getLogs"},{"id":1,"method":"eth_chainId"},
                {"method":"eth_chainId"},{"id":"a","method":"eth_call"},7,{}]"#,
            100,
        )
        .unwrap();
        let (mut e, notifications) = Expected::new(m.calls(), &weights);
        assert_eq!(notifications, 1);
        let w = |e: &mut Expected, k| e.answer(k).map(|a| a.weight);
        assert_eq!(w(&mut e, key("1")), Some(10));
        // The answer to "a" comes early; the duplicate id 1 is next.
        assert_eq!(w(&mut e, key(r#""a""#)), Some(5));
        assert_eq!(w(&mut e, key("1")), Some(1));
        // Unmatched (id null for 7, then an id the node rewrote): in order.
        assert_eq!(w(&mut e, key("null")), Some(1));
        assert!(!e.done());
        assert_eq!(w(&mut e, key(r#""zz""#)), Some(1));
        assert!(e.done());
        // Never more answers than calls.
        assert_eq!(w(&mut e, key("1")), None);
        assert_eq!(w(&mut e, None), None);
    }

    #[test]
    fn giving_up_bills_what_is_still_owed_with_short_ids() {
        let long = format!(r#""{}""#, "x".repeat(300));
        let body = format!(
            r#"[{{"id":1,"method":"a"}},{{"id":{long},"method":"b"}},{{"id":2,"method":"c"}}]"#
        );
        let m = parse(body.as_bytes(), 10).unwrap();
        let (mut e, _) = Expected::new(m.calls(), &Weights::default());
        assert!(e.answer(key("2")).is_some());
        let given = e.give_up();
        assert_eq!(given.bill, Bill { calls: 2, units: 2 });
        assert_eq!(given.ids, vec![serde_json::json!(1), Value::Null]);
        assert_eq!(given.methods.len(), 2);
        assert!(e.done());
    }

    #[test]
    fn the_ledger_adds_and_saturates_and_its_clones_read_it() {
        let ledger = Ledger::default();
        let reader = ledger.clone();
        ledger.add(Bill::default());
        ledger.add(Bill { calls: 1, units: 3 });
        assert_eq!(reader.billed(), Bill { calls: 1, units: 3 });
        ledger.add(Bill::units(u64::MAX));
        assert_eq!(
            reader.billed(),
            Bill {
                calls: 1,
                units: u64::MAX
            }
        );
    }
}
