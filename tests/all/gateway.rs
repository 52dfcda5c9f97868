//! The gateway against a real Ethereum node (anvil from npm), attacked as a
//! hostile requestor would: every test compares what the client was served
//! with what was billed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
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
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;
use ya_runtime_erigon::gateway::{
    Bill, Gateway, GatewaySpec, Limits, Policy, RawLimits, Weights, IDLE_SECS, NOTIFICATION,
    USER_HEADER,
};
use ya_runtime_erigon::node::upstream::Upstream;

/// The activity's user, which nginx names in [`USER_HEADER`] on every request.
const USER: &str = "sepolia-0-gatewaytest000000";

/// A WebSocket upgrade as nginx sends it: with the checked user.
fn ws_request() -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = "ws://localhost/".into_client_request().expect("a request");
    request
        .headers_mut()
        .insert(USER_HEADER, USER.parse().expect("a header value"));
    request
}

/// A gateway in this process, on a socket in a folder of its own, in front of
/// `upstream` (and holding the anvil there, if it was started for it).
struct Setup {
    gateway: Gateway,
    socket: PathBuf,
    upstream: SocketAddr,
    _node: Option<Anvil>,
    _dir: tempfile::TempDir,
}

/// A gateway with `limits` and `weights` in front of `upstream` (a relay, a node
/// that misbehaves on purpose, or nothing at all).
async fn gateway(upstream: SocketAddr, limits: Limits, weights: Weights) -> Setup {
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("gw.sock");
    let gateway = Gateway::start(spec(&socket, upstream, limits, weights), None)
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

/// The gateway of [`USER`] on `socket`, in front of `upstream`, with the default policy.
fn spec(socket: &Path, upstream: SocketAddr, limits: Limits, weights: Weights) -> GatewaySpec {
    GatewaySpec::new(
        socket.to_path_buf(),
        USER.into(),
        Arc::new(Upstream::local(upstream)),
        limits,
        weights,
        Policy::default(),
    )
    .unwrap()
}

/// `raw` checked as the configuration's loader checks the limits it reads.
fn checked(raw: RawLimits) -> Limits {
    Limits::new(&raw, "limits").expect("the test's limits are valid")
}

/// What most tests here start from: a gateway with `limits` and `weights` in front of
/// an anvil of its own, on a free port.
async fn on_anvil(limits: Limits, weights: Weights) -> Setup {
    on(Anvil::start().await, limits, weights).await
}

/// [`on_anvil`] with an anvil started otherwise (one that mines a block a second).
async fn on(node: Anvil, limits: Limits, weights: Weights) -> Setup {
    let mut setup = gateway(node.addr, limits, weights).await;
    setup._node = Some(node);
    setup
}

/// A gateway with `limits` and `weights` in front of a [`Relay`] to an anvil of its
/// own, which counts the connections to the node.
async fn relayed(limits: Limits, weights: Weights) -> (Setup, Relay) {
    let node = Anvil::start().await;
    let relay = relay(node.addr).await;
    let mut setup = gateway(relay.addr, limits, weights).await;
    setup._node = Some(node);
    (setup, relay)
}

/// One keep-alive HTTP/1.1 connection to the gateway.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

async fn connect(socket: &Path) -> Conn {
    let stream = UnixStream::connect(socket).await.expect("connects");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    Conn {
        sender,
        task: tokio::spawn(conn),
    }
}

struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

impl Conn {
    async fn request(&mut self, method: &str, body: String) -> Result<Answer, hyper::Error> {
        self.sender.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri("/")
            .header("host", "gateway")
            .header(USER_HEADER, USER)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").parse().expect("integer seconds"));
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON answer")
        };
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    async fn post(&mut self, body: impl Into<String>) -> Answer {
        self.request("POST", body.into()).await.expect("an answer")
    }
}

fn call(id: u64, method: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": []})
}

fn batch(n: u64, method: &str) -> String {
    Value::Array((0..n).map(|i| call(i, method)).collect()).to_string()
}

/// Answered calls in a 200 answer, as a client counts them.
fn answered(a: &Answer) -> u64 {
    assert_eq!(a.status, StatusCode::OK);
    match &a.body {
        Value::Array(items) => items.len() as u64,
        Value::Object(_) => 1,
        _ => 0,
    }
}

/// Limits no retry of the same request can pass: refused with 413 and no
/// `Retry-After`, so that clients split or change the request instead.
const PERMANENT: [&str; 3] = ["batch", "body_bytes", "cu_burst"];

/// Asserts a refusal as hosted services word it, for each call.
fn assert_refused(a: &Answer, limit: &str, calls: usize) {
    if PERMANENT.contains(&limit) {
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
        assert_eq!(
            a.retry_after, None,
            "no Retry-After for a request that can never pass"
        );
    } else {
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
        assert!(a.retry_after.is_some_and(|s| s >= 1), "Retry-After ≥ 1");
    }
    let errors = match &a.body {
        Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    assert_eq!(errors.len(), calls, "{}", a.body);
    for e in errors {
        assert_eq!(e["error"]["code"], json!(-32005), "{e}");
        let message = e["error"]["message"].as_str().expect("a message");
        assert!(
            message.starts_with(&format!("limit exceeded: {limit} (")),
            "{message}"
        );
    }
}

#[tokio::test]
async fn http_bills_each_answered_call_and_nothing_else() {
    let gw = on_anvil(Limits::default(), Weights::default()).await;
    let mut c = connect(&gw.socket).await;

    let a = c.post(call(1, "eth_chainId").to_string()).await;
    assert_eq!(a.body["result"], json!("0x7a69"));
    assert_eq!(gw.gateway.billed().calls, 1);

    // A batch at the limit is one batch for the node and n calls billed.
    let a = c.post(batch(100, "eth_blockNumber")).await;
    assert_eq!(answered(&a), 100);
    assert_eq!(gw.gateway.billed().calls, 101);

    // 10,000 calls in one POST: refused whole, billed nothing.
    let a = c.post(batch(10_000, "eth_chainId")).await;
    assert_refused(&a, "batch", 1);
    assert_eq!(gw.gateway.billed().calls, 101);

    // The node answered with an error: it did the work, so it counts.
    let a = c.post(call(7, "eth_noSuchMethod").to_string()).await;
    assert_eq!(a.body["error"]["code"], json!(-32601));
    assert_eq!(gw.gateway.billed().calls, 102);

    // A notification is forwarded (anvil: 204): no call answered, its weight
    // billed.
    let a = c
        .post(json!({"jsonrpc":"2.0","method":"eth_chainId"}).to_string())
        .await;
    assert!(a.status.is_success());
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 102,
            units: 103
        }
    );

    // A method outside the policy is answered by the gateway, never billed.
    let a = c.post(call(8, "no_such_method").to_string()).await;
    assert_eq!(a.body["error"]["code"], json!(-32601));
    assert_eq!(
        a.body["error"]["message"],
        json!("method not allowed: no_such_method")
    );

    // Answered by the gateway itself, never forwarded, never billed.
    let a = c.post("{\"jsonrpc\":\"2.0\",").await;
    assert_eq!(a.body["error"]["code"], json!(-32700));
    let a = c.post("[]").await;
    assert_eq!(a.body["error"]["code"], json!(-32600));
    let a = c.request("GET", String::new()).await.expect("an answer");
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    let a = c
        .request("PUT", batch(3, "eth_chainId"))
        .await
        .expect("an answer");
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        gw.gateway.billed(),
        Bill {
            calls: 102,
            units: 103
        }
    );

    // The same keep-alive connection served everything.
    assert!(!c.task.is_finished());
    assert_eq!(gw.gateway.close().await.calls, 102);
}

#[tokio::test]
async fn weights_price_methods() {
    let mut weights = Weights {
        default: 2,
        ..Weights::default()
    };
    weights.methods.insert("eth_getBalance".into(), 5);
    let gw = on_anvil(Limits::default(), weights).await;
    let mut ws = websocket(&gw.socket).await;
    let mut c = connect(&gw.socket).await;
    let balance = json!({"jsonrpc":"2.0","id":1,"method":"eth_getBalance",
        "params":["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","latest"]});
    let a = c
        .post(json!([balance, call(2, "eth_chainId")]).to_string())
        .await;
    assert_eq!(answered(&a), 2);
    assert_eq!(gw.gateway.billed(), Bill { calls: 2, units: 7 });
    let answers = ws_call(&mut ws, json!([balance, call(3, "eth_chainId")])).await;
    assert_eq!(answers.as_array().map(Vec::len), Some(2));
    drop(ws);
    assert_eq!(
        gw.gateway.close().await,
        Bill {
            calls: 4,
            units: 14
        }
    );
}

#[tokio::test]
async fn a_flood_over_the_rate_is_refused_and_billing_equals_the_calls_served() {
    let limits = checked(RawLimits {
        calls_per_sec: 100,
        burst: 100,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, Weights::default()).await;
    let mut clients = Vec::new();
    for i in 0..8u64 {
        let socket = gw.socket.clone();
        clients.push(tokio::spawn(async move {
            let mut c = connect(&socket).await;
            let (mut served, mut refused) = (0u64, 0u64);
            for j in 0..15u64 {
                let (body, calls) = match (i + j) % 3 {
                    0 => (call(j, "eth_chainId").to_string(), 1),
                    _ => (batch(10, "eth_blockNumber"), 10),
                };
                let a = c.post(body).await;
                if a.status == StatusCode::OK {
                    served += answered(&a);
                } else {
                    assert_refused(&a, "calls_per_sec", calls);
                    refused += 1;
                }
            }
            (served, refused)
        }));
    }
    let (mut served, mut refused) = (0, 0);
    for client in clients {
        let (s, r) = client.await.expect("a client");
        served += s;
        refused += r;
    }
    assert!(refused > 0, "the flood was refused in part");
    assert!(served >= 100, "the burst was served: {served}");
    assert_eq!(gw.gateway.billed().calls, served);
    assert_eq!(gw.gateway.close().await.calls, served);
}

/// A node that never finishes an answer: on its first connection it sends
/// nothing, on the next ones the head and the start of the body.
async fn stalled_node() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            if !held.is_empty() {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n[";
                let _ = stream.write_all(head.as_bytes()).await;
            }
            held.push(stream);
            let _ = tx.send(());
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn calls_in_flight_are_limited_and_a_stop_drops_them_unanswered() {
    let (addr, mut accepted) = stalled_node().await;
    let limits = checked(RawLimits {
        in_flight: 2,
        ..RawLimits::default()
    });
    let gw = gateway(addr, limits, Weights::default()).await;
    let mut hung = Vec::new();
    // The first call waits for the node's head, the second for the rest of
    // its body: both are in flight.
    for i in 0..2 {
        let mut c = connect(&gw.socket).await;
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        hung.push(tokio::spawn(async move {
            c.sender.ready().await?;
            let req = Request::post("/")
                .header(USER_HEADER, USER)
                .body(Full::new(Bytes::from(call(i, "eth_chainId").to_string())))
                .expect("a request");
            let resp = c.sender.send_request(req).await?;
            let _ = head_tx.send(());
            resp.into_body().collect().await.map(|_| ())
        }));
        accepted.recv().await.expect("the node got the call");
        if i == 1 {
            head_rx.await.expect("the head of the answer");
        }
    }
    let mut c = connect(&gw.socket).await;
    let third = tokio::time::timeout(Duration::from_secs(5), c.post(batch(3, "eth_chainId")));
    let third = third
        .await
        .expect("a third call is refused at once, not forwarded");
    assert_refused(&third, "in_flight", 3);

    let started = Instant::now();
    assert_eq!(gw.gateway.close().await.calls, 0);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for h in hung {
        let ended = tokio::time::timeout(Duration::from_secs(1), h).await;
        let result = ended.expect("the connection ends").expect("the task");
        assert!(result.is_err(), "no answer after the stop: {result:?}");
    }
}

#[tokio::test]
async fn a_failing_node_bills_nothing() {
    // Nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let refused_addr = closed.local_addr().expect("an address");
    drop(closed);
    let gw = gateway(refused_addr, Limits::default(), Weights::default()).await;
    let mut c = connect(&gw.socket).await;
    let a = c.post(batch(2, "eth_chainId")).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.body[1]["error"]["code"], json!(-32603));
    assert_eq!(gw.gateway.close().await.calls, 0);

    // A node answering 500.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let gw = gateway(addr, Limits::default(), Weights::default()).await;
    let mut c = connect(&gw.socket).await;
    let a = c.post(call(1, "eth_chainId").to_string()).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.body["error"]["code"], json!(-32603));
    assert_eq!(a.body["id"], json!(1));
    assert_eq!(gw.gateway.close().await.calls, 0);
}

#[tokio::test]
async fn bodies_over_the_size_limit_are_refused_unread() {
    let limits = checked(RawLimits {
        body_bytes: 1000,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, Weights::default()).await;
    let mut c = connect(&gw.socket).await;
    let one = call(1, "eth_chainId").to_string();
    let exact = format!("{one:<1000}");
    assert_eq!(answered(&c.post(exact.clone()).await), 1);
    let a = c.post(format!("{exact} ")).await;
    assert_refused(&a, "body_bytes", 1);

    // A body announced as 10 GB is refused before any of it is read.
    let mut raw = UnixStream::connect(&gw.socket).await.expect("connects");
    raw.write_all(b"POST / HTTP/1.1\r\nhost: x\r\nx-erigon-user: sepolia-0-gatewaytest000000\r\ncontent-length: 10000000000\r\n\r\n{")
        .await
        .expect("writes");
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).await.expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 413");

    // A chunked body is cut off at the limit as it is read.
    let mut raw = UnixStream::connect(&gw.socket).await.expect("connects");
    raw.write_all(b"POST / HTTP/1.1\r\nhost: x\r\nx-erigon-user: sepolia-0-gatewaytest000000\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .expect("writes");
    for _ in 0..3 {
        raw.write_all(format!("1f4\r\n{:<500}\r\n", "[").as_bytes())
            .await
            .expect("writes");
    }
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).await.expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 413");

    // On a WebSocket: the error, then a Close (the message was not read).
    let mut ws = websocket(&gw.socket).await;
    ws.send(Ws::text(format!("{exact} "))).await.expect("sends");
    let answer = next_text(&mut ws).await.expect("an error");
    assert_eq!(answer["error"]["code"], json!(-32005));
    assert!(matches!(ws.next().await, Some(Ok(Ws::Close(_))) | None));
    assert_eq!(gw.gateway.close().await.calls, 1);
}

type Client = WebSocketStream<UnixStream>;

async fn websocket(socket: &Path) -> Client {
    let stream = UnixStream::connect(socket).await.expect("connects");
    let (ws, _) = tokio_tungstenite::client_async(ws_request(), stream)
        .await
        .expect("the upgrade");
    ws
}

/// The next text message, or None once the WebSocket has ended.
async fn next_text(ws: &mut Client) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Ws::Text(text)))) => {
                return Some(serde_json::from_str(&text).expect("JSON"))
            }
            Ok(Some(Ok(Ws::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("no message in 10 s"),
        }
    }
}

async fn ws_call(ws: &mut Client, request: Value) -> Value {
    ws.send(Ws::text(request.to_string())).await.expect("sends");
    next_text(ws).await.expect("an answer")
}

#[tokio::test]
async fn websocket_calls_are_billed_and_limited_per_call() {
    let limits = checked(RawLimits {
        batch: 5,
        calls_per_sec: 1,
        burst: 10,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, Weights::default()).await;
    let mut ws = websocket(&gw.socket).await;
    assert_eq!(
        ws_call(&mut ws, call(1, "eth_chainId")).await["result"],
        json!("0x7a69")
    );
    let answers = ws_call(
        &mut ws,
        serde_json::from_str(&batch(5, "eth_chainId")).unwrap(),
    )
    .await;
    assert_eq!(answers.as_array().map(Vec::len), Some(5));
    assert_eq!(
        ws_call(&mut ws, json!("{")).await["error"]["code"],
        json!(-32600)
    );
    ws.send(Ws::text("{\"id\":")).await.expect("sends");
    assert_eq!(
        next_text(&mut ws).await.expect("an error")["error"]["code"],
        json!(-32700)
    );
    // Over the batch limit: one error, nothing forwarded.
    let a = ws_call(
        &mut ws,
        serde_json::from_str(&batch(6, "eth_chainId")).unwrap(),
    )
    .await;
    assert_eq!(a["error"]["code"], json!(-32005));
    // 6 of 10 tokens are spent: a batch of 5 gets an error for each call.
    let a = ws_call(
        &mut ws,
        serde_json::from_str(&batch(5, "eth_chainId")).unwrap(),
    )
    .await;
    let errors = a.as_array().expect("an error per call");
    assert_eq!(errors.len(), 5);
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["id"], json!(i));
        assert_eq!(
            e["error"]["message"],
            json!("limit exceeded: calls_per_sec (1)")
        );
    }
    assert_eq!(gw.gateway.billed().calls, 6);
    assert_eq!(gw.gateway.close().await.calls, 6);
    assert_eq!(next_text(&mut ws).await, None);
}

#[tokio::test]
async fn open_websockets_are_limited() {
    let limits = checked(RawLimits {
        websockets: 2,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, Weights::default()).await;
    let _a = websocket(&gw.socket).await;
    let _b = websocket(&gw.socket).await;
    let stream = UnixStream::connect(&gw.socket).await.expect("connects");
    let refused = tokio_tungstenite::client_async(ws_request(), stream).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(resp)) = refused else {
        panic!("a third WebSocket was accepted");
    };
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(
        body["error"]["message"],
        json!("limit exceeded: websockets (2)")
    );
    gw.gateway.close().await;
}

/// A frame as a client would write it, made by hand so that it can break the rules:
/// `opcode` with FIN and RSV1 as given, masked with `mask` if any.
fn raw_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    let masked = u8::from(mask.is_some()) << 7;
    match payload.len() {
        n @ 0..=125 => out.push(masked | n as u8),
        n @ 126..=65535 => {
            out.push(masked | 126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend(mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend(payload),
    }
    out
}

const MASK: Option<[u8; 4]> = Some([0x12, 0x34, 0x56, 0x78]);

/// Writes raw bytes under a WebSocket whose handshake tungstenite made.
async fn write_raw(ws: &mut Client, bytes: &[u8]) {
    ws.get_mut().write_all(bytes).await.expect("writes");
}

/// The Close frame's code the gateway ends a WebSocket with.
async fn close_code(ws: &mut Client) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Ws::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => {}
            Ok(_) => return None,
            Err(_) => panic!("the WebSocket stayed open"),
        }
    }
}

/// The gateway relays WebSocket frames itself (to stream them), so its framing is
/// attacked here frame by frame: a fragmented message with a Ping between its pieces
/// is answered and billed once; a message whose pieces add up past `body_bytes` gets
/// the limit's error and a Close 1009; frames RFC 6455 forbids get a Close 1002 and
/// are never forwarded or billed.
#[tokio::test]
async fn websocket_frames_are_relayed_as_rfc_6455_says_and_breaches_close_the_socket() {
    let limits = checked(RawLimits {
        body_bytes: 1000,
        ..RawLimits::default()
    });
    let gw = on_anvil(limits, Weights::default()).await;

    // Three pieces and a Ping between them: one call, one answer, and anvil's Pong.
    let mut ws = websocket(&gw.socket).await;
    let text = call(7, "eth_chainId").to_string();
    let (a, rest) = text.as_bytes().split_at(10);
    let (b, c) = rest.split_at(10);
    let mut bytes = raw_frame(false, false, 0x1, a, MASK);
    bytes.extend(raw_frame(true, false, 0x9, b"are you there", MASK));
    bytes.extend(raw_frame(false, false, 0x0, b, MASK));
    bytes.extend(raw_frame(true, false, 0x0, c, MASK));
    write_raw(&mut ws, &bytes).await;
    let (mut pong, mut answer) = (None, None);
    while pong.is_none() || answer.is_none() {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Ws::Pong(p)))) => pong = Some(p),
            Ok(Some(Ok(Ws::Text(t)))) => answer = Some(serde_json::from_str::<Value>(&t).unwrap()),
            other => panic!("expected a Pong and an answer: {other:?}"),
        }
    }
    assert_eq!(pong.unwrap().as_ref(), b"are you there");
    let answer = answer.unwrap();
    assert_eq!(
        (answer["id"].clone(), answer["result"].clone()),
        (json!(7), json!("0x7a69"))
    );
    assert_eq!(gw.gateway.billed().calls, 1);

    // Pieces of 600 bytes: the second takes the message past 1000.
    let mut ws = websocket(&gw.socket).await;
    let mut bytes = raw_frame(false, false, 0x1, &[b' '; 600], MASK);
    bytes.extend(raw_frame(true, false, 0x0, &[b' '; 600], MASK));
    write_raw(&mut ws, &bytes).await;
    let error = next_text(&mut ws).await.expect("the limit's error");
    assert_eq!(
        error["error"]["message"],
        json!("limit exceeded: body_bytes (1000)")
    );
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));

    let call = call(8, "eth_chainId").to_string();
    let call = call.as_bytes();
    for (what, bytes) in [
        ("an unmasked frame", raw_frame(true, false, 0x1, call, None)),
        (
            "RSV1 (no extension was negotiated)",
            raw_frame(true, true, 0x1, call, MASK),
        ),
        (
            "a continuation outside a message",
            raw_frame(true, false, 0x0, call, MASK),
        ),
        ("a reserved opcode", raw_frame(true, false, 0x3, call, MASK)),
        (
            "a fragmented Ping",
            raw_frame(false, false, 0x9, b"x", MASK),
        ),
        (
            "a Ping of 126 bytes",
            raw_frame(true, false, 0x9, &[0; 126], MASK),
        ),
        ("a new message inside a fragmented one", {
            let mut b = raw_frame(false, false, 0x1, b"[", MASK);
            b.extend(raw_frame(true, false, 0x1, call, MASK));
            b
        }),
    ] {
        let mut ws = websocket(&gw.socket).await;
        write_raw(&mut ws, &bytes).await;
        assert_eq!(
            close_code(&mut ws).await,
            Some(CloseCode::Protocol),
            "{what}"
        );
    }
    assert_eq!(
        gw.gateway.close().await.calls,
        1,
        "only the one call answered is billed"
    );
}

#[tokio::test]
async fn subscriptions_notify_at_their_weight() {
    let mut weights = Weights::default();
    weights.methods.insert(NOTIFICATION.into(), 3);
    let mining = Anvil::builder().block_time(1).start().await;
    let gw = on(mining, Limits::default(), weights).await;
    let mut ws = websocket(&gw.socket).await;
    let sub = ws_call(
        &mut ws,
        json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}),
    )
    .await;
    let id = sub["result"].clone();
    let mut notifications = 0u64;
    while notifications < 2 {
        let n = next_text(&mut ws).await.expect("a new head");
        assert_eq!(n["method"], json!("eth_subscription"));
        assert_eq!(n["params"]["subscription"], id);
        notifications += 1;
    }
    ws.send(Ws::text(
        json!({"jsonrpc":"2.0","id":2,"method":"eth_unsubscribe","params":[id]}).to_string(),
    ))
    .await
    .expect("sends");
    loop {
        let m = next_text(&mut ws).await.expect("a message");
        if m["id"] == json!(2) {
            assert_eq!(m["result"], json!(true));
            break;
        }
        notifications += 1;
    }
    let bill = gw.gateway.close().await;
    assert_eq!(
        bill,
        Bill {
            calls: 2,
            units: 2 + 3 * notifications
        }
    );
}

#[tokio::test]
async fn a_stop_closes_keep_alive_connections_and_live_subscriptions() {
    let mut weights = Weights::default();
    weights.methods.insert(NOTIFICATION.into(), 1);
    let mining = Anvil::builder().block_time(1).start().await;
    let gw = on(mining, Limits::default(), weights).await;
    let mut used = connect(&gw.socket).await;
    assert_eq!(
        answered(&used.post(call(1, "eth_chainId").to_string()).await),
        1
    );
    let idle = connect(&gw.socket).await;
    let mut ws = websocket(&gw.socket).await;
    ws_call(
        &mut ws,
        json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}),
    )
    .await;
    let mut received = 2; // the HTTP answer and the subscription's
    next_text(&mut ws).await.expect("a new head");
    received += 1;

    // Calls and notifications alike weigh 1 here: the units count both.
    let billed = gw.gateway.close().await.units;
    let closed = Instant::now();
    // What was already on its way is read; then a Close frame, within 1 s.
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            Ok(Some(Ok(Ws::Text(text)))) => {
                let m: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(m["method"], json!("eth_subscription"));
                received += 1;
            }
            other => break other,
        }
    };
    assert!(
        closed.elapsed() < Duration::from_secs(1),
        "{:?}",
        closed.elapsed()
    );
    let Ok(Some(Ok(Ws::Close(Some(frame))))) = end else {
        panic!("no Close frame: {end:?}");
    };
    assert_eq!(frame.code, CloseCode::Away);
    assert_eq!(
        billed, received,
        "every message served was billed, none after"
    );
    // Blocks keep coming every second; nothing more arrives.
    let later = tokio::time::timeout(Duration::from_millis(1500), ws.next()).await;
    assert!(matches!(later, Ok(None) | Ok(Some(Err(_)))), "{later:?}");

    // Both keep-alive connections were closed by the gateway.
    assert!(used
        .request("POST", call(2, "eth_chainId").to_string())
        .await
        .is_err());
    for conn in [used.task, idle.task] {
        let ended = tokio::time::timeout(Duration::from_secs(1), conn).await;
        assert!(ended.is_ok(), "a keep-alive connection stayed open");
    }
    assert!(
        UnixStream::connect(&gw.socket).await.is_err(),
        "the socket is gone"
    );
}

/// A seat's socket outlives its holder's credentials until a sweep (see `seat`): the
/// gateway answers only the user nginx checked for it, and reads, forwards and bills
/// nothing for anyone else, on HTTP and WebSocket alike.
#[tokio::test]
async fn requests_for_another_user_are_refused_unread_and_unbilled() {
    let gw = on_anvil(Limits::default(), Weights::default()).await;
    let body = call(1, "eth_chainId").to_string();
    for user_line in [
        String::new(),
        "x-erigon-user: sepolia-0-deadholder00000\r\n".into(),
        format!("x-erigon-user: {USER}x\r\n"),
        format!("x-erigon-user: {}\r\n", USER.to_uppercase()),
    ] {
        let mut raw = UnixStream::connect(&gw.socket).await.expect("connects");
        let request = format!(
            "POST / HTTP/1.1\r\nhost: x\r\n{user_line}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        raw.write_all(request.as_bytes()).await.expect("writes");
        let mut head = [0u8; 12];
        raw.read_exact(&mut head).await.expect("an answer");
        assert_eq!(&head, b"HTTP/1.1 403", "{user_line:?}");
    }
    let mut request = "ws://localhost/".into_client_request().expect("a request");
    request.headers_mut().insert(
        USER_HEADER,
        "sepolia-0-deadholder00000".parse().expect("a value"),
    );
    let stream = UnixStream::connect(&gw.socket).await.expect("connects");
    let refused = tokio_tungstenite::client_async(request, stream).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(resp)) = refused else {
        panic!("another user's WebSocket was accepted");
    };
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // The holder itself is served, and billed for that call alone.
    let mut c = connect(&gw.socket).await;
    assert_eq!(answered(&c.post(body).await), 1);
    assert_eq!(gw.gateway.close().await.calls, 1);
}

/// hyper's header timeout is off (it cost a timer per request): the
/// gateway's sweep closes a connection that sends nothing, or never finishes
/// its request head, once idle for `IDLE_SECS`, and leaves one whose call the
/// node is still working on.
#[tokio::test]
async fn idle_connections_and_unfinished_heads_are_closed_and_busy_ones_kept() {
    // A node that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let node = silent.local_addr().expect("an address");
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let gw = gateway(node, Limits::default(), Weights::default()).await;
    let started = Instant::now();
    let quiet = UnixStream::connect(&gw.socket).await.expect("connects");
    let mut half = UnixStream::connect(&gw.socket).await.expect("connects");
    half.write_all(
        format!("POST / HTTP/1.1\r\nHost: gateway\r\n{USER_HEADER}: {USER}\r\n").as_bytes(),
    )
    .await
    .expect("writes half a head");
    let mut busy = UnixStream::connect(&gw.socket).await.expect("connects");
    send_raw(&mut busy, &call(1, "eth_chainId").to_string()).await;

    let limit = Duration::from_secs(u64::from(IDLE_SECS));
    for (what, mut stream) in [
        ("a connection that sent nothing", quiet),
        ("half a head", half),
    ] {
        let mut buf = [0u8; 64];
        let read =
            tokio::time::timeout(limit + Duration::from_secs(3), stream.read(&mut buf)).await;
        let waited = started.elapsed();
        assert!(
            matches!(read, Ok(Ok(0))),
            "{what}: not closed within {waited:?}: {read:?}"
        );
        assert!(
            waited >= limit - Duration::from_secs(1),
            "{what}: closed after {waited:?}, before the idle limit"
        );
    }
    // Past the limit and a sweep: the call under way still holds its connection.
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(1500), busy.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a connection waiting on the node was closed: {early:?}"
    );
    assert_eq!(gw.gateway.close().await.calls, 0);
    let read = tokio::time::timeout(Duration::from_secs(1), busy.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0))), "the stop closes it: {read:?}");
    held.abort();
}

#[tokio::test]
async fn the_socket_is_private_and_never_taken_from_a_live_gateway() {
    use std::os::unix::fs::PermissionsExt;
    let gw = on_anvil(Limits::default(), Weights::default()).await;
    let mode = std::fs::metadata(&gw.socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    let again = Gateway::start(
        spec(
            &gw.socket,
            gw.upstream,
            Limits::default(),
            Weights::default(),
        ),
        None,
    )
    .await;
    assert!(again.err().is_some_and(|e| e.contains("another gateway")));
    gw.gateway.close().await;
    assert!(!gw.socket.exists());

    // A socket file left by a runtime that died is replaced.
    drop(std::os::unix::net::UnixListener::bind(&gw.socket).expect("binds"));
    let gw2 = gateway_at(&gw.socket, gw.upstream).await;
    let mut c = connect(&gw.socket).await;
    assert_eq!(
        answered(&c.post(call(1, "eth_chainId").to_string()).await),
        1
    );
    assert_eq!(gw2.close().await.calls, 1);
}

async fn gateway_at(socket: &Path, upstream: SocketAddr) -> Gateway {
    Gateway::start(
        spec(socket, upstream, Limits::default(), Weights::default()),
        None,
    )
    .await
    .expect("starts")
}

#[tokio::test]
async fn connections_past_the_limit_are_turned_away() {
    // The fewest connections the limits allow: each limit is at least 1.
    let limits = checked(RawLimits {
        in_flight: 1,
        websockets: 1,
        ..RawLimits::default()
    });
    let max = limits.connections() as usize;
    let gw = on_anvil(limits, Weights::default()).await;
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(connect(&gw.socket).await);
    }
    // Each connection is served: the last one proves all were accepted.
    let last = held.last_mut().expect("connections");
    assert_eq!(
        answered(&last.post(call(1, "eth_chainId").to_string()).await),
        1
    );
    let mut extra = UnixStream::connect(&gw.socket).await.expect("connects");
    let mut answer = String::new();
    extra.read_to_string(&mut answer).await.expect("reads");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("limit exceeded: connections"), "{answer}");
    assert_eq!(gw.gateway.close().await.calls, 1);
}

#[tokio::test]
async fn bodies_held_at_once_share_a_bounded_budget() {
    let limits = Limits::default();
    let (body, budget) = (limits.body_bytes(), limits.body_budget());
    let fit = (budget / body) as usize;
    let gw = on_anvil(limits, Weights::default()).await;
    // Each announces a full body and sends one byte of it: held while read.
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..=fit {
        let mut raw = UnixStream::connect(&gw.socket).await.expect("connects");
        let head = format!("POST / HTTP/1.1\r\nhost: x\r\nx-erigon-user: sepolia-0-gatewaytest000000\r\ncontent-length: {body}\r\n\r\n[");
        raw.write_all(head.as_bytes()).await.expect("writes");
        readers.spawn(async move {
            let mut answer = vec![0u8; 4096];
            let n = raw.read(&mut answer).await.expect("reads");
            (String::from_utf8_lossy(&answer[..n]).into_owned(), raw)
        });
    }
    let (first, _raw) = readers
        .join_next()
        .await
        .expect("an answer")
        .expect("a reader");
    assert!(first.starts_with("HTTP/1.1 429"), "{first}");
    assert!(
        first.contains(&format!("limit exceeded: body_budget ({budget})")),
        "{first}"
    );
    // The others are still being read: no second answer.
    let second = tokio::time::timeout(Duration::from_millis(500), readers.join_next()).await;
    assert!(second.is_err(), "{second:?}");
    assert_eq!(gw.gateway.close().await.calls, 0);
}

/// A TCP relay in front of the node that counts the connections made to it
/// and those still open, and can cut them all, as a node closing its idle
/// connections does.
struct Relay {
    addr: SocketAddr,
    made: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    live: tokio::sync::watch::Receiver<usize>,
    pipes: std::sync::Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
}

async fn relay(node: SocketAddr) -> Relay {
    use std::sync::atomic::Ordering::SeqCst;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (live_tx, live) = tokio::sync::watch::channel(0usize);
    let live_tx = std::sync::Arc::new(live_tx);
    let pipes = std::sync::Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
    let (counted, held) = (std::sync::Arc::clone(&made), std::sync::Arc::clone(&pipes));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, SeqCst);
            live_tx.send_modify(|n| *n += 1);
            // Counted down however the pipe ends: the gateway closed it, or a cut
            // dropped it.
            let done = Closed(std::sync::Arc::clone(&live_tx));
            held.lock().expect("the relay's pipes").spawn(async move {
                let _done = done;
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(node).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Relay {
        addr,
        made,
        live,
        pipes,
    }
}

struct Closed(std::sync::Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Relay {
    fn made(&self) -> usize {
        self.made.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until exactly `n` connections are open (5 s at most).
    async fn until_live(&mut self, n: usize, what: &str) {
        let waited = tokio::time::timeout(Duration::from_secs(5), self.live.wait_for(|l| *l == n))
            .await
            .is_ok_and(|w| w.is_ok());
        if !waited {
            let open = *self.live.borrow();
            panic!("{what}: {open} connections to the node are open, not {n}");
        }
    }

    /// Closes every connection now, as a node does at its idle timeout.
    async fn cut(&mut self) {
        let mut pipes = std::mem::take(&mut *self.pipes.lock().expect("the relay's pipes"));
        pipes.abort_all();
        while pipes.join_next().await.is_some() {}
        self.until_live(0, "after the cut").await;
    }
}

#[tokio::test]
async fn calls_reuse_one_connection_to_the_node() {
    let (gw, relay) = relayed(Limits::default(), Weights::default()).await;
    let mut c = connect(&gw.socket).await;
    for i in 0..20 {
        assert_eq!(
            answered(&c.post(call(i, "eth_chainId").to_string()).await),
            1
        );
        assert_eq!(answered(&c.post(batch(3, "eth_chainId")).await), 3);
    }
    let made = relay.made();
    assert_eq!(
        made, 1,
        "{made} connections to the node for 40 sequential requests"
    );
    assert_eq!(gw.gateway.close().await.calls, 80);
}

/// Node connections follow nginx's: one for each connection from nginx. When
/// one ends, its node connection is parked as a spare, and the next nginx
/// connection takes it rather than connecting again (over TLS, a handshake);
/// none is left after a stop. A kept connection the node closed is replaced,
/// and the call on it is answered and billed once.
#[tokio::test]
async fn each_connection_has_its_own_node_connection_parked_when_it_ends() {
    let (gw, mut relay) = relayed(Limits::default(), Weights::default()).await;
    let mut a = connect(&gw.socket).await;
    let mut b = connect(&gw.socket).await;
    for i in 0..3 {
        assert_eq!(
            answered(&a.post(call(i, "eth_chainId").to_string()).await),
            1
        );
    }
    assert_eq!(
        answered(&b.post(call(9, "eth_chainId").to_string()).await),
        1
    );
    assert_eq!(relay.made(), 2, "one node connection for each of A and B");
    relay.until_live(2, "A and B connected").await;
    drop(a.sender);
    let _ = a.task.await;
    eventually(
        "A's node connection is parked when A ends",
        Duration::from_secs(5),
        || gw.gateway.spare_connections() == 1,
    )
    .await;
    relay
        .until_live(2, "A's node connection, parked, stays open")
        .await;
    let mut c = connect(&gw.socket).await;
    assert_eq!(
        answered(&c.post(call(11, "eth_chainId").to_string()).await),
        1
    );
    assert_eq!(relay.made(), 2, "C took A's parked node connection");
    assert_eq!(gw.gateway.spare_connections(), 0);
    drop(c.sender);
    let _ = c.task.await;

    relay.cut().await;
    let again = b.post(call(10, "eth_chainId").to_string()).await;
    assert_eq!(
        (again.status, answered(&again)),
        (StatusCode::OK, 1),
        "a call after the node closed B's kept connection: {:?}",
        again.body
    );
    assert_eq!(relay.made(), 3, "B's call went on a new connection");
    assert_eq!(gw.gateway.close().await.calls, 6);
    relay.until_live(0, "after the stop").await;
}

/// An answer larger than the socket's buffer, to a client that reads none of
/// it until the gateway has filled that buffer. The gateway's socket wakes it
/// only to read (`gateway::quiet`); a full buffer makes it register a second
/// descriptor of the socket for room to write. The whole answer then reaches
/// the client, billed once, and the connection serves the next call.
#[tokio::test]
async fn an_answer_larger_than_the_socket_buffer_waits_for_a_slow_reader() {
    let gw = gateway_process().await;
    let (read, mut write) = UnixStream::connect(&gw.socket)
        .await
        .expect("connects")
        .into_split();
    let mut read = BufReader::new(read);
    // The first call makes the node connection.
    send_raw(&mut write, &call(1, "eth_chainId").to_string()).await;
    let (status, first) = read_raw(&mut read).await;
    assert_eq!((status, &first["id"]), (200, &json!(1)), "{first}");
    let sockets = sockets_of(gw.pid);

    // eth_call of code (put in place by a state override) returning 1 MiB of
    // zeros: 2 MiB of hex, ten times a Unix socket's default buffer.
    let code = "0x00000000000000000000000000000000000000aa";
    let big = json!({"jsonrpc": "2.0", "id": 2, "method": "eth_call",
        "params": [{"to": code, "gas": "0x1c9c380"}, "latest",
                   {code: {"code": "0x621000006000f3"}}]});
    send_raw(&mut write, &big.to_string()).await;
    eventually(
        "the gateway registers its socket for writing",
        Duration::from_secs(10),
        || match sockets_of(gw.pid) {
            n if n == sockets + 1 => Ok(()),
            n => Err(format!("{n} sockets, {sockets} before the large answer")),
        },
    )
    .await;
    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), read_raw(&mut read))
        .await
        .expect("the large answer arrives once read (10 s)");
    let hex = answer["result"].as_str().unwrap_or_default();
    assert_eq!(
        (status, &answer["id"], hex.len()),
        (200, &json!(2), 2 + (2 << 20)),
        "the large answer, whole"
    );

    send_raw(&mut write, &call(3, "eth_chainId").to_string()).await;
    let (status, third) = read_raw(&mut read).await;
    assert_eq!((status, &third["id"]), (200, &json!(3)), "{third}");
    drop(write);
    let printed = gw.close().await;
    assert!(printed.iter().any(|l| l == "billed 3"), "{printed:?}");
}

/// Large answers to many connections, read at once or not read at all: 32
/// connections read 2 MiB answers for 2 s, then 40 ask for one each and read
/// nothing for 2 s (nginx relays without buffering, so a client that stops
/// reading stops nginx reading the gateway). The gateway, alone in its
/// process, must stay under 20 MB, and bill exactly the answers that reached
/// the clients once they read. (Its node connections' reads once grew to
/// hyper's 400 KiB each: 37 MB through nginx.)
#[tokio::test]
async fn large_answers_to_readers_and_stalled_clients_keep_the_gateway_small() {
    const PHASE: Duration = Duration::from_secs(2);
    const LIMIT_KIB: u64 = 20 * 1024;
    let gw = gateway_process().await;
    let code = "0x00000000000000000000000000000000000000aa";
    let big = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "eth_call",
            "params": [{"to": code, "gas": "0x1c9c380"}, "latest",
                       {code: {"code": "0x621000006000f3"}}]})
        .to_string()
    };
    let mut answered_calls = 0u64;
    let deadline = Instant::now() + PHASE;
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let socket = gw.socket.clone();
        let body = big(1);
        readers.spawn(async move {
            let mut c = connect(&socket).await;
            let mut served = 0u64;
            while Instant::now() < deadline {
                let a = c.post(body.clone()).await;
                if a.status == StatusCode::OK {
                    assert_eq!(a.body["result"].as_str().map(str::len), Some(2 + (2 << 20)));
                    served += 1;
                }
            }
            served
        });
    }
    while let Some(served) = readers.join_next().await {
        answered_calls += served.expect("a reader");
    }
    let after_readers = status_kib(gw.pid, "VmHWM");

    let mut stalled = Vec::new();
    for i in 0..40 {
        let (read, mut write) = UnixStream::connect(&gw.socket)
            .await
            .expect("connects")
            .into_split();
        send_raw(&mut write, &big(i)).await;
        stalled.push((BufReader::new(read), write));
    }
    // The flood's length, not a wait for an event: the gateway has all this
    // time to grow.
    tokio::time::sleep(PHASE).await;
    let after_stalled = status_kib(gw.pid, "VmHWM");
    for (mut read, write) in stalled {
        let (status, answer) = read_raw(&mut read).await;
        match status {
            200 => {
                assert!(answer["result"].is_string(), "{answer}");
                answered_calls += 1;
            }
            _ => assert_eq!(answer["error"]["code"], json!(-32005), "{answer}"),
        }
        drop(write);
    }
    println!(
        "gateway peak RSS: {after_readers} KiB after 32 readers, {after_stalled} KiB after 40 stalled; {answered_calls} answered"
    );
    for (phase, peak) in [
        ("readers", after_readers),
        ("stalled clients", after_stalled),
    ] {
        assert!(
            peak < LIMIT_KIB,
            "the gateway stays under 20 MB: {peak} KiB after the {phase}"
        );
    }
    let printed = gw.close().await;
    let billed = format!("billed {answered_calls}");
    assert!(printed.contains(&billed), "{printed:?}, want {billed}");
}

/// A POST on `write` as nginx sends it, with the activity's user.
async fn send_raw(write: &mut (impl tokio::io::AsyncWrite + Unpin), body: &str) {
    let request = format!(
        "POST / HTTP/1.1\r\nHost: gateway\r\n{USER_HEADER}: {USER}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    write.write_all(request.as_bytes()).await.expect("writes");
}

/// Reads one answer with a length: its status and its JSON body.
async fn read_raw(read: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> (u16, Value) {
    let mut line = String::new();
    read.read_line(&mut line).await.expect("a status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut length = None;
    loop {
        line.clear();
        read.read_line(&mut line).await.expect("a header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
    let mut body = vec![0; length.expect("a Content-Length")];
    read.read_exact(&mut body).await.expect("the body");
    (
        status,
        serde_json::from_slice(&body).expect("a JSON answer"),
    )
}

/// The sockets a process holds (a socket twice if it holds two descriptors).
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's descriptors")
        .filter_map(Result::ok)
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// The gateway alone in a process (its memory and descriptors are then its own), for
/// [`gateway_process`]: the test binary runs itself with this test and
/// GW_SOCKET/GW_UPSTREAM set, until stdin closes.
#[tokio::test]
#[ignore = "the gateway's own process, run by `gateway_process`"]
async fn gateway_alone() {
    let (Ok(socket), Ok(upstream)) = (std::env::var("GW_SOCKET"), std::env::var("GW_UPSTREAM"))
    else {
        return;
    };
    let upstream = upstream.parse().expect("an address");
    let spec = spec(
        Path::new(&socket),
        upstream,
        Limits::default(),
        Weights::default(),
    );
    let gateway = Gateway::start(spec, None).await.expect("starts");
    println!("ready");
    let _ = tokio::io::stdin().read(&mut [0u8; 1]).await;
    println!("billed {}", gateway.close().await.calls);
}

/// This file's test `name` as the test binary knows it: `name`, or `gateway::name`
/// should this file be a module of a larger test binary.
fn test_name(name: &str) -> String {
    match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    }
}

/// [`gateway_alone`]'s process, in front of an anvil of its own.
struct Process {
    child: Child,
    pid: u32,
    socket: PathBuf,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    _node: Anvil,
    _dir: tempfile::TempDir,
}

/// [`gateway_alone`] in front of an anvil of its own, once ready.
async fn gateway_process() -> Process {
    let node = Anvil::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("gw.sock");
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--ignored", "--exact", "--nocapture"])
        .arg(test_name("gateway_alone"))
        .env("GW_SOCKET", &socket)
        .env("GW_UPSTREAM", node.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the gateway process");
    let pid = child.id().expect("a pid");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    loop {
        match out.next_line().await.expect("reads") {
            Some(line) if line == "ready" => break,
            Some(_) => {}
            None => panic!("the gateway process ended before it was ready"),
        }
    }
    Process {
        child,
        pid,
        socket,
        out,
        _node: node,
        _dir: dir,
    }
}

impl Process {
    /// Closes the gateway and returns what it printed.
    async fn close(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let mut lines = Vec::new();
        while let Some(line) = self.out.next_line().await.expect("reads") {
            lines.push(line);
        }
        lines
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with(field)).expect(field);
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number")
}
