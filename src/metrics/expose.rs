//! The aggregate in Prometheus' text exposition format (version 0.0.4), the one
//! node_exporter's textfile collector and `promtool check metrics` read.
//!
//! Names follow Prometheus' conventions: one `ya_runtime_erigon_` namespace, base
//! units in the name (`_seconds`, `_bytes`), `_total` on counters and only on them.
//! Label values come from the configuration (networks, the compute-unit table's
//! methods), from the runtime (user names it drew, limit names) or from a closed
//! set; they are escaped all the same.

use std::fmt::Write;

use super::meters::{Reading, BUCKETS_MICROS};
use super::store::{ActivityFile, Aggregate};

/// Every metric: name, type and help. The dashboard's test checks that it uses
/// only these.
pub const METRICS: &[(&str, &str, &str)] = &[
    (ACTIVITY_START, "gauge", "When the activity became ready, in seconds since the Unix epoch."),
    (CALLS, "counter", "Calls the node answered for the activity (each one billed), by method; methods outside the compute-unit table share method=\"other\"."),
    (UNITS, "counter", "Compute units billed to the activity."),
    (REFUSED, "counter", "Calls the gateway refused, by the limit's configuration key or \"policy\" (a method the activity may not call); requests refused before their body was read count once."),
    (NODE_ERRORS, "counter", "The node's answers to the activity's calls that carry a JSON-RPC error."),
    (NODE_UNAVAILABLE, "counter", "The activity's requests the node did not answer at all (unreachable, or an HTTP 5xx)."),
    (NODE_TIMEOUTS, "counter", "The activity's calls the node did not answer within call_timeout_ms (billed)."),
    (NODE_SECONDS, "histogram", "How long the node took to start answering a request of the activity (an HTTP request, or a WebSocket message)."),
    (WEBSOCKETS, "gauge", "The activity's open WebSockets."),
    (SUBSCRIPTIONS, "gauge", "The activity's live eth_subscribe subscriptions."),
    (RECEIVED, "counter", "Bytes of requests received from the activity's clients (bodies and WebSocket payloads)."),
    (SENT, "counter", "Bytes of answers sent to the activity's clients (bodies and WebSocket payloads)."),
    (NET_ACTIVITIES, "gauge", "Live activities on the network."),
    (NODE_UP, "gauge", "1 when the network's node answered its last probe."),
    (NODE_SYNCED, "gauge", "1 when the network's node said it is not syncing at its last probe."),
    (NODE_HEAD, "gauge", "The network's node's head block number at its last probe."),
    (NODE_HEAD_AGE, "gauge", "Seconds between the head block's timestamp and the last probe."),
    (NODE_PEERS, "gauge", "The network's node's peers at its last probe."),
    (NODE_PROBED, "gauge", "When the network's node was last probed, in seconds since the Unix epoch."),
    (ENDED_ACTIVITIES, "counter", "Activities that ended on the network."),
    (ENDED_CALLS, "counter", "Calls billed to the activities that ended on the network."),
    (ENDED_UNITS, "counter", "Compute units billed to the activities that ended on the network."),
    (STARTS, "counter", "Activity starts that served."),
    (START_FAILURES, "counter", "Activity starts that failed, by reason."),
    (STOPS, "counter", "Stops of activities that had started."),
    (LOST, "counter", "Runtimes that died without stopping (SIGKILL, a crash); their last reading is counted as ended."),
    (BUILD, "gauge", "The runtime's version."),
];

pub const ACTIVITY_START: &str = "ya_runtime_erigon_activity_start_time_seconds";
pub const CALLS: &str = "ya_runtime_erigon_activity_calls_total";
pub const UNITS: &str = "ya_runtime_erigon_activity_compute_units_total";
pub const REFUSED: &str = "ya_runtime_erigon_activity_refused_calls_total";
pub const NODE_ERRORS: &str = "ya_runtime_erigon_activity_node_errors_total";
pub const NODE_UNAVAILABLE: &str = "ya_runtime_erigon_activity_node_unavailable_total";
pub const NODE_TIMEOUTS: &str = "ya_runtime_erigon_activity_node_timeouts_total";
pub const NODE_SECONDS: &str = "ya_runtime_erigon_activity_node_answer_seconds";
pub const WEBSOCKETS: &str = "ya_runtime_erigon_activity_websockets";
pub const SUBSCRIPTIONS: &str = "ya_runtime_erigon_activity_subscriptions";
pub const RECEIVED: &str = "ya_runtime_erigon_activity_received_bytes_total";
pub const SENT: &str = "ya_runtime_erigon_activity_sent_bytes_total";
pub const NET_ACTIVITIES: &str = "ya_runtime_erigon_network_activities";
pub const NODE_UP: &str = "ya_runtime_erigon_network_node_up";
pub const NODE_SYNCED: &str = "ya_runtime_erigon_network_node_synced";
pub const NODE_HEAD: &str = "ya_runtime_erigon_network_node_head_block";
pub const NODE_HEAD_AGE: &str = "ya_runtime_erigon_network_node_head_age_seconds";
pub const NODE_PEERS: &str = "ya_runtime_erigon_network_node_peers";
pub const NODE_PROBED: &str = "ya_runtime_erigon_network_node_probe_time_seconds";
pub const ENDED_ACTIVITIES: &str = "ya_runtime_erigon_network_ended_activities_total";
pub const ENDED_CALLS: &str = "ya_runtime_erigon_network_ended_calls_total";
pub const ENDED_UNITS: &str = "ya_runtime_erigon_network_ended_compute_units_total";
pub const STARTS: &str = "ya_runtime_erigon_starts_total";
pub const START_FAILURES: &str = "ya_runtime_erigon_start_failures_total";
pub const STOPS: &str = "ya_runtime_erigon_stops_total";
pub const LOST: &str = "ya_runtime_erigon_lost_activities_total";
pub const BUILD: &str = "ya_runtime_erigon_build_info";

/// A label value escaped as the format requires.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Families are written in [`METRICS`]' order, each with its HELP and TYPE once,
/// then its samples.
struct Text {
    families: Vec<(&'static str, String)>,
}

impl Text {
    fn new() -> Text {
        Text {
            families: METRICS
                .iter()
                .map(|(n, _, _)| (*n, String::new()))
                .collect(),
        }
    }

    /// One sample of `family` (a name from [`METRICS`]; `suffix` for a
    /// histogram's `_bucket`, `_sum` and `_count`).
    fn sample(&mut self, family: &str, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let Some((_, out)) = self.families.iter_mut().find(|(n, _)| *n == family) else {
            return;
        };
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        let braces = match labels.is_empty() {
            true => String::new(),
            false => format!("{{{labels}}}"),
        };
        let _ = writeln!(out, "{family}{suffix}{braces} {}", number(value));
    }

    fn finish(self) -> String {
        let mut text = String::new();
        for ((name, kind, help), (_, samples)) in METRICS.iter().zip(self.families) {
            if samples.is_empty() {
                continue;
            }
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} {kind}");
            text.push_str(&samples);
        }
        text
    }
}

fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// The whole exposition.
pub fn render(all: &Aggregate) -> String {
    let mut text = Text::new();
    for activity in &all.activities {
        render_activity(&mut text, activity);
    }
    for network in &all.networks {
        let net = [("network", network.as_str())];
        let live = all
            .activities
            .iter()
            .filter(|a| &a.network == network)
            .count();
        text.sample(NET_ACTIVITIES, "", &net, live as f64);
        if let Some(node) = all.nodes.get(network) {
            text.sample(NODE_UP, "", &net, f64::from(u8::from(node.up)));
            text.sample(NODE_PROBED, "", &net, node.probed_at as f64);
            if let Some(synced) = node.synced {
                text.sample(NODE_SYNCED, "", &net, f64::from(u8::from(synced)));
            }
            if let Some(head) = node.head_block {
                text.sample(NODE_HEAD, "", &net, head as f64);
            }
            if let Some(age) = node.head_age_secs {
                text.sample(NODE_HEAD_AGE, "", &net, age as f64);
            }
            if let Some(peers) = node.peers {
                text.sample(NODE_PEERS, "", &net, peers as f64);
            }
        }
        let ended = all.totals.ended.get(network).copied().unwrap_or_default();
        text.sample(ENDED_ACTIVITIES, "", &net, ended.activities as f64);
        text.sample(ENDED_CALLS, "", &net, ended.calls as f64);
        text.sample(ENDED_UNITS, "", &net, ended.units as f64);
        let count = |map: &std::collections::BTreeMap<String, u64>| {
            map.get(network).copied().unwrap_or(0) as f64
        };
        text.sample(STARTS, "", &net, count(&all.totals.starts));
        text.sample(STOPS, "", &net, count(&all.totals.stops));
        text.sample(LOST, "", &net, count(&all.totals.lost));
    }
    for (reason, n) in &all.totals.start_failures {
        text.sample(START_FAILURES, "", &[("reason", reason)], *n as f64);
    }
    text.sample(BUILD, "", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    text.finish()
}

fn render_activity(text: &mut Text, a: &ActivityFile) {
    let who = [("network", a.network.as_str()), ("user", a.user.as_str())];
    let r: &Reading = &a.reading;
    text.sample(ACTIVITY_START, "", &who, a.started_at as f64);
    for (method, n) in &r.calls {
        let labels = [who[0], who[1], ("method", method.as_str())];
        text.sample(CALLS, "", &labels, *n as f64);
    }
    text.sample(UNITS, "", &who, r.billed_units as f64);
    for (reason, n) in &r.refused {
        let labels = [who[0], who[1], ("reason", reason.as_str())];
        text.sample(REFUSED, "", &labels, *n as f64);
    }
    text.sample(NODE_ERRORS, "", &who, r.node_errors as f64);
    text.sample(NODE_UNAVAILABLE, "", &who, r.node_unavailable as f64);
    text.sample(NODE_TIMEOUTS, "", &who, r.node_timeouts as f64);
    let mut cumulative = 0u64;
    for (i, n) in r.node_buckets.iter().enumerate() {
        cumulative = cumulative.saturating_add(*n);
        let le = match BUCKETS_MICROS.get(i) {
            Some(micros) => number(*micros as f64 / 1e6),
            None => "+Inf".to_owned(),
        };
        let labels = [who[0], who[1], ("le", le.as_str())];
        text.sample(NODE_SECONDS, "_bucket", &labels, cumulative as f64);
    }
    if r.node_buckets.is_empty() {
        let labels = [who[0], who[1], ("le", "+Inf")];
        text.sample(NODE_SECONDS, "_bucket", &labels, 0.0);
    }
    text.sample(NODE_SECONDS, "_sum", &who, r.node_micros as f64 / 1e6);
    text.sample(NODE_SECONDS, "_count", &who, r.node_count() as f64);
    text.sample(WEBSOCKETS, "", &who, r.websockets as f64);
    text.sample(SUBSCRIPTIONS, "", &who, r.subscriptions as f64);
    text.sample(RECEIVED, "", &who, r.received_bytes as f64);
    text.sample(SENT, "", &who, r.sent_bytes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::store::{Ended, NodeFile};
    use crate::owner::Owner;

    pub fn sample() -> Aggregate {
        let mut a = ActivityFile::new("dev-0-abc", "dev", "act", Owner::current().unwrap(), 1);
        a.reading.calls.insert("eth_call".into(), 3);
        a.reading.calls.insert("other".into(), 1);
        a.reading.billed_calls = 4;
        a.reading.billed_units = 151;
        a.reading.refused.insert("policy".into(), 2);
        a.reading.node_buckets = vec![0; BUCKETS_MICROS.len() + 1];
        a.reading.node_buckets[2] = 4;
        a.reading.node_micros = 1_200;
        let mut all = Aggregate {
            networks: ["dev".into(), "sepolia".into()].into(),
            activities: vec![a],
            ..Aggregate::default()
        };
        all.nodes.insert(
            "dev".into(),
            NodeFile {
                up: true,
                synced: Some(true),
                head_block: Some(12),
                head_age_secs: Some(3),
                peers: Some(0),
                ..NodeFile::new("dev", 1_700_000_000)
            },
        );
        all.totals.ended.insert(
            "dev".into(),
            Ended {
                activities: 1,
                calls: 9,
                units: 90,
            },
        );
        all.totals.start_failures.insert("node".into(), 2);
        all
    }

    #[test]
    fn every_family_has_help_and_type_once_and_histograms_are_cumulative() {
        let text = render(&sample());
        for (name, kind, _) in METRICS {
            if text.contains(&format!("\n{name}")) || text.starts_with(name) {
                assert_eq!(
                    text.matches(&format!("# TYPE {name} {kind}\n")).count(),
                    1,
                    "{name}"
                );
            }
        }
        assert!(text.contains(
            "ya_runtime_erigon_activity_calls_total{network=\"dev\",user=\"dev-0-abc\",method=\"eth_call\"} 3\n"
        ));
        assert!(text.contains("ya_runtime_erigon_activity_node_answer_seconds_bucket{network=\"dev\",user=\"dev-0-abc\",le=\"0.00025\"} 0\n"));
        assert!(text.contains("ya_runtime_erigon_activity_node_answer_seconds_bucket{network=\"dev\",user=\"dev-0-abc\",le=\"0.0005\"} 4\n"));
        assert!(text.contains("ya_runtime_erigon_activity_node_answer_seconds_bucket{network=\"dev\",user=\"dev-0-abc\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("ya_runtime_erigon_activity_node_answer_seconds_sum{network=\"dev\",user=\"dev-0-abc\"} 0.0012\n"));
        assert!(text.contains("ya_runtime_erigon_network_activities{network=\"sepolia\"} 0\n"));
        assert!(text.contains("ya_runtime_erigon_network_ended_calls_total{network=\"dev\"} 9\n"));
        assert!(text.contains("ya_runtime_erigon_start_failures_total{reason=\"node\"} 2\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
