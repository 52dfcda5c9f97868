//! Where a network's node answers, and how to reach it: a URL per protocol, plain or
//! over TLS, on this machine or another.
//!
//! A managed network's node is the runtime's own rpcdaemon, on this machine at
//! `erigon_http_addr` and `erigon_http_port + slot`. A shared network's node is the
//! operator's, which may be anywhere: a big archive machine, another host per chain,
//! or a pool behind a JSON-RPC balancer (eRPC, dshackle, proxyd, HAProxy). An
//! [`Upstream`] is built once when the configuration loads, and every caller that
//! talks to the node dials through it, so none can reach a different node or skip
//! the certificate check.
//!
//! - `url`: a URL read into host, port, TLS name, Host header and path;
//! - `tls`: the rustls connector with the system's and the operator's CAs;
//! - `dial`: one connection, TCP then TLS.

use std::net::SocketAddr;
use std::path::Path;

use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;

mod dial;
mod tls;
mod url;

pub use dial::{DialError, NodeStream, Stage};
pub use url::{Endpoint, Protocol};

/// A network's node: its JSON-RPC endpoint, its WebSocket endpoint, and the TLS set-up
/// shared by both when either is over TLS.
#[derive(Clone)]
pub struct Upstream {
    http: Endpoint,
    ws: Endpoint,
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("http", &self.http.url())
            .field("ws", &self.ws.url())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A network's `node` keys as the operator wrote them, before they are checked.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeKeys<'a> {
    /// Where the section is in the configuration (`networks.sepolia.node`), for
    /// errors.
    pub at: &'a str,
    pub http: Option<&'a str>,
    pub ws: Option<&'a str>,
    pub ca_file: Option<&'a Path>,
}

impl Upstream {
    /// A node on this provider at `addr`, plain HTTP, WebSockets on the same port (as
    /// rpcdaemon serves them with `--ws`).
    pub fn local(addr: SocketAddr) -> Upstream {
        Upstream {
            http: Endpoint::local(addr, Protocol::Http),
            ws: Endpoint::local(addr, Protocol::Ws),
            tls: None,
        }
    }

    /// The node the `node` keys name, each absent key falling back: `ws` to `http`'s
    /// node, `http` to `local`. The error names the key (`<at>.http`, `.ws`,
    /// `.ca_file`) and what is accepted.
    pub fn configured(keys: NodeKeys<'_>, local: SocketAddr) -> Result<Upstream, String> {
        let at = keys.at;
        let http = match keys.http {
            Some(text) => Endpoint::parse(text, Protocol::Http)
                .map_err(|e| format!("key `{at}.http`: {e}"))?,
            None => Endpoint::local(local, Protocol::Http),
        };
        let ws = match (keys.ws, keys.http) {
            (Some(text), _) => {
                Endpoint::parse(text, Protocol::Ws).map_err(|e| format!("key `{at}.ws`: {e}"))?
            }
            (None, Some(_)) => http
                .as_protocol(Protocol::Ws)
                .map_err(|e| format!("key `{at}.ws` (derived from `{at}.http`): {e}"))?,
            (None, None) => Endpoint::local(local, Protocol::Ws),
        };
        let tls = if http.is_tls() || ws.is_tls() {
            Some(tls::connector(keys.ca_file).map_err(|e| format!("key `{at}.ca_file`: {e}"))?)
        } else if let Some(path) = keys.ca_file {
            return Err(format!(
                "key `{at}.ca_file` is {}, but the node is reached without TLS ({}); use https:// (and wss://) URLs, or remove `ca_file`",
                path.display(),
                http.url()
            ));
        } else {
            None
        };
        Ok(Upstream { http, ws, tls })
    }

    /// The JSON-RPC endpoint: calls are POSTed here.
    pub fn http(&self) -> &Endpoint {
        &self.http
    }

    /// The WebSocket endpoint: upgrades are asked for here.
    pub fn ws(&self) -> &Endpoint {
        &self.ws
    }

    /// Whether any of the node's endpoints is over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A connection to `endpoint` (this node's `http` or `ws`).
    pub async fn dial(&self, endpoint: &Endpoint) -> Result<TokioIo<NodeStream>, DialError> {
        dial::dial(endpoint, self.tls.as_ref()).await
    }
}
