//! JSON-RPC over HTTP POST: read a bounded body, screen and admit it, forward
//! it to the node (a batch stays one batch), and stream the answer back while
//! billing each answered call; the gateway's own answers to calls it refused
//! join the node's in the same array.
//!
//! A failure of the request as a whole (a limit, bad JSON, the node) is
//! returned rather than answered here, so that `error` words and counts it
//! as it does the same failure on a WebSocket.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either};
use hyper::body::{Body, Incoming};
use hyper::header;
use hyper::{Request, Response, StatusCode};

use super::conns::Busy;
use super::error::Error;
use super::gate::InFlight;
use super::jsonrpc;
use super::link::Link;
use super::meter::{Bill, Expected};
use super::metered::{Metered, ReplyBody};
use super::reply::reply;
use super::screen::Screened;
use super::shared::{Admitted, Shared};

/// A client that has not sent its whole body by then is dropped: a slow
/// body would otherwise hold a connection slot indefinitely.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves a POST of the activity's user: the node's answer as it streams, or
/// the gateway's own when every call was refused here; a failure of the
/// whole request is returned for `error` to answer.
pub async fn post(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    link: &Link,
    busy: Busy,
) -> Result<Response<ReplyBody>, Error> {
    let max = shared.gate.limits().body_bytes();
    // A body announced too large is refused before any of it is read.
    let hint = req.body().size_hint();
    if hint.lower() > u64::from(max) {
        return Err(Error::BodyTooLarge { max });
    }
    // nginx sends a length; a chunked body may take up to the limit.
    let reserve = hint.exact().unwrap_or(u64::from(max));
    let _budget = shared
        .gate
        .reserve_body(reserve)
        .map_err(Error::BodyBudget)?;
    let most = usize::try_from(max).unwrap_or(usize::MAX);
    let reserve = usize::try_from(reserve).unwrap_or(most).min(most);
    let read = read_body(req.into_body(), reserve, most);
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(Some(body))) => {
            shared.meters.received(body.len());
            body
        }
        Ok(Ok(None)) => return Err(Error::BodyTooLarge { max }),
        failed => {
            log::debug!("gateway: no request body: {failed:?}");
            return Err(Error::BodyUnread);
        }
    };
    let limits = shared.gate.limits();
    let batch = usize::try_from(limits.batch()).unwrap_or(usize::MAX);
    let message = jsonrpc::parse(&body, batch).map_err(Error::BadJson)?;
    if let Err(refusal) = shared.gate.batch(message.len()) {
        let len = message.len();
        return Err(Error::BatchTooLarge { refusal, len });
    }
    // Nodes serve subscriptions over WebSockets only.
    let screened = shared.screen(body, message, usize::MAX);
    let Some(body) = screened.body.clone() else {
        // Every call was refused here: nothing reaches the node.
        return Err(Error::AllRefused {
            refused: screened.refused,
            batch: screened.batch,
        });
    };
    let Admitted {
        expected,
        notifications,
        permit,
    } = match shared.admit(&screened.calls) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            return Err(Error::NotAdmitted {
                refusal,
                calls: screened.calls,
                refused: screened.refused,
                batch: screened.batch,
            })
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
) -> Result<Response<ReplyBody>, Error> {
    let Forward {
        body,
        screened,
        mut expected,
        notifications,
    } = request;
    let req = shared.upstream.http().post(body);
    let timeout = shared.gate.limits().call_timeout();
    if let Err(e) = link.connect(timeout).await {
        log::warn!("gateway: the node is unreachable: {e}");
        return Err(unavailable(screened));
    }
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
            return Err(unavailable(screened));
        }
        Ok(Err(e)) => {
            log::warn!("gateway: the node is unreachable: {e}");
            return Err(unavailable(screened));
        }
        Err(_) => {
            log::info!("gateway: the node did not answer within {timeout:?}; its calls are billed");
            let given = expected.give_up();
            shared
                .ledger
                .add(given.bill.plus(Bill::units(notifications)));
            return Err(Error::NodeTimeout {
                ids: given.ids,
                methods: given.methods,
                timeout,
                refused: screened.refused,
                batch: screened.batch,
            });
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
        return Ok(match screened.own_answer() {
            Some(own) => reply(StatusCode::OK, own).map(Either::Left),
            None => reply(parts.status, Bytes::new()).map(Either::Left),
        });
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
    Ok(resp)
}

/// The node did not answer: each call gets an internal error, nothing is
/// billed.
fn unavailable(screened: Screened) -> Error {
    Error::NodeUnavailable {
        calls: screened.calls,
        refused: screened.refused,
        batch: screened.batch,
    }
}
