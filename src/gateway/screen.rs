//! What of a request reaches the node: each call checked against the
//! activity's method policy, the `eth_getLogs` range limit and, on a
//! WebSocket, the room left for subscriptions. A call that
//! fails is answered by the gateway itself and never billed; the rest of its
//! batch goes on to the node, and the two sets of answers are joined (see
//! `http`, `ws`). Screening decides which calls fail and why; what their
//! errors say is `error`'s.

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;

use super::error::Error;
use super::jsonrpc::{self, Call, Message};
use super::limits::{Limits, Policy};

/// A method name is echoed in an error up to this many characters.
const SHOWN: usize = 64;

/// A request after screening.
#[derive(Debug)]
pub struct Screened {
    /// What goes to the node: the request as it came, a batch of the calls
    /// that passed, or nothing.
    pub body: Option<Bytes>,
    /// The calls sent, to bill their answers.
    pub calls: Vec<Call>,
    /// The gateway's own answers to the calls refused (notifications refused
    /// get none).
    pub refused: Vec<Value>,
    /// Why each refused call was refused (notifications included), for the
    /// metrics: `policy`, or the limit's key.
    pub reasons: Vec<&'static str>,
    /// Whether the request was a batch (its answers go in an array).
    pub batch: bool,
}

impl Screened {
    /// The gateway's answers as the client's request expects them: one
    /// object for a single call, an array for a batch; `None` if there is
    /// none.
    pub fn own_answer(&self) -> Option<Bytes> {
        let answer = jsonrpc::answer_of(self.refused.clone(), self.batch);
        (!answer.is_empty()).then_some(answer)
    }
}

/// Why a call may not reach the node, if it may not. `room` is how many more
/// subscriptions may be asked for; each that passes takes one.
fn refusal(call: &Call, policy: &Policy, limits: &Limits, room: &mut usize) -> Option<Error> {
    if !policy.allows(call.method.as_deref()) {
        let method = call
            .method
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(SHOWN)
            .collect();
        return Some(Error::MethodDenied { method });
    }
    if call.method.as_deref() == Some("eth_subscribe") {
        match room.checked_sub(1) {
            Some(left) => *room = left,
            None => {
                return Some(Error::Subscriptions {
                    limit: limits.subscriptions(),
                })
            }
        }
    }
    match call.logs_span {
        Some(span) if span > u64::from(limits.logs_blocks()) => Some(Error::LogsRange {
            limit: limits.logs_blocks(),
            span,
        }),
        _ => None,
    }
}

/// Screens `message` (read from `body`, and no longer than the batch limit),
/// with room for `subscriptions` more subscriptions.
pub fn screen(
    body: Bytes,
    message: Message,
    policy: &Policy,
    limits: &Limits,
    mut subscriptions: usize,
) -> Screened {
    let (calls, batch) = match message {
        Message::Single(call) => (vec![call], false),
        Message::Batch { calls, .. } => (calls, true),
    };
    // Most requests refuse nothing: that is found without allocating.
    let mut room = subscriptions;
    if calls
        .iter()
        .all(|c| refusal(c, policy, limits, &mut room).is_none())
    {
        return Screened {
            body: Some(body),
            calls,
            refused: Vec::new(),
            reasons: Vec::new(),
            batch,
        };
    }
    let verdicts: Vec<Option<Error>> = calls
        .iter()
        .map(|c| refusal(c, policy, limits, &mut subscriptions))
        .collect();
    let mut refused = Vec::new();
    let mut reasons = Vec::new();
    let mut passed = Vec::new();
    for (call, verdict) in calls.into_iter().zip(&verdicts) {
        match verdict {
            Some(error) => {
                reasons.extend(error.reason());
                if !call.is_notification() {
                    let id = call.id.as_ref().unwrap_or(&Value::Null);
                    refused.push(error.for_call(id));
                }
            }
            None => passed.push(call),
        }
    }
    let body = match passed.is_empty() {
        true => None,
        false => rebuild(&body, &verdicts),
    };
    Screened {
        body,
        calls: passed,
        refused,
        reasons,
        batch,
    }
}

/// The batch of the elements no verdict refused, as they were written.
fn rebuild<T>(body: &[u8], verdicts: &[Option<T>]) -> Option<Bytes> {
    let elements: Vec<&RawValue> = serde_json::from_slice(body).ok()?;
    let kept: Vec<&str> = elements
        .iter()
        .zip(verdicts)
        .filter(|(_, verdict)| verdict.is_none())
        .map(|(e, _)| e.get())
        .collect();
    Some(Bytes::from(format!("[{}]", kept.join(","))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::jsonrpc::parse;

    fn screened(body: &str) -> Screened {
        let limits = Limits::default();
        let message = parse(body.as_bytes(), 100).unwrap();
        screen(
            Bytes::from(body.to_string()),
            message,
            &Policy::default(),
            &limits,
            1,
        )
    }

    #[test]
    fn a_clean_request_goes_as_it_came() {
        let body = r#"[{"id":1,"method":"eth_chainId"}, {"method":"eth_blockNumber"}]"#;
        let s = screened(body);
        assert_eq!(s.body.as_deref(), Some(body.as_bytes()));
        assert_eq!(
            (s.calls.len(), s.refused.len(), s.own_answer()),
            (2, 0, None)
        );
    }

    #[test]
    fn refused_calls_are_answered_here_and_the_rest_go_on() {
        let s = screened(
            r#"[{"id":1,"method":"evm_mine"},{"id":"a","method":"eth_chainId"},
               {"method":"anvil_mine"},
               {"id":3,"method":"eth_getLogs","params":[{"fromBlock":"0x0","toBlock":"0x2710"}]}]"#,
        );
        assert_eq!(
            s.body.as_deref(),
            Some(&br#"[{"id":"a","method":"eth_chainId"}]"#[..])
        );
        assert_eq!(s.calls.len(), 1);
        let own: Value = serde_json::from_slice(&s.own_answer().unwrap()).unwrap();
        assert_eq!(own[0]["id"], 1);
        assert_eq!(own[0]["error"]["code"], -32601);
        assert_eq!(own[0]["error"]["message"], "method not allowed: evm_mine");
        assert_eq!(own[1]["id"], 3);
        assert_eq!(own[1]["error"]["code"], -32005);
        assert_eq!(
            own.as_array().map(Vec::len),
            Some(2),
            "no answer to a notification"
        );
        assert_eq!(s.reasons, ["policy", "policy", "logs_blocks"]);
        let s =
            screened(r#"[{"id":1,"method":"eth_subscribe"},{"id":2,"method":"eth_subscribe"}]"#);
        assert_eq!(s.calls.len(), 1, "room for one subscription");
        let own: Value = serde_json::from_slice(&s.own_answer().unwrap()).unwrap();
        assert_eq!(
            own[0]["error"]["message"],
            "limit exceeded: subscriptions (32)"
        );
        let s = screened(r#"{"id":9,"method":"admin_peers"}"#);
        assert!(s.body.is_none() && s.calls.is_empty());
        let own: Value = serde_json::from_slice(&s.own_answer().unwrap()).unwrap();
        assert_eq!(own["id"], 9);
    }
}
