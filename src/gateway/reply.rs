//! The gateway's own answers: whole, small, and known before they are sent,
//! so that `route` counts them whole (the node's are counted as they stream,
//! see `metered`). A leaf: what words an answer (`error`) needs nothing of
//! what streams one.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// The gateway's own answer: a JSON-RPC body, or nothing.
pub fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let json = !body.is_empty();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if json {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    resp
}
