//! One connection from nginx: hyper serves its requests with keep-alive;
//! each is checked for the activity's user and sent to `http` (a POST) or
//! `ws` (an upgrade), and a failure either returns is answered through
//! `error`. A WebSocket accepted in a request is relayed here once hyper lets
//! go of the connection. Routing sits above both ways of calling so that
//! neither depends on the other.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Either;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use tokio::net::UnixStream;

use super::conns::{Busy, Pulse};
use super::error::Error;
use super::http;
use super::link::{Link, MAX_BUF};
use super::metered::ReplyBody;
use super::quiet;
use super::shared::Shared;
use super::ws;

/// The header nginx sets to the user whose password it checked; a client's own
/// header of that name never passes nginx (`proxy_set_header` replaces it).
pub const USER_HEADER: &str = "x-erigon-user";

/// How long a stop lets answers already on their way finish; past it they
/// are dropped with their connections. Short, since no call may be answered
/// later than 1 s after the Shutdown answer.
pub const DRAIN: Duration = Duration::from_millis(200);

/// Serves one connection: HTTP requests with keep-alive, or one WebSocket
/// after an upgrade, until `close` (idle, or the gateway stops).
pub async fn serve(
    stream: UnixStream,
    shared: Arc<Shared>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    pulse: Arc<Pulse>,
    close: tokio::sync::oneshot::Receiver<()>,
) {
    let slot: ws::Slot = Arc::default();
    let link = Arc::new(Link::new(
        Arc::clone(&shared.upstream),
        Arc::clone(&shared.spares),
    ));
    let service = {
        let (shared, slot) = (Arc::clone(&shared), Arc::clone(&slot));
        service_fn(move |req| {
            let busy = pulse.begin();
            request(
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

/// Serves one request of a connection.
async fn request(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    slot: ws::Slot,
    link: Arc<Link>,
    busy: Busy,
) -> Result<Response<ReplyBody>, Infallible> {
    let answered = if req.headers().get(USER_HEADER) != Some(&shared.user) {
        // Not this activity's user: nothing is read, admitted or billed.
        Err(Error::WrongUser)
    } else if req.method() == Method::GET && ws::is_upgrade(&req) {
        ws::accept(&mut req, &shared, &slot).await
    } else if req.method() != Method::POST {
        Err(Error::MethodNotAllowed)
    } else {
        http::post(req, Arc::clone(&shared), &link, busy).await
    };
    let resp = answered.unwrap_or_else(|error| error.http(&shared.meters).map(Either::Left));
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
