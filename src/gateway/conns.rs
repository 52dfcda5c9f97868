//! The connections from nginx a gateway has open: which of them are idle, and
//! telling each one to close, with no timer and no lock per request.
//!
//! hyper's own header-read timeout arms a timer for every request: a boxed
//! sleep put into tokio's timer wheel and taken out again, and most often a
//! write to the runtime's eventfd so that its next park sees the new deadline.
//! That was a measurable share of the gateway hop. Instead, one sweep a second
//! looks at every connection, and closes one that has had no request under way
//! for [`IDLE_SECS`]: an idle keep-alive connection, or a client that never
//! finishes its request head. Each request only bumps two atomics.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{Id, JoinSet};

/// A connection with no request under way for this long is closed. nginx
/// closes its idle connections to a seat sooner (`seat::KEEPALIVE_SECS`), so
/// it never sends a request on one the gateway is closing.
pub const IDLE_SECS: u32 = 10;

// nginx must drop an idle connection to a seat before the gateway does.
const _: () = assert!(crate::access::seat::KEEPALIVE_SECS < IDLE_SECS);
/// How often the sweep runs; an idle connection closes between [`IDLE_SECS`]
/// and one sweep later.
pub const SWEEP: Duration = Duration::from_secs(1);

/// What one connection shows the sweep.
#[derive(Debug)]
pub struct Pulse {
    /// The sweep's count of seconds, shared by the gateway's connections.
    now: Arc<AtomicU32>,
    /// The count when the connection last had a request under way.
    last: AtomicU32,
    /// Requests under way: begun, and their answer not yet all written.
    busy: AtomicU32,
}

impl Pulse {
    /// A request begins; the connection is busy until the guard is dropped,
    /// once its answer has been written (or abandoned).
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    fn idle_for(&self) -> Option<u32> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.now.load(Ordering::Relaxed);
        Some(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// A request under way on a connection (see [`Pulse::begin`]).
#[derive(Debug)]
pub struct Busy(Arc<Pulse>);

impl Drop for Busy {
    fn drop(&mut self) {
        let pulse = &self.0;
        pulse
            .last
            .store(pulse.now.load(Ordering::Relaxed), Ordering::Relaxed);
        pulse.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections' tasks, kept by the gateway's accept loop.
#[derive(Default)]
pub struct Conns {
    now: Arc<AtomicU32>,
    tasks: JoinSet<()>,
    /// Each task's pulse, and the sender of its close signal until sent.
    open: HashMap<Id, (Arc<Pulse>, Option<oneshot::Sender<()>>)>,
}

impl Conns {
    /// Serves a new connection in a task of its own: `serve` gets the
    /// connection's pulse and its close signal (sent, or its sender dropped,
    /// when the connection must close). Returns the pulse.
    pub fn spawn<F, Fut>(&mut self, serve: F) -> Arc<Pulse>
    where
        F: FnOnce(Arc<Pulse>, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let pulse = Arc::new(Pulse {
            now: Arc::clone(&self.now),
            last: AtomicU32::new(self.now.load(Ordering::Relaxed)),
            busy: AtomicU32::new(0),
        });
        let (close, closing) = oneshot::channel();
        let task = self.tasks.spawn(serve(Arc::clone(&pulse), closing));
        self.open
            .insert(task.id(), (Arc::clone(&pulse), Some(close)));
        pulse
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for a connection's task to end, and forgets it.
    pub async fn join_next(&mut self) -> Option<()> {
        let ended = self.tasks.join_next_with_id().await?;
        let task = match ended {
            Ok((task, ())) => task,
            Err(e) => e.id(),
        };
        self.open.remove(&task);
        Some(())
    }

    /// One second passed: tells the connections idle for [`IDLE_SECS`] to
    /// close.
    pub fn sweep(&mut self) {
        self.now.fetch_add(1, Ordering::Relaxed);
        for (pulse, close) in self.open.values_mut() {
            if pulse.idle_for().is_some_and(|idle| idle >= IDLE_SECS) {
                tell(close);
            }
        }
    }

    /// Tells every connection to close, and waits for them to end; past
    /// `limit`, the ones left are dropped.
    pub async fn close_all(&mut self, limit: Duration) {
        for (_, close) in self.open.values_mut() {
            tell(close);
        }
        let drained = async { while self.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, drained).await.is_err() {
            self.tasks.abort_all();
            while self.join_next().await.is_some() {}
        }
    }
}

fn tell(close: &mut Option<oneshot::Sender<()>>) {
    if let Some(close) = close.take() {
        let _ = close.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn only_a_connection_idle_for_the_limit_is_told_to_close() {
        let mut conns = Conns::default();
        let (told, mut closed) = mpsc::unbounded_channel();
        let mut pulses = Vec::new();
        for name in ["quiet", "working"] {
            let told = told.clone();
            pulses.push(conns.spawn(move |_pulse, close| async move {
                let _ = close.await;
                let _ = told.send(name);
            }));
        }
        let busy = pulses[1].begin();
        fn quietly(closed: &mut mpsc::UnboundedReceiver<&'static str>) -> Option<&'static str> {
            closed.try_recv().ok()
        }
        for _ in 1..IDLE_SECS {
            conns.sweep();
        }
        tokio::task::yield_now().await;
        assert_eq!(quietly(&mut closed), None, "closed before the limit");
        conns.sweep();
        assert_eq!(closed.recv().await, Some("quiet"), "idle for the limit");
        conns.join_next().await;
        assert_eq!(conns.open.len(), 1);
        for _ in 0..2 * IDLE_SECS {
            conns.sweep();
        }
        tokio::task::yield_now().await;
        assert_eq!(
            quietly(&mut closed),
            None,
            "a request under way is never idle"
        );
        // Its request ends now: idle from this second on.
        drop(busy);
        for _ in 1..IDLE_SECS {
            conns.sweep();
        }
        tokio::task::yield_now().await;
        assert_eq!(quietly(&mut closed), None);
        conns.sweep();
        assert_eq!(closed.recv().await, Some("working"));
        conns.close_all(Duration::from_secs(1)).await;
        assert!(conns.is_empty() && conns.open.is_empty());
    }
}
