//! The activity's gateway: a JSON-RPC proxy on a Unix socket between nginx
//! and the node, so that each activity's traffic is metered per call,
//! limited, and cut off when the activity ends.
//!
//! - `jsonrpc`: reading requests (bounded) and the gateway's own errors.
//! - `limits`: the limits, the weights and the method policy, with their
//!   defaults.
//! - `screen`: the calls of a request the policy and the limits refuse, each
//!   answered by the gateway; the rest go on.
//! - `gate`: admitting each request under the limits, and the refusals.
//! - `meter`: the bill and matching answers to calls; `ids`: the keys they
//!   are matched by.
//! - `scan`: finding answers in what the node sends (an HTTP answer, a
//!   WebSocket message) as it streams.
//! - `http`, `ws`: the two ways a client calls; `frame`: WebSocket frames a
//!   piece at a time, for `ws`; `metered`: the node's answer to an HTTP
//!   request, billed as it streams; `reply`: the gateway's own answers.
//! - `link`: the connections to the node, one per connection from nginx.
//! - `conns`: the connections from nginx, closed when idle or at a stop.
//! - `quiet`: a connection from nginx's socket, woken only to read.

mod conns;
mod frame;
mod gate;
mod http;
mod ids;
mod jsonrpc;
mod limits;
mod link;
mod meter;
mod metered;
mod quiet;
mod reply;
mod scan;
mod screen;
mod ws;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use conns::IDLE_SECS;
pub use limits::{Limits, Policy, Weights, DENIED, NOTIFICATION};
pub use meter::{exchange, Bill, Exchanged, Ledger};

// nginx must drop an idle connection to a seat before the gateway does.
const _: () = assert!(crate::seat::KEEPALIVE_SECS < IDLE_SECS);

use crate::metrics::{Meters, Methods};
use crate::seat::Seat;

use conns::{Conns, Pulse};
use gate::Gate;
use link::Link;

/// How long a stop lets answers already on their way finish; past it they
/// are dropped with their connections. Short, since no call may be answered
/// later than 1 s after the Shutdown answer.
const DRAIN: Duration = Duration::from_millis(200);
/// A connection's read buffer cap (headers included; hyper's least is 8 KiB).
/// nginx's request heads are small, and bodies are read through it a piece
/// at a time, so a small cap keeps many connections cheap: 16 KiB each for
/// the most connections allowed (96 by default) is 1.5 MiB.
const MAX_BUF: usize = 16 << 10;

/// What to serve and how.
#[derive(Clone, Debug)]
pub struct GatewaySpec {
    /// The socket nginx proxies this activity's requests to.
    pub socket: PathBuf,
    /// The activity's user. nginx passes the user it checked in [`USER_HEADER`];
    /// a request for any other user is refused (see `seat`: a seat's socket can
    /// be reached with a dead holder's credentials until they are swept).
    pub user: String,
    /// The node's HTTP and WebSocket JSON-RPC port, on loopback.
    pub upstream: SocketAddr,
    pub limits: Limits,
    pub weights: Weights,
    pub policy: Policy,
}

/// The header nginx sets to the user whose password it checked; a client's own
/// header of that name never passes nginx (`proxy_set_header` replaces it).
pub const USER_HEADER: &str = "x-erigon-user";

/// State every connection of one gateway shares.
pub(crate) struct Shared {
    user: hyper::header::HeaderValue,
    gate: Gate,
    weights: Weights,
    policy: Policy,
    ledger: Ledger,
    /// The operator's counters (see `metrics`): what the bill does not say.
    meters: Arc<Meters>,
    upstream: SocketAddr,
    shutdown: watch::Receiver<bool>,
}

/// A request's calls that passed screening, weighed and admitted: what their
/// answers owe, the units of their notifications, and the in-flight slot they hold.
pub(crate) struct Admitted {
    expected: meter::Expected,
    notifications: u64,
    permit: gate::InFlight,
}

impl Shared {
    /// Screens a request (see `screen`), counting each call it refuses for the
    /// operator, as HTTP and WebSocket requests both are.
    fn screen(
        &self,
        body: bytes::Bytes,
        message: jsonrpc::Message,
        subscriptions: usize,
    ) -> screen::Screened {
        let limits = self.gate.limits();
        let screened = screen::screen(body, message, &self.policy, limits, subscriptions);
        for reason in &screened.reasons {
            self.meters.refused(reason, 1);
        }
        screened
    }

    /// Weighs the calls that passed screening and admits them under the limits; a
    /// refusal is counted for the operator, one per call.
    fn admit(&self, calls: &[jsonrpc::Call]) -> Result<Admitted, gate::Refusal> {
        let methods = self.meters.methods();
        let (expected, notifications, units) =
            meter::Expected::weighed(calls, &self.weights, methods);
        match self.gate.admit(calls.len(), units) {
            Ok(permit) => Ok(Admitted {
                expected,
                notifications,
                permit,
            }),
            Err(refusal) => {
                self.meters.refused(refusal.limit, calls.len());
                Err(refusal)
            }
        }
    }
}

/// The WebSocket a connection's request accepted, if any, handed from the
/// request to the connection once hyper lets go of it.
pub(crate) type WsSlot = Arc<Mutex<Option<ws::Upgrade>>>;

/// A running gateway. Dropping it without [`Gateway::close`] still ends
/// every connection (in the background) and removes the socket.
pub struct Gateway {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    socket: PathBuf,
    /// (device, inode) of the socket bound, so that only our own is removed.
    socket_id: (u64, u64),
    /// Held until the gateway is dropped, after its connections have ended, so
    /// that the next holder never binds the seat's socket while this gateway
    /// still answers on it.
    _seat: Option<Seat>,
}

impl Gateway {
    /// Binds the Unix socket (removing a stale socket file first only if
    /// nothing listens on it), mode 0660, and starts serving. `seat` is the
    /// seat whose socket `spec.socket` is, if any; the gateway holds it.
    pub async fn start(spec: GatewaySpec, seat: Option<Seat>) -> Result<Gateway, String> {
        let user = hyper::header::HeaderValue::from_str(&spec.user)
            .map_err(|_| format!("user {:?} cannot be a header value", spec.user))?;
        let socket = spec.socket.clone();
        let shown = socket.display();
        clear_stale(&spec.socket).await?;
        let listener =
            UnixListener::bind(&socket).map_err(|e| format!("cannot bind {shown}: {e}"))?;
        // nginx's group must connect (write permission); nobody else may.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| format!("cannot set the mode of {shown}: {e}"))?;
        let meta = std::fs::symlink_metadata(&socket).map_err(|e| format!("{shown}: {e}"))?;
        let (shutdown, stopping) = watch::channel(false);
        let methods = spec.weights.methods.keys().map(String::as_str);
        let methods = Methods::new(methods.filter(|m| *m != NOTIFICATION));
        let shared = Arc::new(Shared {
            user,
            gate: Gate::new(&spec.limits),
            weights: spec.weights,
            policy: spec.policy,
            ledger: Ledger::default(),
            meters: Arc::new(Meters::new(methods)),
            upstream: spec.upstream,
            shutdown: stopping,
        });
        let server = tokio::spawn(accept(listener, Arc::clone(&shared)));
        Ok(Gateway {
            shared,
            shutdown,
            server,
            socket,
            socket_id: (meta.dev(), meta.ino()),
            _seat: seat,
        })
    }

    /// The bill so far (cumulative).
    pub fn billed(&self) -> Bill {
        self.shared.ledger.billed()
    }

    /// [`Gateway::billed`], readable after the gateway is gone.
    pub fn ledger(&self) -> Ledger {
        self.shared.ledger.clone()
    }

    /// The gateway's counters for the operator, readable after it is gone.
    pub fn meters(&self) -> Arc<Meters> {
        Arc::clone(&self.shared.meters)
    }

    /// Stops accepting and closes every connection now: idle keep-alive
    /// ones at once, busy ones once their answer is out (at most [`DRAIN`]),
    /// WebSockets with a Close frame. Removes the socket and returns the
    /// final bill: after it returns, no call is answered or billed.
    pub async fn close(mut self) -> Bill {
        self.shutdown.send_replace(true);
        let _ = (&mut self.server).await;
        self.remove_socket();
        self.billed()
    }

    fn remove_socket(&self) {
        let ours = std::fs::symlink_metadata(&self.socket)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.socket_id);
        if ours {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.remove_socket();
    }
}

/// Resolves once the gateway stops (or is dropped).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A socket file left by a runtime that died is removed; a live one (another
/// runtime's) is an error, never taken over.
async fn clear_stale(socket: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let shown = socket.display();
    match std::fs::symlink_metadata(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{shown}: {e}")),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(format!("{shown} exists and is not a socket"))
        }
        Ok(_) => {}
    }
    if UnixStream::connect(socket).await.is_ok() {
        return Err(format!("{shown}: another gateway is listening on it"));
    }
    std::fs::remove_file(socket).map_err(|e| format!("cannot remove the stale {shown}: {e}"))
}

/// Accepts until the stop, closing idle connections once a second; then
/// closes every connection and waits for them to end.
async fn accept(listener: UnixListener, shared: Arc<Shared>) {
    let mut connections = Conns::default();
    let mut sweep = tokio::time::interval(conns::SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = pin!(stopped(shared.shutdown.clone()));
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(()) = connections.join_next(), if !connections.is_empty() => {}
            _ = sweep.tick() => connections.sweep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match shared.gate.open_connection() {
                    Ok(slot) => {
                        let shared = Arc::clone(&shared);
                        connections.spawn(|pulse, close| serve(stream, shared, slot, pulse, close));
                    }
                    Err(refusal) => {
                        shared.meters.refused(refusal.limit, 1);
                        turn_away(&stream, &refusal);
                    }
                },
                Err(e) => {
                    // Out of descriptors, most likely: let connections end.
                    log::warn!("gateway: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    // Each connection bounds its own drain; the margin covers scheduling.
    connections.close_all(DRAIN.saturating_mul(2)).await;
}

/// Past the connection limit: a canned 429 written without reading the
/// request (it fits the socket buffer at once), then the connection is
/// dropped. Nothing is buffered and no task is spawned for it.
fn turn_away(stream: &UnixStream, refusal: &gate::Refusal) {
    let body = refusal.error();
    let head = format!(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        refusal.retry_after.unwrap_or(1),
        body.len()
    );
    let _ = stream.try_write(&[head.as_bytes(), &body].concat());
}

/// Serves one connection: HTTP requests with keep-alive, or one WebSocket
/// after an upgrade, until `close` (idle, or the gateway stops).
async fn serve(
    stream: UnixStream,
    shared: Arc<Shared>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    pulse: Arc<Pulse>,
    close: tokio::sync::oneshot::Receiver<()>,
) {
    let slot: WsSlot = Arc::default();
    let link = Arc::new(Link::new(shared.upstream));
    let service = {
        let (shared, slot) = (Arc::clone(&shared), Arc::clone(&slot));
        service_fn(move |req| {
            let busy = pulse.begin();
            http::handle(
                req,
                Arc::clone(&shared),
                Arc::clone(&slot),
                Arc::clone(&link),
                busy,
            )
        })
    };
    // No header-read timeout of hyper's: `conns` closes a connection that
    // has not sent a whole request head for its idle time.
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(MAX_BUF)
        // nginx puts its own Date on what it sends the client.
        .auto_date_header(false)
        .keep_alive(true);
    let socket = match quiet::QuietSocket::new(stream) {
        Ok(socket) => socket,
        Err(e) => {
            log::warn!("gateway: cannot register a connection: {e}");
            return;
        }
    };
    let mut conn = pin!(builder.serve_connection(socket, service).with_upgrades());
    tokio::select! {
        biased;
        _ = close => {
            // Idle: closes now. Busy: closes after the answer in progress.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
            return;
        }
        _ = conn.as_mut() => {}
    }
    let upgrade = slot.lock().ok().and_then(|mut s| s.take());
    if let Some(upgrade) = upgrade {
        ws::relay(upgrade, shared).await;
    }
}
