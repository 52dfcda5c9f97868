//! Reading just enough of JSON-RPC messages to limit and bill them, and the
//! shape of the JSON-RPC errors the gateway writes (what they say, and when,
//! is `error`'s).
//!
//! Only the `id` and `method` of each call are kept (and the block range of
//! an `eth_getLogs`); everything else is checked for syntax and skipped
//! without allocating, and a batch keeps at most `max_batch` calls, so a
//! hostile 1 MiB body costs a bounded amount of memory whatever its shape.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::ids;

/// JSON-RPC error codes the gateway answers with itself.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INTERNAL_ERROR: i64 = -32603;
/// A method the activity may not call, as nodes answer an unknown one.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// A call the node did not answer within the call timeout (geth's code).
pub const TIMED_OUT: i64 = -32002;
/// "Limit exceeded", as hosted services answer a throttled call.
pub const LIMIT_EXCEEDED: i64 = -32005;

/// One element of a request (or of the node's answer).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Call {
    /// `Some(Value::Null)` for `"id": null`, which still expects an answer;
    /// `None` when there is no id at all: a notification.
    pub id: Option<Value>,
    /// The key its answer is matched by (see `ids`); `None` without an id.
    pub key: Option<u64>,
    pub method: Option<String>,
    /// False for an element that is not a JSON object; the node answers it
    /// with an error whose id is null.
    pub object: bool,
    /// For `eth_getLogs` with an explicit range (both ends block numbers, or
    /// `earliest`), the number of blocks it spans.
    pub logs_span: Option<u64>,
}

impl Call {
    /// An object with a method and no id: the node answers it with nothing.
    /// An object without a method (`{}`) is no notification: the node answers
    /// it with an error, which is billed like any answer.
    pub fn is_notification(&self) -> bool {
        self.object && self.id.is_none() && self.method.is_some()
    }
}

/// A parsed request body or WebSocket message.
#[derive(Debug, PartialEq)]
pub enum Message {
    Single(Call),
    /// `len` counts every element; `calls` holds at most the first
    /// `max_batch` of them (all of them when `len <= max_batch`).
    Batch {
        calls: Vec<Call>,
        len: usize,
    },
}

impl Message {
    /// How many calls the message carries.
    pub fn len(&self) -> usize {
        match self {
            Message::Single(_) => 1,
            Message::Batch { len, .. } => *len,
        }
    }

    #[cfg(test)]
    pub fn calls(&self) -> &[Call] {
        match self {
            Message::Single(call) => std::slice::from_ref(call),
            Message::Batch { calls, .. } => calls,
        }
    }
}

/// Why a body is not a request the node should see: it is answered by the
/// gateway (see `error`), never forwarded, never billed.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    /// Not JSON: -32700.
    Parse,
    /// JSON, but neither an object nor a non-empty array: -32600.
    Invalid,
}

/// Reads a request; a batch longer than `max_batch` is still checked for
/// syntax, but only its length is kept past that point.
pub fn parse(body: &[u8], max_batch: usize) -> Result<Message, Bad> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let message = TopSeed { max_batch }
        .deserialize(&mut de)
        .map_err(classify)?;
    de.end().map_err(classify)?;
    if let Message::Batch { len: 0, .. } = message {
        return Err(Bad::Invalid);
    }
    Ok(message)
}

fn classify(e: serde_json::Error) -> Bad {
    match e.classify() {
        serde_json::error::Category::Data => Bad::Invalid,
        _ => Bad::Parse,
    }
}

/// One JSON-RPC error object.
pub fn error_value(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

pub fn error(id: &Value, code: i64, message: &str) -> Bytes {
    Bytes::from(error_value(id, code, message).to_string())
}

/// One error per call owed an answer (notifications get none), under its id.
pub fn error_values(calls: &[Call], code: i64, text: &str) -> Vec<Value> {
    calls
        .iter()
        .filter(|c| !c.is_notification())
        .map(|c| error_value(c.id.as_ref().unwrap_or(&Value::Null), code, text))
        .collect()
}

/// Answers as the request expects them: the one answer of a single call, an
/// array for a batch; nothing when there is none.
pub fn answer_of(mut answers: Vec<Value>, batch: bool) -> Bytes {
    match (batch, answers.len()) {
        (_, 0) => Bytes::new(),
        (false, 1) => Bytes::from(answers.remove(0).to_string()),
        _ => Bytes::from(Value::Array(answers).to_string()),
    }
}

struct TopSeed {
    max_batch: usize,
}

impl<'de> DeserializeSeed<'de> for TopSeed {
    type Value = Message;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Message, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC call or batch")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Message, A::Error> {
        CallVisitor.visit_map(map).map(Message::Single)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Message, A::Error> {
        let mut calls = Vec::new();
        let mut len = 0usize;
        loop {
            if len < self.max_batch {
                match seq.next_element::<Call>()? {
                    Some(call) => calls.push(call),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            len = len.saturating_add(1);
        }
        Ok(Message::Batch { calls, len })
    }
}

impl<'de> de::Deserialize<'de> for Call {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Call, D::Error> {
        d.deserialize_any(CallVisitor)
    }
}

/// Keeps `id` and `method` of an object; anything else is a non-object call.
struct CallVisitor;

impl<'de> Visitor<'de> for CallVisitor {
    type Value = Call;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC call")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Call, A::Error> {
        let mut call = Call {
            object: true,
            ..Call::default()
        };
        let mut params: Option<&'de RawValue> = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Id => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    let id: Value = serde_json::from_str(raw.get()).map_err(de::Error::custom)?;
                    call.key = ids::key_of_parsed(raw.get().as_bytes(), &id);
                    call.id = Some(id);
                }
                Key::Method => {
                    call.method = match map.next_value::<Value>()? {
                        Value::String(method) => Some(method),
                        _ => None,
                    }
                }
                Key::Params => params = Some(map.next_value::<&'de RawValue>()?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if call.method.as_deref() == Some("eth_getLogs") {
            call.logs_span = params.and_then(logs_span);
        }
        Ok(call)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Call, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Call::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Call, E> {
        Ok(Call::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Call, E> {
        Ok(Call::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Call, E> {
        Ok(Call::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Call, E> {
        Ok(Call::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Call, E> {
        Ok(Call::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Call, E> {
        Ok(Call::default())
    }
}

enum Key {
    Id,
    Method,
    Params,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "id" => Key::Id,
                    "method" => Key::Method,
                    "params" => Key::Params,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The blocks an `eth_getLogs` filter spans, when both ends are explicit:
/// block numbers (hex quantities, as the spec writes them, or plain
/// numbers), or `earliest` (block 0). A filter by block hash, or with a tag
/// whose block only the node knows (`latest`, `safe`, …), has no explicit
/// span.
fn logs_span(params: &RawValue) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Filter {
        #[serde(rename = "fromBlock")]
        from: Option<Value>,
        #[serde(rename = "toBlock")]
        to: Option<Value>,
    }
    fn block(v: &Value) -> Option<u64> {
        match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) if s == "earliest" => Some(0),
            Value::String(s) => u64::from_str_radix(s.strip_prefix("0x")?, 16).ok(),
            _ => None,
        }
    }
    let (filter,): (Filter,) = serde_json::from_str(params.get()).ok()?;
    let from = block(filter.from.as_ref()?)?;
    let to = block(filter.to.as_ref()?)?;
    Some(to.checked_sub(from).map_or(0, |d| d.saturating_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: Option<Value>, method: &str) -> Call {
        Call {
            key: id
                .as_ref()
                .and_then(|id| ids::key_of(id.to_string().as_bytes())),
            id,
            method: Some(method.into()),
            object: true,
            logs_span: None,
        }
    }

    #[test]
    fn keeps_ids_and_methods_and_tells_notifications() {
        let m = parse(
            br#"{"jsonrpc":"2.0","id":7,"method":"eth_chainId","params":[]}"#,
            10,
        );
        assert_eq!(m, Ok(Message::Single(call(Some(json!(7)), "eth_chainId"))));
        let m = parse(
            br#"[{"id":null,"method":"a"},{"method":"b"},5,"x",[1,[2]]]"#,
            10,
        );
        let Ok(Message::Batch { calls, len: 5 }) = m else {
            panic!("{m:?}")
        };
        assert_eq!(calls[0], call(Some(Value::Null), "a"));
        assert!(calls[1].is_notification());
        assert!(calls[2..].iter().all(|c| !c.object && !c.is_notification()));
        // An object without a method is owed an answer, as the node errs on it.
        let Ok(Message::Single(empty)) = parse(b"{}", 10) else {
            panic!()
        };
        assert!(!empty.is_notification());
    }

    #[test]
    fn a_long_batch_keeps_only_its_length() {
        let body = format!("[{}]", vec![r#"{"id":1,"method":"m"}"#; 10_000].join(","));
        let Ok(Message::Batch { calls, len }) = parse(body.as_bytes(), 100) else {
            panic!()
        };
        assert_eq!((calls.len(), len), (100, 10_000));
    }

    #[test]
    fn tells_bad_json_from_bad_requests() {
        for bad in [&b"{"[..], b"", b"[1,]", b"{} {}", b"\xff", b"nul"] {
            assert_eq!(parse(bad, 10), Err(Bad::Parse), "{bad:?}");
        }
        for invalid in [&b"[]"[..], b"5", b"\"x\"", b"null", b" [ ] "] {
            assert_eq!(parse(invalid, 10), Err(Bad::Invalid), "{invalid:?}");
        }
        // Deep nesting is skipped, not recursed into: no stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse(deep.as_bytes(), 10).map(|m| m.len()), Ok(1));
        let deep = format!(
            r#"{{"id":1,"params":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(parse(deep.as_bytes(), 10).map(|m| m.len()), Ok(1));
        let deep = format!(r#"{{"id":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse(deep.as_bytes(), 10), Err(Bad::Invalid));
    }

    #[test]
    fn reads_the_explicit_span_of_get_logs() {
        let span = |params: &str| {
            let body = format!(r#"{{"id":1,"params":{params},"method":"eth_getLogs"}}"#);
            match parse(body.as_bytes(), 1) {
                Ok(Message::Single(call)) => call.logs_span,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            span(r#"[{"fromBlock":"0x1","toBlock":"0x2710"}]"#),
            Some(10_000)
        );
        assert_eq!(
            span(r#"[{"fromBlock":"earliest","toBlock":"0x0"}]"#),
            Some(1)
        );
        assert_eq!(span(r#"[{"fromBlock":5,"toBlock":4}]"#), Some(0));
        assert_eq!(span(r#"[{"fromBlock":"0x0","toBlock":"latest"}]"#), None);
        assert_eq!(span(r#"[{"blockHash":"0xab"}]"#), None);
        assert_eq!(
            span(r#"[{"fromBlock":"0x0","toBlock":"0xffffffffffffffff"}]"#),
            Some(u64::MAX)
        );
        // Nodes take the filter as the one positional parameter only.
        assert_eq!(span(r#"{"fromBlock":"0x0","toBlock":"0x1"}"#), None);
        assert_eq!(span(r#"[1]"#), None);
    }

    #[test]
    fn refusals_answer_each_call_by_its_id() {
        let m = parse(br#"[{"id":1,"method":"a"},{"id":"x","method":"b"}]"#, 10).unwrap();
        let errors = error_values(m.calls(), LIMIT_EXCEEDED, "no");
        let v: Value = serde_json::from_slice(&answer_of(errors, true)).unwrap();
        assert_eq!(v[0]["id"], json!(1));
        assert_eq!(v[1]["id"], json!("x"));
        assert_eq!(v[1]["error"]["code"], json!(-32005));
        // A single call's error is an object, not an array.
        let m = parse(br#"{"id":7,"method":"a"}"#, 10).unwrap();
        let errors = error_values(m.calls(), LIMIT_EXCEEDED, "no");
        let v: Value = serde_json::from_slice(&answer_of(errors, false)).unwrap();
        assert_eq!(v["id"], json!(7));
    }
}
