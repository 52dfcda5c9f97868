//! Shared nodes anywhere: each shared network's node at its own URL, over TLS or not,
//! behind a real TLS-terminating nginx (`harness::nodefront`) in front of anvil, with
//! certificates openssl makes for the test. The runtime binary is driven as the
//! ExeUnit drives it, and requestors call through the shipped nginx site.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use harness::anvil::Anvil;
use harness::exeunit::creds;
use harness::nginx::free_port;
use harness::nodefront::{NodeFront, Pki};
use harness::process::eventually;
use harness::provider::Provider;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const COUNTER: &str = ya_runtime_erigon::provider::billing::COUNTER;

/// A provider whose networks are `networks`, behind the shipped site on a free port.
fn provider(networks: Value, default: &str) -> (Provider, harness::nginx::Nginx) {
    let provider = Provider::behind_nginx(json!({
        "ready_timeout_secs": 3,
        "networks": networks,
        "default_network": default,
    }));
    provider.deploy_ok();
    let nginx = provider.site().start();
    (provider, nginx)
}

/// The runtime with `args` (`test`, `offer-template` as ya-provider runs them, or an
/// operator's `calibrate`), with a site file that
/// includes the routes and the shipped locations, so that `test` checks the nodes.
fn run(provider: &Provider, args: &[&str]) -> std::process::Output {
    let site = provider.root.path().join("site.conf");
    let locations = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf/nginx/ya-runtime-erigon-locations.conf");
    let routes = provider.data_dir.join("nginx/routes.conf");
    let text = format!(
        "include {};\ninclude {};\n",
        routes.display(),
        locations.display()
    );
    std::fs::write(&site, text).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&provider.config_path).unwrap()).unwrap();
    config["nginx_site_path"] = json!(site);
    provider.write_config(&config.to_string());
    std::process::Command::new(&provider.runtime)
        .current_dir("/")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", provider.root.path())
        .env("XDG_DATA_HOME", provider.root.path().join("xdg"))
        .env("RUST_LOG", "info")
        .args(args)
        .output()
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One call through the site with the activity's credentials; the JSON answer.
async fn call(client: &reqwest::Client, url: &str, auth: &(String, String), method: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": []});
    let answer = client
        .post(url)
        .basic_auth(&auth.0, Some(&auth.1))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} to {url}: {e}"));
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert_eq!(status, 200, "{method}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method}: {e}: {text}"))
}

#[tokio::test]
async fn an_https_node_on_a_path_serves_calls_websockets_and_status_over_kept_connections() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let anvil = Anvil::builder().chain_id(1337).block_time(1).start().await;
    let front = NodeFront::tls(
        &dir.path().join("front"),
        anvil.addr,
        &pki.good,
        "/rpc/eth/",
    );
    let url = front.url("https");
    let (provider, nginx) = provider(
        json!({"dev": {"slot": 0, "mode": "shared",
                       "node": {"http": url, "ca_file": pki.ca_file()}}}),
        "dev",
    );

    // `test` reaches the node over TLS; the offer says nothing about where it is.
    let test = run(&provider, &["test"]);
    let stderr = String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("shared dev node at {url} answers chain 0x539")),
        "{stderr}"
    );
    let offer = run(&provider, &["offer-template"]);
    let offer = String::from_utf8_lossy(&offer.stdout);
    assert!(offer.contains("golem.runtime.erigon"), "{offer}");
    for secret in [&front.port().to_string(), "rpc/eth", "localhost", "ca.pem"] {
        assert!(!offer.contains(secret), "the offer shows {secret}: {offer}");
    }

    // `calibrate` times the node through the same URL, on one kept connection.
    let before = front.connections();
    let out = run(&provider, &["calibrate", "--rounds", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&url), "{stdout}");
    let calibrated = front.connections().difference(&before).count();
    assert!(
        calibrated <= 2,
        "calibrate took {calibrated} TLS connections"
    );

    let activity = provider.start_on("a", "dev").await;
    let status = activity.ready_status().await;
    eprintln!("STATUS {status}");
    assert_eq!(status["node"]["chain_id"], "0x539", "{status}");
    assert!(status["node"]["head"]["number"].is_u64(), "{status}");
    let auth = creds(&status);
    let site = nginx.url("/dev");
    let before = front.connections();

    let client = client();
    let calls = 40;
    for _ in 0..calls {
        let answer = call(&client, &site, &auth, "eth_chainId").await;
        assert_eq!(answer["result"], "0x539", "{answer}");
    }
    // Every request reached the node's path with its own Host, and the gateway kept
    // its TLS connection alive: one handshake per nginx connection, not per call.
    let posts = || {
        front
            .accesses()
            .into_iter()
            .filter(|a| a.method == "POST" && a.uri == "/rpc/eth/")
            .count()
    };
    eventually("the front logs every call", Duration::from_secs(10), || {
        posts() >= calls
    })
    .await;
    let accesses = front.accesses();
    let hosts: std::collections::BTreeSet<&str> =
        accesses.iter().map(|a| a.host.as_str()).collect();
    assert_eq!(
        hosts,
        [format!("localhost:{}", front.port()).as_str()].into(),
        "the Host header is the URL's"
    );
    // The runtime's node-state probes (five calls, each on a fresh connection, every
    // 15 s) may fall in this window: the gateway's connections are the kept ones, those
    // that carried more than one call.
    let mut per_connection = std::collections::BTreeMap::<u64, usize>::new();
    for access in accesses.iter().filter(|a| !before.contains(&a.connection)) {
        *per_connection.entry(access.connection).or_default() += 1;
    }
    let kept: Vec<(u64, usize)> = per_connection.into_iter().filter(|(_, n)| *n > 1).collect();
    let carried: usize = kept.iter().map(|(_, n)| n).sum();
    assert!(
        !kept.is_empty() && kept.len() <= 2 && carried >= calls,
        "{calls} calls over one client connection: the node's kept TLS connections (number, calls) were {kept:?}"
    );

    // WebSocket over wss://, derived from the https URL: a subscription delivers heads.
    let mut request = nginx
        .url("/dev")
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    let basic = base64_basic(&auth.0, &auth.1);
    request
        .headers_mut()
        .insert("Authorization", basic.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a WebSocket");
    let subscribe =
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let mut subscribed = false;
    let mut heads = 0;
    while heads < 1 {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the WebSocket is open")
            .unwrap();
        let value: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        if value["id"] == 1 {
            assert!(value["result"].is_string(), "{value}");
            subscribed = true;
        } else if value["method"] == "eth_subscription" {
            assert!(
                subscribed,
                "a notification before the subscription's answer"
            );
            heads += 1;
        }
    }
    drop(ws);
    eventually(
        "the front logs the upgrade",
        Duration::from_secs(10),
        || {
            front
                .accesses()
                .iter()
                .any(|a| a.status == 101 && a.uri == "/rpc/eth/")
        },
    )
    .await;

    eprintln!(
        "the node's front logged, last: {:?}",
        front.access_lines().last()
    );
    let billed = activity.shutdown_billed(COUNTER).await;
    eprintln!("billed {billed} calls");
    assert!(
        billed >= (calls + 1) as f64,
        "billed {billed} for {calls} calls and a subscription"
    );
    assert!(provider.entries("dev").is_empty(), "access revoked");
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A start against `node` fails with a reason naming the network, the URL and
/// `expected`, and leaves no credential and no gateway socket.
async fn refused(provider: &Provider, activity: &str, url: &str, expected: &[&str]) -> String {
    let start = provider.start_on(activity, "dev").await;
    let (status, code) = start.status().await;
    let reason = status["reason"].as_str().unwrap_or_default().to_owned();
    assert_ne!(code, 0, "{status}");
    assert!(reason.contains("shared dev node"), "{reason}");
    assert!(reason.contains(url), "{reason} does not name {url}");
    for part in expected {
        assert!(reason.contains(part), "{reason} lacks {part:?}");
    }
    assert!(
        provider.entries("dev").is_empty(),
        "a credential for a node never reached"
    );
    start.shutdown().await;
    reason
}

#[tokio::test]
async fn a_node_whose_tls_or_chain_is_wrong_is_refused_at_start_naming_the_url_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let anvil = Anvil::builder().chain_id(1337).start().await;
    let fronts = |name: &str, pair| NodeFront::tls(&dir.path().join(name), anvil.addr, pair, "/");
    let other_name = fronts("other-name", &pki.wrong_name);
    let expired = fronts("expired", &pki.expired);
    let unknown = fronts("unknown", &pki.unknown_ca);
    let plain = NodeFront::plain(&dir.path().join("plain"), anvil.addr, "/");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free_port();
    let cases: Vec<(String, bool, Vec<&str>)> = vec![
        // A certificate for other.invalid, reached as localhost.
        (
            other_name.url("https"),
            true,
            vec![
                "TLS handshake failed",
                "not valid for name \"localhost\"",
                "other.invalid",
            ],
        ),
        (
            expired.url("https"),
            true,
            vec!["TLS handshake failed", "expired"],
        ),
        (
            unknown.url("https"),
            true,
            vec![
                "UnknownIssuer",
                "neither in the system's trust store nor in `node.ca_file`",
            ],
        ),
        // https:// to a port that speaks plain HTTP.
        (
            plain.url("https"),
            true,
            vec!["TLS handshake failed", "does not speak TLS on this port"],
        ),
        (
            format!("http://127.0.0.1:{closed}/"),
            false,
            vec!["does not answer at", "cannot connect"],
        ),
        (
            format!("http://{}/", silent.local_addr().unwrap()),
            false,
            vec!["does not answer at", "no answer within"],
        ),
    ];
    for (i, (url, ca, expected)) in cases.into_iter().enumerate() {
        let node = if ca {
            json!({"http": url, "ca_file": pki.ca_file()})
        } else {
            json!({"http": url})
        };
        let provider = Provider::new(json!({
            "ready_timeout_secs": 3,
            "networks": {"dev": {"slot": 0, "mode": "shared", "node": node}},
            "default_network": "dev",
        }));
        provider.deploy_ok();
        let started = std::time::Instant::now();
        let reason = refused(&provider, &format!("r{i}"), &url, &expected).await;
        eprintln!("{url}: {reason}");
        if expected.contains(&"TLS handshake failed") || expected.contains(&"UnknownIssuer") {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "a refused TLS handshake fails at once, not at the timeout: {:?}",
                started.elapsed()
            );
        }
        // `test` fails on a TLS refusal and only warns of a node that does not answer.
        let test = run(&provider, &["test"]);
        let stderr = String::from_utf8_lossy(&test.stderr);
        assert!(stderr.contains(&url), "{stderr}");
        assert_eq!(test.status.success(), !ca, "{url}: {stderr}");
    }

    // The right certificate, and the wrong chain: sepolia's node answers 1337.
    let good = NodeFront::tls(&dir.path().join("good"), anvil.addr, &pki.good, "/");
    let url = good.url("https");
    let provider = Provider::new(json!({
        "networks": {"dev": {"slot": 0, "mode": "shared", "chain": "sepolia",
                             "node": {"http": url, "ca_file": pki.ca_file()}}},
        "default_network": "dev",
    }));
    provider.deploy_ok();
    refused(
        &provider,
        "chain",
        &url,
        &["eth_chainId 0x539", "serves the wrong chain"],
    )
    .await;
}

#[tokio::test]
async fn two_shared_networks_on_two_upstreams_each_reach_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let dev = Anvil::builder().chain_id(1337).start().await;
    let gnosis = Anvil::builder().chain_id(100).start().await;
    let plain = NodeFront::plain(&dir.path().join("a"), dev.addr, "/a/");
    let tls = NodeFront::tls(&dir.path().join("b"), gnosis.addr, &pki.good, "/b/");
    let (provider, nginx) = provider(
        json!({
            "dev": {"slot": 0, "mode": "shared", "node": {"http": plain.url("http")}},
            "gnosis": {"slot": 1, "mode": "shared",
                       "node": {"http": tls.url_at("https", "127.0.0.1"), "ca_file": pki.ca_file()}},
        }),
        "dev",
    );
    let (a, b) = tokio::join!(
        provider.start_on("a", "dev"),
        provider.start_on("b", "gnosis")
    );
    let client = client();
    for (activity, network, chain) in [(&a, "dev", "0x539"), (&b, "gnosis", "0x64")] {
        let status = activity.ready_status().await;
        assert_eq!(status["node"]["chain_id"], chain, "{status}");
        let answer = call(
            &client,
            &nginx.url(&format!("/{network}")),
            &creds(&status),
            "eth_chainId",
        )
        .await;
        assert_eq!(answer["result"], chain, "{network}: {answer}");
    }
    // A user of one network cannot reach the other's node.
    let a_auth = creds(&a.ready_status().await);
    let crossed = client
        .post(nginx.url("/gnosis"))
        .basic_auth(&a_auth.0, Some(&a_auth.1))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
        .send()
        .await
        .unwrap();
    assert!(crossed.status().is_client_error(), "{}", crossed.status());
    eventually(
        "each front saw its own network's calls",
        Duration::from_secs(10),
        || {
            plain.accesses().iter().any(|x| x.uri == "/a/")
                && tls
                    .accesses()
                    .iter()
                    .any(|x| x.uri == "/b/" && x.host == format!("127.0.0.1:{}", tls.port()))
        },
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_managed_network_refuses_a_node_url() {
    let provider = Provider::new(json!({
        "networks": {"sepolia": {"slot": 1, "node": {"http": "https://node.lan/"}}},
        "default_network": "sepolia",
    }));
    let out = run(&provider, &["test"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("key `networks.sepolia.node`: sepolia is a managed network")
            && stderr.contains("set \\\"mode\\\": \\\"shared\\\"")
                | stderr.contains("set \"mode\": \"shared\""),
        "{stderr}"
    );
}

/// A node whose TLS handshake never completes (a port that accepts and stays silent):
/// the gateway's calls are answered 502 once the call timeout passes, and billed
/// nothing, since the node never received them (a connect inside the call's timeout
/// would bill a timeout for work the node never did).
#[tokio::test]
async fn a_node_the_gateway_cannot_reach_costs_the_requestor_nothing() {
    use http_body_util::{BodyExt, Full};
    use ya_runtime_erigon::gateway::{
        Gateway, GatewaySpec, Limits, Policy, RawLimits, Weights, USER_HEADER,
    };
    use ya_runtime_erigon::node::upstream::{NodeKeys, Upstream};

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/", silent.local_addr().unwrap());
    let keys = NodeKeys {
        at: "networks.dev.node",
        http: Some(&url),
        ws: None,
        ca_file: Some(pki.ca_file()),
    };
    let upstream = Upstream::configured(keys, silent.local_addr().unwrap()).unwrap();
    let limits = Limits::new(
        &RawLimits {
            call_timeout_ms: 800,
            ..RawLimits::default()
        },
        "limits",
    )
    .unwrap();
    let user = "dev-0-unreachable0000000";
    let socket = dir.path().join("gw.sock");
    let gateway = Gateway::start(
        GatewaySpec::new(
            socket.clone(),
            user.into(),
            std::sync::Arc::new(upstream),
            limits,
            Weights::default(),
            Policy::default(),
        )
        .unwrap(),
        None,
    )
    .await
    .unwrap();
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    for round in 0..2 {
        let body = json!({"jsonrpc": "2.0", "id": round, "method": "eth_chainId", "params": []});
        let request = hyper::Request::post("/")
            .header("host", "gateway")
            .header(USER_HEADER, user)
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let asked = std::time::Instant::now();
        sender.ready().await.unwrap();
        let answer = sender.send_request(request).await.unwrap();
        let status = answer.status();
        let text = answer.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 502, "{text}");
        assert!(text.contains(&format!("\"id\":{round}")), "{text}");
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(700) && waited < Duration::from_secs(3),
            "answered after {waited:?}, the call timeout being 800 ms"
        );
    }
    let billed = gateway.close().await;
    assert_eq!(
        (billed.calls, billed.units),
        (0, 0),
        "nothing reached the node"
    );
}
