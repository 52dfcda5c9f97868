//! JSON-RPC over WebSocket: accept the client's upgrade, open a WebSocket to
//! the node, and relay both ways frame by frame.
//!
//! A client's message is read whole, within `body_bytes` and the activity's
//! body budget, since it must be parsed to be admitted; it is then sent to
//! the node as one frame. The node's frames go to the client as they arrive,
//! a piece at a time, each answer billed as the piece that ends it is
//! written: an answer of any size costs one fixed buffer, as over HTTP.
//! Ping and Pong frames pass through both ways, so each side keeps its own
//! liveness checks (geth closes a WebSocket that does not answer its pings).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use super::frame::{self, Head, Writer};
use super::gate::{InFlight, Refusal};
use super::http::{refused, reply, ReplyBody};
use super::jsonrpc;
use super::limits::NOTIFICATION;
use super::link;
use super::meter::Expected;
use super::scan::Scanner;
use super::{stopped, Shared, WsSlot};

/// Each side's read buffer, which frame headers and control frames are
/// read from.
const READ_BUFFER: usize = 8 << 10;
/// The most of a node's frame held at once on its way to the client.
const CHUNK: usize = 16 << 10;
/// How long opening the node's side may take before the upgrade is refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A client's message must arrive whole within this from its first frame,
/// as an HTTP body must: a slow one holds its share of the body budget.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop waits for the Close frames to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(100);
/// The gateway's own answers (errors, refusals) waiting for a message
/// boundary on the client's side; past it, the client is not read.
const OWN_ANSWERS: usize = 8;

const TEXT: OpCode = OpCode::Data(Data::Text);

/// A WebSocket accepted in a request, relayed once hyper hands over the
/// connection.
pub struct Upgrade {
    on_upgrade: OnUpgrade,
    node: Upgraded,
    _slot: OwnedSemaphorePermit,
}

pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the upgrade request: 101 once the node's side is open, 429 past
/// the WebSocket limit, 502 when the node cannot be reached. No extension
/// and no subprotocol is accepted, so frames pass through unchanged.
pub async fn accept(
    req: &mut Request<Incoming>,
    shared: &Arc<Shared>,
    slot: &WsSlot,
) -> Response<ReplyBody> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return reply(StatusCode::BAD_REQUEST, Bytes::new());
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let permit = match shared.gate.open_websocket() {
        Ok(permit) => permit,
        Err(refusal) => return refused(&refusal, refusal.error()),
    };
    let node = match tokio::time::timeout(CONNECT_TIMEOUT, connect(shared)).await {
        Ok(Ok(node)) => node,
        failed => {
            log::warn!("gateway: no WebSocket to the node: {failed:?}");
            let text = jsonrpc::error(
                &Value::Null,
                jsonrpc::INTERNAL_ERROR,
                "the node is unavailable",
            );
            return reply(StatusCode::BAD_GATEWAY, text);
        }
    };
    let upgrade = Upgrade {
        on_upgrade: hyper::upgrade::on(req),
        node,
        _slot: permit,
    };
    if let Ok(mut slot) = slot.lock() {
        *slot = Some(upgrade);
    }
    let mut resp = reply(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    resp
}

/// Opens the node's side: hyper's client upgrade, checked as RFC 6455 says.
async fn connect(shared: &Shared) -> Result<Upgraded, String> {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(link::dial(shared.upstream).await?)
            .await
            .map_err(|e| e.to_string())?;
    let key = generate_key();
    let req = Request::get("/")
        // rpcdaemon's and geth's default --ws vhosts check is skipped for
        // upgrades, but a Host is required.
        .header(header::HOST, "localhost")
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, key.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let upgrade = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let want = derive_accept_key(key.as_bytes());
        let accepted = resp.headers().get(header::SEC_WEBSOCKET_ACCEPT);
        let extensions = resp.headers().get(header::SEC_WEBSOCKET_EXTENSIONS);
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS
            || accepted.map(HeaderValue::as_bytes) != Some(want.as_bytes())
            || extensions.is_some()
        {
            return Err(format!(
                "the node answered the upgrade with {}",
                resp.status()
            ));
        }
        hyper::upgrade::on(resp).await.map_err(|e| e.to_string())
    };
    let driven = async { conn.with_upgrades().await.map_err(|e| e.to_string()) };
    let (node, ()) = tokio::try_join!(upgrade, driven)?;
    Ok(node)
}

/// Request messages sent to the node whose answers have not all come back,
/// oldest first; each holds its in-flight slot.
#[derive(Default)]
struct Pending(VecDeque<(Expected, InFlight)>);

impl Pending {
    /// Units to bill for one answer object the node sent.
    fn answer(&mut self, id: Option<&Value>) -> u64 {
        let by_id = self.0.iter_mut().find_map(|(e, _)| e.answer_by_id(id));
        let weight = by_id.or_else(|| self.0.iter_mut().find_map(|(e, _)| e.answer_anonymous()));
        self.0.retain(|(e, _)| !e.done());
        weight.unwrap_or(0)
    }
}

/// Why a relay ended, which decides what each side is told.
enum End {
    Stopped,
    /// The client sent a Close frame, or went away.
    ClientLeft,
    /// The client broke the protocol or a limit: the Close frame's code and
    /// reason, after a last JSON-RPC answer if there is one.
    Client(CloseCode, String, Option<Bytes>),
    Node,
}

impl End {
    fn protocol(why: impl ToString) -> End {
        End::Client(CloseCode::Protocol, why.to_string(), None)
    }

    /// A read from the client failed: a frame it should not have sent, or
    /// the connection itself.
    fn client_read(e: &io::Error) -> End {
        match e.kind() {
            io::ErrorKind::InvalidData => End::protocol(e),
            _ => End::ClientLeft,
        }
    }
}

/// Relays one WebSocket until either side closes or the gateway stops.
pub async fn relay(upgrade: Upgrade, shared: Arc<Shared>) {
    let Upgrade {
        on_upgrade,
        node,
        _slot,
    } = upgrade;
    let Ok(client) = on_upgrade.await else {
        return;
    };
    let (client_rd, client_wr) = tokio::io::split(TokioIo::new(client));
    let (node_rd, node_wr) = tokio::io::split(TokioIo::new(node));
    let mut to_client = Writer::new(client_wr, false);
    let mut to_node = Writer::new(node_wr, true);
    let pending = Mutex::new(Pending::default());
    let (own_tx, own_rx) = mpsc::channel(OWN_ANSWERS);
    let client_rd = BufReader::with_capacity(READ_BUFFER, client_rd);
    let node_rd = BufReader::with_capacity(READ_BUFFER, node_rd);
    let end = tokio::select! {
        biased;
        _ = stopped(shared.shutdown.clone()) => End::Stopped,
        end = upstream(client_rd, &mut to_node, own_tx, &shared, &pending) => end,
        end = downstream(node_rd, &mut to_client, own_rx, &shared, &pending) => end,
    };
    let (code, reason, last) = match end {
        End::Stopped => (CloseCode::Away, "the activity has ended".into(), None),
        End::ClientLeft => (CloseCode::Normal, String::new(), None),
        End::Client(code, reason, last) => (code, reason, last),
        End::Node => (
            CloseCode::Error,
            "the node closed the connection".into(),
            None,
        ),
    };
    // Both sides get a Close frame where one can go, bounded so that a
    // client that reads nothing cannot hold a stop; dropping the streams
    // then ends them.
    let client_side = async {
        if let Some(answer) = last {
            let _ = to_client.frame(TEXT, &mut answer.to_vec()).await;
        }
        to_client.close(code, &reason).await;
    };
    let node_side = to_node.close(CloseCode::Normal, "");
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        tokio::join!(client_side, node_side);
    })
    .await;
}

/// Reads the client's messages, admits each and sends it to the node, or
/// has the refusal answered; passes its Ping and Pong frames on.
async fn upstream<R, W>(
    mut rd: R,
    node: &mut Writer<W>,
    own: mpsc::Sender<Bytes>,
    shared: &Shared,
    pending: &Mutex<Pending>,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let head = match frame::read_head(&mut rd).await {
            Ok(Some(head)) => head,
            Ok(None) => return End::ClientLeft,
            Err(e) => return End::client_read(&e),
        };
        if let Err(why) = head.check(true) {
            return End::protocol(why);
        }
        let (opcode, mut message, budget) = match head.header.opcode {
            OpCode::Control(Control::Close) => return End::ClientLeft,
            OpCode::Control(_) => match pass_control(&mut rd, &head, node).await {
                Ok(()) => continue,
                Err(end) => return end,
            },
            OpCode::Data(Data::Continue) => {
                return End::protocol("a continuation frame outside a message")
            }
            OpCode::Data(_) => {
                match tokio::time::timeout(
                    MESSAGE_TIMEOUT,
                    read_message(&mut rd, head, node, shared),
                )
                .await
                {
                    Ok(Ok(read)) => read,
                    Ok(Err(end)) => return end,
                    Err(_) => {
                        let why = format!("a message must arrive whole within {MESSAGE_TIMEOUT:?}");
                        return End::Client(CloseCode::Policy, why, None);
                    }
                }
            }
        };
        let limits = shared.gate.limits();
        let batch = usize::try_from(limits.batch).unwrap_or(usize::MAX);
        let answer = match jsonrpc::parse(&message, batch) {
            Err(bad) => bad.answer(),
            Ok(parsed) => match shared.gate.admit(parsed.len()) {
                Err(refusal) => refusal.errors_for(&parsed),
                Ok(permit) => {
                    let (expected, notifications) = Expected::new(parsed.calls(), &shared.weights);
                    if !expected.done() {
                        if let Ok(mut pending) = pending.lock() {
                            pending.0.push_back((expected, permit));
                        }
                    }
                    if node.frame(opcode, &mut message).await.is_err() {
                        return End::Node;
                    }
                    shared.ledger.add(notifications);
                    continue;
                }
            },
        };
        drop((message, budget));
        if own.send(answer).await.is_err() {
            return End::ClientLeft;
        }
    }
}

/// Passes a client's Ping or Pong to the node.
async fn pass_control<R, W>(rd: &mut R, head: &Head, node: &mut Writer<W>) -> Result<(), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut payload = frame::read_payload(rd, head)
        .await
        .map_err(|e| End::client_read(&e))?;
    node.frame(head.header.opcode, &mut payload)
        .await
        .map_err(|_| End::Node)
}

/// Reads one message's frames (passing control frames between them on) into
/// one buffer, within `body_bytes` and the activity's body budget; returns
/// its opcode, its payload and its share of the budget.
async fn read_message<R, W>(
    rd: &mut R,
    first: Head,
    node: &mut Writer<W>,
    shared: &Shared,
) -> Result<(OpCode, Vec<u8>, OwnedSemaphorePermit), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limit = shared.gate.limits().body_bytes;
    let too_long = || {
        let refusal = Refusal::new("body_bytes", limit);
        End::Client(CloseCode::Size, refusal.to_string(), Some(refusal.error()))
    };
    let max = u64::from(limit);
    if first.len > max {
        return Err(too_long());
    }
    // One frame needs its length; a fragmented message may take the limit.
    let reserve = if first.header.is_final {
        first.len
    } else {
        max
    };
    let budget = shared
        .gate
        .wait_body(reserve)
        .await
        .ok_or(End::ClientLeft)?;
    let opcode = first.header.opcode;
    let mut message = Vec::new();
    let mut head = first;
    loop {
        if head.is_control() {
            pass_control(rd, &head, node).await?;
        } else {
            let total = u64::try_from(message.len())
                .unwrap_or(u64::MAX)
                .saturating_add(head.len);
            if total > max {
                return Err(too_long());
            }
            let start = message.len();
            let len = usize::try_from(head.len).map_err(|_| too_long())?;
            // Exactly the frame's length, filled as bytes arrive: no doubling,
            // and no page is touched for bytes announced and never sent.
            message.reserve_exact(len);
            let mut frame = (&mut *rd).take(head.len);
            while message.len().saturating_sub(start) < len {
                match frame.read_buf(&mut message).await {
                    Ok(0) => return Err(End::ClientLeft),
                    Ok(_) => {}
                    Err(e) => return Err(End::client_read(&e)),
                }
            }
            if let (Some(mask), Some(new)) = (head.header.mask, message.get_mut(start..)) {
                frame::unmask(new, mask, 0);
            }
            if head.header.is_final {
                return Ok((opcode, message, budget));
            }
        }
        head = match frame::read_head(rd).await {
            Ok(Some(head)) => head,
            Ok(None) => return Err(End::ClientLeft),
            Err(e) => return Err(End::client_read(&e)),
        };
        head.check(true).map_err(End::protocol)?;
        match head.header.opcode {
            OpCode::Control(Control::Close) => return Err(End::ClientLeft),
            OpCode::Data(Data::Continue) | OpCode::Control(_) => {}
            OpCode::Data(_) => return Err(End::protocol("a new message inside a fragmented one")),
        }
    }
}

/// Relays the node's frames to the client as they arrive, billing each
/// answer as the piece that ends it is written; writes the gateway's own
/// answers between messages.
async fn downstream<R, W>(
    mut rd: R,
    client: &mut Writer<W>,
    mut own: mpsc::Receiver<Bytes>,
    shared: &Shared,
    pending: &Mutex<Pending>,
) -> End
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut chunk = vec![0u8; CHUNK];
    let mut scanner = Scanner::default();
    let mut in_message = false;
    loop {
        if !in_message {
            // Waiting for the node's next frame takes nothing from the
            // stream, so an answer of the gateway's own can go first.
            tokio::select! {
                Some(answer) = own.recv() => {
                    if client.frame(TEXT, &mut answer.to_vec()).await.is_err() {
                        return End::ClientLeft;
                    }
                    continue;
                }
                _ = frame::readable(&mut rd) => {}
            }
        }
        let head = match frame::read_head(&mut rd).await {
            Ok(Some(head)) if head.check(false).is_ok() => head,
            _ => return End::Node,
        };
        match head.header.opcode {
            OpCode::Control(Control::Close) => return End::Node,
            OpCode::Control(op) => {
                let Ok(mut payload) = frame::read_payload(&mut rd, &head).await else {
                    return End::Node;
                };
                if client
                    .frame(OpCode::Control(op), &mut payload)
                    .await
                    .is_err()
                {
                    return End::ClientLeft;
                }
            }
            OpCode::Data(data) => {
                if (data == Data::Continue) != in_message {
                    return End::Node;
                }
                let header = &head.header;
                if client
                    .start(header.opcode, header.is_final, head.len)
                    .is_err()
                {
                    return End::ClientLeft;
                }
                let mut left = head.len;
                loop {
                    let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                    let n = match rd.read(&mut chunk[..want]).await {
                        Ok(n) if n > 0 || want == 0 => n,
                        _ => return End::Node,
                    };
                    let piece = &chunk[..n];
                    let units = bill(&mut scanner, piece, shared, pending);
                    if client.payload(piece).await.is_err() {
                        return End::ClientLeft;
                    }
                    shared.ledger.add(units);
                    left = left.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
                    if left == 0 {
                        break;
                    }
                }
                in_message = !header.is_final;
                if !in_message {
                    scanner.reset();
                }
            }
        }
    }
}

/// Units to bill for a piece of a node's message: each answer that ends in
/// it, and each subscription notification at the notification weight.
fn bill(scanner: &mut Scanner, piece: &[u8], shared: &Shared, pending: &Mutex<Pending>) -> u64 {
    let Ok(mut pending) = pending.lock() else {
        return 0;
    };
    let mut units = 0u64;
    scanner.feed(piece, |found| {
        let weight = match (&found.id, found.method.as_deref()) {
            (None, Some(NOTIFICATION)) => shared.weights.notification(),
            (id, _) => pending.answer(id.as_ref()),
        };
        units = units.saturating_add(weight);
    });
    units
}
