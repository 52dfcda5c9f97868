//! Stand-in `rpcdaemon` (see common.rs). Like the real one it exits 0 when erigon has
//! not written its salt files yet, dials erigon's private API, checks the Host header
//! against `--http.vhosts`, and answers JSON-RPC over HTTP POST on the port it is given.

#[path = "common.rs"]
mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const FLAGS: &[&str] = &[
    "--datadir",
    "--private.api.addr",
    "--http.addr",
    "--http.port",
    "--http.api",
    "--http.vhosts",
];

fn main() {
    let flags = parse_flags("rpcdaemon", FLAGS, FLAGS);
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
    let chain_id = chain_id(&chain).unwrap_or_else(|| fail("unknown chain"));
    let apis: Vec<String> = flags["--http.api"].split(',').map(String::from).collect();
    let vhosts: Vec<String> = flags["--http.vhosts"]
        .split(',')
        .map(String::from)
        .collect();
    let addr = format!("{}:{}", flags["--http.addr"], port(&flags, "--http.port"));
    schedule_exit(&behaviour);
    if !behaviour.flag("never_ready") {
        let server = tiny_http::Server::http(&addr)
            .unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")));
        say(&format!(
            "stand-in rpcdaemon: serving {chain} on http://{addr}"
        ));
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                answer(request, chain_id, &apis, &vhosts);
            }
        });
    } else {
        say("stand-in rpcdaemon: told never to become ready");
    }
    wait_for_stop_signal(&behaviour);
}

fn answer(mut request: tiny_http::Request, chain_id: u64, apis: &[String], vhosts: &[String]) {
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
    let mut body = String::new();
    if request.as_reader().read_to_string(&mut body).is_err() {
        return;
    }
    let reply = match serde_json::from_str::<Value>(&body) {
        Ok(call) => reply_to(&call, chain_id, apis),
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

fn reply_to(call: &Value, chain_id: u64, apis: &[String]) -> Value {
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
            "eth_syncing" => Some(json!(false)),
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
