//! Asking a node over JSON-RPC whether it answers, for which chain, and how it is doing.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::client::conn::http1;
use hyper::StatusCode;

use serde::Serialize;
use serde_json::{json, Value};

use crate::node::backoff::Backoff;
use crate::node::network::Network;
use crate::node::upstream::{Stage, Upstream};

/// STATUS waits at most this long for the node: a requestor's batch must not hang on
/// a node that is busy.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A probe that hangs longer than this is retried rather than waited for.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A JSON-RPC client of one node, dialing through its [`Upstream`] as the gateway
/// does (same URL, TLS and Host header), so a start's readiness and STATUS check the
/// node the requestor's calls will reach.
#[derive(Clone)]
pub struct JsonRpc {
    node: Arc<Upstream>,
}

/// The largest answer a probe reads: `eth_chainId`, `eth_syncing` and a block header
/// are a few KiB; a node that sends more is not answering a probe.
const MAX_ANSWER: usize = 1 << 20;

impl JsonRpc {
    pub fn new(node: Arc<Upstream>) -> Self {
        Self { node }
    }

    /// The node's JSON-RPC URL, for messages.
    pub fn url(&self) -> &str {
        self.node.http().url()
    }

    /// One call on a fresh connection: probes are seconds apart, and a kept
    /// connection the node (or a balancer in front of it) half-closed meanwhile would
    /// stall a probe until its timeout. A JSON-RPC error object is an error too.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.call_typed(method, params).await.map_err(|e| e.text)
    }

    /// [`JsonRpc::call`], telling a refused TLS handshake (a wrong certificate, an
    /// unknown CA, no TLS at all) from the rest: waiting cannot fix it.
    async fn call_typed(&self, method: &str, params: Value) -> Result<Value, CallError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let url = self.url();
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, self.exchange(body.to_string()))
            .await
            .map_err(|_| format!("{method} to {url}: no answer within {CALL_TIMEOUT:?}"))?
            .map_err(|e| CallError {
                tls: e.tls,
                text: format!("{method} to {url}: {}", e.text),
            })?;
        let reply: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{method} to {url}: HTTP {status}, not JSON-RPC: {e}"))?;
        if let Some(error) = reply.get("error") {
            return Err(format!("{method} to {url}: error {error}").into());
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| format!("{method} to {url}: reply without result: {reply}").into())
    }

    async fn exchange(&self, body: String) -> Result<(StatusCode, Bytes), CallError> {
        let endpoint = self.node.http();
        let io = self.node.dial(endpoint).await.map_err(|e| CallError {
            tls: e.stage == Stage::Tls,
            text: e.to_string(),
        })?;
        let (mut sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let req = endpoint.post(Bytes::from(body));
        let exchange = async {
            let answer = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = answer.status();
            let body = Limited::new(answer.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("HTTP {status}: {e}"))?;
            Ok::<_, String>((status, body.to_bytes()))
        };
        // The connection is driven until the answer is read; it ends with `sender`.
        tokio::select! {
            answer = exchange => answer.map_err(CallError::from),
            ended = connection => Err(CallError::from(match ended {
                Ok(()) => "the connection closed before the answer".to_owned(),
                Err(e) => e.to_string(),
            })),
        }
    }
}

/// A failed call, and whether it failed at the TLS handshake.
struct CallError {
    tls: bool,
    text: String,
}

impl From<String> for CallError {
    fn from(text: String) -> Self {
        CallError { tls: false, text }
    }
}

/// Polls `eth_chainId` with backoff until it answers a string, keeping the last
/// error for the caller's timeout message. The caller bounds it. A node whose TLS
/// is refused fails at once: no wait makes a wrong certificate right.
pub async fn poll_chain_id(rpc: &JsonRpc, last_error: &RefCell<String>) -> Result<String, String> {
    let mut backoff = Backoff::default();
    loop {
        match rpc.call_typed("eth_chainId", json!([])).await {
            Ok(Value::String(id)) => return Ok(id),
            Ok(other) => *last_error.borrow_mut() = format!("eth_chainId returned {other}"),
            Err(e) if e.tls => return Err(e.text),
            Err(e) => *last_error.borrow_mut() = e.text,
        }
        backoff.wait().await;
    }
}

/// Waits until a node that is not ours answers `eth_chainId` for the right chain.
pub async fn wait_answer(
    rpc: &JsonRpc,
    network: &Network,
    deadline: Instant,
) -> Result<String, String> {
    let last_error = RefCell::new(String::from("no answer yet"));
    tokio::select! {
        id = poll_chain_id(rpc, &last_error) => {
            let id = id?;
            check_chain(&id, network).map(|()| id).map_err(|e| format!("at {}: {e}", rpc.url()))
        }
        _ = tokio::time::sleep_until(deadline.into()) => Err(format!(
            "does not answer at {} (last: {})",
            rpc.url(),
            last_error.borrow()
        )),
    }
}

/// One `eth_chainId` to a node that is not ours, as `test` asks it: `Ok(Ok(id))` when
/// it answers for the right chain, `Ok(Err(why))` when it does not answer (it may be
/// starting), and `Err` for what no wait fixes: a refused TLS handshake or the wrong
/// chain.
pub async fn check_once(
    rpc: &JsonRpc,
    network: &Network,
) -> Result<Result<String, String>, String> {
    match rpc.call_typed("eth_chainId", json!([])).await {
        Ok(Value::String(id)) => check_chain(&id, network).map(|()| Ok(id)),
        Ok(other) => Ok(Err(format!("eth_chainId returned {other}"))),
        Err(e) if e.tls => Err(e.text),
        Err(e) => Ok(Err(e.text)),
    }
}

/// A node answering another chain serves the wrong network: that is a failure.
pub fn check_chain(answered: &str, network: &Network) -> Result<(), String> {
    let Some(expected) = network.expected_chain_id() else {
        return Ok(());
    };
    match hex(&json!(answered)) {
        Some(id) if id == expected => Ok(()),
        _ => Err(format!(
            "the node answers eth_chainId {answered}, but network {network} is chain {expected} ({expected:#x}): it serves the wrong chain"
        )),
    }
}

/// What the node says about itself, read fresh for every STATUS.
#[derive(Debug, Default, Serialize)]
pub struct NodeReport {
    pub chain_id: Option<String>,
    pub client_version: Option<String>,
    pub peers: Option<u64>,
    pub sync: Option<SyncReport>,
    pub head: Option<HeadReport>,
    /// Calls that failed or timed out; the other fields are still valid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl NodeReport {
    pub fn is_syncing(&self) -> bool {
        self.sync.as_ref().is_some_and(|s| s.syncing)
    }
}

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub syncing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_block: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highest_block: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HeadReport {
    pub number: u64,
    pub timestamp: u64,
    /// Seconds since the head block's timestamp: how far behind the chain the node is.
    pub age_secs: i64,
}

/// Five calls at once, bounded by `PROBE_TIMEOUT` together.
pub async fn probe(rpc: &JsonRpc) -> NodeReport {
    let calls = futures::future::join5(
        rpc.call("eth_chainId", json!([])),
        rpc.call("web3_clientVersion", json!([])),
        rpc.call("net_peerCount", json!([])),
        rpc.call("eth_syncing", json!([])),
        rpc.call("eth_getBlockByNumber", json!(["latest", false])),
    );
    let Ok((chain, version, peers, sync, head)) = tokio::time::timeout(PROBE_TIMEOUT, calls).await
    else {
        return NodeReport {
            errors: vec![format!(
                "the node did not answer within {} ms",
                PROBE_TIMEOUT.as_millis()
            )],
            ..NodeReport::default()
        };
    };
    let mut report = NodeReport::default();
    let mut keep = |r: Result<Value, String>| r.map_err(|e| report.errors.push(e)).ok();
    let chain = keep(chain);
    let version = keep(version);
    let peers = keep(peers);
    let sync = keep(sync);
    let head = keep(head);
    report.chain_id = chain.and_then(|v| v.as_str().map(str::to_owned));
    report.client_version = version.and_then(|v| v.as_str().map(str::to_owned));
    report.peers = peers.as_ref().and_then(hex);
    report.sync = sync.map(|s| match s {
        Value::Bool(false) => SyncReport {
            syncing: false,
            current_block: None,
            highest_block: None,
            stage: None,
        },
        progress => SyncReport {
            syncing: true,
            current_block: progress.get("currentBlock").and_then(hex),
            highest_block: progress.get("highestBlock").and_then(hex),
            // The first stage still behind the current block is where the node is.
            stage: progress
                .get("stages")
                .and_then(Value::as_array)
                .and_then(|stages| {
                    stages
                        .iter()
                        .find(|st| {
                            st.get("block_number").and_then(hex)
                                < progress.get("highestBlock").and_then(hex)
                        })
                        .or(stages.last())
                        .and_then(|st| {
                            st.get("stage_name")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                }),
        },
    });
    report.head = head.and_then(|block| {
        let number = block.get("number").and_then(hex)?;
        let timestamp = block.get("timestamp").and_then(hex)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(HeadReport {
            number,
            timestamp,
            age_secs: age_secs(now, timestamp),
        })
    });
    report
}

/// How far `timestamp` lies behind `now`, negative for a block from the future. The
/// timestamp is the node's word, so any u64 must give an answer, not an overflow.
fn age_secs(now: u64, timestamp: u64) -> i64 {
    let clamp = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
    clamp(now).saturating_sub(clamp(timestamp))
}

/// A JSON-RPC quantity ("0x1a") as a number.
fn hex(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::network::{NetworkSpec, Networks};

    fn one(name: &str) -> Network {
        Networks::new(
            [(name.to_string(), NetworkSpec::managed(0))].into(),
            30303,
            8555,
        )
        .unwrap()
        .resolve(name)
        .unwrap()
    }

    #[test]
    fn a_node_on_another_chain_is_refused() {
        let dev = one("dev");
        assert!(check_chain("0x539", &dev).is_ok());
        let err = check_chain("0x1", &dev).unwrap_err();
        assert!(err.contains("network dev is chain 1337 (0x539)"), "{err}");
        assert!(
            check_chain("0x1", &one("mychain")).is_ok(),
            "unknown chains are not judged"
        );
    }

    #[test]
    fn a_hostile_block_timestamp_gives_an_age_not_an_overflow() {
        assert_eq!(age_secs(100, 40), 60);
        assert_eq!(age_secs(100, 160), -60);
        assert_eq!(age_secs(100, u64::MAX), 100 - i64::MAX);
        assert_eq!(age_secs(u64::MAX, 0), i64::MAX);
        assert_eq!(age_secs(0, u64::MAX), -i64::MAX);
    }

    #[test]
    fn quantities_parse_as_hex() {
        assert_eq!(hex(&json!("0x10")), Some(16));
        assert_eq!(hex(&json!("16")), None);
        assert_eq!(hex(&json!(16)), None);
    }
}
