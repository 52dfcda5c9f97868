//! `ya-runtime-erigon calibrate` as an operator runs it: the built binary, a sandboxed
//! provider whose shared network is served by anvil (a real Ethereum node, from npm),
//! and the runtime's own `offer-template` reading what it wrote.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

use harness::anvil::Anvil;
use harness::provider::Provider;
use serde_json::{json, Value};
use ya_runtime_erigon::config::units::Table;

const RUNTIME: &str = env!("CARGO_BIN_EXE_ya-runtime-erigon");

/// A provider whose default network `devnet` is shared, on slot 0: its node answers on
/// the provider's `erigon_http_port`.
fn provider() -> Provider {
    Provider::builder()
        .runtime(RUNTIME)
        .config(json!({
            "networks": {
                "devnet": {"slot": 0, "mode": "shared", "chain_id": 31337},
                "sepolia": {"slot": 1},
            },
            "default_network": "devnet",
        }))
        .build()
}

/// anvil on `provider`'s devnet port, with a block holding a transaction, so that
/// the transaction methods have parameters.
async fn node(provider: &Provider) -> Anvil {
    let anvil = Anvil::builder().port(provider.http_port).start().await;
    let accounts = rpc(&anvil, "eth_accounts", json!([])).await;
    let transfer = json!([{"from": accounts[0], "to": accounts[1], "value": "0x1"}]);
    rpc(&anvil, "eth_sendTransaction", transfer).await;
    anvil
}

/// The runtime in the provider's HOME, as the operator runs it from a shell.
fn run(provider: &Provider, args: &[&str]) -> Output {
    std::process::Command::new(&provider.runtime)
        .current_dir(provider.root.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", provider.root.path())
        .env("XDG_DATA_HOME", provider.root.path().join("xdg"))
        .args(args)
        .output()
        .expect("the runtime runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn table_file(provider: &Provider) -> PathBuf {
    provider.config_path.with_file_name("compute-units.json")
}

async fn rpc(anvil: &Anvil, method: &str, params: Value) -> Value {
    let reply: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(anvil.url())
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} to anvil: {e}"))
        .json()
        .await
        .unwrap();
    assert!(reply.get("error").is_none(), "{method}: {reply}");
    reply["result"].clone()
}

/// The printed table's rows: method → [median µs, baseline µs, before, measured…].
fn rows(stdout: &str) -> BTreeMap<String, Vec<String>> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("method "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let mut words = l.split_whitespace().map(String::from);
            (words.next().unwrap(), words.collect())
        })
        .collect()
}

#[tokio::test]
async fn measures_the_node_prints_the_table_and_writes_it_only_when_asked() {
    let provider = provider();
    let anvil = node(&provider).await;

    let out = run(&provider, &["calibrate", "--rounds", "10"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains(&anvil.url()), "{stdout}");
    let rows = rows(&stdout);
    assert_eq!(rows["eth_chainId"][2..], ["10", "10"], "{stdout}");
    for method in [
        "eth_call",
        "eth_getBalance",
        "eth_getBlockByNumber",
        "eth_getLogs",
        "eth_getTransactionReceipt",
    ] {
        let row = &rows[method];
        assert!(row[0].parse::<f64>().is_ok(), "{method}: {row:?}");
        assert!(row[1].parse::<f64>().is_ok(), "{method}: {row:?}");
        let weight: u32 = row[3]
            .parse()
            .unwrap_or_else(|_| panic!("{method} is measured: {row:?}"));
        assert!(weight >= 1, "{method}: {row:?}");
    }
    assert_eq!(
        rows["debug_traceTransaction"][..5],
        ["-", "-", "309", "kept:", "cost"]
    );
    assert_eq!(
        rows["eth_sendRawTransaction"][3..],
        ["kept:", "changes", "state:", "never", "sent"]
    );
    // anvil answers -32601 for it.
    assert!(
        rows["net_peerCount"]
            .join(" ")
            .contains("does not serve it (-32601)"),
        "{stdout}"
    );
    assert_eq!(rows["default"][..4], ["-", "-", "100", "kept:"]);
    // stderr is not a terminal: a line per method instead of the bar.
    assert!(stderr.contains("calibrate: eth_call: median"), "{stderr}");
    assert!(
        !table_file(&provider).exists(),
        "nothing written without --write"
    );
    assert!(stdout.contains("Nothing written"), "{stdout}");
    assert!(stdout.contains("--rounds 10 --write"), "{stdout}");

    let out = run(&provider, &["calibrate", "--rounds", "10", "--write"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = table_file(&provider);
    assert!(
        stdout.contains(&format!("Wrote {}", path.display())),
        "{stdout}"
    );
    let table = Table::load(&path).expect("the written table loads");
    assert!(table.about.contains("network devnet"), "{}", table.about);
    assert!(table.about.contains(&anvil.url()), "{}", table.about);
    assert_eq!(table.methods["debug_traceTransaction"], 309, "kept");
    assert_eq!(table.methods["eth_chainId"], 10);
    assert_eq!(table.default, 100);
    let printed = self::rows(&stdout);
    for method in ["eth_call", "eth_getBalance", "eth_getBlockByNumber"] {
        assert_eq!(
            printed[method][3],
            table.methods[method].to_string(),
            "{method}"
        );
    }
    let shipped = Table::shipped().unwrap();
    assert_ne!(table.methods, shipped.methods, "measured weights differ");

    // The runtime now prices calls, and offers them, by the measured table.
    let out = run(&provider, &["offer-template"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let offer: Value = serde_json::from_slice(&out.stdout).expect("the offer is JSON");
    let props = &offer["properties"];
    for (method, weight) in &table.methods {
        assert_eq!(
            props[format!("golem.runtime.erigon.compute-units.{method}")],
            json!(weight),
            "{method}"
        );
    }
}

#[tokio::test]
async fn names_what_is_wrong_and_where() {
    let provider = provider();

    let out = run(&provider, &["calibrate", "--network", "nope"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("network \"nope\""), "{stderr}");
    assert!(stderr.contains("accepted: devnet, sepolia"), "{stderr}");

    let out = run(&provider, &["calibrate", "--rouns", "5"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unknown argument `--rouns`"), "{stderr}");
    assert!(
        stderr.contains("accepted: --network NAME, --rounds N"),
        "{stderr}"
    );

    // Nobody listens on devnet's port: the provider's block is free, and no anvil.
    let out = run(&provider, &["calibrate"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    let url = format!("http://127.0.0.1:{}/", provider.http_port);
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("is the node running?"), "{stderr}");
    assert!(!table_file(&provider).exists());

    let out = run(&provider, &["calibrate", "--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("Usage: ya-runtime-erigon calibrate [--network NAME]"));

    let bare = Provider::builder()
        .runtime(RUNTIME)
        .without_config()
        .build();
    let out = run(&bare, &["calibrate"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "configuration file {} does not exist",
            bare.config_path.display()
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_table_the_limits_cannot_carry_is_not_written() {
    let provider = Provider::builder()
        .runtime(RUNTIME)
        .config(json!({
            "networks": {"devnet": {"slot": 0, "mode": "shared", "chain_id": 31337}},
            "default_network": "devnet",
            "limits": {"cu_burst": 11},
        }))
        .build();
    // Every weight fits cu_burst 11 now; the methods that return whole blocks and
    // transactions measure at several times eth_chainId on anvil.
    let path = table_file(&provider);
    let table = r#"{"default": 10, "methods": {"eth_chainId": 10, "eth_getBlockByNumber": 11,
        "eth_getBlockByHash": 11, "eth_getTransactionByHash": 11,
        "eth_getTransactionByBlockHashAndIndex": 11}}"#;
    std::fs::write(&path, table).unwrap();
    let _anvil = node(&provider).await;

    let out = run(&provider, &["calibrate", "--rounds", "10", "--write"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(stderr.contains("not written"), "{stderr}");
    assert!(stderr.contains("key `limits.cu_burst` is 11"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        table,
        "the old table stays"
    );
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no temporary file is left: {left:?}");
}
