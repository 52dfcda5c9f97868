//! What the provider puts on the market (`offer-template`) and the self-test
//! ya-provider runs at start-up (`test`, which blocks the provider when it fails).

use serde_json::{json, Value};

use crate::config::Config;
use crate::node::network::Network;

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
pub const CU_BILLING: &str = "golem.runtime.erigon.compute-unit-counter";
/// `<LIMITS>.<network>.<limit>`, e.g. `golem.runtime.erigon.limits.sepolia.calls-per-sec`.
pub const LIMITS: &str = "golem.runtime.erigon.limits";
/// `<UNITS>.<method>`: the compute units each call of a method weighs;
/// `<UNITS>.default` for a method the table does not list.
pub const UNITS: &str = "golem.runtime.erigon.compute-units";
/// `<METHODS>.<network>.allow`: the namespaces and methods an activity may call;
/// `<METHODS>.denied`: the namespaces no activity may ever call.
pub const METHODS: &str = "golem.runtime.erigon.methods";

/// `{"properties": …, "constraints": ""}`: what a requestor can constrain its demand on.
pub async fn template(config: &Config) -> Value {
    let all: Vec<&Network> = config.networks().all().collect();
    let (shared, managed): (Vec<&Network>, Vec<&Network>) = all.iter().partition(|n| n.is_shared());
    let names = |list: &[&Network]| list.iter().map(|n| n.name().to_owned()).collect::<Vec<_>>();
    let version = if managed.is_empty() {
        None
    } else {
        crate::node::managed::erigon_version(config.erigon_path())
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
            BILLING: crate::provider::billing::COUNTER,
            CU_BILLING: crate::provider::billing::CU_COUNTER,
    });
    if let Some(map) = properties.as_object_mut() {
        for network in &all {
            let limits = config.limits(network).raw();
            for (name, value) in [
                ("calls-per-sec", limits.calls_per_sec),
                ("burst", limits.burst),
                ("in-flight", limits.in_flight),
                ("batch", limits.batch),
                ("websockets", limits.websockets),
                ("body-bytes", limits.body_bytes),
                ("cu-per-sec", limits.cu_per_sec),
                ("cu-burst", limits.cu_burst),
                ("call-timeout-ms", limits.call_timeout_ms),
                ("logs-blocks", limits.logs_blocks),
                ("subscriptions", limits.subscriptions),
            ] {
                map.insert(format!("{LIMITS}.{network}.{name}"), json!(value));
            }
            let policy = config.policy(network);
            map.insert(
                format!("{METHODS}.{network}.allow"),
                json!(policy.allowed()),
            );
        }
        map.insert(format!("{METHODS}.denied"), json!(crate::gateway::DENIED));
        let weights = config.weights();
        map.insert(format!("{UNITS}.default"), json!(weights.default));
        for (method, weight) in &weights.methods {
            map.insert(format!("{UNITS}.{method}"), json!(weight));
        }
    }
    json!({"constraints": "", "properties": properties})
}

/// The checks behind `ya-runtime-erigon test`. Each failure names its fix; warnings do
/// not fail the test.
pub async fn self_test(config: &Config) -> Result<Vec<String>, String> {
    if config.networks().all().any(|n| !n.is_shared()) {
        let version =
            crate::node::managed::check_binaries(config.erigon_path(), config.rpcdaemon_path())
                .await?;
        log::info!(
            "test: erigon {version} at {}",
            config.erigon_path().display()
        );
    }
    let mut warnings = crate::provider::nginx::check_site(config)?;
    for network in config.networks().all().filter(|n| n.is_shared()) {
        let rpc = crate::node::health::JsonRpc::new(config.upstream(network));
        let shown = rpc.url().to_owned();
        match crate::node::health::check_once(&rpc, network).await {
            Ok(Ok(chain_id)) => {
                log::info!("test: shared {network} node at {shown} answers chain {chain_id}")
            }
            Ok(Err(e)) => warnings.push(format!(
                "the shared {network} node does not answer at {shown}: {e}; starts on {network} fail until it does"
            )),
            Err(e) => {
                return Err(format!(
                    "the shared {network} node at {shown}: {e} (its address: `networks.{network}.node` or `erigon_http_addr` in {})",
                    config.file().display()
                ))
            }
        }
    }
    Ok(warnings)
}
