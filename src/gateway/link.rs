//! The gateway's connections to the node.
//!
//! Each connection from nginx gets a node connection of its own, made at its
//! first POST and kept alive with it (over TLS: one handshake per nginx
//! connection, not per call). An HTTP/1 connection carries one request
//! at a time, so its node connection is never contended and needs no pool: the
//! pool this replaces (hyper-util's) took a lock, a map lookup and its idle
//! bookkeeping on every call, a measurable share of the hop's cost. The node
//! connections also end with nginx's: at most one per connection the gateway
//! admits, none left idle after a stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};

use crate::upstream::Upstream;

/// A connection's read buffer cap (headers included; hyper's least is 8 KiB),
/// on both sides of the gateway: nginx's connections (see `route`) and the
/// node's. nginx's request heads are small, and bodies are read through it a
/// piece at a time, so a small cap keeps many connections cheap: 16 KiB each
/// for the most connections allowed (96 by default) is 1.5 MiB.
pub const MAX_BUF: usize = 16 << 10;

/// One nginx connection's way to the node.
pub struct Link {
    node: Arc<Upstream>,
    /// The kept connection, taken while a request is on it.
    kept: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Link {
    pub fn new(node: Arc<Upstream>) -> Link {
        Link {
            node,
            kept: Mutex::new(None),
        }
    }

    /// Opens the node connection before a call's clock starts, unless one is
    /// kept and open. Connecting (TCP, and TLS for an `https` node on another
    /// machine) is not the node's work: a node that cannot be reached within
    /// `within` is answered unavailable and billed nothing, where a connect
    /// inside the call's timeout would have billed a timeout.
    pub async fn connect(&self, within: Duration) -> Result<(), String> {
        if let Some(sender) = self.take() {
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
        if let Some(mut sender) = self.take() {
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
