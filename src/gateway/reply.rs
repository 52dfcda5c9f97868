//! The gateway's own answers: a JSON-RPC body it wrote, or a refusal with the
//! status and header a client acts on; and the body type every answer has.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::gate::Refusal;
use super::metered::Metered;

/// Every answer body: the gateway's own, or the node's as it streams.
pub type ReplyBody = Either<Full<Bytes>, Metered>;

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

/// A refusal: 429 with `Retry-After`, as hosted services throttle, when a
/// retry can pass; 413 without it when the request can never pass as it is
/// (too large a batch, body or weight).
pub fn refused(refusal: &Refusal, body: Bytes) -> Response<ReplyBody> {
    let Some(secs) = refusal.retry_after else {
        return reply(StatusCode::PAYLOAD_TOO_LARGE, body);
    };
    let mut resp = reply(StatusCode::TOO_MANY_REQUESTS, body);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}
