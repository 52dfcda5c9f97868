//! Asking a node over JSON-RPC whether it answers, for which chain, and how it is doing.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::backoff::Backoff;
use crate::network::Network;

/// STATUS waits at most this long for the node: a requestor's batch must not hang on
/// a node that is busy.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A probe that hangs longer than this is retried rather than waited for.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct JsonRpc {
    client: reqwest::Client,
    url: String,
}

impl JsonRpc {
    pub fn new(addr: SocketAddr) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            // A provider's HTTP_PROXY must not capture calls to its own loopback.
            .no_proxy()
            // A fresh loopback connection per call costs microseconds; a pooled one
            // the node has half-closed would stall a probe until its timeout.
            .pool_max_idle_per_host(0)
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            // SocketAddr's Display brackets an IPv6 address, as a URL needs.
            url: format!("http://{addr}/"),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One call; a JSON-RPC error object is an error too.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{method} to {}: {e}", self.url))?;
        let status = response.status();
        let reply: Value = response
            .json()
            .await
            .map_err(|e| format!("{method} to {}: HTTP {status}, not JSON-RPC: {e}", self.url))?;
        if let Some(error) = reply.get("error") {
            return Err(format!("{method} to {}: error {error}", self.url));
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| format!("{method} to {}: reply without result: {reply}", self.url))
    }
}

/// Polls `eth_chainId` with backoff until it answers a string, keeping the last
/// error for the caller's timeout message. The caller bounds it.
pub async fn poll_chain_id(rpc: &JsonRpc, last_error: &RefCell<String>) -> String {
    let mut backoff = Backoff::default();
    loop {
        match rpc.call("eth_chainId", json!([])).await {
            Ok(Value::String(id)) => return id,
            Ok(other) => *last_error.borrow_mut() = format!("eth_chainId returned {other}"),
            Err(e) => *last_error.borrow_mut() = e,
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
        id = poll_chain_id(rpc, &last_error) => check_chain(&id, network).map(|()| id),
        _ = tokio::time::sleep_until(deadline.into()) => Err(format!(
            "does not answer at {} (last: {})",
            rpc.url(),
            last_error.borrow()
        )),
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
            current_block: hex(&progress["currentBlock"]),
            highest_block: hex(&progress["highestBlock"]),
            // The first stage still behind the current block is where the node is.
            stage: progress["stages"].as_array().and_then(|stages| {
                stages
                    .iter()
                    .find(|st| hex(&st["block_number"]) < hex(&progress["highestBlock"]))
                    .or(stages.last())
                    .and_then(|st| st["stage_name"].as_str().map(str::to_owned))
            }),
        },
    });
    report.head = head.and_then(|block| {
        let number = hex(&block["number"])?;
        let timestamp = hex(&block["timestamp"])?;
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
    use crate::network::{NetworkSpec, Networks};

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
