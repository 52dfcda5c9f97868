//! The node's answer to an HTTP request on its way to the client: billed as
//! it streams (each answer object as the piece that ends it is handed on),
//! with the gateway's own answers to the calls it refused written into the
//! node's array.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use serde_json::Value;

use super::conns::Busy;
use super::gate::InFlight;
use super::meter::{notifications_taken, Bill, Expected};
use super::scan::Scanner;
use super::shared::Shared;

/// Every answer body: the gateway's own (`reply`), or the node's as it
/// streams. One type for both lets hyper serve a connection with a single
/// service, and `route` tell the gateway's answers (counted whole) from the
/// node's (counted here as they stream).
pub type ReplyBody = http_body_util::Either<http_body_util::Full<Bytes>, Metered>;

/// The node's answer on its way to the client. Each answer object is billed
/// as the piece that ends it is handed to the connection; the in-flight slot
/// is held, and the connection counts as busy, until the body ends or the
/// client goes away.
pub struct Metered {
    inner: Incoming,
    scanner: Scanner,
    expected: Expected,
    /// `None` when the node's status carries no answers (a 4xx, passed
    /// through unbilled); else the units of the request's notifications not
    /// billed yet, billed once the node's answer shows it took the request: an
    /// array, or nothing at all. A single error object for a batch is the
    /// node refusing it whole.
    notifications: Option<u64>,
    batch: bool,
    /// The gateway's answers to the calls of this batch it refused, written
    /// into the node's array before it closes (or as the array, if the node
    /// sent nothing).
    own: Option<Vec<Value>>,
    shared: Arc<Shared>,
    held: Option<(InFlight, Busy)>,
}

impl Metered {
    /// The node's answer `inner` to a request that owes `expected` answers;
    /// `notifications` is `None` when the node's status carries no answers
    /// (a 4xx, passed through unbilled). `own` are the gateway's answers to
    /// the calls of this batch it refused; `held` is released at the end.
    pub fn new(
        inner: Incoming,
        expected: Expected,
        notifications: Option<u64>,
        batch: bool,
        own: Option<Vec<Value>>,
        shared: Arc<Shared>,
        held: (InFlight, Busy),
    ) -> Metered {
        Metered {
            inner,
            scanner: Scanner::default(),
            expected,
            notifications,
            batch,
            own,
            shared,
            held: Some(held),
        }
    }

    /// Bills the notifications once the answer's shape is known (or it ended
    /// empty).
    fn bill_notifications(&mut self, ended: bool) {
        let shape = self.scanner.started().then(|| self.scanner.is_batch());
        if shape.is_none() && !ended {
            return;
        }
        let taken = notifications_taken(self.batch, shape);
        let units = self.notifications.as_mut().map_or(0, std::mem::take);
        if taken {
            self.shared.ledger.add(Bill::units(units));
        }
    }

    /// The gateway's own answers as they join the node's array: after its
    /// last answer (with a comma if it had one), or as a whole array.
    fn own_text(&mut self, whole: bool) -> Option<Bytes> {
        let own = self.own.take()?;
        let joined = own
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Some(Bytes::from(match (whole, self.scanner.found()) {
            (true, _) => format!("[{joined}]"),
            (false, 0) => joined,
            (false, _) => format!(",{joined}"),
        }))
    }
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
        let data = match frame {
            Some(Ok(frame)) if this.notifications.is_some() => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            },
            None => {
                if this.notifications.is_some() {
                    this.bill_notifications(true);
                }
                this.held = None;
                // A node that sent nothing (for calls that were all
                // notifications): the gateway's answers are the array. One
                // that sent a single object for the batch (an error for all
                // of it) leaves no array to join them to.
                let own = match this.scanner.started() {
                    false => this.own_text(true),
                    true => {
                        this.own = None;
                        None
                    }
                };
                if let Some(own) = &own {
                    this.shared.meters.sent(own.len());
                }
                return Poll::Ready(own.map(|t| Ok(Frame::data(t))));
            }
            other => return Poll::Ready(other),
        };
        let mut bill = Bill::default();
        let expected = &mut this.expected;
        let meters = &this.shared.meters;
        let closed = this.scanner.feed(&data, |found| {
            if let Some(answered) = expected.answer(found.key) {
                bill = bill.plus(Bill::call(answered.weight));
                meters.answered(answered.method, found.error);
            }
        });
        this.shared.ledger.add(bill);
        if this.notifications.is_some_and(|n| n > 0) {
            this.bill_notifications(false);
        }
        let data = match closed.and_then(|at| Some((at, this.own_text(false)?))) {
            Some((at, own)) => {
                let (before, after) = data.split_at(at.min(data.len()));
                Bytes::from([before, &own, after].concat())
            }
            None => data,
        };
        this.shared.meters.sent(data.len());
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.own.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.own {
            // The gateway's own answers make it longer than the node's.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}
