//! The activity's gateway: a JSON-RPC proxy on a Unix socket between nginx
//! and the node, so that each activity's traffic is metered per call,
//! limited, and cut off when the activity ends.
//!
//! A request goes down these stages, each a module. `route` sits above `http`
//! and `ws`, so that neither depends on the other; `error` and `reply` are
//! below every stage that fails or answers, so no stage's import climbs back.
//! - `serve`: the gateway's life: its socket, accepting connections within
//!   the connection limit, and closing all of them at the stop.
//! - `route`: one connection from nginx: each request checked for the
//!   activity's user and sent to `http` or `ws`, a WebSocket relayed once
//!   hyper lets go of it.
//! - `http`, `ws`: the two ways a client calls; `frame`: WebSocket frames a
//!   piece at a time, for `ws`; `metered`: the node's answer to an HTTP
//!   request, billed as it streams.
//! - `shared`: the state a gateway's connections share, and screening and
//!   admission as both ways of calling take them.
//! - `jsonrpc`: reading requests (bounded), and the shape of JSON-RPC errors.
//! - `screen`: the calls of a request the policy and the limits refuse; the
//!   rest go on.
//! - `gate`: admitting each request under the limits, and which limit
//!   refused it.
//! - `error`: every failure, and the one place it is answered (HTTP status
//!   and headers, JSON-RPC error, WebSocket message or Close frame) and
//!   counted for the operator; `reply`: the gateway's own answers, whole;
//!   `metered` also names the body type both kinds of answer share.
//! - `limits`: the limits, the weights and the method policy, with their
//!   defaults.
//! - `meter`: the bill and matching answers to calls; `ids`: the keys they
//!   are matched by.
//! - `scan`: finding answers in what the node sends (an HTTP answer, a
//!   WebSocket message) as it streams.
//! - `link`: the connections to the node, one per connection from nginx.
//! - `conns`: the connections from nginx, closed when idle or at a stop.
//! - `quiet`: a connection from nginx's socket, woken only to read.

mod conns;
mod error;
mod frame;
mod gate;
mod http;
mod ids;
mod jsonrpc;
mod limits;
mod link;
mod meter;
mod metered;
mod quiet;
mod reply;
mod route;
mod scan;
mod screen;
mod serve;
mod shared;
mod ws;

pub use conns::IDLE_SECS;
pub use limits::{Limits, Policy, RawLimits, Weights, DENIED, NOTIFICATION};
pub use meter::{exchange, Bill, Exchanged, Ledger};
pub use route::USER_HEADER;
pub use serve::{Gateway, GatewaySpec};
