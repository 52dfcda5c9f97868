//! JSON-RPC over WebSocket: accept the client's upgrade, open a WebSocket to
//! the node, and relay both ways frame by frame.
//!
//! A client's message is read whole, within `body_bytes` and the activity's
//! body budget, since it must be parsed to be screened and admitted; what
//! passes is sent to the node as one frame, and the gateway answers the rest
//! itself in a message of its own. The node's frames go to the client as they
//! arrive, a piece at a time, each answer billed as the piece that ends it is
//! written: an answer of any size costs one fixed buffer, as over HTTP.
//!
//! What the node must never do for free or without bound:
//! - **Pings.** The gateway answers a client's Ping itself, at a bounded rate
//!   (past it the WebSocket is closed, 1008); the node never sees one. The
//!   node's own Pings go to the client, and only as many Pongs come back.
//! - **Subscriptions.** At most `subscriptions` live per WebSocket, counted
//!   from the node's answers (a subscription made, one ended).
//! - **A client that stops reading.** A write to it that makes no progress
//!   for [`WRITE_STALL`] closes the WebSocket (1008), so that neither the
//!   gateway nor the node (which would queue notifications for it) holds a
//!   backlog for it.
//! - **A call past the call timeout.** Its calls get an error and are billed,
//!   and the WebSocket closes (1008), which makes Erigon cancel them.
//!
//! Every failure, whether it gets a message of the gateway's own or ends the
//! WebSocket, is worded and counted by `error`, as the same failure over
//! HTTP is.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use super::error::{Close, Error};
use super::frame::{self, Head, Writer};
use super::gate::{InFlight, TokenBucket};
use super::jsonrpc;
use super::limits::NOTIFICATION;
use super::meter::{notifications_taken, Bill, Expected, Kind};
use super::metered::ReplyBody;
use super::reply::reply;
use super::scan::{Found, Scanner};
use super::shared::{stopped, Admitted, Shared};
use crate::metrics::{Meters, WebSocketGauge};

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
/// The gateway's own frames (errors, refusals, Pongs) waiting for a message
/// boundary on the client's side; past it, the client is not read.
const OWN_ANSWERS: usize = 8;
/// A write to the client that makes no progress for this long means it has
/// stopped reading: the WebSocket is closed rather than buffered for.
pub const WRITE_STALL: Duration = Duration::from_secs(5);
/// Pings (and Pongs nobody asked for) a client may send: this many a second,
/// after a burst of [`PING_BURST`]. Clients ping every few seconds at most.
const PINGS_PER_SEC: u32 = 2;
const PING_BURST: u32 = 16;

const TEXT: OpCode = OpCode::Data(Data::Text);

/// A WebSocket accepted in a request, relayed once hyper hands over the
/// connection.
pub struct Upgrade {
    on_upgrade: OnUpgrade,
    node: Upgraded,
    _slot: OwnedSemaphorePermit,
}

/// The WebSocket a connection's request accepted, if any, handed from the
/// request to the connection once hyper lets go of it.
pub type Slot = Arc<Mutex<Option<Upgrade>>>;

pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the upgrade request: 101 once the node's side is open; past the
/// WebSocket limit, or when the node cannot be reached, the failure is
/// returned for `error` to answer. No extension and no subprotocol is
/// accepted, so frames pass through unchanged.
pub async fn accept(
    req: &mut Request<Incoming>,
    shared: &Arc<Shared>,
    slot: &Slot,
) -> Result<Response<ReplyBody>, Error> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Error::NoWebSocketKey);
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let permit = shared.gate.open_websocket().map_err(Error::WebSockets)?;
    let node = match tokio::time::timeout(CONNECT_TIMEOUT, connect(shared)).await {
        Ok(Ok(node)) => node,
        failed => {
            log::warn!("gateway: no WebSocket to the node: {failed:?}");
            return Err(Error::NoNodeWebSocket);
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
    let mut resp = reply(StatusCode::SWITCHING_PROTOCOLS, Bytes::new()).map(Either::Left);
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    Ok(resp)
}

/// Opens the node's side: hyper's client upgrade, checked as RFC 6455 says.
async fn connect(shared: &Shared) -> Result<Upgraded, String> {
    let node = shared.upstream.ws();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(
        shared
            .upstream
            .dial(node)
            .await
            .map_err(|e| format!("{node}: {e}"))?,
    )
    .await
    .map_err(|e| e.to_string())?;
    let key = generate_key();
    let req = Request::get(node.path().clone())
        // rpcdaemon's and geth's --ws vhosts check is skipped for upgrades;
        // a proxy in front of the node routes by it.
        .header(header::HOST, node.authority().clone())
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

/// A request message sent to the node, until the node's message that
/// answers it ends.
struct Sent {
    /// Tells it from the others while it waits.
    seq: u64,
    expected: Expected,
    _slot: InFlight,
    at: Instant,
    /// A batch (its timeout's answer is an array, and a single object for an
    /// answer means the node refused it whole).
    batch: bool,
    /// Its notifications' units, billed once the answer shows the node took
    /// them.
    notifications: u64,
    /// Whether the node's answer time is counted yet (at its first answer).
    timed: bool,
}

/// Request messages sent to the node and not yet answered, oldest first.
struct Pending {
    sent: VecDeque<Sent>,
    seq: u64,
    /// Subscriptions the node confirmed and has not ended.
    live: usize,
    /// The WebSocket and its subscriptions, in the operator's counters.
    gauge: WebSocketGauge,
}

impl Pending {
    fn new(meters: &Arc<Meters>) -> Pending {
        Pending {
            sent: VecDeque::new(),
            seq: 0,
            live: 0,
            gauge: meters.websocket(),
        }
    }

    fn push(&mut self, expected: Expected, slot: InFlight, batch: bool, notifications: u64) {
        self.seq = self.seq.wrapping_add(1);
        self.sent.push_back(Sent {
            seq: self.seq,
            expected,
            _slot: slot,
            at: Instant::now(),
            batch,
            notifications,
            timed: false,
        });
    }

    /// What one answer object bills, and the message it answers: its call's,
    /// matched by key across the messages in flight, else the oldest call
    /// still owed (an answer is billed once whatever its id); a subscription
    /// made or ended is counted, and so is the node's time to the message's
    /// first answer.
    fn answer(&mut self, found: &Found, meters: &Meters) -> Option<(Bill, u64)> {
        let key = found.key;
        let by_key = self.sent.iter_mut().find_map(|s| {
            let a = s.expected.answer_by_key(key)?;
            Some((a, s))
        });
        let (answered, sent) = match by_key {
            Some(found) => found,
            None => self.sent.iter_mut().find_map(|s| {
                let a = s.expected.answer_first()?;
                Some((a, s))
            })?,
        };
        if !sent.timed {
            sent.timed = true;
            meters.node_time(sent.at.elapsed());
        }
        let seq = sent.seq;
        meters.answered(answered.method, found.error);
        match answered.kind {
            Kind::Subscribe if !found.error => self.live = self.live.saturating_add(1),
            Kind::Unsubscribe if found.result_true => self.live = self.live.saturating_sub(1),
            _ => {}
        }
        self.gauge.subscriptions(self.live);
        Some((Bill::call(answered.weight), seq))
    }

    /// The node's message that answered the messages `answered` ended: they
    /// are done, whatever they still owed (a node answers a request message
    /// with one message; anvil answers a batch it cannot read with a single
    /// error), and their slots free at once. Their notifications are billed
    /// unless that message refused a batch whole (`shape`: whether it was an
    /// array).
    fn finish(&mut self, answered: &[u64], shape: Option<bool>) -> Bill {
        let mut bill = Bill::default();
        self.sent.retain(|s| {
            if !answered.contains(&s.seq) {
                return true;
            }
            if notifications_taken(s.batch, shape) {
                bill = bill.plus(Bill::units(s.notifications));
            }
            false
        });
        bill
    }

    /// Room for new subscriptions: the limit, less those live and asked for.
    fn subscription_room(&self, limit: u32) -> usize {
        let asked: usize = self.sent.iter().map(|s| s.expected.subscribes()).sum();
        usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.live.saturating_add(asked))
    }

    /// When the oldest message in flight runs out of time.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        // `call_timeout_ms` is a u32 (49 days at most), far inside Instant's range; an
        // overflow would only mean no deadline.
        self.sent.front().and_then(|s| s.at.checked_add(timeout))
    }
}

/// Why a relay ended, which decides what each side is told.
enum End {
    /// The client sent a Close frame, or went away.
    ClientLeft,
    /// A failure (the gateway's stop, the node, the client breaking the
    /// protocol or a limit), which `error` turns into the client's Close
    /// frame, after a last JSON-RPC answer if there is one.
    Failed(Error),
}

impl From<Error> for End {
    fn from(error: Error) -> End {
        End::Failed(error)
    }
}

impl End {
    fn protocol(why: impl ToString) -> End {
        End::Failed(Error::Protocol(why.to_string()))
    }

    /// The node closed its side or broke the protocol.
    fn node() -> End {
        End::Failed(Error::NodeClosed)
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

/// Control frames between the two sides: the client's Pings answered here
/// (through the writer to the client), its Pongs passed on only when the
/// node asked for them, all within a rate.
struct Controls {
    own: mpsc::Sender<(OpCode, Vec<u8>)>,
    meters: Arc<Meters>,
    rate: TokenBucket,
    /// Pings the node sent that the client has not answered yet.
    node_pings: Arc<AtomicU32>,
}

impl Controls {
    async fn handle<R, W>(&self, rd: &mut R, head: &Head, node: &mut Writer<W>) -> Result<(), End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut payload = frame::read_payload(rd, head)
            .await
            .map_err(|e| End::client_read(&e))?;
        let op = head.header.opcode;
        let asked = op == OpCode::Control(Control::Pong)
            && self
                .node_pings
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
        if asked {
            return node.frame(op, &mut payload).await.map_err(|_| End::node());
        }
        if self.rate.take(1).is_err() {
            let per_sec = PINGS_PER_SEC;
            return Err(Error::Pings { per_sec }.into());
        }
        if op == OpCode::Control(Control::Ping) {
            let pong = (OpCode::Control(Control::Pong), payload);
            self.own.send(pong).await.map_err(|_| End::ClientLeft)?;
        }
        Ok(())
    }

    /// Sends the client the gateway's own message for a message that failed
    /// (see `error`), if one is owed; the WebSocket goes on.
    async fn answer(&self, failed: Error) -> Result<(), End> {
        match failed.message(&self.meters) {
            Some(text) => self
                .own
                .send((TEXT, text.to_vec()))
                .await
                .map_err(|_| End::ClientLeft),
            None => Ok(()),
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
    let pending = Mutex::new(Pending::new(&shared.meters));
    let sent = Notify::new();
    let (own_tx, own_rx) = mpsc::channel(OWN_ANSWERS);
    let controls = Controls {
        own: own_tx,
        meters: Arc::clone(&shared.meters),
        rate: TokenBucket::new(PINGS_PER_SEC, PING_BURST),
        node_pings: Arc::default(),
    };
    let node_pings = Arc::clone(&controls.node_pings);
    let client_rd = BufReader::with_capacity(READ_BUFFER, client_rd);
    let node_rd = BufReader::with_capacity(READ_BUFFER, node_rd);
    let down = Downstream {
        shared: &shared,
        pending: &pending,
        sent: &sent,
        node_pings,
    };
    let end = tokio::select! {
        biased;
        _ = stopped(shared.shutdown.clone()) => End::Failed(Error::ShuttingDown),
        end = upstream(client_rd, &mut to_node, &controls, &shared, (&pending, &sent)) => end,
        end = down.run(node_rd, &mut to_client, own_rx) => end,
    };
    let Close { code, reason, last } = match end {
        End::ClientLeft => Close {
            code: CloseCode::Normal,
            reason: String::new(),
            last: None,
        },
        End::Failed(failed) => failed.close(&shared.meters),
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

/// Reads the client's messages, screens and admits each and sends what
/// passes to the node; has the rest answered; handles its control frames.
async fn upstream<R, W>(
    mut rd: R,
    node: &mut Writer<W>,
    controls: &Controls,
    shared: &Shared,
    (pending, sent): (&Mutex<Pending>, &Notify),
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
        let (opcode, message, budget) = match head.header.opcode {
            OpCode::Control(Control::Close) => return End::ClientLeft,
            OpCode::Control(_) => match controls.handle(&mut rd, &head, node).await {
                Ok(()) => continue,
                Err(end) => return end,
            },
            OpCode::Data(Data::Continue) => {
                return End::protocol("a continuation frame outside a message")
            }
            OpCode::Data(_) => {
                let read = read_message(&mut rd, head, node, controls, shared);
                match tokio::time::timeout(MESSAGE_TIMEOUT, read).await {
                    Ok(Ok(read)) => read,
                    Ok(Err(end)) => return end,
                    Err(_) => return Error::MessageTimeout(MESSAGE_TIMEOUT).into(),
                }
            }
        };
        shared.meters.received(message.len());
        let limits = shared.gate.limits();
        let batch = usize::try_from(limits.batch()).unwrap_or(usize::MAX);
        let parsed = match jsonrpc::parse(&message, batch) {
            Ok(parsed) => match shared.gate.batch(parsed.len()) {
                Ok(()) => Ok(parsed),
                Err(refusal) => Err(Error::BatchTooLarge {
                    refusal,
                    len: parsed.len(),
                }),
            },
            Err(bad) => Err(Error::BadJson(bad)),
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(failed) => {
                drop((message, budget));
                if let Err(end) = controls.answer(failed).await {
                    return end;
                }
                continue;
            }
        };
        let room = pending
            .lock()
            .map_or(0, |p| p.subscription_room(limits.subscriptions()));
        let screened = shared.screen(Bytes::from(message), parsed, room);
        if let Some(own) = screened.own_answer() {
            if controls.own.send((TEXT, own.to_vec())).await.is_err() {
                return End::ClientLeft;
            }
        }
        let Some(body) = screened.body else {
            continue;
        };
        let Admitted {
            expected,
            notifications,
            permit,
        } = match shared.admit(&screened.calls) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                // The answers to the calls screening refused went already.
                let failed = Error::NotAdmitted {
                    refusal,
                    calls: screened.calls,
                    refused: Vec::new(),
                    batch: screened.batch,
                };
                if let Err(end) = controls.answer(failed).await {
                    return end;
                }
                continue;
            }
        };
        // Only notifications: no answer will say whether the node took them.
        let now = match expected.done() {
            true => notifications,
            false => {
                if let Ok(mut pending) = pending.lock() {
                    pending.push(expected, permit, screened.batch, notifications);
                }
                sent.notify_one();
                0
            }
        };
        // The message's own buffer (no copy when it went on as it came); the
        // budget it holds is released once it is sent.
        if node.frame(opcode, &mut Vec::from(body)).await.is_err() {
            return End::node();
        }
        drop(budget);
        shared.ledger.add(Bill::units(now));
    }
}

/// Reads one message's frames (handling control frames between them) into
/// one buffer, within `body_bytes` and the activity's body budget; returns
/// its opcode, its payload and its share of the budget.
async fn read_message<R, W>(
    rd: &mut R,
    first: Head,
    node: &mut Writer<W>,
    controls: &Controls,
    shared: &Shared,
) -> Result<(OpCode, Vec<u8>, OwnedSemaphorePermit), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limit = shared.gate.limits().body_bytes();
    let too_long = || End::from(Error::BodyTooLarge { max: limit });
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
            controls.handle(rd, &head, node).await?;
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

/// A write to the client, which must make progress within [`WRITE_STALL`].
async fn to_client(write: impl Future<Output = io::Result<()>>) -> Result<(), End> {
    match tokio::time::timeout(WRITE_STALL, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::ClientLeft),
        Err(_) => Err(Error::WriteStall(WRITE_STALL).into()),
    }
}

/// The node's side of a WebSocket: what it shares with the client's side.
struct Downstream<'a> {
    shared: &'a Shared,
    pending: &'a Mutex<Pending>,
    /// Told when a message goes to the node, so that its deadline is watched.
    sent: &'a Notify,
    node_pings: Arc<AtomicU32>,
}

impl Downstream<'_> {
    /// Relays the node's frames to the client as they arrive, billing each
    /// answer as the piece that ends it is written; writes the gateway's own
    /// frames between messages; ends the WebSocket when a call runs past the
    /// call timeout.
    async fn run<R, W>(
        &self,
        mut rd: R,
        client: &mut Writer<W>,
        mut own: mpsc::Receiver<(OpCode, Vec<u8>)>,
    ) -> End
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut chunk = vec![0u8; CHUNK];
        let mut scanner = Scanner::default();
        // The request messages the node's current message answers.
        let mut answered = Vec::new();
        let mut in_message = false;
        let timeout = self.shared.gate.limits().call_timeout();
        loop {
            if !in_message {
                let deadline = self.pending.lock().ok().and_then(|p| p.deadline(timeout));
                let expired = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                // Waiting for the node's next frame takes nothing from the
                // stream, so a frame of the gateway's own can go first.
                tokio::select! {
                    Some((op, mut payload)) = own.recv() => {
                        let len = payload.len();
                        if let Err(end) = to_client(client.frame(op, &mut payload)).await {
                            return end;
                        }
                        self.shared.meters.sent(len);
                        continue;
                    }
                    () = expired => return self.time_out(timeout),
                    () = self.sent.notified() => continue,
                    _ = frame::readable(&mut rd) => {}
                }
            }
            let head = match frame::read_head(&mut rd).await {
                Ok(Some(head)) if head.check(false).is_ok() => head,
                _ => return End::node(),
            };
            match head.header.opcode {
                OpCode::Control(Control::Close) => return End::node(),
                OpCode::Control(op) => {
                    let Ok(mut payload) = frame::read_payload(&mut rd, &head).await else {
                        return End::node();
                    };
                    if op == Control::Ping {
                        self.node_pings.fetch_add(1, Ordering::Relaxed);
                    }
                    let write = client.frame(OpCode::Control(op), &mut payload);
                    if let Err(end) = to_client(write).await {
                        return end;
                    }
                }
                OpCode::Data(data) => {
                    if (data == Data::Continue) != in_message {
                        return End::node();
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
                        // `want` is at most CHUNK, the buffer's length, and a read
                        // fills at most what it was given.
                        let Some(space) = chunk.get_mut(..want) else {
                            return End::node();
                        };
                        let n = match rd.read(space).await {
                            Ok(n) if n > 0 || want == 0 => n,
                            _ => return End::node(),
                        };
                        let Some(piece) = chunk.get(..n) else {
                            return End::node();
                        };
                        let bill = self.bill(&mut scanner, piece, &mut answered);
                        if let Err(end) = to_client(client.payload(piece)).await {
                            return end;
                        }
                        self.shared.ledger.add(bill);
                        self.shared.meters.sent(n);
                        left = left.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
                        if left == 0 {
                            break;
                        }
                    }
                    in_message = !header.is_final;
                    if !in_message {
                        if !answered.is_empty() {
                            let shape = scanner.started().then(|| scanner.is_batch());
                            let bill = self.pending.lock().map(|mut p| p.finish(&answered, shape));
                            self.shared.ledger.add(bill.unwrap_or_default());
                            answered.clear();
                        }
                        scanner.reset();
                    }
                }
            }
        }
    }

    /// The oldest message ran past the call timeout: its calls are billed
    /// (the node worked on them) and answered with an error, and the
    /// WebSocket closes, which makes Erigon cancel them.
    fn time_out(&self, timeout: Duration) -> End {
        let Ok(mut pending) = self.pending.lock() else {
            return End::node();
        };
        let Some(Sent {
            mut expected,
            batch,
            notifications,
            ..
        }) = pending.sent.pop_front()
        else {
            return End::node();
        };
        let given = expected.give_up();
        self.shared
            .ledger
            .add(given.bill.plus(Bill::units(notifications)));
        End::Failed(Error::NodeTimeout {
            ids: given.ids,
            methods: given.methods,
            timeout,
            refused: Vec::new(),
            batch,
        })
    }

    /// What a piece of a node's message bills: each answer that ends in it,
    /// and each subscription notification at the notification weight.
    fn bill(&self, scanner: &mut Scanner, piece: &[u8], answered: &mut Vec<u64>) -> Bill {
        let Ok(mut pending) = self.pending.lock() else {
            return Bill::default();
        };
        let mut bill = Bill::default();
        let weights = &self.shared.weights;
        scanner.feed(piece, |found| {
            let this = match (found.key, found.method.as_deref()) {
                (None, Some(NOTIFICATION)) => Bill::units(weights.notification()),
                _ => match pending.answer(&found, &self.shared.meters) {
                    Some((this, seq)) => {
                        if !answered.contains(&seq) {
                            answered.push(seq);
                        }
                        this
                    }
                    None => Bill::default(),
                },
            };
            bill = bill.plus(this);
        });
        bill
    }
}
