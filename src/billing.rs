//! Per-call billing: the activity's gateway counts the JSON-RPC calls it answered (see
//! `gateway`), and this module reports the count to the ExeUnit as the usage counter
//! the descriptor declares, at most once a second and once more, final, at the end.

use std::time::Duration;

use tokio::sync::watch;
use ya_runtime_sdk::{EventEmitter, RuntimeCounter};

/// The usage counter, declared in the plugin descriptor and priced in the preset.
pub const COUNTER: &str = "golem.usage.erigon.requests";

/// The ExeUnit reads usage every second; reporting more often only costs events.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Reports the cumulative count whenever it changed, at most once per
/// [`REPORT_EVERY`]. Nothing is reported while the count is 0: unused activities
/// are not billed.
pub fn spawn_counter(
    emitter: EventEmitter,
    mut billed: watch::Receiver<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let mut reported = 0u64;
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            tick.tick().await;
            let now = *billed.borrow_and_update();
            if now != reported {
                report(&emitter, now).await;
                reported = now;
            }
            if billed.changed().await.is_err() {
                return;
            }
        }
    })
}

/// One report of the cumulative count; the last one the ExeUnit receives is billed.
pub async fn report(emitter: &EventEmitter, total: u64) {
    let mut emitter = emitter.clone();
    let counter = || RuntimeCounter {
        name: COUNTER.to_owned(),
        value: total as f64,
    };
    emitter.counter(counter()).await;
}

/// The last report, made before the Shutdown answer. The SDK hands an event through
/// two local tasks (its emitter's, then the protocol writer's) before it reaches
/// stdout, while the Shutdown answer is written by the request loop itself, which the
/// ExeUnit kills the runtime after. So the report is followed by a few turns of the
/// executor, in which those tasks (already woken) take the event and write it out.
pub async fn report_final(emitter: &EventEmitter, total: u64) {
    /// Each hop needs one turn; the margin costs microseconds.
    const TURNS: usize = 8;
    report(emitter, total).await;
    for _ in 0..TURNS {
        tokio::task::yield_now().await;
    }
}
