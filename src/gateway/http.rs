//! JSON-RPC over HTTP POST: read a bounded body, admit it, forward it to the
//! node as it is (a batch stays one batch), and stream the answer back while
//! billing each answered call.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::conns::Busy;
use super::gate::{InFlight, Refusal};
use super::jsonrpc::{self, Message, INTERNAL_ERROR};
use super::link::Link;
use super::meter::Expected;
use super::scan::Scanner;
use super::{ws, Shared, WsSlot, USER_HEADER};

/// A client that has not sent its whole body by then is dropped: a slow
/// body would otherwise hold a connection slot indefinitely.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the node may take to start answering. Long enough for a heavy
/// eth_getLogs or trace; a stop does not wait for it (see `Gateway::close`).
const NODE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every answer body: the gateway's own, or the node's as it streams.
pub type ReplyBody = Either<Full<Bytes>, Metered>;

/// Serves one request of a connection.
pub async fn handle(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    slot: WsSlot,
    link: Arc<Link>,
    busy: Busy,
) -> Result<Response<ReplyBody>, Infallible> {
    if req.headers().get(USER_HEADER) != Some(&shared.user) {
        // Not this activity's user: a dead holder's credentials on a seat this
        // activity took over, or a request that did not come through nginx.
        // Nothing is read, admitted or billed.
        return Ok(reply(StatusCode::FORBIDDEN, Bytes::new()));
    }
    if req.method() == Method::GET && ws::is_upgrade(&req) {
        return Ok(ws::accept(&mut req, &shared, &slot).await);
    }
    if req.method() != Method::POST {
        let mut resp = reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, GET"));
        return Ok(resp);
    }
    Ok(post(req, shared, &link, busy).await)
}

async fn post(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    link: &Link,
    busy: Busy,
) -> Response<ReplyBody> {
    let max = shared.gate.limits().body_bytes;
    let too_large = || {
        let refusal = Refusal::new("body_bytes", max);
        refused(&refusal, refusal.error())
    };
    // A body announced too large is refused before any of it is read.
    let hint = req.body().size_hint();
    if hint.lower() > u64::from(max) {
        return too_large();
    }
    // nginx sends a length; a chunked body may take up to the limit.
    let reserve = hint.exact().unwrap_or(u64::from(max));
    let _budget = match shared.gate.reserve_body(reserve) {
        Ok(budget) => budget,
        Err(refusal) => return refused(&refusal, refusal.error()),
    };
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let reserve = usize::try_from(reserve).unwrap_or(max).min(max);
    let read = read_body(req.into_body(), reserve, max);
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return too_large(),
        failed => {
            log::debug!("gateway: no request body: {failed:?}");
            return reply(StatusCode::BAD_REQUEST, Bytes::new());
        }
    };
    let batch = usize::try_from(shared.gate.limits().batch).unwrap_or(usize::MAX);
    let message = match jsonrpc::parse(&body, batch) {
        Ok(message) => message,
        Err(bad) => return reply(StatusCode::OK, bad.answer()),
    };
    let permit = match shared.gate.admit(message.len()) {
        Ok(permit) => permit,
        Err(refusal) => {
            let text = refusal.errors_for(&message);
            return refused(&refusal, text);
        }
    };
    forward(body, message, (permit, busy), shared, link).await
}

/// Reads a body into one buffer of the announced length (`reserve`), so
/// that it is held once, not as hyper's pieces and then a copy of them;
/// `None` past `max` bytes.
async fn read_body(
    mut body: Incoming,
    reserve: usize,
    max: usize,
) -> Result<Option<Bytes>, hyper::Error> {
    let mut buf = BytesMut::with_capacity(reserve);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if data.len() > max.saturating_sub(buf.len()) {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf.freeze()))
}

async fn forward(
    body: Bytes,
    message: Message,
    held: (InFlight, Busy),
    shared: Arc<Shared>,
    link: &Link,
) -> Response<ReplyBody> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = hyper::Uri::from_static("/");
    let headers = req.headers_mut();
    // rpcdaemon's and geth's default --http.vhosts accept "localhost".
    headers.insert(header::HOST, HeaderValue::from_static("localhost"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let answer = match tokio::time::timeout(NODE_TIMEOUT, link.send(req)).await {
        Ok(Ok(answer)) if !answer.status().is_server_error() => answer,
        Ok(Ok(answer)) => {
            log::warn!("gateway: the node answered {}", answer.status());
            return unavailable(&message);
        }
        Ok(Err(e)) => {
            log::warn!("gateway: the node is unreachable: {e}");
            return unavailable(&message);
        }
        Err(_) => {
            log::warn!("gateway: the node did not answer in {NODE_TIMEOUT:?}");
            return unavailable(&message);
        }
    };
    let (parts, incoming) = answer.into_parts();
    // Only a 2xx answer carries JSON-RPC answers; a 4xx (a node that refused
    // the request itself) passes through unbilled.
    let billing = parts.status.is_success();
    let (expected, notifications) = Expected::new(message.calls(), &shared.weights);
    if billing {
        // The node accepted them; they get no answer to wait for.
        shared.ledger.add(notifications);
    }
    let metered = Metered {
        inner: incoming,
        scanner: Scanner::default(),
        expected,
        billing,
        shared: Arc::clone(&shared),
        held: Some(held),
    };
    let mut resp = Response::new(Either::Right(metered));
    *resp.status_mut() = parts.status;
    if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, kind.clone());
    }
    resp
}

/// The node's answer on its way to the client. Each answer object is billed
/// as the piece that ends it is handed to the connection; the in-flight slot
/// is held, and the connection counts as busy, until the body ends or the
/// client goes away.
pub struct Metered {
    inner: Incoming,
    scanner: Scanner,
    expected: Expected,
    billing: bool,
    shared: Arc<Shared>,
    held: Option<(InFlight, Busy)>,
}

impl Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) if this.billing => {
                if let Some(data) = frame.data_ref() {
                    let mut units = 0u64;
                    let expected = &mut this.expected;
                    this.scanner.feed(data, |found| {
                        if let Some(weight) = expected.answer(found.id.as_ref()) {
                            units = units.saturating_add(weight);
                        }
                    });
                    this.shared.ledger.add(units);
                }
            }
            Some(_) => {}
            None => this.held = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The gateway's own answer: a JSON-RPC body, or nothing.
pub fn reply(status: StatusCode, body: Bytes) -> Response<ReplyBody> {
    let json = !body.is_empty();
    let mut resp = Response::new(Either::Left(Full::new(body)));
    *resp.status_mut() = status;
    if json {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    resp
}

/// 429 with `Retry-After`, as hosted services throttle.
pub fn refused(refusal: &Refusal, body: Bytes) -> Response<ReplyBody> {
    let mut resp = reply(StatusCode::TOO_MANY_REQUESTS, body);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(refusal.retry_after.max(1)),
    );
    resp
}

/// 502 with an internal error for each call: nothing was answered, nothing
/// is billed.
fn unavailable(message: &Message) -> Response<ReplyBody> {
    let text = jsonrpc::refuse(message, INTERNAL_ERROR, "the node is unavailable");
    reply(StatusCode::BAD_GATEWAY, text)
}
