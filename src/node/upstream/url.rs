//! A node's URL as the operator writes it (`networks.<name>.node.http` and `.ws`), read
//! once into what every call needs: where to connect, whether over TLS, the name the
//! certificate must carry, the Host header and the request path.
//!
//! Parsed at load rather than at each call, so that a typo fails the configuration with
//! the key's name instead of failing each requestor's call with the node's address.

use std::fmt;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Uri};
use tokio_rustls::rustls::pki_types::ServerName;

use crate::text::printable;

/// Which protocol an endpoint speaks: a JSON-RPC POST, or a WebSocket upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Ws,
}

impl Protocol {
    /// The schemes accepted for this protocol: plain first, then over TLS.
    fn schemes(self) -> [&'static str; 2] {
        match self {
            Protocol::Http => ["http", "https"],
            Protocol::Ws => ["ws", "wss"],
        }
    }
}

/// One of a node's endpoints, checked: a host and port to connect to, TLS or not, and
/// the path every request names.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The URL as shown in messages (normalised by the `url` crate; never carries
    /// credentials, which are refused).
    shown: String,
    host: String,
    port: u16,
    /// The name the node's certificate must be valid for, when over TLS.
    tls_name: Option<ServerName<'static>>,
    /// `host[:port]`, as a client sends it (the port left out when it is the scheme's).
    authority: HeaderValue,
    /// Path and query, `/` at least.
    path: Uri,
}

impl Endpoint {
    /// Reads `text` as a URL of `protocol`; the error says what is wrong and what is
    /// accepted, for the caller to prefix with the key.
    pub fn parse(text: &str, protocol: Protocol) -> Result<Endpoint, String> {
        let [plain, secure] = protocol.schemes();
        let accepted = format!(
            "accepted: a {plain}:// or {secure}:// URL with a host, an optional port and an optional path, such as {secure}://node.lan:8545/rpc"
        );
        let shown = printable(text);
        if !text.contains("://") {
            return Err(format!(
                "\"{shown}\" is not a URL: it has no scheme; {accepted}"
            ));
        }
        let url = url::Url::parse(text)
            .map_err(|e| format!("\"{shown}\" is not a URL ({e}); {accepted}"))?;
        let tls = match url.scheme() {
            s if s == plain => false,
            s if s == secure => true,
            other => return Err(format!("\"{shown}\" has the scheme {other}:; {accepted}")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            // A password in a URL ends up in every message that names the node.
            return Err(format!(
                "the URL carries a user name or password; {accepted}, without credentials (a node that needs them belongs behind a proxy on the provider's side that adds them)"
            ));
        }
        if url.fragment().is_some() {
            return Err(format!(
                "\"{shown}\" has a #fragment, which HTTP never sends; {accepted}"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("\"{shown}\" has no host; {accepted}")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("\"{shown}\" has no port; {accepted}"))?;
        let tls_name = if tls {
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                format!("\"{shown}\": the host cannot name a TLS certificate ({e}); {accepted}")
            })?;
            Some(name)
        } else {
            None
        };
        // The url crate brackets an IPv6 host and leaves out a default port, as a Host
        // header needs.
        let authority = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(format!("\"{shown}\" has no host; {accepted}")),
        };
        let authority = HeaderValue::from_str(&authority)
            .map_err(|_| format!("\"{shown}\": the host is not a valid Host header; {accepted}"))?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let path = Uri::try_from(path.as_str()).map_err(|e| {
            format!("\"{shown}\": the path is not valid in a request ({e}); {accepted}")
        })?;
        Ok(Endpoint {
            shown: url.to_string(),
            host,
            port,
            tls_name,
            authority,
            path,
        })
    }

    /// `addr` on this machine, plain: the default when no URL is configured. The
    /// Host header is the address, which rpcdaemon's and geth's vhosts checks accept
    /// (an IP address always passes them).
    pub fn local(addr: std::net::SocketAddr, protocol: Protocol) -> Endpoint {
        let [plain, _] = protocol.schemes();
        Endpoint {
            // SocketAddr's Display brackets an IPv6 address, as a URL needs.
            shown: format!("{plain}://{addr}/"),
            host: addr.ip().to_string(),
            port: addr.port(),
            tls_name: None,
            authority: HeaderValue::from_str(&addr.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            path: Uri::from_static("/"),
        }
    }

    /// The same node's other protocol: `http` ↔ `ws`, `https` ↔ `wss`, same host, port
    /// and path, as Erigon, geth and the JSON-RPC balancers serve both on one port.
    pub fn as_protocol(&self, protocol: Protocol) -> Result<Endpoint, String> {
        let [plain, secure] = protocol.schemes();
        let scheme = if self.is_tls() { secure } else { plain };
        let rest = self
            .shown
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        Endpoint::parse(&format!("{scheme}://{rest}"), protocol)
    }

    /// Whether calls to this endpoint go over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls_name.is_some()
    }

    pub fn tls_name(&self) -> Option<&ServerName<'static>> {
        self.tls_name.as_ref()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Host header of every request to this endpoint.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// A JSON-RPC call to this endpoint: POSTed to its path, with its own
    /// authority as Host (rpcdaemon's and geth's `--http.vhosts` accept an IP
    /// address, and a proxy in front of a node routes by the name). The one
    /// place the gateway, the probes and `calibrate` build their requests, so
    /// that all of them reach the node the URL names.
    pub fn post(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.path.clone();
        let headers = req.headers_mut();
        headers.insert(header::HOST, self.authority.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        req
    }

    /// The request target of every request to this endpoint.
    pub fn path(&self) -> &Uri {
        &self.path
    }

    pub fn url(&self) -> &str {
        &self.shown
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(text: &str) -> Result<Endpoint, String> {
        Endpoint::parse(text, Protocol::Http)
    }

    #[test]
    fn reads_host_port_tls_path_and_host_header() {
        let e = http("https://Archive.LAN:8545/rpc/eth?key=1").unwrap_or_else(|e| panic!("{e}"));
        assert!(e.is_tls());
        assert_eq!((e.host(), e.port()), ("archive.lan", 8545));
        assert_eq!(e.authority(), "archive.lan:8545");
        assert_eq!(e.path(), "/rpc/eth?key=1");
        let e = http("http://10.0.0.7/").unwrap_or_else(|e| panic!("{e}"));
        assert!(!e.is_tls());
        assert_eq!(
            (e.port(), e.authority().to_str().ok()),
            (80, Some("10.0.0.7"))
        );
        assert_eq!(e.path(), "/");
        let e = http("https://[::1]:9000").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.host(), e.port()), ("::1", 9000));
        assert_eq!(e.authority(), "[::1]:9000");
        assert_eq!(e.path(), "/");
        let e = http("https://node.lan").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.port(), e.authority().to_str().ok()),
            (443, Some("node.lan"))
        );
    }

    #[test]
    fn derives_the_websocket_endpoint_on_the_same_node() {
        let e = http("https://node.lan:8545/rpc").unwrap_or_else(|e| panic!("{e}"));
        let ws = e
            .as_protocol(Protocol::Ws)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ws.url(), "wss://node.lan:8545/rpc");
        assert!(ws.is_tls());
        let e = http("http://127.0.0.1:8555/").unwrap_or_else(|e| panic!("{e}"));
        let ws = e
            .as_protocol(Protocol::Ws)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ws.url(), "ws://127.0.0.1:8555/");
        assert!(!ws.is_tls());
    }

    #[test]
    fn refuses_what_cannot_name_a_node_saying_what_is_accepted() {
        let cases = [
            ("node.lan:8545", "is not a URL"),
            ("ftp://node.lan/", "has the scheme ftp:"),
            ("ws://node.lan/", "has the scheme ws:"),
            ("https://user:secret@node.lan/", "user name or password"),
            ("http://node.lan/#x", "#fragment"),
            ("http://:8545/rpc", "is not a URL"),
            ("", "is not a URL"),
        ];
        for (text, expected) in cases {
            let err = http(text)
                .err()
                .unwrap_or_else(|| panic!("{text} accepted"));
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains("accepted: a http:// or https:// URL"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let err = Endpoint::parse("https://node.lan/", Protocol::Ws)
            .err()
            .unwrap_or_default();
        assert!(err.contains("accepted: a ws:// or wss:// URL"), "{err}");
    }
}
