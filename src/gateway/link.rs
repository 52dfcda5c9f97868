//! The gateway's connections to the node.
//!
//! Each connection from nginx gets a node connection of its own, made at its
//! first POST and kept alive with it (over TLS, a handshake is paid when a
//! connection is new, never per call). An HTTP/1 connection carries one request
//! at a time, so its node connection is never contended and needs no pool: the
//! pool this replaces (hyper-util's) took a lock, a map lookup and its idle
//! bookkeeping on every call, a measurable share of the hop's cost. The node
//! connections outlive nginx's only as spares: when an nginx connection ends
//! (nginx retires one every `keepalive_requests` calls, and closes an idle one
//! after `seat::KEEPALIVE_SECS`), its node connection is parked for the next
//! one to take, at most [`SPARES`] of them for at most [`SPARE_IDLE`], so that a
//! node behind TLS is not paid a handshake (7 ms against an nginx front with
//! OpenSSL 3 here, see `bench_tls`) for every new nginx connection. The spares
//! are touched when a connection starts and ends, never per call, and are
//! dropped when the gateway stops: none is left after a stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};

use crate::node::upstream::Upstream;

/// A connection's read buffer cap (headers included; hyper's least is 8 KiB),
/// on both sides of the gateway: nginx's connections (see `route`) and the
/// node's. nginx's request heads are small, and bodies are read through it a
/// piece at a time, so a small cap keeps many connections cheap: 16 KiB each
/// for the most connections allowed (96 by default) is 1.5 MiB.
pub const MAX_BUF: usize = 16 << 10;

/// Node connections parked between nginx connections. A few: nginx keeps at
/// most `seat::KEEPALIVE` idle connections to a seat per worker.
pub const SPARES: usize = 8;
/// A spare older than this is dropped rather than taken: a node or a balancer
/// in front of it closes idle connections on its own schedule (rpcdaemon after
/// 120 s, nginx after 75 s by default), and a connection it closed meanwhile
/// would only be found dead at the next call.
pub const SPARE_IDLE: Duration = Duration::from_secs(30);

/// A gateway's spare node connections, newest last.
#[derive(Default)]
pub struct Spares {
    parked: Mutex<Vec<(SendRequest<Full<Bytes>>, Instant)>>,
    closed: AtomicBool,
}

impl Spares {
    /// The newest spare still open and young enough; the others found are
    /// dropped, which closes them.
    fn take(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut parked = self.parked.lock().ok()?;
        while let Some((sender, since)) = parked.pop() {
            if !sender.is_closed() && since.elapsed() < SPARE_IDLE {
                return Some(sender);
            }
        }
        None
    }

    fn park(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() || self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut parked) = self.parked.lock() {
            parked.retain(|(s, since)| !s.is_closed() && since.elapsed() < SPARE_IDLE);
            if parked.len() >= SPARES {
                parked.remove(0);
            }
            parked.push((sender, Instant::now()));
        }
    }

    /// How many are parked now (open or not yet found closed).
    pub fn len(&self) -> usize {
        self.parked.lock().map(|p| p.len()).unwrap_or_default()
    }

    /// The gateway stops: the spares close, and none is parked again.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Ok(mut parked) = self.parked.lock() {
            parked.clear();
        }
    }
}

/// One nginx connection's way to the node.
pub struct Link {
    node: Arc<Upstream>,
    spares: Arc<Spares>,
    /// The kept connection, taken while a request is on it.
    kept: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Link {
    pub fn new(node: Arc<Upstream>, spares: Arc<Spares>) -> Link {
        Link {
            node,
            spares,
            kept: Mutex::new(None),
        }
    }

    /// Opens the node connection before a call's clock starts, unless one is
    /// kept and open. Connecting (TCP, and TLS for an `https` node on another
    /// machine) is not the node's work: a node that cannot be reached within
    /// `within` is answered unavailable and billed nothing, where a connect
    /// inside the call's timeout would have billed a timeout.
    pub async fn connect(&self, within: Duration) -> Result<(), String> {
        if let Some(sender) = self.take().or_else(|| self.spares.take()) {
            if !sender.is_closed() {
                self.keep(sender);
                return Ok(());
            }
        }
        let sender = tokio::time::timeout(within, self.open())
            .await
            .map_err(|_| format!("{}: not connected within {within:?}", self.node.http()))??;
        self.keep(sender);
        Ok(())
    }

    /// Sends `req` on the kept connection, or on a new one if there is none,
    /// it has closed, or the node closed it before the request was written
    /// (a kept connection can close under an idle timeout at any moment; a
    /// request the node may have read is never sent twice).
    pub async fn send(&self, mut req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
        if let Some(mut sender) = self.take().or_else(|| self.spares.take()) {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(answer) => {
                        self.keep(sender);
                        return Ok(answer);
                    }
                    Err(mut failed) => match failed.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(failed.into_error().to_string()),
                    },
                }
            }
        }
        let mut sender = self.open().await?;
        let answer = sender.send_request(req).await.map_err(|e| e.to_string())?;
        self.keep(sender);
        Ok(answer)
    }

    /// A new connection to the node, driven in a task of its own.
    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        // hyper grows a connection's read buffer to 400 KiB while a large
        // answer streams: 32 connections reading 2 MiB answers took a
        // gateway to 30 MB. The answer streams through in pieces anyway.
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(MAX_BUF)
            .handshake(
                self.node
                    .dial(self.node.http())
                    .await
                    .map_err(|e| format!("{}: {e}", self.node.http()))?,
            )
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.node.http()))?;
        // The connection ends once its sender (this link) is dropped and it is
        // idle, or the node closes it.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("gateway: a node connection ended: {e}");
            }
        });
        Ok(sender)
    }

    fn take(&self) -> Option<SendRequest<Full<Bytes>>> {
        self.kept.lock().ok().and_then(|mut kept| kept.take())
    }

    /// Keeps the connection for the next request: hyper lets that request
    /// through once this answer's body has been read to its end, and closes
    /// the connection if the body is dropped before.
    fn keep(&self, sender: SendRequest<Full<Bytes>>) {
        if let Ok(mut kept) = self.kept.lock() {
            *kept = Some(sender);
        }
    }
}

impl Drop for Link {
    /// The nginx connection ended: its node connection, if idle and open, is
    /// parked for the next one.
    fn drop(&mut self) {
        if let Some(sender) = self.take() {
            self.spares.park(sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// A node that answers every POST with `{}` and counts the connections it
    /// accepted; `close` answers with `Connection: close`.
    async fn node(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |_req| async move {
                    let mut answer = Response::new(Full::new(Bytes::from_static(b"{}")));
                    if close {
                        answer.headers_mut().insert(
                            "connection",
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(answer)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        (addr, accepted)
    }

    async fn call(link: &Link) {
        link.connect(Duration::from_secs(5)).await.unwrap();
        let answer = link
            .send(Request::new(Full::new(Bytes::new())))
            .await
            .unwrap();
        answer.into_body().collect().await.unwrap();
    }

    #[tokio::test]
    async fn an_ended_links_connection_serves_the_next_link() {
        let (addr, accepted) = node(false).await;
        let upstream = Arc::new(Upstream::local(addr));
        let spares = Arc::new(Spares::default());
        for _ in 0..5 {
            let link = Link::new(Arc::clone(&upstream), Arc::clone(&spares));
            call(&link).await;
            call(&link).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection, parked and taken"
        );

        // Two links at once need two connections; both are parked after.
        let (a, b) = (
            Link::new(Arc::clone(&upstream), Arc::clone(&spares)),
            Link::new(Arc::clone(&upstream), Arc::clone(&spares)),
        );
        call(&a).await;
        call(&b).await;
        drop((a, b));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        let c = Link::new(Arc::clone(&upstream), Arc::clone(&spares));
        call(&c).await;
        drop(c);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // Once the gateway stops, nothing is parked or taken.
        spares.close();
        let d = Link::new(Arc::clone(&upstream), Arc::clone(&spares));
        call(&d).await;
        drop(d);
        let e = Link::new(Arc::clone(&upstream), Arc::clone(&spares));
        call(&e).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 4, "a new connection each");
    }

    #[tokio::test]
    async fn a_connection_the_node_closed_is_not_taken() {
        let (addr, accepted) = node(true).await;
        let upstream = Arc::new(Upstream::local(addr));
        let spares = Arc::new(Spares::default());
        for n in 1..=3 {
            let link = Link::new(Arc::clone(&upstream), Arc::clone(&spares));
            call(&link).await;
            drop(link);
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
    }
}
