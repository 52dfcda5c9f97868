//! JSON-RPC over HTTP POST: read a bounded body, screen and admit it, forward
//! it to the node (a batch stays one batch), and stream the answer back while
//! billing each answered call; the gateway's own answers to calls it refused
//! join the node's in the same array.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::conns::Busy;
use super::gate::{InFlight, Refusal};
use super::jsonrpc::{self, INTERNAL_ERROR};
use super::link::Link;
use super::meter::{Bill, Expected};
use super::metered::Metered;
use super::reply::{refused, reply, ReplyBody};
use super::screen::Screened;
use super::{ws, Admitted, Shared, WsSlot, USER_HEADER};

/// A client that has not sent its whole body by then is dropped: a slow
/// body would otherwise hold a connection slot indefinitely.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

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
    let resp = if req.method() == Method::GET && ws::is_upgrade(&req) {
        ws::accept(&mut req, &shared, &slot).await
    } else if req.method() != Method::POST {
        let mut resp = reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, GET"));
        resp
    } else {
        post(req, Arc::clone(&shared), &link, busy).await
    };
    // The node's answers are counted as they stream (see `metered`); the
    // gateway's own are whole.
    if let Either::Left(own) = resp.body() {
        let len = own.size_hint().exact().unwrap_or(0);
        shared
            .meters
            .sent(usize::try_from(len).unwrap_or(usize::MAX));
    }
    Ok(resp)
}

async fn post(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    link: &Link,
    busy: Busy,
) -> Response<ReplyBody> {
    let max = shared.gate.limits().body_bytes;
    let too_large = || {
        let refusal = Refusal::permanent("body_bytes", max);
        shared.meters.refused(refusal.limit, 1);
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
        Err(refusal) => {
            shared.meters.refused(refusal.limit, 1);
            return refused(&refusal, refusal.error());
        }
    };
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let reserve = usize::try_from(reserve).unwrap_or(max).min(max);
    let read = read_body(req.into_body(), reserve, max);
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(Some(body))) => {
            shared.meters.received(body.len());
            body
        }
        Ok(Ok(None)) => return too_large(),
        failed => {
            log::debug!("gateway: no request body: {failed:?}");
            return reply(StatusCode::BAD_REQUEST, Bytes::new());
        }
    };
    let limits = shared.gate.limits();
    let batch = usize::try_from(limits.batch).unwrap_or(usize::MAX);
    let message = match jsonrpc::parse(&body, batch) {
        Ok(message) => message,
        Err(bad) => return reply(StatusCode::OK, bad.answer()),
    };
    if let Err(refusal) = shared.gate.batch(message.len()) {
        // Only the first `batch` ids were kept: one error, with a null id.
        shared.meters.refused(refusal.limit, message.len());
        return refused(&refusal, refusal.error());
    }
    // Nodes serve subscriptions over WebSockets only.
    let screened = shared.screen(body, message, usize::MAX);
    let Some(body) = screened.body.clone() else {
        // Every call was refused here: nothing reaches the node.
        return reply(StatusCode::OK, screened.own_answer().unwrap_or_default());
    };
    let Admitted {
        expected,
        notifications,
        permit,
    } = match shared.admit(&screened.calls) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let text = screened.all_failed(jsonrpc::LIMIT_EXCEEDED, &refusal.to_string());
            return refused(&refusal, text);
        }
    };
    let request = Forward {
        body,
        screened,
        expected,
        notifications,
    };
    forward(request, (permit, busy), shared, link).await
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

/// An admitted request: what goes to the node, and what its answer owes.
struct Forward {
    body: Bytes,
    screened: Screened,
    expected: Expected,
    notifications: u64,
}

async fn forward(
    request: Forward,
    held: (InFlight, Busy),
    shared: Arc<Shared>,
    link: &Link,
) -> Response<ReplyBody> {
    let Forward {
        body,
        screened,
        mut expected,
        notifications,
    } = request;
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
    let timeout = shared.gate.limits().call_timeout();
    // On a timeout the request's future is dropped, and with it the node
    // connection that carried it (the link keeps no connection while a
    // request is on it): Erigon cancels a call whose connection closed.
    let asked = std::time::Instant::now();
    let answer = match tokio::time::timeout(timeout, link.send(req)).await {
        Ok(Ok(answer)) if !answer.status().is_server_error() => {
            shared.meters.node_time(asked.elapsed());
            answer
        }
        Ok(Ok(answer)) => {
            log::warn!("gateway: the node answered {}", answer.status());
            return unavailable(&screened, &shared);
        }
        Ok(Err(e)) => {
            log::warn!("gateway: the node is unreachable: {e}");
            return unavailable(&screened, &shared);
        }
        Err(_) => {
            log::info!("gateway: the node did not answer within {timeout:?}; its calls are billed");
            let given = expected.give_up();
            shared
                .ledger
                .add(given.bill.plus(Bill::units(notifications)));
            shared.meters.timed_out(given.methods);
            let mut errors = jsonrpc::timed_out(&given.ids, timeout).1;
            errors.extend(screened.refused);
            return reply(StatusCode::OK, jsonrpc::answer_of(errors, screened.batch));
        }
    };
    let (parts, incoming) = answer.into_parts();
    // Only a 2xx answer carries JSON-RPC answers; a 4xx (a node that refused
    // the request itself) passes through unbilled.
    let billing = parts.status.is_success();
    if billing && incoming.is_end_stream() {
        // Nothing to stream (anvil's 204 when only notifications reached it):
        // the node took them, and the gateway's own answers, if any, are the
        // whole answer.
        shared.ledger.add(Bill::units(notifications));
        return match screened.own_answer() {
            Some(own) => reply(StatusCode::OK, own),
            None => reply(parts.status, Bytes::new()),
        };
    }
    let own = match (billing, screened.refused.is_empty()) {
        (true, false) => Some(screened.refused),
        _ => None,
    };
    let notifications = billing.then_some(notifications);
    let metered = Metered::new(
        incoming,
        expected,
        notifications,
        screened.batch,
        own,
        Arc::clone(&shared),
        held,
    );
    let mut resp = Response::new(Either::Right(metered));
    *resp.status_mut() = parts.status;
    if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, kind.clone());
    }
    resp
}

/// 502 with an internal error for each call: nothing was answered, nothing
/// is billed.
fn unavailable(screened: &Screened, shared: &Shared) -> Response<ReplyBody> {
    shared.meters.unavailable();
    let text = screened.all_failed(INTERNAL_ERROR, "the node is unavailable");
    reply(StatusCode::BAD_GATEWAY, text)
}
