//! Stand-in `rpcdaemon` (see common.rs). Like the real one it exits 0 when erigon has
//! not written its salt files yet, dials erigon's private API, checks the Host header
//! of plain HTTP requests against `--http.vhosts`, refuses bodies that are not JSON
//! (415), and answers JSON-RPC over HTTP POST and over WebSocket (`--ws`) on the one
//! port it is given.

// Tests and tools are exempt from Cargo.toml's habits for src/: a failed unwrap is a
// failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The flags this stand-in accepts, written out rather than taken from the runtime's
/// `nodespec`: it checks the runtime's command line against its own idea of rpcdaemon,
/// so a flag the runtime misspells or invents fails here instead of agreeing with itself.
const FLAGS: &[&str] = &[
    "--datadir",
    "--private.api.addr",
    "--http.addr",
    "--http.port",
    "--http.api",
    "--http.vhosts",
    "--ws",
    "--ws.port",
];

/// A check of a flag's value.
type Valid = fn(&str) -> bool;

/// rpcdaemon's bounds on one call, which it does not require (they have defaults),
/// each checked for the form the real one parses.
const BOUNDS: &[(&str, Valid)] = &[
    ("--rpc.evmtimeout", go_duration),
    ("--rpc.gascap", digits),
    ("--rpc.returndata.limit", digits),
    ("--rpc.batch.concurrency", digits),
];

fn digits(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

/// What Go's time.ParseDuration takes, in the forms a runtime would write.
fn go_duration(v: &str) -> bool {
    ["ms", "s", "m", "h"]
        .iter()
        .any(|unit| v.strip_suffix(unit).is_some_and(digits))
}

fn main() {
    let allowed: Vec<&str> = FLAGS
        .iter()
        .copied()
        .chain(BOUNDS.iter().map(|b| b.0))
        .collect();
    let flags = parse_flags("rpcdaemon", &allowed, FLAGS);
    for (flag, valid) in BOUNDS {
        if let Some(value) = flags.get(*flag) {
            if !valid(value) {
                fail(&format!("invalid value {value:?} for flag {flag}"));
            }
        }
    }
    let datadir = datadir(&flags);
    record(&datadir, "rpcdaemon");
    let behaviour = Behaviour::load(&datadir, "rpcdaemon");
    if let Some(code) = behaviour.number("exit_at_start") {
        eprintln!("stand-in rpcdaemon told to fail at start");
        std::process::exit(code as i32);
    }
    if !datadir.join("snapshots/salt-state.txt").is_file() {
        say("cannot start RPC daemon: salt files missing in datadir");
        std::process::exit(0);
    }
    let private = &flags["--private.api.addr"];
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(private).is_err() {
        if Instant::now() > deadline {
            fail(&format!("cannot reach erigon's private API at {private}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let erigon: Value = std::fs::read_to_string(datadir.join("standin-erigon.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| fail("no standin-erigon.json: was erigon started on this datadir?"));
    let chain = erigon["args"]
        .as_array()
        .and_then(|a| a.iter().find_map(|x| x.as_str()?.strip_prefix("--chain=")))
        .unwrap_or_else(|| fail("erigon's record has no --chain"))
        .to_string();
    // `{"rpcdaemon": {"chain_id": N}}` makes it answer for another chain, as a node
    // pointed at the wrong network would.
    let chain_id = behaviour
        .number("chain_id")
        .or_else(|| chain_id(&chain))
        .unwrap_or_else(|| fail("unknown chain"));
    let apis: Vec<String> = flags["--http.api"].split(',').map(String::from).collect();
    let node = std::sync::Arc::new(Node {
        chain_id,
        apis,
        datadir: datadir.clone(),
    });
    let vhosts: Vec<String> = flags["--http.vhosts"]
        .split(',')
        .map(String::from)
        .collect();
    let addr = format!("{}:{}", flags["--http.addr"], port(&flags, "--http.port"));
    if flags["--ws"] != "true" || port(&flags, "--ws.port") != port(&flags, "--http.port") {
        fail("stand-in rpcdaemon expects --ws=true and --ws.port equal to --http.port (one listener)");
    }
    schedule_exit(&behaviour);
    if !behaviour.flag("never_ready") {
        let server = tiny_http::Server::http(&addr)
            .unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")));
        say(&format!(
            "stand-in rpcdaemon: serving {chain} on http://{addr}"
        ));
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                answer(request, &node, &vhosts);
            }
        });
    } else {
        say("stand-in rpcdaemon: told never to become ready");
    }
    wait_for_stop_signal(&behaviour);
}

/// What the stand-in node serves.
struct Node {
    chain_id: u64,
    apis: Vec<String>,
    datadir: std::path::PathBuf,
}

fn answer(mut request: tiny_http::Request, node: &std::sync::Arc<Node>, vhosts: &[String]) {
    if let Some(key) = websocket_key(&request) {
        // Upgrades skip the vhosts check, as in rpcdaemon's handler.
        return serve_websocket(request, &key, node.clone());
    }
    let host = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| h.value.as_str().to_string())
        .unwrap_or_default();
    if !host_allowed(&host, vhosts) {
        let _ = request.respond(
            tiny_http::Response::from_string("invalid host specified\n").with_status_code(403),
        );
        return;
    }
    if *request.method() != tiny_http::Method::Post {
        let _ = request.respond(
            tiny_http::Response::from_string("method not allowed\n").with_status_code(405),
        );
        return;
    }
    let json_body = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .is_some_and(|h| h.value.as_str().starts_with("application/json"));
    if !json_body {
        let _ = request.respond(
            tiny_http::Response::from_string(
                "invalid content type, only application/json is supported\n",
            )
            .with_status_code(415),
        );
        return;
    }
    let mut body = String::new();
    if request.as_reader().read_to_string(&mut body).is_err() {
        return;
    }
    let reply = match serde_json::from_str::<Value>(&body) {
        Ok(call) => answer_call_or_batch(&call, node),
        Err(_) => {
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}})
        }
    };
    let header = tiny_http::Header::from_bytes("Content-Type", "application/json").ok();
    let mut response = tiny_http::Response::from_string(reply.to_string());
    if let Some(h) = header {
        response = response.with_header(h);
    }
    let _ = request.respond(response);
}

/// `<datadir>/standin-syncing`, when present, is the sync in progress
/// (`{"current": N, "highest": M, "stage": "…"}`); removing it finishes the sync.
fn sync_state(node: &Node) -> Option<Value> {
    let text = std::fs::read_to_string(node.datadir.join("standin-syncing")).ok()?;
    serde_json::from_str(&text).ok()
}

/// A batch is answered element by element, in one array, as rpcdaemon does; an empty
/// batch is an invalid request.
fn answer_call_or_batch(call: &Value, node: &Node) -> Value {
    match call.as_array() {
        Some(batch) if batch.is_empty() => {
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "empty batch"}})
        }
        Some(batch) => Value::Array(batch.iter().map(|c| reply_to(c, node)).collect()),
        None => reply_to(call, node),
    }
}

fn reply_to(call: &Value, node: &Node) -> Value {
    // `<datadir>/standin-chain-id` switches the chain mid-run, as a misconfigured
    // replacement node would.
    let chain_id = std::fs::read_to_string(node.datadir.join("standin-chain-id"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(node.chain_id);
    let apis = &node.apis;
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = call
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let namespace = method.split('_').next().unwrap_or_default();
    let result = if !apis.iter().any(|a| a == namespace) {
        None
    } else {
        match method {
            "eth_chainId" => Some(json!(format!("{chain_id:#x}"))),
            "eth_blockNumber" => Some(json!("0x10")),
            "eth_syncing" => Some(match sync_state(node) {
                None => json!(false),
                Some(sync) => json!({
                    "startingBlock": "0x0",
                    "currentBlock": format!("{:#x}", sync["current"].as_u64().unwrap_or(0)),
                    "highestBlock": format!("{:#x}", sync["highest"].as_u64().unwrap_or(0)),
                    "stages": [{"stage_name": sync["stage"].as_str().unwrap_or("Execution"), "block_number": format!("{:#x}", sync["current"].as_u64().unwrap_or(0))}],
                }),
            }),
            "eth_getBlockByNumber" => {
                // The head block, 12 s old, as a node a slot behind would have it.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Some(
                    json!({"number": "0x10", "timestamp": format!("{:#x}", now - 12), "hash": format!("0x{}", "ab".repeat(32))}),
                )
            }
            "net_peerCount" => Some(json!("0x5")),
            "web3_clientVersion" => Some(json!("erigon/3.1.0-standin/linux-amd64/go1.24")),
            _ => None,
        }
    };
    match result {
        Some(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        None => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("the method {method} does not exist/is not available")}})
        }
    }
}

/// rpcdaemon lets IP addresses through and checks names against the vhosts list.
fn host_allowed(host: &str, vhosts: &[String]) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.parse::<std::net::IpAddr>().is_ok()
        || vhosts
            .iter()
            .any(|v| v == "*" || v.eq_ignore_ascii_case(name))
}

fn websocket_key(request: &tiny_http::Request) -> Option<String> {
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.to_string().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_ascii_lowercase())
    };
    let upgrade = header("Upgrade")? == "websocket";
    let connection = header("Connection")?.contains("upgrade");
    let key = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Sec-WebSocket-Key"))?
        .value
        .as_str()
        .to_string();
    (upgrade && connection).then_some(key)
}

/// RFC 6455, enough for JSON-RPC: text frames in, text frames out, ping, close.
fn serve_websocket(request: tiny_http::Request, key: &str, node: std::sync::Arc<Node>) {
    use base64::Engine;
    use sha1::Digest;
    let mut digest = sha1::Sha1::new();
    digest.update(key.as_bytes());
    digest.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(digest.finalize());
    let mut response = tiny_http::Response::new_empty(tiny_http::StatusCode(101));
    for header in [
        "Upgrade: websocket".to_string(),
        "Connection: Upgrade".to_string(),
        format!("Sec-WebSocket-Accept: {accept}"),
    ] {
        if let Ok(h) = header.parse::<tiny_http::Header>() {
            response = response.with_header(h);
        }
    }
    let mut stream = request.upgrade("websocket", response);
    std::thread::spawn(move || {
        while let Some((opcode, payload)) = read_frame(&mut stream) {
            let reply = match opcode {
                0x1 => {
                    let call: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                    (
                        0x1,
                        answer_call_or_batch(&call, &node).to_string().into_bytes(),
                    )
                }
                0x9 => (0xA, payload),
                0x8 => {
                    let _ = write_frame(&mut stream, 0x8, &payload);
                    return;
                }
                _ => continue,
            };
            if write_frame(&mut stream, reply.0, &reply.1).is_err() {
                return;
            }
        }
    });
}

fn read_frame(stream: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let mut len = u64::from(head[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        stream.read_exact(&mut b).ok()?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        stream.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    if len > 32 * 1024 * 1024 {
        return None;
    }
    let mut mask = [0u8; 4];
    if masked {
        stream.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).ok()?;
    if masked {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
    }
    Some((opcode, payload))
}

fn write_frame(stream: &mut impl Write, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    stream.write_all(&frame)?;
    stream.flush()
}
