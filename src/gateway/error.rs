//! Every way a request, a message or a WebSocket can fail at the gateway, and
//! the one place that answers it and counts it.
//!
//! Failures are found where a request is routed, read, screened, admitted
//! and forwarded (`route`, `http`, `ws`, `screen`, `serve`); those sites only
//! say which failure it was. What the client then reads (the HTTP status and
//! headers, the JSON-RPC error, a WebSocket's message or Close frame) and the
//! reason the operator's metrics count it under are decided here, so that a
//! failure reads the same whichever way the client called, and none can be
//! answered without being counted as the others are.
//!
//! As linkerd2-proxy's synthetic responses carry both an HTTP and a gRPC
//! status, every failure has both an HTTP answer and a WebSocket Close frame;
//! one that only a WebSocket can meet (a Ping flood, a stall) never uses the
//! HTTP one, and one that only a request can meet never closes a WebSocket.

use std::fmt::{self, Write as _};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;

use super::gate::Refusal;
use super::jsonrpc::{
    self, Bad, Call, INTERNAL_ERROR, INVALID_REQUEST, LIMIT_EXCEEDED, METHOD_NOT_FOUND,
    PARSE_ERROR, TIMED_OUT,
};
use super::reply::reply;
use crate::metrics::{Meters, MethodSlot};

/// One failure, with what its answer needs. Limits the gate enforces carry
/// its [`Refusal`]: which limit, its configured value, and when a retry can
/// pass.
#[derive(Debug)]
pub enum Error {
    // Refused before the request is read.
    /// Not the activity's user (see `route::USER_HEADER`): a dead holder's
    /// credentials on a seat this activity took over, or a request that did
    /// not come through nginx.
    WrongUser,
    /// Neither a JSON-RPC POST nor a WebSocket upgrade.
    MethodNotAllowed,
    /// A WebSocket upgrade without its `Sec-WebSocket-Key`.
    NoWebSocketKey,
    /// Past `connections`: turned away unread (see [`Error::written`]).
    Connections(Refusal),
    /// Past `websockets`.
    WebSockets(Refusal),
    /// The activity's bodies held at once would pass `body_budget`.
    BodyBudget(Refusal),

    // Reading the request or message.
    /// Over `body_bytes` (its value `max`), announced or as read.
    BodyTooLarge { max: u32 },
    /// The body did not arrive whole in time, or its connection failed.
    BodyUnread,
    /// Not JSON, or not a JSON-RPC request.
    BadJson(Bad),
    /// A batch of `len` calls, past `batch`: only the first `batch` ids were
    /// kept, so one error with a null id answers it.
    BatchTooLarge { refusal: Refusal, len: usize },

    // One call, refused in screening (see `screen`); the rest of its request
    // may go on, so these are counted there, a call at a time.
    /// A method the activity's policy does not allow (its name, shortened).
    MethodDenied { method: String },
    /// No room for another subscription on the WebSocket.
    Subscriptions { limit: u32 },
    /// An `eth_getLogs` range of `span` blocks, past `logs_blocks`.
    LogsRange { limit: u32, span: u64 },
    /// Every call of an HTTP request was refused in screening, so nothing
    /// reaches the node: `refused` are the gateway's answers to them.
    AllRefused { refused: Vec<Value>, batch: bool },

    // Admission.
    /// Admission refused the calls that passed screening: too heavy
    /// (`cu_burst`), no slot in flight (`in_flight`) or a rate
    /// (`calls_per_sec`, `cu_per_sec`), as `refusal` says. Each call is
    /// answered under its id, together with `refused`, the answers to calls
    /// screening refused when they were not sent already.
    NotAdmitted {
        refusal: Refusal,
        calls: Vec<Call>,
        refused: Vec<Value>,
        batch: bool,
    },

    // The node.
    /// The node did not answer an HTTP request: unreachable, or a 5xx.
    /// Nothing was answered, nothing is billed.
    NodeUnavailable {
        calls: Vec<Call>,
        refused: Vec<Value>,
        batch: bool,
    },
    /// The node's side of a WebSocket could not be opened.
    NoNodeWebSocket,
    /// Calls the node did not answer within `timeout`, given up (and billed:
    /// the node worked on them): `ids` their ids, `methods` their labels.
    NodeTimeout {
        ids: Vec<Value>,
        methods: Vec<MethodSlot>,
        timeout: Duration,
        refused: Vec<Value>,
        batch: bool,
    },
    /// The node closed its side of a WebSocket, or broke its protocol.
    NodeClosed,

    // A WebSocket's client.
    /// A frame the client should not have sent.
    Protocol(String),
    /// Pings (or Pongs nobody asked for) past `per_sec`.
    Pings { per_sec: u32 },
    /// A message that did not arrive whole within this.
    MessageTimeout(Duration),
    /// A client that read nothing of what was written to it for this long.
    WriteStall(Duration),
    /// The activity ended.
    ShuttingDown,
}

/// How a WebSocket ends: its Close frame, after a last message of the
/// gateway's own if there is one.
#[derive(Debug)]
pub struct Close {
    pub code: CloseCode,
    pub reason: String,
    pub last: Option<Bytes>,
}

impl Error {
    /// The answer to an HTTP request, counted.
    pub fn http(self, meters: &Meters) -> Response<http_body_util::Full<Bytes>> {
        self.count(meters);
        let (status, retry_after) = self.status();
        let allow = matches!(self, Error::MethodNotAllowed);
        let mut resp = reply(status, self.body());
        let headers = resp.headers_mut();
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if allow {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST, GET"));
        }
        resp
    }

    /// [`Error::http`] as bytes written straight to a connection hyper never
    /// serves, which closes after it: a connection past the limit costs no
    /// task and no buffer.
    pub fn written(self, meters: &Meters) -> Vec<u8> {
        self.count(meters);
        let (status, retry_after) = self.status();
        let body = self.body();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        );
        if let Some(secs) = retry_after {
            let _ = write!(head, "Retry-After: {secs}\r\n");
        }
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        let _ = write!(
            head,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        [head.as_bytes(), &body].concat()
    }

    /// The gateway's own message to a WebSocket's client for a message that
    /// failed, counted; the WebSocket goes on. `None` when no call of it is
    /// owed an answer.
    pub fn message(self, meters: &Meters) -> Option<Bytes> {
        self.count(meters);
        let body = self.body();
        (!body.is_empty()).then_some(body)
    }

    /// The end of a WebSocket for this failure, counted.
    pub fn close(self, meters: &Meters) -> Close {
        self.count(meters);
        let code = self.close_code();
        let reason = self.to_string();
        let body = self.body();
        Close {
            code,
            reason,
            last: (!body.is_empty()).then_some(body),
        }
    }

    /// The answer to one call under its `id`, for a call refused in
    /// screening, whose answer joins the others of its request.
    pub fn for_call(&self, id: &Value) -> Value {
        jsonrpc::error_value(id, self.code(), &self.to_string())
    }

    /// The reason a refusal is counted under (one of `metrics::REASONS`);
    /// `None` for a failure that is no refusal.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Error::Connections(r)
            | Error::WebSockets(r)
            | Error::BodyBudget(r)
            | Error::BatchTooLarge { refusal: r, .. }
            | Error::NotAdmitted { refusal: r, .. } => Some(r.limit),
            Error::BodyTooLarge { .. } => Some("body_bytes"),
            Error::MethodDenied { .. } => Some("policy"),
            Error::Subscriptions { .. } => Some("subscriptions"),
            Error::LogsRange { .. } => Some("logs_blocks"),
            Error::Pings { .. } => Some("pings"),
            Error::WrongUser
            | Error::MethodNotAllowed
            | Error::NoWebSocketKey
            | Error::BodyUnread
            | Error::BadJson(_)
            | Error::AllRefused { .. }
            | Error::NodeUnavailable { .. }
            | Error::NoNodeWebSocket
            | Error::NodeTimeout { .. }
            | Error::NodeClosed
            | Error::Protocol(_)
            | Error::MessageTimeout(_)
            | Error::WriteStall(_)
            | Error::ShuttingDown => None,
        }
    }

    /// Counts the failure for the operator: a refusal once per call it
    /// refused, the node's failures, nothing for a request that was malformed
    /// or not the activity's.
    fn count(&self, meters: &Meters) {
        match self {
            Error::BatchTooLarge { refusal, len } => meters.refused(refusal.limit, *len),
            Error::NotAdmitted { refusal, calls, .. } => meters.refused(refusal.limit, calls.len()),
            Error::Connections(_)
            | Error::WebSockets(_)
            | Error::BodyBudget(_)
            | Error::BodyTooLarge { .. }
            | Error::Pings { .. } => {
                if let Some(reason) = self.reason() {
                    meters.refused(reason, 1);
                }
            }
            Error::NodeUnavailable { .. } | Error::NoNodeWebSocket => meters.unavailable(),
            Error::NodeTimeout { methods, .. } => meters.timed_out(methods.iter().copied()),
            // Counted as screening found them (see `count_screened`).
            Error::MethodDenied { .. }
            | Error::Subscriptions { .. }
            | Error::LogsRange { .. }
            | Error::AllRefused { .. } => {}
            Error::WrongUser
            | Error::MethodNotAllowed
            | Error::NoWebSocketKey
            | Error::BodyUnread
            | Error::BadJson(_)
            | Error::NodeClosed
            | Error::Protocol(_)
            | Error::MessageTimeout(_)
            | Error::WriteStall(_)
            | Error::ShuttingDown => {}
        }
    }

    /// The HTTP status, and the seconds for `Retry-After` if a retry can
    /// pass. A limit answers as hosted services throttle: 429 with
    /// `Retry-After` when a retry can pass, 413 without it when the request
    /// can never pass as it is (too large a batch, body or weight).
    fn status(&self) -> (StatusCode, Option<u64>) {
        let limited = |r: &Refusal| match r.retry_after {
            Some(secs) => (StatusCode::TOO_MANY_REQUESTS, Some(secs.max(1))),
            None => (StatusCode::PAYLOAD_TOO_LARGE, None),
        };
        let status = match self {
            Error::Connections(r)
            | Error::WebSockets(r)
            | Error::BodyBudget(r)
            | Error::BatchTooLarge { refusal: r, .. }
            | Error::NotAdmitted { refusal: r, .. } => return limited(r),
            Error::WrongUser => StatusCode::FORBIDDEN,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::NoWebSocketKey | Error::BodyUnread | Error::Protocol(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // JSON-RPC errors, as a node answers them.
            Error::BadJson(_)
            | Error::MethodDenied { .. }
            | Error::Subscriptions { .. }
            | Error::LogsRange { .. }
            | Error::AllRefused { .. }
            | Error::NodeTimeout { .. } => StatusCode::OK,
            Error::NodeUnavailable { .. } | Error::NoNodeWebSocket | Error::NodeClosed => {
                StatusCode::BAD_GATEWAY
            }
            Error::Pings { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::MessageTimeout(_) | Error::WriteStall(_) => StatusCode::REQUEST_TIMEOUT,
            Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, None)
    }

    /// The JSON-RPC error code of its calls' errors.
    fn code(&self) -> i64 {
        match self {
            Error::BadJson(Bad::Parse) => PARSE_ERROR,
            Error::BadJson(Bad::Invalid) => INVALID_REQUEST,
            Error::MethodDenied { .. } => METHOD_NOT_FOUND,
            Error::NodeTimeout { .. } => TIMED_OUT,
            Error::Connections(_)
            | Error::WebSockets(_)
            | Error::BodyBudget(_)
            | Error::BodyTooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::Subscriptions { .. }
            | Error::LogsRange { .. }
            | Error::AllRefused { .. }
            | Error::NotAdmitted { .. }
            | Error::Pings { .. } => LIMIT_EXCEEDED,
            Error::WrongUser
            | Error::MethodNotAllowed
            | Error::NoWebSocketKey
            | Error::BodyUnread
            | Error::NodeUnavailable { .. }
            | Error::NoNodeWebSocket
            | Error::NodeClosed
            | Error::Protocol(_)
            | Error::MessageTimeout(_)
            | Error::WriteStall(_)
            | Error::ShuttingDown => INTERNAL_ERROR,
        }
    }

    /// The JSON-RPC body: one error with a null id when the request was
    /// turned away before its calls were known, one per call owed an answer
    /// after that, nothing for a request that was never JSON-RPC's.
    fn body(self) -> Bytes {
        let code = self.code();
        let text = self.to_string();
        match self {
            Error::WrongUser
            | Error::MethodNotAllowed
            | Error::NoWebSocketKey
            | Error::BodyUnread
            | Error::NodeClosed
            | Error::Protocol(_)
            | Error::Pings { .. }
            | Error::MessageTimeout(_)
            | Error::WriteStall(_)
            | Error::ShuttingDown => Bytes::new(),
            Error::Connections(_)
            | Error::WebSockets(_)
            | Error::BodyBudget(_)
            | Error::BodyTooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::BadJson(_)
            | Error::MethodDenied { .. }
            | Error::Subscriptions { .. }
            | Error::LogsRange { .. }
            | Error::NoNodeWebSocket => jsonrpc::error(&Value::Null, code, &text),
            Error::AllRefused { refused, batch } => jsonrpc::answer_of(refused, batch),
            // Notifications are owed no answer.
            Error::NotAdmitted {
                calls,
                refused,
                batch,
                ..
            }
            | Error::NodeUnavailable {
                calls,
                refused,
                batch,
            } => {
                let mut answers = jsonrpc::error_values(&calls, code, &text);
                answers.extend(refused);
                jsonrpc::answer_of(answers, batch)
            }
            Error::NodeTimeout {
                ids,
                refused,
                batch,
                ..
            } => {
                let mut answers: Vec<Value> = ids
                    .iter()
                    .map(|id| jsonrpc::error_value(id, code, &text))
                    .collect();
                answers.extend(refused);
                jsonrpc::answer_of(answers, batch)
            }
        }
    }

    /// The Close frame's code when it ends a WebSocket.
    fn close_code(&self) -> CloseCode {
        match self {
            Error::BodyTooLarge { .. } => CloseCode::Size,
            Error::ShuttingDown => CloseCode::Away,
            Error::NodeClosed | Error::NodeUnavailable { .. } | Error::NoNodeWebSocket => {
                CloseCode::Error
            }
            Error::Protocol(_)
            | Error::BadJson(_)
            | Error::MethodNotAllowed
            | Error::NoWebSocketKey
            | Error::BodyUnread => CloseCode::Protocol,
            Error::WrongUser
            | Error::Connections(_)
            | Error::WebSockets(_)
            | Error::BodyBudget(_)
            | Error::BatchTooLarge { .. }
            | Error::MethodDenied { .. }
            | Error::Subscriptions { .. }
            | Error::LogsRange { .. }
            | Error::AllRefused { .. }
            | Error::NotAdmitted { .. }
            | Error::NodeTimeout { .. }
            | Error::Pings { .. }
            | Error::MessageTimeout(_)
            | Error::WriteStall(_) => CloseCode::Policy,
        }
    }
}

/// Counts the calls screening refused, each under its reason (see
/// [`Error::reason`]): the rest of their request may go on, so no one
/// failure answers them.
pub fn count_screened(meters: &Meters, reasons: &[&'static str]) {
    for reason in reasons {
        meters.refused(reason, 1);
    }
}

/// The words of each failure: its calls' JSON-RPC error message, and a
/// WebSocket's Close reason.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connections(r)
            | Error::WebSockets(r)
            | Error::BodyBudget(r)
            | Error::BatchTooLarge { refusal: r, .. }
            | Error::NotAdmitted { refusal: r, .. } => fmt::Display::fmt(r, f),
            Error::BodyTooLarge { max } => {
                fmt::Display::fmt(&Refusal::permanent("body_bytes", *max), f)
            }
            Error::WrongUser => f.write_str("not the activity's user"),
            Error::MethodNotAllowed => f.write_str("only POST and WebSocket upgrades are served"),
            Error::NoWebSocketKey => f.write_str("a WebSocket upgrade without a key"),
            Error::BodyUnread => f.write_str("the request did not arrive whole"),
            Error::BadJson(Bad::Parse) => f.write_str("parse error"),
            Error::BadJson(Bad::Invalid) => f.write_str("invalid request"),
            Error::MethodDenied { method } => write!(f, "method not allowed: {method}"),
            Error::Subscriptions { limit } => {
                write!(f, "limit exceeded: subscriptions ({limit})")
            }
            Error::LogsRange { limit, span } => write!(
                f,
                "limit exceeded: logs_blocks ({limit}): this range spans {span} blocks"
            ),
            Error::AllRefused { .. } => f.write_str("every call was refused"),
            Error::NodeUnavailable { .. } | Error::NoNodeWebSocket => {
                f.write_str("the node is unavailable")
            }
            Error::NodeTimeout { timeout, .. } => write!(
                f,
                "request timed out: limit call_timeout_ms ({})",
                timeout.as_millis()
            ),
            Error::NodeClosed => f.write_str("the node closed the connection"),
            Error::Protocol(why) => f.write_str(why),
            Error::Pings { per_sec } => write!(f, "limit exceeded: pings ({per_sec} a second)"),
            Error::MessageTimeout(within) => {
                write!(f, "a message must arrive whole within {within:?}")
            }
            Error::WriteStall(stalled) => {
                write!(f, "the client stopped reading for {}s", stalled.as_secs())
            }
            Error::ShuttingDown => f.write_str("the activity has ended"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Methods;

    fn meters() -> Meters {
        Meters::new(Methods::default())
    }

    #[test]
    fn a_refusal_a_retry_can_pass_is_429_with_retry_after_else_413() {
        let m = meters();
        let resp = Error::BodyBudget(Refusal::new("body_budget", 8)).http(&m);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let resp = Error::BodyTooLarge { max: 8 }.http(&m);
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        let resp = Error::MethodNotAllowed.http(&m);
        assert_eq!(resp.headers()[header::ALLOW], "POST, GET");
        assert!(resp.headers().get(header::CONTENT_TYPE).is_none());
        let read = m.read();
        assert_eq!(read.refused.get("body_budget"), Some(&1));
        assert_eq!(read.refused.get("body_bytes"), Some(&1));
        assert_eq!(read.refusals(), 2);
    }

    #[test]
    fn a_request_refused_whole_gets_one_error_with_a_null_id() {
        let batch = Error::BatchTooLarge {
            refusal: Refusal::permanent("batch", 2),
            len: 5,
        };
        let m = meters();
        let body = batch.message(&m).unwrap();
        assert_eq!(
            body,
            r#"{"error":{"code":-32005,"message":"limit exceeded: batch (2)"},"id":null,"jsonrpc":"2.0"}"#
        );
        assert_eq!(m.read().refused.get("batch"), Some(&5), "one per call");
    }

    #[test]
    fn a_connection_turned_away_reads_as_a_whole_http_answer() {
        let m = meters();
        let written = Error::Connections(Refusal::new("connections", 3)).written(&m);
        let body = r#"{"error":{"code":-32005,"message":"limit exceeded: connections (3)"},"id":null,"jsonrpc":"2.0"}"#;
        let want = format!(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8_lossy(&written), want);
        assert_eq!(m.read().refused.get("connections"), Some(&1));
    }

    #[test]
    fn a_websocket_ends_with_the_failure_as_its_close_reason() {
        let m = meters();
        let close = Error::BodyTooLarge { max: 10 }.close(&m);
        assert_eq!(close.code, CloseCode::Size);
        assert_eq!(close.reason, "limit exceeded: body_bytes (10)");
        assert!(close.last.is_some());
        let close = Error::Pings { per_sec: 2 }.close(&m);
        assert_eq!(
            (close.code, close.reason.as_str(), close.last),
            (
                CloseCode::Policy,
                "limit exceeded: pings (2 a second)",
                None
            )
        );
        let close = Error::MessageTimeout(Duration::from_secs(10)).close(&m);
        assert_eq!(close.reason, "a message must arrive whole within 10s");
        let read = m.read();
        assert_eq!(
            (read.refused.get("body_bytes"), read.refused.get("pings")),
            (Some(&1), Some(&1))
        );
    }

    #[test]
    fn calls_refused_together_are_answered_each_under_its_id() {
        let call = |id: Option<Value>| Call {
            id,
            method: Some("m".into()),
            object: true,
            ..Call::default()
        };
        let refused = vec![jsonrpc::error_value(&Value::from(3), -32601, "no")];
        let error = Error::NotAdmitted {
            refusal: Refusal::new("in_flight", 1),
            calls: vec![call(Some(Value::from(1))), call(None)],
            refused,
            batch: true,
        };
        let m = meters();
        let resp = error.http(&m);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(m.read().refused.get("in_flight"), Some(&2));
        let timeout = Error::NodeTimeout {
            ids: vec![Value::from(1)],
            methods: Vec::new(),
            timeout: Duration::from_millis(1500),
            refused: Vec::new(),
            batch: false,
        };
        assert_eq!(
            timeout.message(&m).unwrap(),
            r#"{"error":{"code":-32002,"message":"request timed out: limit call_timeout_ms (1500)"},"id":1,"jsonrpc":"2.0"}"#
        );
    }
}
