//! The operator's metrics end to end, with real parts: the runtime binary behind the
//! real nginx with the shipped site, anvil as the operator's shared node, the
//! `ya-runtime-erigon metrics` command, Prometheus' own `promtool` and node_exporter's
//! textfile collector. What the metrics say must be exactly what was sent, refused
//! and billed; what they leave behind must hold no secret and be private.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use harness::anvil::Anvil;
use harness::exeunit::creds;
use harness::nginx::{free_port, Nginx};
use harness::process::{eventually, eventually_async, listens};
use harness::provider::Provider;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use ya_runtime_erigon::metrics::METRICS;
use ya_runtime_erigon::provider::billing::{COUNTER, CU_COUNTER};

/// How long a number may take to show: the runtime writes its reading once a second,
/// and `metrics_file` when it is older than 5 s.
const PATIENCE: Duration = Duration::from_secs(15);

/// The limits the traffic runs into (see [`traffic`]).
const LOGS_BLOCKS: u64 = 10;
const BATCH_LIMIT: usize = 8;

/// A method name made to break out of a label and forge a family.
const CRAFTED: &str = "eth_x\"}\n# HELP evil";

// ---------------------------------------------------------------------------------------
// The provider: anvil as the shared `dev` node, the runtime, the real nginx.

struct Scene {
    provider: Provider,
    nginx: Nginx,
    _node: Anvil,
}

/// A deployed provider whose shared `dev` network is served by anvil (chain 1337),
/// behind nginx, with `overrides` on its configuration.
async fn scene(overrides: Value) -> Scene {
    let mut config = json!({
        "networks": {"dev": {"slot": 0, "mode": "shared"}},
        "default_network": "dev",
        "limits": {"logs_blocks": LOGS_BLOCKS, "batch": BATCH_LIMIT},
    });
    if let (Some(c), Some(o)) = (config.as_object_mut(), overrides.as_object()) {
        c.extend(o.clone());
    }
    let provider = Provider::behind_nginx(config);
    let node = Anvil::builder()
        .port(provider.http_port)
        .chain_id(1337)
        .start()
        .await;
    provider.deploy_ok();
    let nginx = provider.site().start();
    Scene {
        provider,
        nginx,
        _node: node,
    }
}

// ---------------------------------------------------------------------------------------
// `ya-runtime-erigon metrics`.

/// `ya-runtime-erigon metrics <args>`, as an operator runs it (not as the ExeUnit).
async fn metrics_command(provider: &Provider, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(&provider.runtime)
        .arg("metrics")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", provider.root.path())
        .env("XDG_DATA_HOME", provider.root.path().join("xdg"))
        .output()
        .await
        .expect("run ya-runtime-erigon metrics")
}

/// `metrics --config <the provider's file>`, which must succeed.
async fn metrics(provider: &Provider) -> Exposition {
    let config = provider.config_path.to_str().unwrap();
    let out = metrics_command(provider, &["--config", config]).await;
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "metrics: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Exposition::parse(&String::from_utf8(out.stdout).expect("UTF-8"))
}

/// Runs `metrics` until `check` passes (it says what it still misses), at most
/// [`PATIENCE`].
async fn metrics_until(
    provider: &Provider,
    what: &str,
    check: impl Fn(&Exposition) -> Result<(), String>,
) -> Exposition {
    let check = &check;
    eventually_async(what, PATIENCE, || async move {
        let seen = metrics(provider).await;
        match check(&seen) {
            Ok(()) => Ok(seen),
            Err(missing) => Err(format!("{missing}\n--- metrics:\n{}", seen.text)),
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Prometheus' text format, read back.

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

struct Exposition {
    text: String,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The samples of the text format (version 0.0.4): `name{k="v",...} value`, label
    /// values with `\\`, `\"` and `\n` escaped. Panics on a line that is not one.
    fn parse(text: &str) -> Exposition {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples
                .push(parse_sample(line).unwrap_or_else(|| panic!("not a sample line: {line:?}")));
        }
        Exposition {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of the one sample of `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{want:?} appears {} times",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    /// [`Exposition::value`] as a count (0 when absent).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.value(name, labels).map_or(0, |v| v as u64)
    }

    /// Every sample that has label `key` = `value`.
    fn with_label<'a>(&'a self, key: &'a str, value: &'a str) -> impl Iterator<Item = &'a Sample> {
        self.samples
            .iter()
            .filter(move |s| s.labels.get(key).map(String::as_str) == Some(value))
    }

    /// One activity's numbers, as [`Tally`] counts them.
    fn activity(&self, user: &str) -> Seen {
        let mut seen = Seen::default();
        for s in self.with_label("user", user) {
            let n = s.value as u64;
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            match s.name.as_str() {
                "ya_runtime_erigon_activity_calls_total" => {
                    seen.tally.calls.insert(label("method"), n);
                }
                "ya_runtime_erigon_activity_refused_calls_total" => {
                    seen.tally.refused.insert(label("reason"), n);
                }
                "ya_runtime_erigon_activity_compute_units_total" => seen.units = n,
                "ya_runtime_erigon_activity_node_answer_seconds_count" => {
                    seen.tally.node_requests = n
                }
                "ya_runtime_erigon_activity_node_errors_total" => seen.tally.node_errors = n,
                "ya_runtime_erigon_activity_websockets" => seen.tally.websockets = n,
                "ya_runtime_erigon_activity_subscriptions" => seen.tally.subscriptions = n,
                "ya_runtime_erigon_activity_received_bytes_total" => seen.tally.received_bytes = n,
                "ya_runtime_erigon_activity_sent_bytes_total" => seen.tally.sent_bytes = n,
                _ => {}
            }
        }
        seen
    }

    /// The family names that have a `# TYPE` line.
    fn families(&self) -> BTreeSet<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let end = line.find(['{', ' '])?;
    let name = line[..end].to_string();
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' if key.is_empty() => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' if key.is_empty() => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                _ => return None,
                            },
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

// ---------------------------------------------------------------------------------------
// What was sent, as the metrics should count it.

/// The shipped compute-unit table (the provider has no table of its own).
struct Table {
    default: u64,
    methods: BTreeMap<String, u64>,
}

impl Table {
    fn shipped() -> Table {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/compute-units.json");
        let table: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        Table {
            default: table["default"].as_u64().expect("a default weight"),
            methods: table["methods"]
                .as_object()
                .expect("a methods map")
                .iter()
                .map(|(m, w)| (m.clone(), w.as_u64().expect("a weight")))
                .collect(),
        }
    }

    /// A method's label: its own if the table names it, else `other`.
    fn label(&self, method: &str) -> String {
        match self.methods.contains_key(method) && method != "eth_subscription" {
            true => method.to_string(),
            false => "other".to_string(),
        }
    }

    fn weight(&self, label: &str) -> u64 {
        self.methods.get(label).copied().unwrap_or(self.default)
    }
}

/// What the activity was sent and answered, in the metrics' terms.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tally {
    /// Calls the node answered, by method label.
    calls: BTreeMap<String, u64>,
    refused: BTreeMap<String, u64>,
    /// HTTP requests and WebSocket messages that reached the node.
    node_requests: u64,
    node_errors: u64,
    websockets: u64,
    subscriptions: u64,
    /// Request bodies and WebSocket payloads, as sent.
    received_bytes: u64,
    /// Answer bodies and WebSocket payloads, as received.
    sent_bytes: u64,
}

impl Tally {
    fn answered(&mut self, table: &Table, method: &str) {
        *self.calls.entry(table.label(method)).or_default() += 1;
    }

    fn refused(&mut self, reason: &str, n: u64) {
        *self.refused.entry(reason.to_string()).or_default() += n;
    }

    fn billed_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    fn units(&self, table: &Table) -> u64 {
        self.calls.iter().map(|(m, n)| table.weight(m) * n).sum()
    }
}

/// One activity's numbers in the metrics.
#[derive(Debug, Default)]
struct Seen {
    tally: Tally,
    units: u64,
}

fn call(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A requestor's user of one activity, through nginx, keeping the byte counts.
struct Client {
    http: reqwest::Client,
    url: String,
    port: u16,
    user: String,
    password: String,
}

impl Client {
    fn new(nginx: &Nginx, user: &str, password: &str) -> Client {
        Client {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            url: nginx.url("/dev"),
            port: nginx.port,
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// POSTs `body`; the HTTP status and the answer's JSON.
    async fn post(&self, tally: &mut Tally, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        tally.received_bytes += bytes.len() as u64;
        let response = self
            .http
            .post(&self.url)
            .basic_auth(&self.user, Some(&self.password))
            .header("Content-Type", "application/json")
            .body(bytes)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} answers: {e}", self.url));
        let status = response.status().as_u16();
        let answer = response.bytes().await.expect("the whole answer");
        tally.sent_bytes += answer.len() as u64;
        let json = serde_json::from_slice(&answer)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&answer)));
        (status, json)
    }

    /// One call the node must answer with a result.
    async fn ok(&self, tally: &mut Tally, table: &Table, method: &str, params: Value) -> Value {
        let (status, answer) = self.post(tally, &call(1, method, params)).await;
        assert_eq!(status, 200, "{method}: {answer}");
        assert!(answer.get("result").is_some(), "{method}: {answer}");
        tally.answered(table, method);
        tally.node_requests += 1;
        answer["result"].clone()
    }

    /// A WebSocket through nginx with the activity's credentials.
    async fn websocket(&self) -> Ws {
        let mut request = format!("ws://127.0.0.1:{}/dev", self.port)
            .into_client_request()
            .unwrap();
        let basic = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.user, self.password))
        };
        request
            .headers_mut()
            .insert("Authorization", format!("Basic {basic}").parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (ws, response) = tokio_tungstenite::client_async(request, tcp)
            .await
            .expect("a WebSocket through nginx");
        assert_eq!(response.status().as_u16(), 101);
        ws
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The known mix: plain calls, `eth_call`s, a batch, calls the policy and the limits
/// refuse, and crafted method names; each answer checked, each counted in `tally`.
async fn traffic(client: &Client, table: &Table, tally: &mut Tally) {
    // N plain calls.
    for _ in 0..4 {
        let chain = client.ok(tally, table, "eth_chainId", json!([])).await;
        assert_eq!(chain, "0x539");
    }
    for _ in 0..3 {
        client.ok(tally, table, "eth_blockNumber", json!([])).await;
    }
    // M eth_calls (to an empty account: "0x").
    let to = json!({"to": "0x00000000000000000000000000000000000000ff", "data": "0x"});
    for _ in 0..3 {
        client
            .ok(tally, table, "eth_call", json!([to, "latest"]))
            .await;
    }
    // A batch of B calls, within the batch limit.
    let batch = [
        ("eth_chainId", json!([])),
        ("eth_blockNumber", json!([])),
        ("eth_getBalance", json!([to["to"], "latest"])),
        ("eth_gasPrice", json!([])),
        ("net_version", json!([])),
    ];
    let body: Vec<Value> = (0..)
        .zip(&batch)
        .map(|(i, (m, p))| call(i, m, p.clone()))
        .collect();
    let (status, answer) = client.post(tally, &json!(body)).await;
    let answers = answer.as_array().expect("a batch answer");
    assert_eq!((status, answers.len()), (200, batch.len()), "{answer}");
    assert!(
        answers.iter().all(|a| a.get("result").is_some()),
        "{answer}"
    );
    for (m, _) in &batch {
        tally.answered(table, m);
    }
    tally.node_requests += 1;

    // Refused by policy: never reach the node, never billed.
    for method in ["anvil_mine", "admin_peers"] {
        let (status, answer) = client.post(tally, &call(1, method, json!([]))).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (200, &json!(-32601)),
            "{answer}"
        );
        tally.refused("policy", 1);
    }
    // A batch half refused: the node sees the other half.
    let body = json!([
        call(1, "eth_chainId", json!([])),
        call(2, "admin_peers", json!([]))
    ]);
    let (status, answer) = client.post(tally, &body).await;
    let answers = answer.as_array().expect("a batch answer");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answers.iter().filter(|a| a.get("result").is_some()).count(),
        1,
        "{answer}"
    );
    tally.answered(table, "eth_chainId");
    tally.refused("policy", 1);
    tally.node_requests += 1;

    // eth_getLogs within logs_blocks passes; over it, it is refused.
    let logs = client
        .ok(
            tally,
            table,
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x0"}]),
        )
        .await;
    assert_eq!(logs, json!([]));
    let wide = json!([{"fromBlock": "0x0", "toBlock": format!("{:#x}", LOGS_BLOCKS * 10)}]);
    let (status, answer) = client.post(tally, &call(1, "eth_getLogs", wide)).await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        status == 200 && message.contains("logs_blocks"),
        "{status} {answer}"
    );
    tally.refused("logs_blocks", 1);

    // A batch longer than the batch limit: every one of its calls refused.
    let long: Vec<Value> = (0..BATCH_LIMIT as u64 + 1)
        .map(|i| call(i, "eth_chainId", json!([])))
        .collect();
    let (status, answer) = client.post(tally, &json!(long)).await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        status == 413 && message.contains("batch"),
        "{status} {answer}"
    );
    tally.refused("batch", long.len() as u64);

    // Crafted method names: the node answers them with an error, and each is billed
    // under `other`.
    // (The long one is 200 characters: `eth_` and 196 more.)
    for method in [CRAFTED.to_string(), format!("eth_{}", "a".repeat(196))] {
        let (status, answer) = client.post(tally, &call(1, &method, json!([]))).await;
        assert!(
            status == 200 && answer.get("error").is_some(),
            "{status} {answer}"
        );
        tally.answered(table, &method);
        tally.node_requests += 1;
        tally.node_errors += 1;
    }
}

/// Opens a WebSocket and subscribes to new heads on it; counted in `tally`.
async fn subscribe(client: &Client, table: &Table, tally: &mut Tally) -> Ws {
    let mut ws = client.websocket().await;
    let text = call(7, "eth_subscribe", json!(["newHeads"])).to_string();
    tally.received_bytes += text.len() as u64;
    ws.send(Message::text(text)).await.unwrap();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the subscription is answered within 10 s");
        let Some(Ok(Message::Text(text))) = next else {
            panic!("no answer to eth_subscribe: {next:?}");
        };
        tally.sent_bytes += text.len() as u64;
        let answer: Value = serde_json::from_str(&text).unwrap();
        if answer["id"] == 7 {
            assert!(answer["result"].is_string(), "{answer}");
            break;
        }
    }
    tally.answered(table, "eth_subscribe");
    tally.node_requests += 1;
    tally.websockets = 1;
    tally.subscriptions = 1;
    ws
}

/// Waits until the activity's numbers in the metrics are exactly `want` (bytes too)
/// and its compute units are `units`.
async fn until_counted(provider: &Provider, user: &str, want: &Tally, units: u64) -> Exposition {
    metrics_until(provider, "the activity's numbers", |m| {
        let seen = m.activity(user);
        match (&seen.tally, seen.units) == (want, units) {
            true => Ok(()),
            false => Err(format!(
                "seen {:#?} units {}, want {want:#?} units {units}",
                seen.tally, seen.units
            )),
        }
    })
    .await
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// 1. The numbers.

#[tokio::test]
async fn the_numbers_match_the_calls_made_refused_and_billed() {
    let began = unix_now();
    let table = Table::shipped();
    let scene = scene(json!({})).await;
    let provider = &scene.provider;
    let activity = provider.start_on("a", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    let client = Client::new(&scene.nginx, &user, &password);

    let mut tally = Tally::default();
    traffic(&client, &table, &mut tally).await;
    let mut ws = subscribe(&client, &table, &mut tally).await;
    let units = tally.units(&table);
    let live = until_counted(provider, &user, &tally, units).await;
    eprintln!("--- metrics, live:\n{}", live.text);
    let who = [("network", "dev"), ("user", user.as_str())];

    // The crafted names count as `other` and appear nowhere.
    let labels: BTreeSet<&str> = live
        .samples
        .iter()
        .filter(|s| s.name == "ya_runtime_erigon_activity_calls_total")
        .filter_map(|s| s.labels.get("method").map(String::as_str))
        .collect();
    let named: BTreeSet<&str> = table.methods.keys().map(String::as_str).collect();
    assert!(
        labels.iter().all(|m| *m == "other" || named.contains(m)),
        "only the table's methods and `other` are labels: {labels:?}"
    );
    assert!(!live.text.contains("evil") && !live.text.contains(&"a".repeat(196)));
    let helps: Vec<&str> = live
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        helps.iter().all(|h| METRICS.iter().any(|(n, _, _)| n == h)),
        "{helps:?}"
    );
    assert_eq!(
        live.text.lines().filter(|l| l.starts_with('#')).count(),
        2 * live.families().len(),
        "one HELP and one TYPE per family, nothing forged"
    );
    assert_eq!(
        live.count(
            "ya_runtime_erigon_network_activities",
            &[("network", "dev")]
        ),
        1
    );
    assert_eq!(
        live.count("ya_runtime_erigon_starts_total", &[("network", "dev")]),
        1
    );
    let started = live
        .value("ya_runtime_erigon_activity_start_time_seconds", &who)
        .expect("the activity's start time");
    assert!(
        (began - 1.0..=unix_now() + 1.0).contains(&started),
        "started at {started}, the test began at {began}"
    );
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(
        live.value("ya_runtime_erigon_build_info", &version),
        Some(1.0)
    );
    // The node, as the probe at the start found it: anvil up, synced, at block 0
    // (it mines nothing here: no block time, no transaction, anvil_mine refused).
    let node = [("network", "dev")];
    assert_eq!(
        live.value("ya_runtime_erigon_network_node_up", &node),
        Some(1.0)
    );
    assert_eq!(
        live.value("ya_runtime_erigon_network_node_synced", &node),
        Some(1.0)
    );
    assert_eq!(
        live.value("ya_runtime_erigon_network_node_head_block", &node),
        Some(0.0)
    );
    let probed = live
        .value("ya_runtime_erigon_network_node_probe_time_seconds", &node)
        .expect("the probe's time");
    assert!(
        (began - 1.0..=unix_now() + 1.0).contains(&probed),
        "probed at {probed}, the test began at {began}"
    );

    // The WebSocket ends: so do its gauges.
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    tally.websockets = 0;
    tally.subscriptions = 0;
    until_counted(provider, &user, &tally, units).await;

    // The ExeUnit's bill: the compute units reported (before the stop) and the calls
    // reported before the Shutdown answer are the metrics' numbers.
    let mut reported = Vec::new();
    while reported.last() != Some(&(units as f64)) {
        let value = activity.next_counter(CU_COUNTER).await;
        reported.push(value);
        assert!(
            value <= units as f64,
            "{CU_COUNTER} reported {reported:?}; metrics {units}"
        );
    }
    let billed = activity.shutdown_billed(COUNTER).await;
    assert_eq!(
        billed,
        tally.billed_calls() as f64,
        "{COUNTER} = Σ calls_total"
    );

    // After the stop: the activity's series are gone, its bill is in the ended totals.
    let ended = metrics_until(provider, "the stop counted", |m| {
        match m.with_label("user", &user).next() {
            Some(s) => Err(format!("still live: {s:?}")),
            None => Ok(()),
        }
    })
    .await;
    eprintln!("--- metrics, after the stop:\n{}", ended.text);
    let dev = [("network", "dev")];
    assert_eq!(
        ended.count("ya_runtime_erigon_network_ended_calls_total", &dev),
        tally.billed_calls()
    );
    assert_eq!(
        ended.count("ya_runtime_erigon_network_ended_compute_units_total", &dev),
        units,
        "the final {CU_COUNTER} is the metrics' compute units"
    );
    assert_eq!(
        ended.count("ya_runtime_erigon_network_ended_activities_total", &dev),
        1
    );
    assert_eq!(
        ended.value("ya_runtime_erigon_stops_total", &dev),
        Some(1.0)
    );
    assert_eq!(
        ended.value("ya_runtime_erigon_starts_total", &dev),
        Some(1.0)
    );
    assert_eq!(
        ended.value("ya_runtime_erigon_lost_activities_total", &dev),
        Some(0.0)
    );
    assert_eq!(
        ended.value("ya_runtime_erigon_network_activities", &dev),
        Some(0.0)
    );
}

// ---------------------------------------------------------------------------------------
// 2. promtool.

/// Debian's promtool, or the line that installs it.
fn promtool() -> PathBuf {
    let path = PathBuf::from("/usr/bin/promtool");
    assert!(
        path.is_file(),
        "promtool is needed; install it: apt-get install --no-install-recommends prometheus"
    );
    path
}

#[tokio::test]
async fn promtool_accepts_the_exposition_with_every_family() {
    let promtool = promtool();
    let table = Table::shipped();
    let scene = scene(json!({})).await;
    let provider = &scene.provider;
    // A failed start, so that start failures have a sample too.
    let failed = provider.start_on("failed", "goerli").await;
    let activity = provider.start_on("a", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    let client = Client::new(&scene.nginx, &user, &password);
    let mut tally = Tally::default();
    traffic(&client, &table, &mut tally).await;
    let ws = subscribe(&client, &table, &mut tally).await;
    until_counted(provider, &user, &tally, tally.units(&table)).await;
    // Every family but the node's peers: anvil has no net_peerCount ("Method not
    // found"), and a gauge the node does not give is left out, not made up.
    let peers = "ya_runtime_erigon_network_node_peers";
    let live = metrics_until(provider, "every family", |m| {
        let families = m.families();
        let missing: Vec<&str> = METRICS
            .iter()
            .map(|(n, _, _)| *n)
            .filter(|n| !families.contains(*n) && *n != peers)
            .collect();
        match missing.is_empty() {
            true => Ok(()),
            false => Err(format!("missing {missing:?}")),
        }
    })
    .await;
    assert!(
        !live.families().contains(peers),
        "anvil has no peers to count"
    );
    eprintln!(
        "promtool reads {} families, {} samples",
        live.families().len(),
        live.samples.len()
    );

    let mut check = tokio::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = check.stdin.take().unwrap();
        stdin.write_all(live.text.as_bytes()).await.unwrap();
    }
    let out = check.wait_with_output().await.unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}: {said}\n--- the exposition:\n{}",
        out.status,
        live.text
    );
    drop(ws);
    activity.shutdown().await;
    failed.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 3. node_exporter.

/// node_exporter with only the textfile collector, killed when dropped.
struct NodeExporter {
    child: std::process::Child,
    port: u16,
}

impl NodeExporter {
    async fn start(dir: &Path) -> NodeExporter {
        NodeExporter::start_as(dir, None).await
    }

    /// As `user` (with its groups) when given, as Debian's unit runs it
    /// (`User=prometheus`).
    async fn start_as(dir: &Path, user: Option<&str>) -> NodeExporter {
        let bin = Path::new("/usr/bin/prometheus-node-exporter");
        assert!(
            bin.is_file(),
            "node_exporter is needed; install it: apt-get install --no-install-recommends prometheus-node-exporter"
        );
        let port = free_port();
        let mut command = match user {
            Some(user) => {
                let mut c = std::process::Command::new("setpriv");
                c.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--init-groups")
                    .arg(bin);
                c
            }
            None => std::process::Command::new(bin),
        };
        let child = command
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start node_exporter");
        let mut exporter = NodeExporter { child, port };
        eventually("node_exporter listens", Duration::from_secs(10), || {
            if let Ok(Some(status)) = exporter.child.try_wait() {
                panic!("node_exporter exited with {status}");
            }
            listens(port)
        })
        .await;
        exporter
    }

    async fn scrape(&self) -> Exposition {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let text = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .text()
            .await
            .unwrap();
        Exposition::parse(&text)
    }

    /// Scrapes until `check` passes, at most [`PATIENCE`].
    async fn until(
        &self,
        what: &str,
        check: impl Fn(&Exposition) -> Result<(), String>,
    ) -> Exposition {
        let check = &check;
        eventually_async(what, PATIENCE, || async move {
            let seen = self.scrape().await;
            match check(&seen) {
                Ok(()) => Ok(seen),
                Err(missing) => Err(format!("{missing}\n--- node_exporter:\n{}", seen.text)),
            }
        })
        .await
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// node_exporter read the file without error, and `name{labels}` is `want`.
fn exported(m: &Exposition, name: &str, labels: &[(&str, &str)], want: f64) -> Result<(), String> {
    match (
        m.value("node_textfile_scrape_error", &[]),
        m.value(name, labels),
    ) {
        (Some(e), Some(v)) if e == 0.0 && v == want => Ok(()),
        seen => Err(format!(
            "(scrape error, {name}{labels:?}) = {seen:?}, want {want}"
        )),
    }
}

#[tokio::test]
async fn node_exporter_serves_metrics_file() {
    const K: u64 = 5;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ya-runtime-erigon.prom");
    let scene = scene(json!({"metrics_file": file})).await;
    let exporter = NodeExporter::start(&dir).await;
    let activity = scene.provider.start_on("a", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    // The start rewrites the file (counted in the background, beside the start).
    let dev = [("network", "dev")];
    exporter
        .until("the start in metrics_file", |m| {
            exported(m, "ya_runtime_erigon_starts_total", &dev, 1.0)
        })
        .await;
    let table = Table::shipped();
    let client = Client::new(&scene.nginx, &user, &password);
    let mut tally = Tally::default();
    for _ in 0..K {
        client
            .ok(&mut tally, &table, "eth_chainId", json!([]))
            .await;
    }
    let calls = [
        ("method", "eth_chainId"),
        ("network", "dev"),
        ("user", user.as_str()),
    ];
    let live = exporter
        .until("the calls in metrics_file", |m| {
            exported(
                m,
                "ya_runtime_erigon_activity_calls_total",
                &calls,
                K as f64,
            )
        })
        .await;
    assert_eq!(
        live.value("ya_runtime_erigon_network_activities", &dev),
        Some(1.0)
    );
    let ours: Vec<&Sample> = live
        .samples
        .iter()
        .filter(|s| s.name.starts_with("ya_runtime_erigon_"))
        .collect();
    eprintln!("node_exporter shows {} samples of ours", ours.len());
    assert!(
        !live.text.contains(&password),
        "no password in what node_exporter serves"
    );

    // The stop rewrites the file before its Shutdown answer: the bill is in the
    // ended totals at once.
    activity.shutdown().await;
    let text = Exposition::parse(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(
        text.value("ya_runtime_erigon_network_ended_calls_total", &dev),
        Some(K as f64),
        "metrics_file right after the stop:\n{}",
        text.text
    );
    let ended = exporter
        .until("the stop in metrics_file", |m| {
            exported(
                m,
                "ya_runtime_erigon_network_ended_calls_total",
                &dev,
                K as f64,
            )
        })
        .await;
    assert_eq!(ended.with_label("user", &user).count(), 0, "{}", ended.text);
    assert_eq!(
        ended.value("ya_runtime_erigon_stops_total", &dev),
        Some(1.0)
    );
}

/// node_exporter as Debian runs it, as the user `prometheus`, on a textfile folder of
/// group `prometheus` that the provider's runtime may write: `setgid` or not. Returns
/// what it says of `metrics_file` once the runtime wrote it (at the start).
async fn exported_to_prometheus_user(setgid: bool) -> Option<(f64, Option<f64>)> {
    use std::os::unix::fs::PermissionsExt;
    if !harness::nginx::is_root() {
        eprintln!("not root: node_exporter cannot run as another user here");
        return None;
    }
    let group = nix::unistd::Group::from_name("prometheus")
        .unwrap()
        .expect("the group `prometheus` (Debian's prometheus-node-exporter package makes it)");
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = root.path().join("textfile");
    std::fs::create_dir(&dir).unwrap();
    nix::unistd::chown(&dir, None, Some(group.gid)).unwrap();
    let mode = if setgid { 0o2775 } else { 0o775 };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    let file = dir.join("ya-runtime-erigon.prom");
    let scene = scene(json!({"metrics_file": file})).await;
    let exporter = NodeExporter::start_as(&dir, Some("prometheus")).await;
    let activity = scene.provider.start_on("a", "dev").await;
    activity.ready_status().await;
    eventually("metrics_file is written", PATIENCE, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("starts_total"))
    })
    .await;
    let seen = exporter.scrape().await;
    activity.shutdown().await;
    let error = seen
        .value("node_textfile_scrape_error", &[])
        .expect("node_textfile_scrape_error");
    let starts = seen.value("ya_runtime_erigon_starts_total", &[("network", "dev")]);
    Some((error, starts))
}

/// The working set-up: a setgid folder, so the file gets the folder's group, which
/// node_exporter's user reads through (the file is 0640).
#[tokio::test]
async fn node_exporter_as_its_own_user_reads_metrics_file_in_a_setgid_folder() {
    if let Some(seen) = exported_to_prometheus_user(true).await {
        assert_eq!(seen, (0.0, Some(1.0)), "(scrape error, starts_total)");
    }
}

/// The set-up the README and deploy's error describe ("with the provider's user in the
/// folder's group"): a folder of node_exporter's group that the runtime may write, not
/// setgid. The file then gets the runtime's own group, and with mode 0640
/// node_exporter (user `prometheus`, as Debian's unit runs it) cannot open it:
/// `node_textfile_scrape_error 1`, and none of the runtime's metrics.
#[tokio::test]
async fn node_exporter_as_its_own_user_reads_metrics_file_in_its_group_folder_without_setgid() {
    if let Some(seen) = exported_to_prometheus_user(false).await {
        assert_eq!(
            seen,
            (0.0, Some(1.0)),
            "(scrape error, starts_total): node_exporter, as user prometheus, cannot read \
             metrics_file (mode 0640, group of the runtime's user) in a folder of group \
             prometheus that is not setgid"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Failed starts and lost runtimes.

#[tokio::test]
async fn a_failed_start_is_counted_by_reason_and_is_no_stop() {
    let provider = Provider::new(json!({
        "networks": {"dev": {"slot": 0, "mode": "shared"}},
        "default_network": "dev",
    }));
    provider.deploy_ok();
    let failed = provider.start_on("failed", "goerli").await;
    let (status, _) = failed.status().await;
    assert_ne!(status["state"], "ready", "{status}");
    let seen = metrics_until(&provider, "the failed start", |m| {
        let arguments = [("reason", "arguments")];
        match m.value("ya_runtime_erigon_start_failures_total", &arguments) {
            Some(1.0) => Ok(()),
            n => Err(format!(
                "start_failures_total{{reason=\"arguments\"}} = {n:?}"
            )),
        }
    })
    .await;
    let failures: Vec<&Sample> = seen
        .samples
        .iter()
        .filter(|s| s.name == "ya_runtime_erigon_start_failures_total")
        .collect();
    assert_eq!(failures.len(), 1, "one reason: {failures:?}");
    failed.shutdown().await;
    let after = metrics(&provider).await;
    let dev = [("network", "dev")];
    assert_eq!(
        after.value("ya_runtime_erigon_starts_total", &dev),
        Some(0.0)
    );
    assert_eq!(
        after.value("ya_runtime_erigon_stops_total", &dev),
        Some(0.0),
        "{}",
        after.text
    );
    assert_eq!(
        after.value(
            "ya_runtime_erigon_start_failures_total",
            &[("reason", "arguments")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_runtime_killed_with_sigkill_is_lost_and_its_calls_are_ended() {
    const K: u64 = 6;
    // With metrics_file, a runtime that collects folds what a dead one left.
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("textfile/ya-runtime-erigon.prom");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let scene = scene(json!({"metrics_file": file})).await;
    let provider = &scene.provider;
    let activity = provider.start_on("a", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    let table = Table::shipped();
    let client = Client::new(&scene.nginx, &user, &password);
    let mut tally = Tally::default();
    for _ in 0..K {
        client
            .ok(&mut tally, &table, "eth_blockNumber", json!([]))
            .await;
    }
    let calls = [
        ("network", "dev"),
        ("user", user.as_str()),
        ("method", "eth_blockNumber"),
    ];
    metrics_until(provider, "the calls", |m| {
        match m.count("ya_runtime_erigon_activity_calls_total", &calls) {
            K => Ok(()),
            n => Err(format!("{n} calls")),
        }
    })
    .await;
    activity.kill().await;
    assert!(
        harness::process::reaped_within(activity.pid(), Duration::from_secs(5)).await,
        "the runtime is gone"
    );
    let dev = [("network", "dev")];
    let seen = metrics_until(provider, "the lost runtime", |m| {
        match m.with_label("user", &user).next() {
            Some(s) => Err(format!("still live: {s:?}")),
            None => Ok(()),
        }
    })
    .await;
    eprintln!("--- metrics, after SIGKILL:\n{}", seen.text);
    assert_eq!(
        seen.value("ya_runtime_erigon_lost_activities_total", &dev),
        Some(1.0)
    );
    assert_eq!(
        seen.value("ya_runtime_erigon_network_ended_calls_total", &dev),
        Some(K as f64)
    );
    assert_eq!(
        seen.value("ya_runtime_erigon_network_ended_compute_units_total", &dev),
        Some(tally.units(&table) as f64)
    );
    assert_eq!(
        seen.value("ya_runtime_erigon_network_ended_activities_total", &dev),
        Some(1.0)
    );
    assert_eq!(
        seen.value("ya_runtime_erigon_network_activities", &dev),
        Some(0.0)
    );
    assert_eq!(seen.value("ya_runtime_erigon_stops_total", &dev), Some(0.0));
    // Read again, it is not counted twice.
    let again = metrics(provider).await;
    assert_eq!(
        again.value("ya_runtime_erigon_lost_activities_total", &dev),
        Some(1.0)
    );
    assert_eq!(
        again.value("ya_runtime_erigon_network_ended_calls_total", &dev),
        Some(K as f64)
    );
    let left = provider
        .data_dir
        .join(format!("metrics/activities/{user}.json"));
    assert!(
        left.is_file(),
        "`metrics` only reads: the dead runtime's file is left"
    );

    // The next runtime folds it into the totals for good, once.
    let next = provider.start_on("b", "dev").await;
    let (user_b, password_b) = creds(&next.ready_status().await);
    let client_b = Client::new(&scene.nginx, &user_b, &password_b);
    let mut tally_b = Tally::default();
    for _ in 0..2 {
        client_b
            .ok(&mut tally_b, &table, "eth_chainId", json!([]))
            .await;
    }
    eventually("the dead runtime's file is folded", PATIENCE, || {
        !left.exists()
    })
    .await;
    let folded = metrics(provider).await;
    assert_eq!(
        folded.value("ya_runtime_erigon_lost_activities_total", &dev),
        Some(1.0),
        "{}",
        folded.text
    );
    assert_eq!(
        folded.value("ya_runtime_erigon_network_ended_calls_total", &dev),
        Some(K as f64)
    );
    assert_eq!(
        folded.value("ya_runtime_erigon_network_activities", &dev),
        Some(1.0)
    );
    next.shutdown().await;
    let end = metrics(provider).await;
    let want = [
        ("ya_runtime_erigon_starts_total", 2),
        ("ya_runtime_erigon_stops_total", 1),
        ("ya_runtime_erigon_lost_activities_total", 1),
        ("ya_runtime_erigon_network_ended_activities_total", 2),
        ("ya_runtime_erigon_network_ended_calls_total", K + 2),
        (
            "ya_runtime_erigon_network_ended_compute_units_total",
            tally.units(&table) + tally_b.units(&table),
        ),
        ("ya_runtime_erigon_network_activities", 0),
    ];
    for (name, n) in want {
        assert_eq!(
            end.value(name, &dev),
            Some(n as f64),
            "{name}\n{}",
            end.text
        );
    }
    // The stop rewrote metrics_file: it says what `metrics` says.
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, end.text, "metrics_file and `metrics` agree");
}

// ---------------------------------------------------------------------------------------
// 5. No secrets; private files.

/// Every file under `dir`, with its mode; and every folder's.
fn tree(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        found.push((dir.clone(), meta.mode() & 0o7777, true));
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            match meta.is_dir() {
                true => stack.push(path),
                false => found.push((path, meta.mode() & 0o7777, false)),
            }
        }
    }
    found
}

/// What is wrong with the metrics' files: the password in one, or one that others may
/// read.
/// What is wrong with the metrics folder's files and `metrics_file`: a password in
/// any, a private file others may read, any file others may write. `metrics_file`
/// alone is 0644, exactly: node_exporter reads it as a user of its own.
fn exposed(dir: &Path, file: &Path, password: &str) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut wrong = Vec::new();
    let public = std::fs::metadata(file).unwrap().mode() & 0o7777;
    if public != 0o644 {
        wrong.push(format!("{} is {public:o}, not 644", file.display()));
    }
    let mut all = tree(dir);
    all.push((file.to_path_buf(), public & !0o004, false));
    for (path, mode, is_dir) in all {
        if mode & 0o004 != 0 && !is_dir {
            wrong.push(format!("{} is world-readable ({mode:o})", path.display()));
        }
        if mode & 0o002 != 0 {
            wrong.push(format!("{} is world-writable ({mode:o})", path.display()));
        }
        if !is_dir {
            let bytes = std::fs::read(&path).unwrap();
            if String::from_utf8_lossy(&bytes).contains(password) {
                wrong.push(format!("{} holds the password", path.display()));
            }
        }
    }
    wrong
}

#[tokio::test]
async fn no_secret_reaches_the_metrics_and_their_files_are_private() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("textfile/ya-runtime-erigon.prom");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let scene = scene(json!({"metrics_file": file})).await;
    let provider = &scene.provider;
    // The operator looks before any activity started (the command reads only).
    let lock = provider.data_dir.join("metrics/lock");
    let lock_before = lock.exists();
    let before = metrics(provider).await;
    let made_by_reader = !lock_before && lock.exists();
    assert_eq!(
        before.value(
            "ya_runtime_erigon_network_activities",
            &[("network", "dev")]
        ),
        Some(0.0)
    );
    let activity = provider.start_on("a", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    assert!(
        password.len() >= 16,
        "a password worth looking for: {password:?}"
    );
    let table = Table::shipped();
    let client = Client::new(&scene.nginx, &user, &password);
    let mut tally = Tally::default();
    for _ in 0..3 {
        client
            .ok(&mut tally, &table, "eth_chainId", json!([]))
            .await;
    }
    // A password sent as a method name and as params is not a label either.
    let (_, answer) = client
        .post(&mut tally, &call(1, &password, json!([password])))
        .await;
    assert!(answer.get("error").is_some(), "{answer}");
    let (status, _) = client
        .post(
            &mut tally,
            &call(1, "eth_getBalance", json!([password, "latest"])),
        )
        .await;
    assert_eq!(status, 200);
    let calls = [
        ("network", "dev"),
        ("user", user.as_str()),
        ("method", "eth_chainId"),
    ];
    let live = metrics_until(provider, "the calls", |m| {
        match m.count("ya_runtime_erigon_activity_calls_total", &calls) {
            3 => Ok(()),
            n => Err(format!("{n} calls")),
        }
    })
    .await;
    // metrics_file shows the activity once rewritten (at most 5 s old).
    eventually(&format!("metrics_file shows {user}"), PATIENCE, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains(&format!("user=\"{user}\"")))
    })
    .await;
    assert!(
        !live.text.contains(&password),
        "the password in `metrics`:\n{}",
        live.text
    );
    let dir = provider.data_dir.join("metrics");
    let wrong = exposed(&dir, &file, &password);
    activity.shutdown().await;
    let after = metrics(provider).await;
    assert!(!after.text.contains(&password));
    let mut wrong_after = exposed(&dir, &file, &password);
    wrong_after.retain(|w| !wrong.contains(w));
    for (path, mode, _) in tree(&dir) {
        eprintln!("{mode:04o} {}", path.display());
    }
    assert!(
        wrong.is_empty() && wrong_after.is_empty(),
        "live: {wrong:#?}\nafter the stop: {wrong_after:#?}\n\
         (the lock was made by the `metrics` command, before any runtime: {made_by_reader})"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Bad input.

#[tokio::test]
async fn the_command_refuses_bad_arguments_in_one_line() {
    let provider = Provider::new(json!({}));
    for (args, named) in [
        (&["--bogus"][..], "--bogus"),
        (&["--config", "/nonexistent.json"][..], "/nonexistent.json"),
        (&["--config"][..], "--config"),
        (&["--config", "/etc/hostname"][..], "/etc/hostname"),
    ] {
        let out = metrics_command(&provider, args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
        assert!(stderr.contains(named), "{args:?} named: {stderr}");
        eprintln!("{args:?}: {}", stderr.trim_end());
    }
}
