//! A stop asked for while a start is still under way (the supervisor vanished, or a
//! signal came): every long wait of the start gives way to it, so the start can stop
//! what it began and leave nothing.

use tokio::sync::watch;

/// The asking side, kept by the runtime.
pub struct StopRequest(watch::Sender<bool>);

/// The listening side, handed to the start.
#[derive(Clone)]
pub struct Cancel(watch::Receiver<bool>);

pub fn pair() -> (StopRequest, Cancel) {
    let (tx, rx) = watch::channel(false);
    (StopRequest(tx), Cancel(rx))
}

impl StopRequest {
    pub fn request(&self) {
        self.0.send_replace(true);
    }
}

impl Cancel {
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is asked for; never, if the asking side is gone.
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|asked| *asked).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Runs `work` unless a stop is asked for first; `what` names the wait for the error.
    pub async fn unless<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::select! {
            biased;
            _ = self.cancelled() => Err(format!("start cancelled while {what}: the runtime was asked to stop")),
            done = work => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_cuts_a_wait_short() {
        let (stop, cancel) = pair();
        assert!(!cancel.is_cancelled());
        let waiting = cancel.unless("waiting", std::future::pending::<Result<(), String>>());
        stop.request();
        let err = waiting.await.unwrap_err();
        assert!(err.contains("start cancelled while waiting"), "{err}");
        assert!(cancel.is_cancelled());
        assert!(
            cancel.unless("done", async { Ok(1) }).await.is_err(),
            "once asked, the stop wins even over finished work"
        );
    }

    #[tokio::test]
    async fn work_that_finishes_first_wins() {
        let (_stop, cancel) = pair();
        assert_eq!(cancel.unless("x", async { Ok(7) }).await, Ok(7));
    }
}
