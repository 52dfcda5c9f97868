//! The whole lifecycle through the built binary, driven as the ExeUnit drives it.

use std::time::Duration;

use harness::exeunit::creds;
use harness::http::call;
use harness::process::{alive, gone_within, reaped_within, send};
use harness::provider::{htpasswd_verifies, Provider};
use serde_json::{json, Value};

fn args_of(record: &Value) -> Vec<String> {
    record["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_full_session_issues_working_credentials_and_leaves_nothing() {
    // Trace level everywhere: the password must not reach the log even so.
    let provider = Provider::builder().rust_log("trace").build();
    let work = provider.workdir("activity-1");

    let deploy = provider.deploy(&work);
    assert!(deploy.status.success(), "{deploy:?}");
    let out: Value = serde_json::from_slice(&deploy.stdout).expect("deploy prints JSON");
    assert_eq!(out["startMode"], "blocking");
    for net in ["mainnet", "sepolia", "hoodi", "gnosis", "chiado", "dev"] {
        assert!(
            provider.datadir(net).is_dir(),
            "deploy creates {net}'s datadir"
        );
    }

    let activity = provider.start(&work, &[r#"{"network": "dev"}"#]).await;
    assert_eq!(activity.hello, Ok(env!("CARGO_PKG_VERSION").to_string()));
    let (status, code) = activity.status().await;
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["state"], "ready");
    assert_eq!(status["network"], "dev");
    assert_eq!(status["url"], "https://rpc.example.test:8545/dev");
    assert_eq!(status["chain_id"], "0x539");
    // Live facts from the node, read for this STATUS.
    assert_eq!(status["node"]["chain_id"], "0x539");
    assert_eq!(status["node"]["sync"]["syncing"], false);
    assert_eq!(status["node"]["head"]["number"], 16);
    assert_eq!(status["node"]["peers"], 5);
    assert!(status["node"]["client_version"]
        .as_str()
        .unwrap()
        .starts_with("erigon/"));
    let age = status["node"]["head"]["age_secs"].as_i64().unwrap();
    assert!(
        (11..=30).contains(&age),
        "the stand-in's head is 12 s old: {age}"
    );
    assert!(status["uptime_secs"].as_u64().is_some());
    let (user, password) = creds(&status);
    // The first activity sits on the first seat: `dev-0-<16 random>`.
    let random = user.strip_prefix("dev-0-").unwrap_or_default();
    assert!(
        random.len() == 16
            && random
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{user}"
    );
    assert_eq!(password.len(), 20);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));

    // The entry nginx will check: right password verifies with Apache's tool, wrong does not.
    let file = provider.user_file(&user);
    assert!(htpasswd_verifies(&file, &user, &password));
    assert!(!htpasswd_verifies(&file, &user, "wrong-password-123"));
    assert!(!htpasswd_verifies(&file, "dev-someoneelse", &password));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o640);

    // The children got exactly the flags the real binaries need, and a bare environment.
    let p = provider.port_base + 5 * 20;
    let datadir = provider.datadir("dev").display().to_string();
    let erigon = provider.standin("dev", "erigon").expect("erigon ran");
    assert_eq!(
        args_of(&erigon),
        vec![
            "--chain=dev".to_string(),
            format!("--datadir={datadir}"),
            "--http=false".into(),
            format!("--port={p}"),
            format!(
                "--p2p.allowed-ports={},{},{},{},{}",
                p,
                p + 1,
                p + 2,
                p + 3,
                p + 4
            ),
            format!("--torrent.port={}", p + 5),
            format!("--authrpc.port={}", p + 6),
            format!("--private.api.addr=127.0.0.1:{}", p + 7),
            format!("--caplin.discovery.port={}", p + 8),
            format!("--caplin.discovery.tcpport={}", p + 9),
            format!("--sentinel.port={}", p + 10),
        ]
    );
    let http = provider.http_port + 5;
    let rpcdaemon = provider.standin("dev", "rpcdaemon").expect("rpcdaemon ran");
    assert_eq!(
        args_of(&rpcdaemon),
        vec![
            format!("--datadir={datadir}"),
            format!("--private.api.addr=127.0.0.1:{}", p + 7),
            "--http.addr=127.0.0.1".into(),
            format!("--http.port={http}"),
            "--http.api=eth,erigon,web3,net,debug,trace,txpool".into(),
            "--http.vhosts=localhost".into(),
            "--ws=true".into(),
            format!("--ws.port={http}"),
            // What one call may make the node do (configuration defaults).
            "--rpc.evmtimeout=25000ms".into(),
            "--rpc.gascap=50000000".into(),
            "--rpc.returndata.limit=100000".into(),
            "--rpc.batch.concurrency=2".into(),
        ]
    );
    let env: Vec<&String> = erigon["env"].as_object().unwrap().keys().collect();
    assert_eq!(env, ["HOME", "PATH"], "children get only what they need");

    // The node answers JSON-RPC on its port.
    let reply = call(&format!("http://127.0.0.1:{http}/"), None, "eth_chainId").await;
    assert_eq!(reply.result(), "0x539");

    // Children's output is in the network's logs, the runtime's in the work folder.
    let erigon_log =
        std::fs::read_to_string(provider.data_dir.join("logs/dev/erigon.log")).unwrap();
    assert!(erigon_log.contains("stand-in erigon: chain=dev"));
    assert!(erigon_log.contains("this line goes to stderr"));
    for log in [
        work.join("ya-runtime-erigon.log"),
        provider.data_dir.join("logs/dev/erigon.log"),
    ] {
        let mode = std::fs::metadata(&log).unwrap().mode() & 0o777;
        assert_eq!(
            mode & 0o007,
            0,
            "{} is mode {mode:o}: others must not read logs",
            log.display()
        );
    }
    let runtime_log = std::fs::read_to_string(work.join("ya-runtime-erigon.log")).unwrap();
    assert!(runtime_log.contains("dev node ready"), "{runtime_log}");

    let erigon_pid = provider.standin_pid("dev", "erigon").unwrap();
    let rpcdaemon_pid = provider.standin_pid("dev", "rpcdaemon").unwrap();
    assert!(
        alive(erigon_pid) && alive(rpcdaemon_pid),
        "both children run while the activity is up"
    );
    assert_eq!(provider.entries("dev").len(), 1, "one entry while up");
    let start_time = activity.start_time;
    let stop_time = activity.shutdown().await;
    eprintln!("timing: start {start_time:?}, stop {stop_time:?}");
    assert!(
        stop_time < Duration::from_secs(4),
        "stop took {stop_time:?}"
    );

    assert!(
        !alive(erigon_pid) && !alive(rpcdaemon_pid),
        "no process left"
    );
    assert!(provider.entries("dev").is_empty(), "no entry left");
    assert!(!htpasswd_verifies(&file, &user, &password));
    let erigon_log =
        std::fs::read_to_string(provider.data_dir.join("logs/dev/erigon.log")).unwrap();
    assert!(erigon_log.contains("Got interrupt"), "stopped with SIGINT");
    assert!(
        erigon_log.contains("erigon (pid"),
        "exit recorded: {erigon_log}"
    );

    let everything = provider.all_files_text();
    assert!(
        everything.contains("RUN STATUS"),
        "the trace log was written"
    );
    assert!(
        !everything.contains(&password),
        "the password reached a file"
    );
}

#[tokio::test]
async fn the_handbook_config_works_with_two_networks_and_keeps_the_operators_file() {
    let provider = Provider::builder().without_config().build();
    let shared_file = provider.root.path().join("nginx/erigon_htpasswd");
    std::fs::create_dir_all(shared_file.parent().unwrap()).unwrap();
    std::fs::write(
        &shared_file,
        "# operator's comment\r\nalice:{PLAIN}secret\r\n",
    )
    .unwrap();
    provider.write_config(&format!(
        r#"{{
  "public_addr": "https://0.erigon.golem.network:8545",
  "data_dir": "{}",
  "passwd_tool_path": "htpasswd",
  "passwd_file_path": "{}",
  "password_default_length": 15,
  "erigon_http_addr": "127.0.0.1",
  "erigon_http_port": "{}",
  "port_base": {},
  "password_hash": "bcrypt",
  "bcrypt_cost": 4
}}"#,
        provider.data_dir.display(),
        shared_file.display(),
        provider.http_port,
        provider.port_base
    ));
    let (w1, w2) = (provider.workdir("a1"), provider.workdir("a2"));
    assert!(provider.deploy(&w1).status.success());
    let (dev, sepolia) = tokio::join!(
        provider.start(&w1, &[r#"{"network": "dev"}"#]),
        provider.start(&w2, &[r#"{"network": "sepolia"}"#]),
    );
    let ((s1, _), (s2, _)) = tokio::join!(dev.status(), sepolia.status());
    assert_eq!(
        (s1["state"].as_str(), s2["state"].as_str()),
        (Some("ready"), Some("ready"))
    );
    assert_eq!(s2["chain_id"], "0xaa36a7");
    assert_eq!(s2["url"], "https://0.erigon.golem.network:8545/sepolia");
    assert_eq!(s1["auth"]["password"].as_str().unwrap().len(), 15);
    // Its `passwd_file_path` names the folder of the activities' own files.
    let own_file = |s: &Value| {
        let user = s["auth"]["user"].as_str().unwrap();
        shared_file.with_file_name(format!("{user}.htpasswd"))
    };
    for s in [&s1, &s2] {
        let (user, pw) = (
            s["auth"]["user"].as_str().unwrap(),
            s["auth"]["password"].as_str().unwrap(),
        );
        assert!(htpasswd_verifies(&own_file(s), user, pw));
    }
    assert!(std::fs::read_to_string(w1.join("ya-runtime-erigon.log"))
        .unwrap()
        .contains("`passwd_tool_path` is retired and ignored"));
    dev.shutdown().await;
    assert!(!own_file(&s1).exists(), "revoked");
    assert!(own_file(&s2).exists(), "the other activity's entry stays");
    sepolia.shutdown().await;
    assert!(!own_file(&s2).exists());
    assert_eq!(
        std::fs::read_to_string(&shared_file).unwrap(),
        "# operator's comment\r\nalice:{PLAIN}secret\r\n",
        "the operator's old file is never touched"
    );
}

#[tokio::test]
async fn a_second_activity_on_a_busy_network_is_refused_at_once() {
    let provider = Provider::new(json!({}));
    let first = provider.start_on("first", "dev").await;
    let ready = first.ready_status().await;
    assert!(
        ready["auth"]["user"].is_string() && ready["url"].is_string(),
        "a ready activity's STATUS has auth and url: {ready}"
    );
    let erigon_pid = provider.standin_pid("dev", "erigon").unwrap();
    let second = provider.start_on("second", "dev").await;
    assert!(
        second.start_time < Duration::from_secs(5),
        "refused without waiting"
    );
    let (status, code) = second.status().await;
    assert_ne!(code, 0);
    assert_eq!(status["state"], "failed");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("network dev is busy: activity first"),
        "{reason}"
    );
    assert_eq!(status["auth"], Value::Null);
    assert_eq!(status["url"], Value::Null);
    assert_eq!(
        provider.standin_pid("dev", "erigon"),
        Some(erigon_pid),
        "no second node"
    );
    assert_eq!(provider.entries("dev").len(), 1);
    second.shutdown().await;
    first.ready_status().await; // the first is untouched
    first.shutdown().await;
}

#[tokio::test]
async fn every_start_failure_is_reported_and_leaves_no_process_and_no_credential() {
    struct Case {
        name: &'static str,
        config: Value,
        behaviour: Value,
        args: &'static [&'static str],
        reason: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "erigon exits during start",
            config: json!({}),
            behaviour: json!({"erigon": {"exit_at_start": 3}}),
            args: &[r#"{"network": "dev"}"#],
            reason: &["erigon (pid", "exited with status 3", "logs/dev/erigon.log"],
        },
        Case {
            name: "rpcdaemon exits during start",
            config: json!({}),
            behaviour: json!({"rpcdaemon": {"exit_at_start": 4}}),
            args: &[r#"{"network": "dev"}"#],
            reason: &[
                "rpcdaemon (pid",
                "exited with status 4",
                "logs/dev/rpcdaemon.log",
            ],
        },
        Case {
            name: "rpcdaemon never answers",
            config: json!({"ready_timeout_secs": 2}),
            behaviour: json!({"rpcdaemon": {"never_ready": true}}),
            args: &[r#"{"network": "dev"}"#],
            reason: &[
                "rpcdaemon did not answer JSON-RPC",
                "before the ready timeout",
            ],
        },
        Case {
            name: "erigon binary missing",
            config: json!({"erigon_path": "/nonexistent/erigon"}),
            behaviour: json!({}),
            args: &[r#"{"network": "dev"}"#],
            reason: &["/nonexistent/erigon not found", "set `erigon_path`"],
        },
        Case {
            name: "retired network",
            config: json!({}),
            behaviour: json!({}),
            args: &[r#"{"network": "goerli"}"#],
            reason: &[
                "\"goerli\" is retired",
                "accepted: chiado, dev, gnosis, hoodi, mainnet, sepolia",
            ],
        },
        Case {
            name: "malformed JSON",
            config: json!({}),
            behaviour: json!({}),
            args: &["{network: dev"],
            reason: &["is not valid JSON", r#"{"network": "sepolia"}"#],
        },
        Case {
            name: "two arguments",
            config: json!({}),
            behaviour: json!({}),
            args: &["{}", "{}"],
            reason: &["start got 2 arguments"],
        },
        Case {
            name: "unknown key",
            config: json!({}),
            behaviour: json!({}),
            args: &[r#"{"network": "dev", "archive": true}"#],
            reason: &["unknown key \"archive\""],
        },
    ];
    // The control: a healthy start has credentials, running children and an entry.
    let provider = Provider::new(json!({}));
    let healthy = provider.start_on("healthy", "dev").await;
    assert!(healthy.ready_status().await["auth"]["user"].is_string());
    for name in ["erigon", "rpcdaemon"] {
        let pid = provider.standin_pid("dev", name).unwrap();
        assert!(alive(pid), "healthy: {name} (pid {pid}) runs");
    }
    assert_eq!(provider.entries("dev").len(), 1, "healthy: one credential");
    healthy.shutdown().await;
    for case in cases {
        let provider = Provider::new(case.config);
        provider.set_behaviour("dev", case.behaviour);
        let work = provider.workdir("failing");
        let activity = provider.start(&work, case.args).await;
        assert!(
            activity.hello.is_ok(),
            "{}: the runtime keeps answering",
            case.name
        );
        let (status, code) = activity.status().await;
        assert_ne!(code, 0, "{}", case.name);
        assert_eq!(status["state"], "failed", "{}: {status}", case.name);
        let reason = status["reason"].as_str().unwrap_or_default();
        for part in case.reason {
            assert!(
                reason.contains(part),
                "{}: {reason:?} lacks {part:?}",
                case.name
            );
        }
        assert_eq!(status["auth"], Value::Null, "{}", case.name);
        for name in ["erigon", "rpcdaemon"] {
            if let Some(pid) = provider.standin_pid("dev", name) {
                assert!(
                    !alive(pid),
                    "{}: {name} (pid {pid}) left running",
                    case.name
                );
            }
        }
        assert!(
            provider.entries("dev").is_empty(),
            "{}: credential left",
            case.name
        );
        let log = std::fs::read_to_string(work.join("ya-runtime-erigon.log")).unwrap();
        assert!(
            log.contains("start failed"),
            "{}: reason in the runtime log",
            case.name
        );
        assert!(activity.shutdown().await < Duration::from_secs(1));
    }
}

#[tokio::test]
async fn a_child_dying_after_start_fails_the_activity_and_revokes_its_password() {
    let provider = Provider::new(json!({}));
    let activity = provider.start_on("a", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    assert!(
        htpasswd_verifies(&provider.user_file(&user), &user, &password),
        "verifies while the activity is up"
    );
    let rpcdaemon = provider.standin_pid("dev", "rpcdaemon").unwrap();
    send(rpcdaemon, nix::sys::signal::Signal::SIGKILL);
    // The runtime publishes the exit as it reaps; STATUS is read live, so once the pid
    // is reaped the next STATUS says failed.
    assert!(reaped_within(rpcdaemon, Duration::from_secs(5)).await);
    let (status, code) = activity.status().await;
    assert_ne!(code, 0);
    assert_eq!(status["state"], "failed");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("rpcdaemon (pid") && reason.contains("killed by signal 9 (SIGKILL)"),
        "{reason}"
    );
    assert_eq!(status["auth"], Value::Null);
    // Revocation is the watcher's job; it has run by the time STATUS answered twice.
    activity.status().await;
    assert!(!htpasswd_verifies(
        &provider.user_file(&user),
        &user,
        &password
    ));
    let erigon = provider.standin_pid("dev", "erigon").unwrap();
    assert!(alive(erigon), "erigon survives its rpcdaemon until stop");
    activity.shutdown().await;
    assert!(!alive(erigon), "stop still stops the surviving child");
}

#[tokio::test]
async fn children_do_not_outlive_a_killed_runtime() {
    let provider = Provider::new(json!({}));
    let activity = provider.start_on("a", "dev").await;
    activity.ready_status().await;
    let pids = [
        provider.standin_pid("dev", "erigon").unwrap(),
        provider.standin_pid("dev", "rpcdaemon").unwrap(),
    ];
    assert!(pids.iter().all(|pid| alive(*pid)), "{pids:?} run");
    activity.kill().await;
    for pid in pids {
        assert!(
            gone_within(pid, Duration::from_secs(5)).await,
            "pid {pid} outlived the runtime"
        );
    }
    let log = std::fs::read_to_string(provider.data_dir.join("logs/dev/erigon.log")).unwrap();
    assert!(log.contains("stand-in erigon"), "{log}");
}

#[tokio::test]
async fn a_slow_clean_stop_is_not_killed_and_the_next_start_waits_for_it() {
    let provider = Provider::new(json!({"ready_timeout_secs": 2, "stop_timeout_ms": 500}));
    provider.set_behaviour("dev", json!({"erigon": {"stop_delay_ms": 60000}}));
    let activity = provider.start_on("slow", "dev").await;
    let status = activity.ready_status().await;
    let user = status["auth"]["user"].as_str().unwrap().to_string();
    assert!(
        provider.entries("dev").iter().any(|l| l.starts_with(&user)),
        "the entry is there while up"
    );
    let erigon = provider.standin_pid("dev", "erigon").unwrap();
    let took = activity.shutdown().await;
    assert!(
        took < Duration::from_secs(2),
        "Shutdown answered in {took:?}"
    );
    assert!(
        provider
            .entries("dev")
            .iter()
            .all(|l| !l.starts_with(&user)),
        "revoked at once"
    );
    assert!(
        alive(erigon),
        "a node finishing its clean stop is not SIGKILLed"
    );
    let log =
        std::fs::read_to_string(provider.workdir("slow").join("ya-runtime-erigon.log")).unwrap();
    assert!(
        log.contains("still finishing its clean stop"),
        "stop reports what it left"
    );

    provider.set_behaviour("dev", json!({}));
    let next = provider.start_on("next", "dev").await;
    assert!(
        next.start_time >= Duration::from_secs(2),
        "waited for the lock: {:?}",
        next.status().await
    );
    let (status, _) = next.status().await;
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("network dev: the node of activity slow is still stopping"),
        "{reason}"
    );
    next.shutdown().await;

    send(erigon, nix::sys::signal::Signal::SIGKILL);
    assert!(gone_within(erigon, Duration::from_secs(5)).await);
    let again = provider.start_on("again", "dev").await;
    again.ready_status().await; // the lock went with the last holder
    again.shutdown().await;
}

#[tokio::test]
async fn sigterm_to_the_runtime_stops_the_node_and_revokes() {
    let provider = Provider::new(json!({}));
    let activity = provider.start_on("a", "dev").await;
    assert_eq!(provider.entries("dev").len(), 1);
    let erigon = provider.standin_pid("dev", "erigon").unwrap();
    assert!(alive(activity.pid()) && alive(erigon));
    send(activity.pid(), nix::sys::signal::Signal::SIGTERM);
    assert!(gone_within(activity.pid(), Duration::from_secs(5)).await);
    assert!(!alive(erigon));
    assert!(provider.entries("dev").is_empty());
}

#[tokio::test]
async fn the_next_start_sweeps_a_killed_runtimes_credentials_and_keeps_live_ones() {
    let provider = Provider::new(json!({}));
    let (killed, live) = tokio::join!(
        provider.start_on("killed", "dev"),
        provider.start_on("live", "sepolia")
    );
    let killed_user = killed.ready_status().await["auth"]["user"]
        .as_str()
        .unwrap()
        .to_string();
    let live_user = live.ready_status().await["auth"]["user"]
        .as_str()
        .unwrap()
        .to_string();
    let erigon = provider.standin_pid("dev", "erigon").unwrap();
    assert!(alive(erigon));
    killed.kill().await;
    assert!(gone_within(erigon, Duration::from_secs(5)).await);
    assert_eq!(
        provider.entries("dev").len(),
        1,
        "SIGKILL leaves the entry: nobody could revoke it"
    );

    let next = provider.start_on("next", "hoodi").await;
    next.ready_status().await;
    // The sweep runs beside the start, which does not wait for it: its log line is
    // the event.
    assert!(
        next.log_shows_within("swept 1 credential(s)", Duration::from_secs(10))
            .await,
        "the next start sweeps"
    );
    assert!(
        provider.entries("dev").is_empty(),
        "{killed_user} swept by the next start"
    );
    assert!(
        !provider
            .auth_dir()
            .join(format!("{}.owner", killed_user))
            .exists(),
        "with its owner record"
    );
    assert!(
        provider
            .entries("sepolia")
            .iter()
            .any(|l| l.starts_with(&format!("{live_user}:"))),
        "a live activity's entry is kept"
    );
    let log = std::fs::read_to_string(next.workdir.join("ya-runtime-erigon.log")).unwrap();
    assert!(
        log.contains("swept 1 credential(s)") && log.contains(&killed_user),
        "{log}"
    );
    live.shutdown().await;
    next.shutdown().await;
}

#[tokio::test]
async fn status_follows_the_node_from_syncing_to_ready() {
    let provider = Provider::new(json!({}));
    let syncing = provider.datadir("dev").join("standin-syncing");
    std::fs::create_dir_all(provider.datadir("dev")).unwrap();
    std::fs::write(
        &syncing,
        r#"{"current": 100, "highest": 200, "stage": "Execution"}"#,
    )
    .unwrap();
    let activity = provider.start_on("a", "dev").await;
    let (status, code) = activity.status().await;
    assert_eq!(
        (status["state"].as_str(), code),
        (Some("syncing"), 0),
        "{status}"
    );
    let sync = &status["node"]["sync"];
    assert_eq!(
        (sync["syncing"].as_bool(), sync["current_block"].as_u64()),
        (Some(true), Some(100))
    );
    assert_eq!(
        (sync["highest_block"].as_u64(), sync["stage"].as_str()),
        (Some(200), Some("Execution"))
    );
    assert!(
        status["auth"]["user"].is_string(),
        "a syncing node is usable"
    );
    // The sync finishes when the marker goes; the next STATUS reads the node afresh.
    std::fs::remove_file(&syncing).unwrap();
    activity.ready_status().await;
    activity.shutdown().await;
}

#[tokio::test]
async fn a_node_answering_for_another_chain_fails_the_activity() {
    let provider = Provider::new(json!({}));
    provider.set_behaviour("dev", json!({"rpcdaemon": {"chain_id": 1}}));
    let refused = provider.start_on("wrong-at-start", "dev").await;
    let (status, _) = refused.status().await;
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("answers eth_chainId 0x1, but network dev is chain 1337"),
        "{reason}"
    );
    assert!(provider.entries("dev").is_empty());
    refused.shutdown().await;

    provider.set_behaviour("dev", json!({}));
    let activity = provider.start_on("wrong-later", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    assert_eq!(
        provider.entries("dev").len(),
        1,
        "an activity on the right chain has an entry"
    );
    assert!(
        htpasswd_verifies(&provider.user_file(&user), &user, &password),
        "verifies while the node serves the right chain"
    );
    std::fs::write(provider.datadir("dev").join("standin-chain-id"), "1").unwrap();
    let (status, code) = activity.status().await;
    assert_eq!(
        (status["state"].as_str(), code != 0),
        (Some("failed"), true),
        "{status}"
    );
    assert!(status["reason"]
        .as_str()
        .unwrap()
        .contains("serves the wrong chain"));
    assert!(
        !htpasswd_verifies(&provider.user_file(&user), &user, &password),
        "revoked"
    );
    activity.shutdown().await;
}
