//! A gateway's life: binding its socket, accepting connections from nginx
//! within the connection limit, and at the stop closing every one of them
//! and removing the socket. It owns the socket and the stop signal, so that
//! after [`Gateway::close`] returns nothing is answered or billed, and a
//! seat's next holder never binds a socket this gateway still answers on.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::conns::{self, Conns};
use super::error::Error;
use super::gate::Gate;
use super::limits::{Limits, Policy, Weights, NOTIFICATION};
use super::meter::{Bill, Ledger};
use super::route::{self, DRAIN};
use super::shared::{stopped, Shared};
use crate::access::seat::Seat;
use crate::metrics::{Meters, Methods};
use crate::node::upstream::Upstream;

/// What to serve and how. Built by [`GatewaySpec::new`], which holds the
/// limits to the weights, so a gateway never starts with a method it could
/// never admit.
#[derive(Clone, Debug)]
pub struct GatewaySpec {
    /// The socket nginx proxies this activity's requests to.
    socket: PathBuf,
    /// The activity's user. nginx passes the user it checked in
    /// [`USER_HEADER`](super::USER_HEADER); a request for any other user is
    /// refused (see `seat`: a seat's socket can be reached with a dead
    /// holder's credentials until they are swept).
    user: String,
    /// The node this activity's calls and WebSockets go to.
    upstream: Arc<Upstream>,
    limits: Limits,
    weights: Weights,
    policy: Policy,
}

impl GatewaySpec {
    /// The gateway of `user` on `socket` in front of `upstream`; refused, naming
    /// `cu_burst`, when a method weighs more than the limits let through.
    pub fn new(
        socket: PathBuf,
        user: String,
        upstream: Arc<Upstream>,
        limits: Limits,
        weights: Weights,
        policy: Policy,
    ) -> Result<Self, String> {
        limits.fits("limits", &weights)?;
        Ok(GatewaySpec {
            socket,
            user,
            upstream,
            limits,
            weights,
            policy,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

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
            spares: Arc::default(),
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

    /// Node connections parked between nginx connections (see `link`): what a
    /// test waits for before the next connection can take one.
    pub fn spare_connections(&self) -> usize {
        self.shared.spares.len()
    }

    /// The gateway's counters for the operator, readable after it is gone.
    pub fn meters(&self) -> Arc<Meters> {
        Arc::clone(&self.shared.meters)
    }

    /// Stops accepting and closes every connection now: idle keep-alive
    /// ones at once, busy ones once their answer is out (at most `route::DRAIN`),
    /// WebSockets with a Close frame. Removes the socket and returns the
    /// final bill: after it returns, no call is answered or billed.
    pub async fn close(mut self) -> Bill {
        self.shutdown.send_replace(true);
        let _ = (&mut self.server).await;
        self.shared.spares.close();
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
        self.shared.spares.close();
        self.remove_socket();
    }
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
                        connections.spawn(|pulse, close| route::serve(stream, shared, slot, pulse, close));
                    }
                    Err(refusal) => turn_away(&stream, Error::Connections(refusal), &shared.meters),
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

/// Past the connection limit: the refusal written without reading the
/// request (it fits the socket buffer at once), then the connection is
/// dropped. Nothing is buffered and no task is spawned for it.
fn turn_away(stream: &UnixStream, refused: Error, meters: &Meters) {
    let _ = stream.try_write(&refused.written(meters));
}
