//! The gateway attacked by a hostile requestor, in-process, in front of a real node
//! (anvil): the meter must bill exactly the answers the node gave whatever the ids, and
//! the node must never see a call the policy or the limits refuse, a client's Ping, or a
//! backlog for a client that stopped reading.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use harness::anvil::Anvil;
use harness::process::eventually;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;
use ya_runtime_erigon::gateway::{
    Bill, Gateway, GatewaySpec, Limits, Policy, RawLimits, Weights, USER_HEADER,
};
use ya_runtime_erigon::node::upstream::Upstream;

/// The activity's user, which nginx names in [`USER_HEADER`] on every request.
const USER: &str = "sepolia-0-hostiletest000000";

/// anvil's default chain id (31337), as `eth_chainId` answers it.
const CHAIN_ID: &str = "0x7a69";

/// How long any one expected message may take.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The gateway and its clients.

/// A gateway in this process, on a socket in a folder of its own, in front of
/// `upstream` (and holding the anvil behind it).
struct Setup {
    gateway: Gateway,
    socket: PathBuf,
    upstream: SocketAddr,
    _node: Option<Anvil>,
    _dir: tempfile::TempDir,
}

/// `raw` checked as the configuration's loader checks the limits it reads.
fn checked(raw: RawLimits) -> Limits {
    Limits::new(&raw, "limits").expect("the test's limits are valid")
}

/// What most tests here start from: a gateway with `limits` and `weights` in front of
/// an anvil of its own, on a free port.
async fn on_anvil(limits: Limits, weights: Weights) -> Setup {
    let node = Anvil::start().await;
    let mut setup = gateway(node.addr, limits, weights).await;
    setup._node = Some(node);
    setup
}

/// A gateway with `limits` and `weights` in front of a [`Relay`] to `node`, which
/// counts what reaches the node.
async fn relayed(node: Anvil, limits: Limits, weights: Weights) -> (Setup, Relay) {
    let relay = relay(node.addr).await;
    let mut setup = gateway(relay.addr, limits, weights).await;
    setup._node = Some(node);
    (setup, relay)
}

async fn gateway(upstream: SocketAddr, limits: Limits, weights: Weights) -> Setup {
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("gw.sock");
    let spec = GatewaySpec::new(
        socket.clone(),
        USER.into(),
        Arc::new(Upstream::local(upstream)),
        limits,
        weights,
        Policy::default(),
    )
    .unwrap();
    let gateway = Gateway::start(spec, None)
        .await
        .expect("the gateway starts");
    Setup {
        gateway,
        socket,
        upstream,
        _node: None,
        _dir: dir,
    }
}

/// Weights where `listed` methods weigh as listed, the others `default`, and the node's
/// subscription notifications 0.
fn weights(listed: &[(&str, u32)], default: u32) -> Weights {
    let mut w = Weights {
        default,
        ..Weights::default()
    };
    w.methods
        .extend(listed.iter().map(|(m, n)| (m.to_string(), *n)));
    w
}

/// One keep-alive HTTP/1.1 connection, to the gateway's socket or to anvil itself.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

async fn handshake<S>(stream: S) -> Conn
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP handshake");
    tokio::spawn(conn);
    Conn { sender }
}

async fn connect(socket: &Path) -> Conn {
    handshake(UnixStream::connect(socket).await.expect("connects")).await
}

async fn connect_node(node: SocketAddr) -> Conn {
    handshake(TcpStream::connect(node).await.expect("connects to anvil")).await
}

/// An HTTP answer as a client sees it.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    /// The body as JSON; null when empty.
    body: Value,
}

impl Conn {
    async fn post(&mut self, body: impl Into<String>) -> Answer {
        self.sender.ready().await.expect("the connection is open");
        let req = Request::post("/")
            .header("host", "localhost")
            .header(USER_HEADER, USER)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.into())))
            .expect("a request");
        let resp = tokio::time::timeout(PATIENCE, self.sender.send_request(req))
            .await
            .expect("an answer in time")
            .expect("an answer");
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_string());
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("the whole body")
            .to_bytes();
        let body = match bytes.is_empty() {
            true => Value::Null,
            false => serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes))),
        };
        Answer {
            status,
            retry_after,
            body,
        }
    }
}

/// The answer objects of a JSON-RPC answer: an array's elements, or the one object.
fn objects(body: &Value) -> Vec<Value> {
    match body {
        Value::Array(items) => items.clone(),
        Value::Object(_) => vec![body.clone()],
        _ => Vec::new(),
    }
}

fn call(id: impl Into<Value>, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
}

/// The chain's height, asked of anvil directly (never through the gateway).
async fn block_number(node: SocketAddr) -> u64 {
    let answer = connect_node(node)
        .await
        .post(call(1, "eth_blockNumber", json!([])).to_string())
        .await;
    let hex = answer.body["result"].as_str().expect("a block number");
    u64::from_str_radix(hex.trim_start_matches("0x"), 16).expect("hex")
}

type Client = WebSocketStream<UnixStream>;

async fn websocket(socket: &Path) -> Client {
    let mut request = "ws://localhost/".into_client_request().expect("a request");
    request
        .headers_mut()
        .insert(USER_HEADER, USER.parse().expect("a header value"));
    let stream = UnixStream::connect(socket).await.expect("connects");
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("the upgrade");
    ws
}

/// The next message of any kind; `None` once the WebSocket has ended.
async fn next_message(ws: &mut Client) -> Option<Ws> {
    match tokio::time::timeout(PATIENCE, ws.next()).await {
        Ok(Some(Ok(message))) => Some(message),
        Ok(_) => None,
        Err(_) => panic!("no message within {PATIENCE:?}"),
    }
}

/// The next text message as JSON (Pongs skipped); panics if the WebSocket ends.
async fn next_json(ws: &mut Client) -> Value {
    loop {
        match next_message(ws).await {
            Some(Ws::Text(text)) => return serde_json::from_str(&text).expect("JSON"),
            Some(Ws::Pong(_)) | Some(Ws::Ping(_)) => {}
            other => panic!("a text message, not {other:?}"),
        }
    }
}

async fn send_text(ws: &mut Client, text: impl Into<String>) {
    ws.send(Ws::text(text.into())).await.expect("sends");
}

/// Waits until everything relayed before is billed: a call the policy refuses is
/// answered by the gateway itself, unbilled, on the same writer as the node's answers and
/// after them, so its answer comes after every bill already made. Returns the messages
/// that came before it.
async fn settle(ws: &mut Client) -> Vec<Value> {
    send_text(ws, call("settle", "admin_nodeInfo", json!([])).to_string()).await;
    let mut before = Vec::new();
    loop {
        let message = next_json(ws).await;
        if message["id"] == json!("settle") {
            assert_eq!(message["error"]["code"], json!(-32601), "{message}");
            return before;
        }
        before.push(message);
    }
}

/// The Close frame that ends a WebSocket (messages before it skipped); `None` if it
/// ended without one.
async fn close_frame(ws: &mut Client) -> Option<CloseFrame> {
    loop {
        match next_message(ws).await {
            Some(Ws::Close(frame)) => return frame,
            Some(_) => {}
            None => return None,
        }
    }
}

/// A masked frame as a client writes it, made by hand.
fn raw_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "a short frame");
    let mask = [0x5a, 0x17, 0xc3, 0x08];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend(mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

// ---------------------------------------------------------------------------------------
// A TCP relay in front of anvil: counts the connections open through it and the bytes
// sent to anvil.

struct Relay {
    addr: SocketAddr,
    live: tokio::sync::watch::Receiver<usize>,
    to_node: Arc<AtomicU64>,
}

/// Counts a pipe down however it ends.
struct Open(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

async fn relay(node: SocketAddr) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    let (live_tx, live) = tokio::sync::watch::channel(0usize);
    let live_tx = Arc::new(live_tx);
    let to_node = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&to_node);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            live_tx.send_modify(|n| *n += 1);
            let open = Open(Arc::clone(&live_tx));
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let _open = open;
                let Ok(outbound) = TcpStream::connect(node).await else {
                    return;
                };
                let (mut from_gw, mut to_gw) = inbound.into_split();
                let (mut from_node, mut to_anvil) = outbound.into_split();
                // Bytes are counted before they are passed on, so that anvil's answer
                // to them can never come back before they are counted.
                let up = async {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        match from_gw.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                counted.fetch_add(n as u64, Ordering::SeqCst);
                                if to_anvil.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                };
                let down = tokio::io::copy(&mut from_node, &mut to_gw);
                // The pipe ends as soon as either side closes: the gateway closing its
                // connection is what is counted, whatever anvil still computes.
                tokio::select! {
                    () = up => {}
                    _ = down => {}
                }
            });
        }
    });
    Relay {
        addr,
        live,
        to_node,
    }
}

impl Relay {
    fn to_node(&self) -> u64 {
        self.to_node.load(Ordering::SeqCst)
    }

    fn live(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits until exactly `n` connections are open, at most `within`.
    async fn until_live(&mut self, n: usize, within: Duration, what: &str) {
        let waited = tokio::time::timeout(within, self.live.wait_for(|l| *l == n))
            .await
            .is_ok_and(|w| w.is_ok());
        if !waited {
            let open = self.live();
            panic!("{what}: {open} connections to the node are open, not {n}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Exact billing whatever the ids.

/// One attack: a request and the number of answer objects anvil gives it.
struct Attack {
    what: &'static str,
    body: String,
    answers: usize,
    notifications: u64,
}

fn attacks() -> Vec<Attack> {
    let id300 = |i: usize| format!("{i:x>300}");
    let single =
        |id: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_chainId","params":[]}}"#);
    let batch_300: Vec<Value> = (0..100)
        .map(|i| call(id300(i), "eth_chainId", json!([])))
        .collect();
    let note = json!({"jsonrpc": "2.0", "method": "eth_chainId", "params": []});
    let two_and_three = json!([
        note,
        call(1, "eth_chainId", json!([])),
        note,
        call("two", "eth_blockNumber", json!([])),
        note
    ]);
    let duplicated: Vec<Value> = [
        "eth_chainId",
        "eth_blockNumber",
        "net_version",
        "eth_chainId",
    ]
    .iter()
    .map(|m| call(7, m, json!([])))
    .collect();
    let attack = |what, body: String, answers| Attack {
        what,
        body,
        answers,
        notifications: 0,
    };
    vec![
        attack(
            "a 300-character id",
            single(&Value::from(id300(1)).to_string()),
            1,
        ),
        attack(
            "a 100,000-character id",
            single(&Value::from("i".repeat(100_000)).to_string()),
            1,
        ),
        attack(
            "100 calls with 300-character ids",
            Value::Array(batch_300).to_string(),
            100,
        ),
        attack("id 1.5", single("1.5"), 1),
        attack("id 2^64", single("18446744073709551616"), 1),
        attack("an object id", single(r#"{"a":[1,{"b":null}]}"#), 1),
        attack("an array id", single(r#"[1,"x",[]]"#), 1),
        attack("id true", single("true"), 1),
        attack("id null", single("null"), 1),
        attack(
            "a duplicate id key",
            r#"{"id":1,"id":2,"jsonrpc":"2.0","method":"eth_chainId","params":[]}"#.into(),
            1,
        ),
        attack("a batch of non-calls", r#"[1,"x",null,[],{}]"#.into(), 1),
        Attack {
            what: "2 calls and 3 notifications",
            body: two_and_three.to_string(),
            answers: 2,
            notifications: 3,
        },
        attack(
            "duplicated ids in one batch",
            Value::Array(duplicated).to_string(),
            4,
        ),
        // Last, as it is the one answered with nothing (anvil: 204 over HTTP).
        Attack {
            what: "a notification alone",
            body: note.to_string(),
            answers: 0,
            notifications: 1,
        },
    ]
}

/// Over HTTP, every attack bills exactly the answers the client received.
#[tokio::test]
async fn http_bills_one_call_per_answer_whatever_the_ids() {
    let gw = on_anvil(Limits::default(), Weights::default()).await;
    let mut c = connect(&gw.socket).await;
    let mut want = Bill::default();
    for attack in attacks() {
        let a = c.post(attack.body.clone()).await;
        // 200, or 204 for the notification alone.
        assert!(a.status.is_success(), "{}: {}", attack.what, a.status);
        let received = objects(&a.body).len();
        assert_eq!(received, attack.answers, "{}: {}", attack.what, a.body);
        want.calls += received as u64;
        want.units += received as u64 + attack.notifications;
        let status = a.status;
        assert_eq!(
            gw.gateway.billed(),
            want,
            "{}: {status} {}",
            attack.what,
            a.body
        );
    }
    assert_eq!(gw.gateway.close().await, want);
}

/// Over a WebSocket, every attack bills exactly the answers the client received.
#[tokio::test]
async fn websocket_bills_one_call_per_answer_whatever_the_ids() {
    let gw = on_anvil(Limits::default(), Weights::default()).await;
    let mut ws = websocket(&gw.socket).await;
    let mut want = Bill::default();
    for attack in attacks() {
        send_text(&mut ws, attack.body.clone()).await;
        let answer = match attack.answers {
            0 => Value::Null,
            _ => next_json(&mut ws).await,
        };
        let more = settle(&mut ws).await;
        assert!(
            more.is_empty(),
            "{}: one message, not {more:?}",
            attack.what
        );
        let received = objects(&answer).len();
        assert_eq!(received, attack.answers, "{}: {answer}", attack.what);
        want.calls += received as u64;
        want.units += received as u64 + attack.notifications;
        assert_eq!(gw.gateway.billed(), want, "{}: {answer}", attack.what);
    }
    drop(ws);
    assert_eq!(gw.gateway.close().await, want);
}

// ---------------------------------------------------------------------------------------
// 1. The property: random batches bill what a model of the meter says.

/// xorshift64*: small, deterministic, good enough to pick shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn alnum(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..len).map(|_| *self.pick(CHARS) as char).collect()
    }
}

/// The methods a random call picks from: weighed 3, 5, the default (7); one the node does
/// not know (the node's error, billed); two the policy refuses (the gateway's, unbilled).
const METHODS: [&str; 6] = [
    "eth_chainId",
    "eth_blockNumber",
    "net_version",
    "eth_noSuchMethod",
    "admin_nodeInfo",
    "evm_mine",
];

fn refused_method(method: &str) -> bool {
    method.starts_with("admin_") || method.starts_with("evm_")
}

fn random_id(rng: &mut Rng, used: &[Value]) -> Value {
    match rng.below(16) {
        0 | 1 if !used.is_empty() => rng.pick(used).clone(),
        0..=2 => json!(rng.below(1000)),
        3 => json!(-1 - rng.below(1000) as i64),
        4 => json!(u64::MAX - rng.below(3) as u64),
        5 => json!(rng.below(100) as f64 + 0.5),
        // 2^64, which no integer type holds.
        6 => json!(18_446_744_073_709_551_616f64),
        7 => {
            let odd = ["", "é", "\"", "\\", "\n", "\u{1F600}", "}]", "\u{0}"];
            let len = rng.below(12);
            json!(format!("{}{}", rng.alnum(len), rng.pick(&odd)))
        }
        8 | 9 => json!(rng.alnum(300)),
        10 => {
            let len = 257 + rng.below(5000);
            json!(rng.alnum(len))
        }
        11 => match rng.below(8) {
            0 => json!(rng.alnum(100_000)),
            _ => json!(rng.alnum(256)),
        },
        12 => Value::Null,
        13 => json!(rng.below(2) == 0),
        14 => {
            let len = rng.below(400);
            json!({"k": rng.alnum(len), "n": [1, null]})
        }
        _ => {
            let len = rng.below(300);
            json!([rng.below(10), rng.alnum(len)])
        }
    }
}

fn random_element(rng: &mut Rng, used: &mut Vec<Value>) -> Value {
    let method = *rng.pick(&METHODS);
    let id = random_id(rng, used);
    used.push(id.clone());
    match rng.below(24) {
        0..=13 => call(id, method, json!([])),
        14..=17 => json!({"jsonrpc": "2.0", "method": method, "params": []}),
        // Not objects: the node rejects the whole batch with one error.
        18 => {
            let odd = [
                json!(1),
                json!("x"),
                Value::Null,
                json!([]),
                json!(true),
                json!(2.5),
            ];
            rng.pick(&odd).clone()
        }
        19 => json!({}),
        20 => json!({"jsonrpc": "2.0", "id": id}),
        21 => json!({"jsonrpc": "2.0", "id": id, "method": 5}),
        // No "jsonrpc": the node answers with an error, even a notification.
        22 => json!({"id": id, "method": method}),
        _ => json!({"method": method}),
    }
}

/// A request: one call (an object) or a batch, under ~900 KB.
fn random_request(rng: &mut Rng) -> Value {
    loop {
        let mut used = Vec::new();
        let request = match rng.below(8) {
            0 => loop {
                let one = random_element(rng, &mut used);
                if one.is_object() {
                    break one;
                }
            },
            n => {
                let len = match n {
                    1 => 1 + rng.below(100),
                    _ => 1 + rng.below(12),
                };
                Value::Array((0..len).map(|_| random_element(rng, &mut used)).collect())
            }
        };
        if request.to_string().len() < 900_000 {
            return request;
        }
    }
}

/// What the meter must bill for `request`, given the answer the client received: one call
/// per answer object the node sent (never more than the calls owed one), each matched to
/// the call with its id, else to the earliest call still owed; plus the notifications'
/// weights when the node accepted the request (not when it rejected a batch whole). Also
/// whether every call the policy refused was answered by the gateway under its id (`Err`:
/// the ids refused and those answered).
fn model(
    request: &Value,
    status: StatusCode,
    answer: &Value,
    weights: &Weights,
) -> (Bill, Result<(), String>) {
    let elements = objects_or_elements(request);
    let weight = |method: Option<&str>| {
        let listed = method.and_then(|m| weights.methods.get(m));
        u64::from(*listed.unwrap_or(&weights.default))
    };
    // Each call owed an answer: its id (none for an element without one, which no answer's
    // id matches) and its weight.
    let mut owed: Vec<Option<(Option<&Value>, u64)>> = Vec::new();
    let mut notes = 0u64;
    let mut refused_ids = Vec::new();
    for element in &elements {
        let Some(object) = element.as_object() else {
            owed.push(Some((None, weight(None))));
            continue;
        };
        let method = object.get("method").and_then(Value::as_str);
        let id = object.get("id");
        let notification = id.is_none() && method.is_some();
        if method.is_some_and(refused_method) {
            if let Some(id) = id {
                refused_ids.push(id.clone());
            }
            continue;
        }
        match (notification, id) {
            (true, _) => notes += weight(method),
            (false, id) => owed.push(Some((id, weight(method)))),
        }
    }
    let received = objects(answer);
    let (own, theirs): (Vec<Value>, Vec<Value>) = received.into_iter().partition(is_own);
    // The gateway's own answers join the node's array; a node that answered a batch with
    // one object (the whole batch rejected) leaves none to join.
    let whole_rejected = request.is_array() && answer.is_object() && !theirs.is_empty();
    let mut got: Vec<String> = own.iter().map(|a| a["id"].to_string()).collect();
    let mut want: Vec<String> = refused_ids.iter().map(Value::to_string).collect();
    got.sort();
    want.sort();
    let refusals = match whole_rejected || got == want {
        true => Ok(()),
        false => Err(format!(
            "refused calls with ids {want:?} got answers for {got:?}"
        )),
    };
    let mut bill = Bill::default();
    for a in &theirs {
        let by_id = owed
            .iter()
            .position(|o| matches!(o, Some((Some(id), _)) if **id == a["id"]));
        let first = owed.iter().position(Option::is_some);
        let Some(i) = by_id.or(first) else { break };
        let (_, w) = owed[i].take().expect("owed");
        bill.calls += 1;
        bill.units += w;
    }
    // The node took the notifications if it accepted the request: a 2xx, and not a batch
    // rejected whole (answered with one object, as anvil answers a batch holding an
    // element it cannot read).
    if status.is_success() && !(request.is_array() && answer.is_object()) {
        bill.units += notes;
    }
    (bill, refusals)
}

fn objects_or_elements(request: &Value) -> Vec<Value> {
    match request {
        Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    }
}

/// The gateway's own refusals among answers: errors that name the policy.
fn is_own(answer: &Value) -> bool {
    answer["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("method not allowed: "))
}

/// How a random request reaches the gateway.
enum Transport {
    /// One keep-alive connection for every request.
    Http(Conn),
    /// A WebSocket of its own for each request (to the gateway's socket), so that what
    /// one request leaves behind on a WebSocket cannot move another's bill: that is
    /// `answers_free_their_in_flight_slot_whatever_their_ids`'s to catch.
    Ws(PathBuf),
}

impl Transport {
    /// Sends `request`; returns the status (200 on a WebSocket) and the answer as one
    /// HTTP body would hold it, once what it bills is billed.
    async fn exchange(&mut self, request: &Value) -> (StatusCode, Value) {
        let socket = match self {
            Transport::Http(c) => {
                let a = c.post(request.to_string()).await;
                return (a.status, a.body);
            }
            Transport::Ws(socket) => socket,
        };
        let ws = &mut websocket(socket).await;
        // The node answers a message holding calls it owes answers; the gateway answers
        // the calls it refused in a message of its own.
        let elements = objects_or_elements(request);
        let refused = |e: &Value| {
            e.get("method")
                .and_then(Value::as_str)
                .is_some_and(refused_method)
        };
        let owes = |e: &Value| {
            !(e.is_object()
                && e.get("id").is_none()
                && e.get("method").is_some_and(Value::is_string))
        };
        let mut want_node = elements.iter().any(|e| owes(e) && !refused(e));
        let mut want_own = elements
            .iter()
            .any(|e| owes(e) && refused(e) && e.get("id").is_some());
        send_text(ws, request.to_string()).await;
        let (mut node, mut own) = (None, None);
        while want_node || want_own {
            let message = next_json(ws).await;
            let items = objects(&message);
            if want_own && !items.is_empty() && items.iter().all(is_own) {
                own = Some(message);
                want_own = false;
            } else {
                assert!(want_node, "an unexpected message {message} for {request}");
                node = Some(message);
                want_node = false;
            }
        }
        let more = settle(ws).await;
        assert!(
            more.is_empty(),
            "messages past the answers: {more:?} for {request}"
        );
        let answer = match (request.is_array(), node, own) {
            (true, Some(one @ Value::Object(_)), _) => one,
            (true, node, own) => Value::Array(
                [node, own]
                    .iter()
                    .flat_map(|m| m.as_ref().map(objects).unwrap_or_default())
                    .collect(),
            ),
            (false, node, own) => node.or(own).unwrap_or(Value::Null),
        };
        (StatusCode::OK, answer)
    }
}

/// Random requests (ids of every JSON type and size, duplicates, notifications, elements
/// that are not calls, methods the policy refuses) bill exactly what the model says, over
/// a WebSocket and then over HTTP.
#[tokio::test]
async fn random_batches_bill_what_the_model_says() {
    const HTTP_CASES: usize = 400;
    const WS_CASES: usize = 150;
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970");
            now.as_nanos() as u64 | 1
        });
    let weights = weights(&[("eth_chainId", 3), ("eth_blockNumber", 5)], 7);
    let limits = checked(RawLimits {
        calls_per_sec: 1_000_000,
        burst: 1_000_000,
        cu_per_sec: 1_000_000_000,
        cu_burst: 1_000_000_000,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, weights.clone()).await;
    let mut rng = Rng(seed);
    let mut total = Bill::default();
    let started = Instant::now();
    // Every kind of failure is counted with its first case, and all are reported at the
    // end, so that one kind does not hide another.
    let mut failures: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let transports = [
        ("WebSocket", Transport::Ws(gw.socket.clone()), WS_CASES),
        (
            "HTTP",
            Transport::Http(connect(&gw.socket).await),
            HTTP_CASES,
        ),
    ];
    for (name, mut transport, cases) in transports {
        for case in 0..cases {
            let request = random_request(&mut rng);
            let (status, answer) = transport.exchange(&request).await;
            let shown = || {
                let text = request.to_string();
                let cut: String = text.chars().take(1500).collect();
                format!("case {case}: request {cut} answered {status} {answer}")
            };
            let mut fail = |kind: String, why: String| {
                let entry = failures.entry(format!("{name}: {kind}")).or_default();
                entry.0 += 1;
                if entry.1.is_empty() {
                    entry.1 = format!("{why}; {}", shown());
                }
            };
            let (want, refusals) = model(&request, status, &answer, &weights);
            if let Err(why) = refusals {
                fail("refused calls left unanswered".into(), why);
            }
            let before = total;
            total = gw.gateway.billed();
            let billed = Bill {
                calls: total.calls - before.calls,
                units: total.units - before.units,
            };
            // No limit applies to these requests: a limit's refusal is a failure of its
            // own, and the model does not price it.
            let limited = objects(&answer).into_iter().find(|a| {
                a["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("limit exceeded"))
            });
            if let Some(refusal) = limited {
                fail("refused by a limit".into(), refusal.to_string());
            } else if billed.calls != want.calls {
                let why = format!("billed {billed:?}, the model {want:?}");
                fail("calls billed are not the answers".into(), why);
            } else if billed.units != want.units {
                let why = format!("billed {billed:?}, the model {want:?}");
                let kind = match billed.units > want.units {
                    true => "units over the model",
                    false => "units under the model",
                };
                fail(kind.into(), why);
            }
        }
    }
    println!(
        "{WS_CASES} + {HTTP_CASES} cases in {:?} (seed {seed})",
        started.elapsed()
    );
    assert!(total.calls > 0, "seed {seed}: nothing was billed at all");
    let report: Vec<String> = failures
        .iter()
        .map(|(kind, (n, first))| format!("{kind}: {n} cases; the first: {first}"))
        .collect();
    assert!(
        report.is_empty(),
        "seed {seed} (rerun with HOSTILE_SEED={seed}):\n{}",
        report.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// 2. Unmatched answers free their in-flight slot at once.

#[tokio::test]
async fn answers_free_their_in_flight_slot_whatever_their_ids() {
    let limits = checked(RawLimits {
        in_flight: 4,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, Weights::default()).await;
    let mut ws = websocket(&gw.socket).await;
    for i in 0..40 {
        // Half the ids are plain; half escape their characters (`\u0041`), which anvil
        // re-encodes, so that the answer's id text matches no call's.
        let id = match i % 2 {
            0 => format!("{i:p>300}"),
            _ => format!("{i}{}", r"\u0041".repeat(50)),
        };
        let text = format!(r#"{{"jsonrpc":"2.0","id":"{id}","method":"eth_chainId","params":[]}}"#);
        send_text(&mut ws, text).await;
        let answer = next_json(&mut ws).await;
        assert_eq!(answer["result"], json!(CHAIN_ID), "call {i}: {answer}");
    }
    let answer = {
        send_text(&mut ws, call(41, "eth_chainId", json!([])).to_string()).await;
        next_json(&mut ws).await
    };
    assert_eq!(answer["result"], json!(CHAIN_ID), "{answer}");
    assert!(settle(&mut ws).await.is_empty());
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 41,
            units: 41
        }
    );

    // Fewer answers than calls: anvil answers a batch holding an element that is no call
    // with one error for all of it. That message is the node's whole answer to the
    // request: its slot must be freed with it, or 4 such batches hold every slot.
    for i in 0..8 {
        let batch = json!([call(i, "eth_chainId", json!([])), 5]);
        send_text(&mut ws, batch.to_string()).await;
        let answer = next_json(&mut ws).await;
        assert_eq!(
            answer["error"]["code"],
            json!(-32600),
            "batch {i}: {answer}"
        );
    }
    let answer = {
        send_text(&mut ws, call(42, "eth_chainId", json!([])).to_string()).await;
        next_json(&mut ws).await
    };
    assert!(settle(&mut ws).await.is_empty());
    assert_eq!(answer["result"], json!(CHAIN_ID), "{answer}");
    // Each batch billed its one answer, at the weight of one of its calls.
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 50,
            units: 50
        }
    );
}

// ---------------------------------------------------------------------------------------
// 3. The method policy.

const NEVER: [&str; 8] = [
    "admin_nodeInfo",
    "personal_listAccounts",
    "miner_start",
    "engine_exchangeCapabilities",
    "clique_getSigners",
    "anvil_mine",
    "evm_mine",
    "hardhat_mine",
];

fn assert_not_allowed(answer: &Value, id: Value, method: &str) {
    assert_eq!(answer["id"], id, "{answer}");
    assert_eq!(answer["error"]["code"], json!(-32601), "{answer}");
    assert_eq!(
        answer["error"]["message"],
        json!(format!("method not allowed: {method}")),
        "{answer}"
    );
}

fn mixed_batch() -> Value {
    json!([
        call(1, "eth_chainId", json!([])),
        call(2, "evm_mine", json!([])),
        call(
            3,
            "anvil_setBalance",
            json!(["0x1000000000000000000000000000000000000002", "0xffff"])
        ),
        call(4, "eth_blockNumber", json!([])),
    ])
}

/// Asserts the four answers of [`mixed_batch`]: 1 and 4 from the node, 2 and 3 refused.
fn assert_mixed(answers: &[Value]) {
    let by_id: BTreeMap<u64, &Value> = answers
        .iter()
        .map(|a| (a["id"].as_u64().expect("a numeric id"), a))
        .collect();
    assert_eq!(by_id.len(), 4, "{answers:?}");
    assert_eq!(by_id.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(by_id[&1]["result"], json!(CHAIN_ID));
    assert_not_allowed(by_id[&2], json!(2), "evm_mine");
    assert_not_allowed(by_id[&3], json!(3), "anvil_setBalance");
    assert_eq!(by_id[&4]["result"], json!("0x0"));
}

#[tokio::test]
async fn node_control_methods_never_reach_the_node() {
    let gw = on_anvil(Limits::default(), Weights::default()).await;
    let mut c = connect(&gw.socket).await;
    assert_eq!(block_number(gw.upstream).await, 0);

    // Every namespace that controls the node, alone: the gateway's error, unbilled.
    for (i, method) in NEVER.iter().enumerate() {
        let a = c.post(call(i, method, json!([])).to_string()).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_not_allowed(&a.body, json!(i), method);
    }
    assert_eq!(gw.gateway.billed(), Bill::default());
    // The allowed namespaces reach the node, which answers (an error for what anvil
    // does not serve), and are billed.
    let allowed = [
        ("eth_chainId", json!([])),
        ("web3_clientVersion", json!([])),
        ("net_version", json!([])),
        ("txpool_status", json!([])),
        ("debug_traceTransaction", json!(["0x00"])),
        ("trace_block", json!(["0x0"])),
        ("erigon_blockNumber", json!([])),
    ];
    for (i, (method, params)) in allowed.iter().enumerate() {
        let a = c.post(call(i, method, params.clone()).to_string()).await;
        assert_eq!(a.body["id"], json!(i), "{method}: {}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            !message.starts_with("method not allowed"),
            "{method}: {}",
            a.body
        );
    }
    assert_eq!(gw.gateway.billed().calls, allowed.len() as u64);

    // A batch mixing both: one array, four answers, two billed.
    let a = c.post(mixed_batch().to_string()).await;
    let answers = a.body.as_array().expect("one array");
    assert_mixed(answers);
    let billed = allowed.len() as u64 + 2;
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: billed,
            units: billed
        }
    );

    // The same on a WebSocket, where the gateway's errors come as a message of their own.
    let mut ws = websocket(&gw.socket).await;
    for method in NEVER {
        send_text(&mut ws, call(method, method, json!([])).to_string()).await;
        assert_not_allowed(&next_json(&mut ws).await, json!(method), method);
    }
    send_text(&mut ws, mixed_batch().to_string()).await;
    let mut answers = Vec::new();
    while answers.len() < 4 {
        answers.extend(objects(&next_json(&mut ws).await));
    }
    assert_mixed(&answers);
    assert!(settle(&mut ws).await.is_empty());
    let billed = billed + 2;
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: billed,
            units: billed
        }
    );

    // Nothing was mined, nothing was set; anvil does mine when asked directly, so a
    // gateway that let evm_mine through would have moved the height.
    assert_eq!(block_number(gw.upstream).await, 0, "the chain did not move");
    let balance = connect_node(gw.upstream)
        .await
        .post(
            call(
                1,
                "eth_getBalance",
                json!(["0x1000000000000000000000000000000000000002", "latest"]),
            )
            .to_string(),
        )
        .await;
    assert_eq!(
        balance.body["result"],
        json!("0x0"),
        "the balance was not set"
    );
    let mined = connect_node(gw.upstream)
        .await
        .post(call(1, "evm_mine", json!([])).to_string())
        .await;
    assert!(mined.body.get("error").is_none(), "{}", mined.body);
    assert_eq!(
        block_number(gw.upstream).await,
        1,
        "anvil mines when asked directly"
    );

    // A refused call next to a notification: the node answers nothing (anvil: 204 over
    // HTTP), and the refused call still gets its error; the notification is billed.
    let lone = json!([
        call(9, "evm_mine", json!([])),
        {"jsonrpc": "2.0", "method": "eth_chainId", "params": []}
    ]);
    send_text(&mut ws, lone.to_string()).await;
    let own = objects(&next_json(&mut ws).await);
    assert_eq!(own.len(), 1, "{own:?}");
    assert_not_allowed(&own[0], json!(9), "evm_mine");
    assert!(settle(&mut ws).await.is_empty());
    let a = c.post(lone.to_string()).await;
    let answers = objects(&a.body);
    assert_eq!(answers.len(), 1, "answered {} {}", a.status, a.body);
    assert_not_allowed(&answers[0], json!(9), "evm_mine");
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: billed,
            units: billed + 2
        }
    );
    drop(ws);
    assert_eq!(gw.gateway.close().await.calls, billed);
}

// ---------------------------------------------------------------------------------------
// 4. eth_getLogs ranges.

fn get_logs(id: u64, to: &str) -> Value {
    call(
        id,
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": to}]),
    )
}

#[tokio::test]
async fn get_logs_over_the_range_limit_is_refused_unbilled() {
    let limits = checked(RawLimits {
        logs_blocks: 100,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, Weights::default()).await;
    let mut c = connect(&gw.socket).await;
    let wide = c.post(get_logs(1, "0x64").to_string()).await;
    assert_eq!(wide.body["id"], json!(1), "{}", wide.body);
    assert_eq!(wide.body["error"]["code"], json!(-32005), "{}", wide.body);
    let message = wide.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("logs_blocks (100)"), "{message}");
    assert_eq!(gw.gateway.billed(), Bill::default());

    let within = c.post(get_logs(2, "0x63").to_string()).await;
    assert_eq!(within.body["id"], json!(2), "{}", within.body);
    assert_ne!(
        within.body["error"]["code"],
        json!(-32005),
        "{}",
        within.body
    );
    assert_eq!(gw.gateway.billed(), Bill { calls: 1, units: 1 });

    let mut ws = websocket(&gw.socket).await;
    send_text(&mut ws, get_logs(3, "0x64").to_string()).await;
    let wide = next_json(&mut ws).await;
    assert_eq!(wide["error"]["code"], json!(-32005), "{wide}");
    send_text(&mut ws, get_logs(4, "0x63").to_string()).await;
    let within = next_json(&mut ws).await;
    assert_eq!(within["id"], json!(4), "{within}");
    assert!(settle(&mut ws).await.is_empty());
    assert_eq!(gw.gateway.billed(), Bill { calls: 2, units: 2 });
}

// ---------------------------------------------------------------------------------------
// 5. The call timeout.

/// An `eth_call` whose callee loops forever (JUMPDEST PUSH1 0 JUMP) with 10^12 gas:
/// anvil computes for many minutes.
fn endless_call(id: u64) -> Value {
    let callee = "0x1000000000000000000000000000000000000001";
    call(
        id,
        "eth_call",
        json!([
            {"to": callee, "gas": "0xE8D4A51000"},
            "latest",
            {callee: {"code": "0x5b600056"}}
        ]),
    )
}

fn assert_timed_out(answer: &Value, id: u64) {
    assert_eq!(answer["id"], json!(id), "{answer}");
    assert_eq!(answer["error"]["code"], json!(-32002), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("call_timeout_ms (500)"), "{answer}");
}

#[tokio::test]
async fn a_call_past_the_timeout_is_cut_billed_once_and_its_node_connection_closed() {
    // anvil refuses --gas-limit together with --disable-block-gas-limit; the latter
    // alone lets a call have 10^12 gas.
    let node = Anvil::builder().disable_block_gas_limit().start().await;
    let limits = checked(RawLimits {
        call_timeout_ms: 500,
        ..RawLimits::default()
    });
    let (gw, mut relay) = relayed(node, limits, weights(&[("eth_call", 26)], 1)).await;

    // Over HTTP: the error in time, billed once, the node connection closed.
    let mut c = connect(&gw.socket).await;
    let started = Instant::now();
    let a = c.post(endless_call(1).to_string()).await;
    let took = started.elapsed();
    assert_eq!(a.status, StatusCode::OK);
    assert_timed_out(&a.body, 1);
    assert!(
        took >= Duration::from_millis(500),
        "cut early, after {took:?}"
    );
    assert!(took < Duration::from_secs(2), "cut after {took:?}");
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 1,
            units: 26
        }
    );
    relay
        .until_live(
            0,
            Duration::from_secs(2),
            "the timed-out call's node connection",
        )
        .await;
    // The client's connection still serves, on a new node connection.
    let a = c.post(call(2, "eth_chainId", json!([])).to_string()).await;
    assert_eq!(a.body["result"], json!(CHAIN_ID), "{}", a.body);
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 2,
            units: 27
        }
    );
    // A closed client's node connection is parked for the next client (see
    // `gateway::link`), not closed; the stop closes it.
    drop(c);
    eventually(
        "a closed client's node connection is parked",
        Duration::from_secs(5),
        || gw.gateway.spare_connections() == 1,
    )
    .await;
    assert_eq!(relay.live(), 1, "the spare");

    // On a WebSocket: the error, a Close 1008, billed once, the node's side closed.
    let mut ws = websocket(&gw.socket).await;
    assert_eq!(relay.live(), 2, "the spare and the WebSocket's");
    let started = Instant::now();
    send_text(&mut ws, endless_call(3).to_string()).await;
    assert_timed_out(&next_json(&mut ws).await, 3);
    let close = close_frame(&mut ws).await.expect("a Close frame");
    let took = started.elapsed();
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
    assert!(took < Duration::from_secs(2), "cut after {took:?}");
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 3,
            units: 53
        }
    );
    relay
        .until_live(1, Duration::from_secs(2), "the WebSocket's node connection")
        .await;
    assert_eq!(
        gw.gateway.close().await,
        Bill {
            calls: 3,
            units: 53
        }
    );
    relay
        .until_live(0, Duration::from_secs(2), "the spare, after the stop")
        .await;
}

// ---------------------------------------------------------------------------------------
// 6. Pings.

#[tokio::test]
async fn pings_never_reach_the_node_and_a_flood_closes_the_websocket() {
    let (gw, mut relay) =
        relayed(Anvil::start().await, Limits::default(), Weights::default()).await;

    let mut ws = websocket(&gw.socket).await;
    // The node's side was upgraded before the client's: its handshake is counted.
    let handshake = relay.to_node();
    assert!(handshake > 0, "the node's side is open");
    for i in 0..10 {
        ws.send(Ws::Ping(Bytes::from(format!("p{i}"))))
            .await
            .expect("sends");
    }
    for i in 0..10 {
        match next_message(&mut ws).await {
            Some(Ws::Pong(payload)) => assert_eq!(payload, format!("p{i}").as_bytes()),
            other => panic!("Pong {i}, not {other:?}"),
        }
    }
    assert_eq!(relay.to_node(), handshake, "no Ping went to the node");
    assert_eq!(gw.gateway.billed(), Bill::default(), "Pings bill nothing");
    // A call after them reaches the node as exactly one frame: its payload, a 2-byte
    // header and a 4-byte mask. A Ping forwarded in between would add its own.
    let text = call(1, "eth_chainId", json!([])).to_string();
    send_text(&mut ws, text.clone()).await;
    assert_eq!(next_json(&mut ws).await["result"], json!(CHAIN_ID));
    assert_eq!(relay.to_node() - handshake, text.len() as u64 + 6);
    assert_eq!(gw.gateway.billed().calls, 1);
    drop(ws);
    // Its node side ends (with a Close frame of the gateway's) before the next is counted.
    relay
        .until_live(0, Duration::from_secs(5), "a closed WebSocket's node side")
        .await;

    // A flood: 200 Pings back to back end in a Close 1008 naming the limit.
    let mut ws = websocket(&gw.socket).await;
    let handshake = relay.to_node();
    let flood: Vec<u8> = (0..200)
        .flat_map(|i| raw_frame(0x9, format!("f{i}").as_bytes()))
        .collect();
    ws.get_mut().write_all(&flood).await.expect("writes");
    let mut pongs = 0;
    let close = loop {
        match next_message(&mut ws).await {
            Some(Ws::Pong(_)) => pongs += 1,
            Some(Ws::Close(frame)) => break frame.expect("a close code"),
            other => panic!("Pongs then a Close, not {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
    assert!(close.reason.contains("pings"), "{close:?}");
    assert!(pongs < 200, "{pongs} Pongs: the flood was not bounded");
    // What reached the node after the upgrade: at most the gateway's Close frame
    // (2-byte header, mask, code: 8 bytes), never a Ping (8 bytes at least each).
    relay
        .until_live(
            0,
            Duration::from_secs(5),
            "the flooded WebSocket's node side",
        )
        .await;
    let sent = relay.to_node() - handshake;
    assert!(sent <= 8, "{sent} bytes reached the node after the upgrade");
    assert_eq!(gw.gateway.billed(), Bill { calls: 1, units: 1 });
}

// ---------------------------------------------------------------------------------------
// 7. Subscriptions.

/// Sends one call and returns its answer, which must come next.
async fn exchange(ws: &mut Client, (id, request): (u64, Value)) -> Value {
    send_text(ws, request.to_string()).await;
    let answer = next_json(ws).await;
    assert_eq!(answer["id"], json!(id), "{answer}");
    answer
}

#[tokio::test]
async fn subscriptions_are_bounded_and_only_real_unsubscribes_free_room() {
    let limits = checked(RawLimits {
        subscriptions: 3,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, Weights::default()).await;
    let mut ws = websocket(&gw.socket).await;
    let mut next = 0u64;
    let mut ask = |method: &'static str, params: Value| {
        next += 1;
        (next, call(next, method, params))
    };
    let mut subscriptions = Vec::new();
    for _ in 0..3 {
        let a = exchange(&mut ws, ask("eth_subscribe", json!(["newHeads"]))).await;
        subscriptions.push(a["result"].as_str().expect("a subscription id").to_string());
    }
    let assert_full = |a: &Value| {
        assert_eq!(a["error"]["code"], json!(-32005), "{a}");
        let message = a["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("subscriptions (3)"), "{a}");
    };
    assert_full(&exchange(&mut ws, ask("eth_subscribe", json!(["newHeads"]))).await);
    // Ending one that does not exist frees nothing.
    let bogus = exchange(&mut ws, ask("eth_unsubscribe", json!(["0x1234"]))).await;
    assert_eq!(bogus["result"], json!(false), "{bogus}");
    assert_full(&exchange(&mut ws, ask("eth_subscribe", json!(["newHeads"]))).await);
    // Ending a real one frees one.
    let ended = exchange(&mut ws, ask("eth_unsubscribe", json!([subscriptions[0]]))).await;
    assert_eq!(ended["result"], json!(true), "{ended}");
    let again = exchange(&mut ws, ask("eth_subscribe", json!(["newHeads"]))).await;
    assert!(again["result"].is_string(), "{again}");
    assert_full(&exchange(&mut ws, ask("eth_subscribe", json!(["newHeads"]))).await);
    assert!(settle(&mut ws).await.is_empty());
    // 3 + 1 subscribed, 2 unsubscribes; the 3 refused are not billed.
    assert_eq!(gw.gateway.billed(), Bill { calls: 6, units: 6 });
}

// ---------------------------------------------------------------------------------------
// 8. A client that stops reading.

/// An `eth_call` returning 1 MiB of zeros (PUSH3 0x0fffff PUSH1 0 RETURN): a 2 MiB answer.
fn large_call(id: u64) -> Value {
    let callee = "0x1000000000000000000000000000000000000001";
    call(
        id,
        "eth_call",
        json!([{"to": callee}, "latest", {callee: {"code": "0x620fffff6000f3"}}]),
    )
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed() {
    const STALL: Duration = Duration::from_secs(5);
    let (gw, mut relay) =
        relayed(Anvil::start().await, Limits::default(), Weights::default()).await;
    let mut ws = websocket(&gw.socket).await;
    assert_eq!(relay.live(), 1);
    let started = Instant::now();
    for id in 0..8 {
        send_text(&mut ws, large_call(id).to_string()).await;
    }
    // Nothing is read: the gateway's writes stall, and it gives up on the client, which
    // closes its node side too.
    relay
        .until_live(0, Duration::from_secs(15), "a client that reads nothing")
        .await;
    let took = started.elapsed();
    assert!(
        took >= STALL,
        "closed after {took:?}, before the stall limit"
    );
    assert!(took < Duration::from_secs(15), "closed after {took:?}");
    // Reading now: what was buffered, then a Close 1008 or the end of the stream.
    let mut complete = 0u64;
    let end = loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Ws::Text(text)))) => {
                let answer: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(
                    answer["result"].as_str().map(str::len),
                    Some(2 + (2 << 20) - 2)
                );
                complete += 1;
            }
            Ok(Some(Ok(Ws::Close(frame)))) => break Some(frame),
            Ok(Some(Ok(other))) => panic!("{other:?}"),
            Ok(Some(Err(_)) | None) => break None,
            Err(_) => panic!("the WebSocket stayed open"),
        }
    };
    if let Some(Some(frame)) = &end {
        assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
        assert!(frame.reason.contains("stopped reading"), "{frame:?}");
    }
    assert!(
        complete < 8,
        "every answer fitted in the buffers: nothing stalled"
    );
    // Only the answers written whole were billed.
    assert_eq!(gw.gateway.billed().calls, complete, "{end:?}");
}

// ---------------------------------------------------------------------------------------
// 9. Refusals for good and for now.

fn plain_call(id: u64) -> Value {
    call(
        id,
        "eth_call",
        json!([{"to": "0x1000000000000000000000000000000000000001", "data": "0x"}, "latest"]),
    )
}

#[tokio::test]
async fn a_request_heavier_than_the_burst_is_refused_for_good() {
    let limits = checked(RawLimits {
        cu_per_sec: 100,
        cu_burst: 300,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, weights(&[("eth_call", 200)], 1)).await;
    let mut c = connect(&gw.socket).await;

    let a = c
        .post(json!([plain_call(1), plain_call(2)]).to_string())
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.retry_after, None, "never retry what can never pass");
    let errors = objects(&a.body);
    assert_eq!(errors.len(), 2, "{}", a.body);
    for (e, id) in errors.iter().zip([1, 2]) {
        assert_eq!(e["id"], json!(id), "{e}");
        assert_eq!(e["error"]["code"], json!(-32005), "{e}");
        assert_eq!(
            e["error"]["message"],
            json!("limit exceeded: cu_burst (300)")
        );
    }
    assert_eq!(gw.gateway.billed(), Bill::default());

    let a = c.post(plain_call(3).to_string()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["result"], json!("0x"), "{}", a.body);
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 1,
            units: 200
        }
    );

    let a = c.post(plain_call(4).to_string()).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    let retry: u64 = a
        .retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry >= 1, "{retry}");
    assert_eq!(a.body["id"], json!(4));
    assert_eq!(
        a.body["error"]["message"],
        json!("limit exceeded: cu_per_sec (100)")
    );
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 1,
            units: 200
        }
    );

    // On a WebSocket the too-heavy batch gets the same errors, unbilled.
    let mut ws = websocket(&gw.socket).await;
    send_text(&mut ws, json!([plain_call(5), plain_call(6)]).to_string()).await;
    let errors = objects(&next_json(&mut ws).await);
    assert_eq!(errors.len(), 2);
    for e in &errors {
        assert_eq!(
            e["error"]["message"],
            json!("limit exceeded: cu_burst (300)")
        );
    }
    assert!(settle(&mut ws).await.is_empty());
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 1,
            units: 200
        }
    );
}
