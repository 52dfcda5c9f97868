//! The one JSON line every RUN command prints: what a requestor hands to its user.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    /// The node answers but is still catching up with the chain.
    Syncing,
    Ready,
    Failed,
    Stopping,
}

#[derive(Debug, Serialize)]
pub struct Auth<'a> {
    pub user: &'a str,
    pub password: &'a str,
}

/// `url` and `auth` are null until credentials exist, and after they are revoked;
/// `reason` is present exactly when `state` is `failed`.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    pub url: Option<String>,
    pub auth: Option<Auth<'a>>,
    pub network: Option<&'a str>,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// eth_chainId as the node answered it at start (hex).
    pub chain_id: Option<&'a str>,
    pub started_at: Option<&'a str>,
    /// Seconds since the node became ready.
    pub uptime_secs: Option<u64>,
    /// What the node said just now (JSON-RPC, bounded by a short timeout).
    pub node: Option<&'a crate::health::NodeReport>,
    pub runtime_version: &'static str,
}

impl Status<'_> {
    pub fn to_line(&self) -> String {
        // A struct of strings and options always serializes.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}
