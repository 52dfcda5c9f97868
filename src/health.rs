//! Asking the node over JSON-RPC whether it answers.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::node::Node;

/// A probe that hangs longer than this is retried rather than waited for.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Delays between readiness probes on loopback: quick at first, since a local node
/// often answers within milliseconds, then every 200 ms so a slow one is not hammered.
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(10))
    }
}

impl Backoff {
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_millis(200));
    }
}

pub struct JsonRpc {
    client: reqwest::Client,
    url: String,
}

impl JsonRpc {
    pub fn new(addr: IpAddr, port: u16) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            // A provider's HTTP_PROXY must not capture calls to its own loopback.
            .no_proxy()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let host = match addr {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        Ok(Self {
            client,
            url: format!("http://{host}:{port}/"),
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

/// Waits until rpcdaemon answers `eth_chainId` while both children live. Returns the
/// chain id; fails naming the child that exited, or the timeout.
pub async fn wait_ready(rpc: &JsonRpc, node: &Node, deadline: Instant) -> Result<String, String> {
    let last_error = std::cell::RefCell::new(String::from("no answer yet"));
    let probe = async {
        let mut backoff = Backoff::default();
        loop {
            match rpc.call("eth_chainId", json!([])).await {
                Ok(Value::String(id)) => return id,
                Ok(other) => *last_error.borrow_mut() = format!("eth_chainId returned {other}"),
                Err(e) => *last_error.borrow_mut() = e,
            }
            backoff.wait().await;
        }
    };
    tokio::select! {
        id = probe => Ok(id),
        failure = node.watch() => Err(format!("{failure} during start")),
        _ = tokio::time::sleep_until(deadline.into()) => Err(format!(
            "rpcdaemon did not answer JSON-RPC at {} before the ready timeout (last: {}); logs: {} and {}",
            rpc.url(),
            last_error.borrow(),
            node.erigon.log().display(),
            node.rpcdaemon.log().display()
        )),
    }
}
