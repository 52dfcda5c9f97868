//! Shared-node mode: the operator runs one node per network and activities only get
//! access to it. Tested beside a managed network on the same provider.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::process::{alive, eventually_blocking, listens};
use harness::provider::{plugin_dir, Provider};
use serde_json::json;

/// The operator's own long-lived node: the stand-ins, started by hand on the ports the
/// network's slot gives (the nginx routes assume rpcdaemon there).
struct OperatorNode {
    children: Vec<Child>,
}

impl OperatorNode {
    fn start(provider: &Provider, slot: u16) -> Self {
        let datadir = provider.root.path().join("operator-node");
        std::fs::create_dir_all(&datadir).unwrap();
        let b = provider.port_base + slot * 20;
        let http = provider.http_port + slot;
        let dir = plugin_dir();
        let erigon = Command::new(dir.join("erigon"))
            .arg("--chain=dev")
            .arg(format!("--datadir={}", datadir.display()))
            .arg("--http=false")
            .arg(format!("--port={b}"))
            .arg(format!(
                "--p2p.allowed-ports={},{},{},{},{}",
                b,
                b + 1,
                b + 2,
                b + 3,
                b + 4
            ))
            .arg(format!("--torrent.port={}", b + 5))
            .arg(format!("--authrpc.port={}", b + 6))
            .arg(format!("--private.api.addr=127.0.0.1:{}", b + 7))
            .arg(format!("--caplin.discovery.port={}", b + 8))
            .arg(format!("--caplin.discovery.tcpport={}", b + 9))
            .arg(format!("--sentinel.port={}", b + 10))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut node = Self {
            children: vec![erigon],
        };
        wait_port(b + 7);
        let rpcdaemon = Command::new(dir.join("rpcdaemon"))
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--private.api.addr=127.0.0.1:{}", b + 7))
            .args([
                "--http.addr=127.0.0.1",
                "--http.api=eth,erigon,web3,net",
                "--http.vhosts=localhost",
                "--ws=true",
            ])
            .arg(format!("--http.port={http}"))
            .arg(format!("--ws.port={http}"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        node.children.push(rpcdaemon);
        wait_port(http);
        node
    }

    fn alive(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for OperatorNode {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The operator's node has no readiness signal we can await; look at its port, bounded.
fn wait_port(port: u16) {
    eventually_blocking(
        &format!("port {port} opens"),
        Duration::from_secs(10),
        || listens(port),
    );
}

#[tokio::test]
async fn many_activities_share_the_operators_node_beside_a_managed_network() {
    let provider = Provider::new(json!({
        "ready_timeout_secs": 2,
        "networks": {"dev": {"slot": 5, "mode": "shared"}, "sepolia": {"slot": 1}},
        "default_network": "sepolia",
    }));
    provider.deploy_ok();

    // No operator node yet: a shared start fails clearly, and quickly.
    let early = provider.start_on("early", "dev").await;
    let (status, _) = early.status().await;
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("the provider's shared dev node: does not answer"),
        "{reason}"
    );
    early.shutdown().await;

    let mut operator = OperatorNode::start(&provider, 5);
    let names: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
    let (shared, managed) = tokio::join!(
        futures::future::join_all(names.iter().map(|n| provider.start_on(n, "dev"))),
        provider.start_on("m", "sepolia"),
    );
    let mut users = std::collections::HashSet::new();
    for activity in &shared {
        assert!(
            activity.start_time < Duration::from_secs(1),
            "a shared start takes {:?}",
            activity.start_time
        );
        eprintln!("shared start took {:?}", activity.start_time);
        let status = activity.ready_status().await;
        assert_eq!(status["node"]["chain_id"], "0x539");
        users.insert(status["auth"]["user"].as_str().unwrap().to_string());
    }
    assert_eq!(users.len(), 5, "every activity has its own credentials");
    assert_eq!(provider.entries("dev").len(), 5);
    assert!(
        provider.standin("dev", "erigon").is_none(),
        "no node was started for dev"
    );
    managed.ready_status().await;
    let managed_erigon = provider.standin_pid("sepolia", "erigon").unwrap();
    assert!(alive(managed_erigon), "the managed node runs");

    for activity in shared {
        activity.shutdown().await;
    }
    managed.shutdown().await;
    assert!(provider.entries("dev").is_empty(), "access revoked");
    assert!(operator.alive(), "the operator's node is never stopped");
    assert!(!alive(managed_erigon), "the managed node is");
}
