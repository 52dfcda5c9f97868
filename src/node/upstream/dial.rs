//! Opening a connection to the node: TCP, then TLS when its URL says so. One function
//! for every caller (the gateway's calls and WebSockets, the start's readiness check,
//! STATUS, the health watch, `calibrate`, `test`), so that they all reach the same node
//! the same way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::url::Endpoint;

/// A connection to the node, plain or over TLS.
pub enum NodeStream {
    Plain(TcpStream),
    /// Boxed: a TLS session's state is about 1 KiB, and most nodes are plain.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Which step of reaching the node failed: `test` fails a provider whose node refuses
/// its TLS (a set-up error), but only warns of a node that is down (it may be starting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Tls,
}

/// Why a connection to the node could not be opened; the caller names the URL.
#[derive(Debug)]
pub struct DialError {
    pub stage: Stage,
    text: String,
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Connects to `endpoint` without Nagle's delay (a request is written whole, and
/// waiting for an ACK would add to every call), then runs the TLS handshake when the
/// endpoint is `https`/`wss`: rustls checks the certificate's chain, dates and name.
pub async fn dial(
    endpoint: &Endpoint,
    tls: Option<&TlsConnector>,
) -> Result<TokioIo<NodeStream>, DialError> {
    let connect = |text: String| DialError {
        stage: Stage::Connect,
        text,
    };
    let (host, port) = (endpoint.host(), endpoint.port());
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| connect(format!("cannot connect: {e}")))?;
    tcp.set_nodelay(true)
        .map_err(|e| connect(format!("cannot set TCP_NODELAY: {e}")))?;
    let Some(name) = endpoint.tls_name() else {
        return Ok(TokioIo::new(NodeStream::Plain(tcp)));
    };
    let refused = |text: String| DialError {
        stage: Stage::Tls,
        text,
    };
    let Some(connector) = tls else {
        return Err(refused(
            "the URL needs TLS, and none is set up for it".into(),
        ));
    };
    let stream = connector.connect(name.clone(), tcp).await.map_err(|e| {
        let text = e.to_string();
        let hint = if text.contains("UnknownIssuer") {
            " (its CA is neither in the system's trust store nor in `node.ca_file`)"
        } else if text.contains("InvalidContentType") {
            " (the node does not speak TLS on this port: use http:// and ws://)"
        } else {
            ""
        };
        refused(format!("the TLS handshake failed: {e}{hint}"))
    })?;
    Ok(TokioIo::new(NodeStream::Tls(Box::new(stream))))
}

impl AsyncRead for NodeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NodeStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NodeStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            NodeStream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NodeStream::Plain(s) => s.is_write_vectored(),
            NodeStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NodeStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NodeStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
