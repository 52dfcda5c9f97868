//! The node as calibration calls it: one HTTP/1.1 connection, kept alive, one call at a
//! time, each timed from the request's first byte to the answer's last.
//!
//! hyper rather than reqwest: a pooled client's own work per call (the pool's lock and
//! bookkeeping) would be timed with every call, and being the same for all methods it
//! would pull every ratio toward 1. Connecting is never timed: a connection the node
//! closed while idle is replaced before the clock starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use serde_json::{json, Value};

use crate::node::upstream::Upstream;
use crate::text::printable;

/// The slowest answer waited for: a node that takes longer for one representative
/// call is not in a state to be calibrated.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// JSON-RPC's "method not found".
pub const NOT_FOUND: i64 = -32601;

/// What one call got back.
pub enum Reply {
    Result(Value),
    /// A JSON-RPC error object, or an answer that is not JSON-RPC (no code).
    Failed {
        code: Option<i64>,
        message: String,
    },
}

pub struct Answer {
    pub elapsed: Duration,
    pub reply: Reply,
}

pub struct Node {
    node: Arc<Upstream>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Node {
    pub fn new(node: Arc<Upstream>) -> Node {
        Node { node, sender: None }
    }

    pub fn url(&self) -> &str {
        self.node.http().url()
    }

    /// One timed call. An error is the node not answering at all; a JSON-RPC error is
    /// a [`Reply::Failed`].
    pub async fn call(&mut self, method: &str, params: &Value) -> Result<Answer, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let body = Bytes::from(body.to_string());
        match tokio::time::timeout(CALL_TIMEOUT, self.exchange(body)).await {
            Ok(Ok((elapsed, status, bytes))) => Ok(Answer {
                elapsed,
                reply: reply(status, &bytes),
            }),
            Ok(Err(e)) => {
                self.sender = None;
                Err(format!("{method} to {}: {e}", self.url()))
            }
            Err(_) => {
                self.sender = None;
                Err(format!(
                    "{method} to {}: no answer within {} s",
                    self.url(),
                    CALL_TIMEOUT.as_secs()
                ))
            }
        }
    }

    async fn exchange(&mut self, body: Bytes) -> Result<(Duration, u16, Bytes), String> {
        // The second attempt is on a fresh connection, when the kept one had been
        // closed by the node before the request went out.
        for _ in 0..2 {
            let mut sender = match self.sender.take() {
                Some(mut kept) => match kept.ready().await {
                    Ok(()) => kept,
                    Err(_) => self.connect().await?,
                },
                None => self.connect().await?,
            };
            let request = self.node.http().post(body.clone());
            let start = Instant::now();
            let answer = match sender.try_send_request(request).await {
                Ok(answer) => answer,
                Err(mut failed) => match failed.take_message() {
                    Some(_unsent) => continue,
                    None => return Err(failed.into_error().to_string()),
                },
            };
            let status = answer.status().as_u16();
            let bytes = answer
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            let elapsed = start.elapsed();
            // Kept only now: hyper reuses a connection once its answer is read whole.
            self.sender = Some(sender);
            return Ok((elapsed, status, bytes));
        }
        Err("the node closed two connections before a request could be sent".into())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        // TCP_NODELAY (see `upstream::dial`): Nagle's wait for an ACK would be timed.
        let io = tokio::time::timeout(CONNECT_TIMEOUT, self.node.dial(self.node.http()))
            .await
            .map_err(|_| format!("cannot connect within {} s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        // (The caller names the URL.)
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        // Ends when the sender is dropped or the node closes the connection; an error
        // then shows in the next call's.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

fn reply(status: u16, bytes: &[u8]) -> Reply {
    let not_json_rpc = || Reply::Failed {
        code: None,
        message: format!(
            "HTTP {status}, not JSON-RPC: {}",
            printable(&String::from_utf8_lossy(bytes))
        ),
    };
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(bytes) else {
        return not_json_rpc();
    };
    if let Some(error) = answer.remove("error") {
        return Reply::Failed {
            code: error.get("code").and_then(Value::as_i64),
            message: printable(
                error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)"),
            ),
        };
    }
    match answer.remove("result") {
        Some(result) => Reply::Result(result),
        None => not_json_rpc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_results_errors_and_strangers_apart() {
        let ok = reply(200, br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#);
        assert!(matches!(ok, Reply::Result(v) if v == "0x1"));
        let null = reply(200, br#"{"jsonrpc":"2.0","id":1,"result":null}"#);
        assert!(matches!(null, Reply::Result(Value::Null)));
        let missing = reply(
            200,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}"#,
        );
        assert!(
            matches!(missing, Reply::Failed { code: Some(NOT_FOUND), message } if message == "Method not found")
        );
        let html = reply(404, b"<html>not here</html>");
        assert!(
            matches!(html, Reply::Failed { code: None, message } if message.starts_with("HTTP 404, not JSON-RPC: <html>"))
        );
    }
}
