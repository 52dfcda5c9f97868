//! What the provider puts on the market (`offer-template`) and the self-test
//! ya-provider runs at start-up (`test`, which blocks the provider when it fails).

use serde_json::{json, Value};

use crate::config::Config;
use crate::network::Network;

/// Property names, under the runtime's namespace (README, "On the market").
pub const NETWORKS: &str = "golem.runtime.erigon.networks";
pub const MANAGED: &str = "golem.runtime.erigon.managed-networks";
pub const SHARED: &str = "golem.runtime.erigon.shared-networks";
pub const VERSION: &str = "golem.runtime.erigon.version";
pub const HTTP: &str = "golem.runtime.erigon.endpoint.http";
pub const WS: &str = "golem.runtime.erigon.endpoint.ws";
pub const TLS: &str = "golem.runtime.erigon.endpoint.tls";
pub const APIS: &str = "golem.runtime.erigon.endpoint.apis";
pub const BILLING: &str = "golem.runtime.erigon.request-counter";
/// `<LIMITS>.<network>.<limit>`, e.g. `golem.runtime.erigon.limits.sepolia.calls-per-sec`.
pub const LIMITS: &str = "golem.runtime.erigon.limits";
/// `<WEIGHTS>.<method>`: compute units of a method whose weight is not 1.
pub const WEIGHTS: &str = "golem.runtime.erigon.method-weights";

/// `{"properties": …, "constraints": ""}`: what a requestor can constrain its demand on.
pub async fn template(config: &Config) -> Value {
    let all: Vec<&Network> = config.networks().all().collect();
    let (shared, managed): (Vec<&Network>, Vec<&Network>) = all.iter().partition(|n| n.is_shared());
    let names = |list: &[&Network]| list.iter().map(|n| n.name().to_owned()).collect::<Vec<_>>();
    let version = if managed.is_empty() {
        None
    } else {
        crate::node::erigon_version(config.erigon_path())
            .await
            .map_err(|e| log::warn!("offer without an Erigon version: {e}"))
            .ok()
    };
    let mut properties = json!({
            NETWORKS: names(&all),
            MANAGED: names(&managed),
            SHARED: names(&shared),
            VERSION: version.unwrap_or_else(|| "unknown".into()),
            HTTP: true,
            WS: true,
            TLS: config.tls(),
            APIS: config.http_api(),
            BILLING: crate::billing::COUNTER,
    });
    if let Some(map) = properties.as_object_mut() {
        for network in &all {
            let limits = config.limits(network);
            for (name, value) in [
                ("calls-per-sec", limits.calls_per_sec),
                ("burst", limits.burst),
                ("in-flight", limits.in_flight),
                ("batch", limits.batch),
                ("websockets", limits.websockets),
                ("body-bytes", limits.body_bytes),
            ] {
                map.insert(format!("{LIMITS}.{network}.{name}"), json!(value));
            }
        }
        for (method, weight) in config.method_weights() {
            map.insert(format!("{WEIGHTS}.{method}"), json!(weight));
        }
    }
    json!({"constraints": "", "properties": properties})
}

/// The checks behind `ya-runtime-erigon test`. Each failure names its fix; warnings do
/// not fail the test.
pub async fn self_test(config: &Config) -> Result<Vec<String>, String> {
    if config.networks().all().any(|n| !n.is_shared()) {
        let version =
            crate::node::check_binaries(config.erigon_path(), config.rpcdaemon_path()).await?;
        log::info!(
            "test: erigon {version} at {}",
            config.erigon_path().display()
        );
    }
    crate::nginx::check_site(config)
}
