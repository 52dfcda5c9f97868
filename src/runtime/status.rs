//! The one JSON line every RUN command prints: what a requestor hands to its user.
//!
//! Deriving it is a pure function of where the activity is ([`Stage`]), what it serves
//! ([`Served`]) and what the node just said, so every state is unit-tested here.

use serde::Serialize;

use crate::node::health::NodeReport;

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

/// Where the activity is in its life.
#[derive(Clone, Copy, Debug)]
pub enum Stage<'a> {
    Starting,
    Running,
    Failed { reason: &'a str },
    Stopping,
}

/// What an activity that got as far as a node serves, for as long as it is known.
#[derive(Clone, Copy, Debug)]
pub struct Served<'a> {
    pub network: &'a str,
    pub url: &'a str,
    pub user: &'a str,
    pub password: &'a str,
    pub revoked: bool,
    pub chain_id: &'a str,
    pub started_at: &'a str,
    pub uptime_secs: u64,
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
    pub url: Option<&'a str>,
    pub auth: Option<Auth<'a>>,
    pub network: Option<&'a str>,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// eth_chainId as the node answered it at start (hex).
    pub chain_id: Option<&'a str>,
    pub started_at: Option<&'a str>,
    /// Seconds since the node became ready.
    pub uptime_secs: Option<u64>,
    /// What the node said just now (JSON-RPC, bounded by a short timeout).
    pub node: Option<&'a NodeReport>,
    pub runtime_version: &'static str,
}

impl<'a> Status<'a> {
    /// Credentials and the node's report are shown only while the endpoint serves:
    /// a failed or stopping activity hands out nothing a user could call with.
    pub fn derive(
        stage: Stage<'a>,
        served: Option<Served<'a>>,
        report: Option<&'a NodeReport>,
    ) -> Self {
        let (state, reason) = match stage {
            Stage::Starting => (State::Starting, None),
            Stage::Running if report.is_some_and(NodeReport::is_syncing) => (State::Syncing, None),
            Stage::Running => (State::Ready, None),
            Stage::Failed { reason } => (State::Failed, Some(reason)),
            Stage::Stopping => (State::Stopping, None),
        };
        let serving = matches!(state, State::Ready | State::Syncing);
        let live = served.filter(|s| serving && !s.revoked);
        Self {
            url: live.map(|s| s.url),
            auth: live.map(|s| Auth {
                user: s.user,
                password: s.password,
            }),
            network: served.map(|s| s.network),
            state,
            reason,
            chain_id: served.map(|s| s.chain_id),
            started_at: served.map(|s| s.started_at),
            uptime_secs: served.map(|s| s.uptime_secs),
            node: report.filter(|_| serving),
            runtime_version: env!("CARGO_PKG_VERSION"),
        }
    }

    pub fn to_line(&self) -> String {
        // Strings, numbers and options: serde_json cannot fail on them; were it to,
        // the line would still be one (empty) JSON-less line rather than a panic.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::health::SyncReport;
    use serde_json::Value;

    fn served(revoked: bool) -> Served<'static> {
        Served {
            network: "dev",
            url: "https://x/dev",
            user: "dev-u",
            password: "pw",
            revoked,
            chain_id: "0x539",
            started_at: "2026-11-21T00:00:00Z",
            uptime_secs: 7,
        }
    }

    fn line(stage: Stage, served: Option<Served>, report: Option<&NodeReport>) -> Value {
        serde_json::from_str(&Status::derive(stage, served, report).to_line()).unwrap()
    }

    fn syncing(yes: bool) -> NodeReport {
        NodeReport {
            sync: Some(SyncReport {
                syncing: yes,
                current_block: None,
                highest_block: None,
                stage: None,
            }),
            ..NodeReport::default()
        }
    }

    #[test]
    fn starting_has_nothing_to_hand_out() {
        let s = line(Stage::Starting, None, None);
        assert_eq!(s["state"], "starting");
        assert_eq!(
            (s["url"].clone(), s["auth"].clone()),
            (Value::Null, Value::Null)
        );
        assert!(s.get("reason").is_none());
    }

    #[test]
    fn running_is_ready_or_syncing_by_the_node_report_and_hands_out_credentials() {
        let synced = syncing(false);
        let s = line(Stage::Running, Some(served(false)), Some(&synced));
        assert_eq!(s["state"], "ready");
        assert_eq!(s["url"], "https://x/dev");
        assert_eq!(s["auth"]["user"], "dev-u");
        assert_eq!(s["auth"]["password"], "pw");
        assert_eq!(s["node"]["sync"]["syncing"], false);
        assert_eq!(
            (s["chain_id"].clone(), s["uptime_secs"].clone()),
            ("0x539".into(), 7.into())
        );
        let behind = syncing(true);
        let s = line(Stage::Running, Some(served(false)), Some(&behind));
        assert_eq!(s["state"], "syncing");
        assert_eq!(s["auth"]["user"], "dev-u");
        let s = line(Stage::Running, Some(served(false)), None);
        assert_eq!(
            s["state"], "ready",
            "no report (a probe that failed) is not syncing"
        );
    }

    #[test]
    fn revoked_credentials_are_never_shown() {
        let s = line(Stage::Running, Some(served(true)), None);
        assert_eq!(
            (s["url"].clone(), s["auth"].clone()),
            (Value::Null, Value::Null)
        );
    }

    #[test]
    fn failed_shows_the_reason_and_what_ran_but_no_credentials() {
        let report = syncing(false);
        let s = line(
            Stage::Failed {
                reason: "node failed: x",
            },
            Some(served(false)),
            Some(&report),
        );
        assert_eq!(s["state"], "failed");
        assert_eq!(s["reason"], "node failed: x");
        assert_eq!(
            (s["url"].clone(), s["auth"].clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(s["network"], "dev");
        assert_eq!(s["node"], Value::Null);
        let s = line(Stage::Failed { reason: "bad args" }, None, None);
        assert_eq!(
            (s["state"].clone(), s["network"].clone()),
            ("failed".into(), Value::Null)
        );
    }

    #[test]
    fn stopping_hands_out_nothing() {
        let s = line(Stage::Stopping, Some(served(false)), None);
        assert_eq!(s["state"], "stopping");
        assert_eq!(
            (s["url"].clone(), s["auth"].clone()),
            (Value::Null, Value::Null)
        );
        assert!(s.get("reason").is_none());
    }
}
