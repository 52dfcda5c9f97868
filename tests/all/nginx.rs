//! The endpoint as a requestor's user meets it: the real nginx with the shipped site
//! configuration in front of full sessions run through the runtime binary.

use harness::exeunit::creds;
use harness::http::{call, Reply};
use harness::nginx::{free_port, is_root, prepare_auth_dir, Nginx, Tls};
use harness::provider::{htpasswd_verifies, Provider};
use serde_json::{json, Value};

/// eth_chainId through nginx: what most of these tests ask.
async fn post(url: &str, auth: Option<(&str, &str)>) -> Reply {
    call(url, auth, "eth_chainId").await
}

/// A provider whose public address is this nginx, deployed, with nginx started.
fn provider_behind_nginx(overrides: Value) -> (Provider, Nginx) {
    let provider = Provider::behind_nginx(overrides);
    provider.deploy_ok();
    let nginx = provider.site().start();
    (provider, nginx)
}

#[tokio::test]
async fn credentials_open_only_their_own_node_and_stop_working_at_stop() {
    let (provider, nginx) = provider_behind_nginx(json!({"password_hash": "ssha"}));
    let (a, b) = tokio::join!(
        provider.start_on("a", "dev"),
        provider.start_on("b", "sepolia")
    );
    let (sa, sb) = (a.ready_status().await, b.ready_status().await);
    assert_eq!(
        sa["url"],
        nginx.url("/dev"),
        "STATUS's url is the route to its own node"
    );
    assert_eq!(sb["url"], nginx.url("/sepolia"));
    let (ua, pa) = creds(&sa);
    let (ub, pb) = creds(&sb);

    let ok = post(&nginx.url("/dev"), Some((&ua, &pa))).await;
    assert_eq!(
        (ok.status, ok.result()),
        (200, json!("0x539")),
        "{}",
        ok.body
    );
    let ok = post(&nginx.url("/sepolia/"), Some((&ub, &pb))).await;
    assert_eq!(
        (ok.status, ok.result()),
        (200, json!("0xaa36a7")),
        "{}",
        ok.body
    );
    for header in [
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "cache-control",
    ] {
        assert!(ok.headers.contains_key(header), "{header} on 200");
    }

    let none = post(&nginx.url("/dev"), None).await;
    assert_eq!(none.status, 401);
    assert!(none.headers.contains_key("www-authenticate"));
    assert!(
        none.headers.contains_key("x-content-type-options"),
        "headers on 401 too"
    );
    assert_eq!(
        post(&nginx.url("/dev"), Some((&ua, "wrong-password-000")))
            .await
            .status,
        401
    );
    assert_eq!(
        post(&nginx.url("/sepolia"), Some((&ua, &pa))).await.status,
        401,
        "A's credentials on B's node"
    );
    assert_eq!(
        post(&nginx.url("/dev"), Some((&ub, &pb))).await.status,
        401,
        "B's credentials on A's node"
    );
    assert_eq!(
        post(&nginx.url("/goerli"), Some((&ua, &pa))).await.status,
        404
    );
    assert_eq!(post(&nginx.url("/"), Some((&ua, &pa))).await.status, 404);

    a.shutdown().await;
    assert_eq!(
        post(&nginx.url("/dev"), Some((&ua, &pa))).await.status,
        401,
        "revoked at stop"
    );
    assert_eq!(
        post(&nginx.url("/sepolia"), Some((&ub, &pb))).await.status,
        200,
        "B unaffected"
    );
    b.shutdown().await;
    assert_eq!(
        post(&nginx.url("/sepolia"), Some((&ub, &pb))).await.status,
        401
    );
    assert!(!nginx.error_log().contains("crit"), "{}", nginx.error_log());
}

#[tokio::test]
async fn every_scheme_the_runtime_writes_verifies_with_nginx() {
    for scheme in ["ssha", "sha", "bcrypt"] {
        let (provider, nginx) =
            provider_behind_nginx(json!({"password_hash": scheme, "bcrypt_cost": 4}));
        let activity = provider.start_on("a", "dev").await;
        let (user, password) = creds(&activity.ready_status().await);
        let reply = post(&nginx.url("/dev"), Some((&user, &password))).await;
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.body);
        assert_eq!(
            post(&nginx.url("/dev"), Some((&user, "x"))).await.status,
            401,
            "{scheme}"
        );
        if scheme != "ssha" {
            // Apache's htpasswd verifies {SHA} and bcrypt; it has no {SSHA}.
            assert!(
                htpasswd_verifies(&provider.user_file(&user), &user, &password),
                "{scheme}"
            );
        }
        activity.shutdown().await;
    }
}

#[tokio::test]
async fn the_password_file_is_readable_by_nginx_and_nobody_else() {
    use std::os::unix::fs::MetadataExt;
    let (provider, nginx) = provider_behind_nginx(json!({}));
    let activity = provider.start_on("a", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    assert_eq!(
        post(&nginx.url("/dev"), Some((&user, &password)))
            .await
            .status,
        200
    );
    let meta = std::fs::metadata(provider.user_file(&user)).unwrap();
    assert_eq!(meta.mode() & 0o007, 0, "others have no access");
    assert_eq!(meta.mode() & 0o040, 0o040, "the group (nginx's) may read");
    if is_root() {
        let www = nix::unistd::Group::from_name("www-data").unwrap().unwrap();
        assert_eq!(
            meta.gid(),
            www.gid.as_raw(),
            "inherited from the setgid folder"
        );
    }
    activity.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrades_pass_through_with_credentials_only() {
    use base64::Engine;
    use tungstenite::client::IntoClientRequest;
    let (provider, nginx) = provider_behind_nginx(json!({}));
    let activity = provider.start_on("a", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    let ws_url = format!("ws://127.0.0.1:{}/dev", nginx.port);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let exchange = tokio::task::spawn_blocking(move || {
        let mut request = ws_url.clone().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Authorization", format!("Basic {basic}").parse().unwrap());
        let (mut socket, response) = tungstenite::connect(request).expect("upgrade through nginx");
        assert_eq!(response.status().as_u16(), 101);
        let call = json!({"jsonrpc": "2.0", "id": 3, "method": "eth_chainId", "params": []});
        socket
            .send(tungstenite::Message::text(call.to_string()))
            .unwrap();
        let reply = socket.read().unwrap();
        let _ = socket.close(None);
        let refused = tungstenite::connect(ws_url.into_client_request().unwrap());
        (
            reply.into_text().unwrap().to_string(),
            refused.err().map(|e| e.to_string()),
        )
    })
    .await
    .unwrap();
    let reply: Value = serde_json::from_str(&exchange.0).unwrap();
    assert_eq!(reply["result"], "0x539");
    assert!(
        exchange.1.unwrap_or_default().contains("401"),
        "no credentials, no upgrade"
    );
    activity.shutdown().await;
}

#[tokio::test]
async fn the_tls_variant_serves_the_same_routes() {
    let provider = Provider::new(json!({}));
    prepare_auth_dir(provider.root.path());
    provider.deploy_ok();
    let tls = Tls::self_signed(provider.root.path());
    let nginx = provider.nginx(free_port()).tls(&tls).start();
    let activity = provider.start_on("a", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    let curl = |auth: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--http2",
            ])
            .args(["-u", auth, "-H", "Content-Type: application/json"])
            .args([
                "-d",
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#,
            ])
            .arg(format!("https://127.0.0.1:{}/dev", nginx.port))
            .output()
            .unwrap_or_else(|e| {
                panic!("curl is needed ({e}); install it: apt-get install -y curl")
            });
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(curl(&format!("{user}:{password}")), "200 2");
    assert_eq!(curl(&format!("{user}:wrong")), "401 2");
    activity.shutdown().await;
    assert_eq!(curl(&format!("{user}:{password}")), "401 2");
}

#[tokio::test]
async fn a_real_json_rpc_client_library_calls_through_nginx() {
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools");
    assert!(
        tools.join("node_modules/ethers").is_dir(),
        "ethers is not installed: run `npm ci --prefix tests/tools` (.ci/test does)"
    );
    let (provider, _nginx) = provider_behind_nginx(json!({}));
    let activity = provider.start_on("a", "dev").await;
    let status = activity.ready_status().await;
    let url = status["url"].as_str().unwrap().to_string();
    let (user, password) = creds(&status);
    let ethers = |password: &str| {
        std::process::Command::new("node")
            .arg(tools.join("ethers-call.mjs"))
            .args([&url, &user, password, "1337"])
            .output()
            .unwrap_or_else(|e| {
                panic!("node is needed ({e}); install it: apt-get install -y nodejs npm")
            })
    };
    let ok = ethers(&password);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let reply: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(reply, json!({"chainId": "0x539", "blockNumber": 16}));
    let refused = ethers("wrong-password-000");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401 Unauthorized"),
        "{refused:?}"
    );
    activity.shutdown().await;
}

#[tokio::test]
async fn each_activity_is_billed_for_the_calls_it_was_answered_and_nothing_else() {
    const N: usize = 25;
    const BATCH: usize = 10;
    let counter = ya_runtime_erigon::provider::billing::COUNTER;
    let (provider, nginx) = provider_behind_nginx(json!({}));
    let (a, b) = tokio::join!(
        provider.start_on("a", "dev"),
        provider.start_on("b", "sepolia")
    );
    let (ua, pa) = creds(&a.ready_status().await);
    let (ub, pb) = creds(&b.ready_status().await);
    // Not A's to pay: wrong passwords, no credentials, A's name on B's network, and
    // B's own requests.
    for _ in 0..5 {
        assert_eq!(
            post(&nginx.url("/dev"), Some((&ua, "wrong-password-000")))
                .await
                .status,
            401
        );
        assert_eq!(post(&nginx.url("/dev"), None).await.status, 401);
        assert_eq!(
            post(&nginx.url("/sepolia"), Some((&ua, &pa))).await.status,
            401
        );
        assert_eq!(
            post(&nginx.url("/sepolia"), Some((&ub, &pb))).await.status,
            200
        );
    }
    for _ in 0..N {
        assert_eq!(post(&nginx.url("/dev"), Some((&ua, &pa))).await.status, 200);
    }
    // A batch bills each of its calls.
    let batch: Vec<_> = (0..BATCH)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []}))
        .collect();
    let answers: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(nginx.url("/dev"))
        .basic_auth(&ua, Some(&pa))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answers.as_array().map(Vec::len), Some(BATCH), "{answers}");
    // The final count is reported before the Shutdown answer.
    assert_eq!(
        a.shutdown_billed(counter).await,
        (N + BATCH) as f64,
        "A billed exactly its {N} calls and its batch of {BATCH}"
    );
    assert_eq!(b.shutdown_billed(counter).await, 5.0, "B billed its own 5");
}
