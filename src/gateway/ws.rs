//! JSON-RPC over WebSocket: accept the client's upgrade, open a WebSocket to
//! the node, and relay both ways, admitting each request message and billing
//! each answer as it is relayed (matched to its call by id).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;

use super::gate::{InFlight, Refusal};
use super::http::{refused, reply, ReplyBody};
use super::jsonrpc::{self, LIMIT_EXCEEDED};
use super::limits::NOTIFICATION;
use super::meter::Expected;
use super::{stopped, Shared, WsSlot};

/// The largest message the node may send on a WebSocket. tungstenite holds
/// a whole message in memory, so this bounds each WebSocket's buffer; a
/// larger answer ends that WebSocket (over HTTP, answers stream at any size).
const MAX_NODE_MESSAGE: usize = 16 << 20;
/// Read buffers are allocated up front for every WebSocket; small ones keep
/// many idle WebSockets cheap.
const READ_BUFFER: usize = 16 << 10;
/// How long opening the node's side may take before the upgrade is refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stop waits for a Close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(100);

/// A WebSocket accepted in a request, relayed once hyper hands over the
/// connection.
pub struct Upgrade {
    on_upgrade: OnUpgrade,
    node: WebSocketStream<TcpStream>,
    _slot: OwnedSemaphorePermit,
}

pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .max_write_buffer_size(MAX_NODE_MESSAGE.saturating_mul(2))
}

/// Answers the upgrade request: 101 once the node's side is open, 429 past
/// the WebSocket limit, 502 when the node cannot be reached.
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
        Err(refusal) => {
            let text = jsonrpc::error(&Value::Null, LIMIT_EXCEEDED, &refusal.to_string());
            return refused(&refusal, text);
        }
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

async fn connect(shared: &Shared) -> Result<WebSocketStream<TcpStream>, WsError> {
    let tcp = TcpStream::connect(shared.upstream).await?;
    tcp.set_nodelay(true)?;
    let mut request = format!("ws://{}/", shared.upstream).into_client_request()?;
    request
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_static("localhost"));
    let config = config(MAX_NODE_MESSAGE);
    let (node, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
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

/// What the relay does with one client message.
enum Step {
    Forward(Ws, u64),
    Answer(Ws),
}

/// Relays one WebSocket until either side closes or the gateway stops.
pub async fn relay(upgrade: Upgrade, shared: Arc<Shared>) {
    let Upgrade {
        on_upgrade,
        mut node,
        _slot,
    } = upgrade;
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let max = usize::try_from(shared.gate.limits().body_bytes).unwrap_or(usize::MAX);
    let io = TokioIo::new(upgraded);
    let mut client = WebSocketStream::from_raw_socket(io, Role::Server, Some(config(max))).await;
    let stop = &shared.shutdown;
    let mut pending = Pending::default();
    let mut close = CloseFrame {
        code: CloseCode::Away,
        reason: "the activity has ended".into(),
    };
    loop {
        tokio::select! {
            biased;
            _ = stopped(stop.clone()) => break,
            msg = client.next() => match msg {
                Some(Ok(msg @ (Ws::Text(_) | Ws::Binary(_)))) => {
                    match request(&msg, &shared, &mut pending) {
                        Step::Forward(msg, notifications) => {
                            if !send(&mut node, msg, stop).await {
                                break;
                            }
                            shared.ledger.add(notifications);
                        }
                        Step::Answer(msg) => {
                            if !send(&mut client, msg, stop).await {
                                break;
                            }
                        }
                    }
                }
                Some(Ok(Ws::Close(_))) | None => {
                    close.code = CloseCode::Normal;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    // The message was not read, so its id is unknown: say which
                    // limit, then close, since the stream cannot resume mid-message.
                    let refusal = Refusal::new("body_bytes", shared.gate.limits().body_bytes);
                    let text = jsonrpc::error(&Value::Null, LIMIT_EXCEEDED, &refusal.to_string());
                    let answer = Ws::Text(String::from_utf8_lossy(&text).into_owned().into());
                    send(&mut client, answer, stop).await;
                    close.code = CloseCode::Size;
                    close.reason = refusal.to_string().into();
                    break;
                }
                Some(Err(_)) => return,
            },
            msg = node.next() => match msg {
                Some(Ok(msg @ (Ws::Text(_) | Ws::Binary(_)))) => {
                    let units = answers(&msg, &shared, &mut pending);
                    if !send(&mut client, msg, stop).await {
                        break;
                    }
                    shared.ledger.add(units);
                }
                Some(Ok(Ws::Close(_) | Ws::Frame(_))) | None | Some(Err(_)) => {
                    close.code = CloseCode::Error;
                    close.reason = "the node closed the connection".into();
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    // Both sides get a Close frame, bounded so that a client that reads
    // nothing cannot hold a stop; dropping the streams then ends them.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close(Some(close))).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, node.close(None)).await;
}

/// Admits a client message: an invalid one or one over a limit is answered
/// here with the error for each of its calls, and never forwarded.
fn request(msg: &Ws, shared: &Shared, pending: &mut Pending) -> Step {
    let limits = shared.gate.limits();
    let text =
        |body: Bytes| Step::Answer(Ws::Text(String::from_utf8_lossy(&body).into_owned().into()));
    let message = match jsonrpc::parse(
        msg_bytes(msg),
        usize::try_from(limits.batch).unwrap_or(usize::MAX),
    ) {
        Ok(message) => message,
        Err(bad) => return text(bad.answer()),
    };
    match shared.gate.admit(message.len()) {
        Ok(permit) => {
            let (expected, notifications) = Expected::new(message.calls(), &shared.weights);
            if !expected.done() {
                pending.0.push_back((expected, permit));
            }
            Step::Forward(msg.clone(), notifications)
        }
        Err(refusal) => text(jsonrpc::refuse(
            &message,
            LIMIT_EXCEEDED,
            &refusal.to_string(),
        )),
    }
}

/// Units to bill for a message from the node: each answer it carries, and
/// each subscription notification at the notification weight.
fn answers(msg: &Ws, shared: &Shared, pending: &mut Pending) -> u64 {
    let Ok(message) = jsonrpc::parse(msg_bytes(msg), usize::MAX) else {
        return 0;
    };
    let mut units = 0u64;
    for call in message.calls() {
        let weight = match (&call.id, call.method.as_deref()) {
            (None, Some(NOTIFICATION)) => shared.weights.notification(),
            (id, _) => pending.answer(id.as_ref()),
        };
        units = units.saturating_add(weight);
    }
    units
}

fn msg_bytes(msg: &Ws) -> &[u8] {
    match msg {
        Ws::Text(text) => text.as_bytes(),
        Ws::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// Sends unless the gateway stops first; false when the relay must end.
async fn send<S>(sink: &mut S, msg: Ws, stop: &watch::Receiver<bool>) -> bool
where
    S: futures::Sink<Ws> + Unpin,
{
    tokio::select! {
        biased;
        _ = stopped(stop.clone()) => false,
        sent = sink.send(msg) => sent.is_ok(),
    }
}
