//! The meter (request parser, answer scanner, matcher): never a panic or an
//! overflow, never more calls billed than were owed, and, for an answer that is
//! JSON, exactly one call per answer object the node sent; the operator's metrics
//! count the same calls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ya_runtime_erigon::gateway::{exchange, Exchanged, Weights};

fuzz_target!(|data: &[u8]| {
    // [piece size] request NUL answer
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let (request, answer) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let mut weights = Weights {
        default: u32::MAX,
        ..Weights::default()
    };
    weights.methods.insert("eth_call".into(), 26);
    let Some(Exchanged {
        bill,
        owed,
        counted,
    }) = exchange(request, answer, usize::from(piece), &weights)
    else {
        return;
    };
    assert_eq!(counted, bill.calls, "the metrics count what the bill bills");
    assert!(
        bill.calls <= owed as u64,
        "{} billed, {owed} owed",
        bill.calls
    );
    let objects = match serde_json::from_slice::<Value>(answer) {
        Ok(Value::Array(items)) => Some(items.iter().filter(|a| a.is_object()).count()),
        Ok(Value::Object(_)) => Some(1),
        _ => None,
    };
    if let Some(objects) = objects {
        assert_eq!(bill.calls, objects.min(owed) as u64, "answer {answer:?}");
    }
});
