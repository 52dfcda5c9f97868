//! The state every connection of one gateway shares, and the two steps both
//! ways of calling (`http`, `ws`) take with it before a request reaches the
//! node: screening and admission. They live here, apart from either, so
//! that a request is screened, weighed and counted the same however it came,
//! and neither way of calling depends on the other.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::error;
use super::gate::{self, Gate, Refusal};
use super::jsonrpc;
use super::limits::{Policy, Weights};
use super::link::Spares;
use super::meter::{self, Ledger};
use super::screen;
use crate::metrics::Meters;
use crate::node::upstream::Upstream;

/// State every connection of one gateway shares.
pub struct Shared {
    /// The activity's user, as nginx names it (see `route::USER_HEADER`).
    pub user: hyper::header::HeaderValue,
    pub gate: Gate,
    pub weights: Weights,
    pub policy: Policy,
    pub ledger: Ledger,
    /// The operator's counters (see `metrics`): what the bill does not say.
    pub meters: Arc<Meters>,
    /// The node: every connection dials it through this, TLS included.
    pub upstream: Arc<Upstream>,
    /// Node connections between nginx connections (see `link`).
    pub spares: Arc<Spares>,
    pub shutdown: watch::Receiver<bool>,
}

/// A request's calls that passed screening, weighed and admitted: what their
/// answers owe, the units of their notifications, and the in-flight slot they hold.
pub struct Admitted {
    pub expected: meter::Expected,
    pub notifications: u64,
    pub permit: gate::InFlight,
}

impl Shared {
    /// Screens a request (see `screen`), counting each call it refuses for the
    /// operator, as HTTP and WebSocket requests both are.
    pub fn screen(
        &self,
        body: Bytes,
        message: jsonrpc::Message,
        subscriptions: usize,
    ) -> screen::Screened {
        let limits = self.gate.limits();
        let screened = screen::screen(body, message, &self.policy, limits, subscriptions);
        error::count_screened(&self.meters, &screened.reasons);
        screened
    }

    /// Weighs the calls that passed screening and admits them under the
    /// limits. A refusal is answered and counted, one per call, by `error`
    /// (`Error::NotAdmitted`).
    pub fn admit(&self, calls: &[jsonrpc::Call]) -> Result<Admitted, Refusal> {
        let methods = self.meters.methods();
        let (expected, notifications, units) =
            meter::Expected::weighed(calls, &self.weights, methods);
        let permit = self.gate.admit(calls.len(), units)?;
        Ok(Admitted {
            expected,
            notifications,
            permit,
        })
    }
}

/// Resolves once the gateway stops (or is dropped).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
