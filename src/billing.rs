//! Per-call billing: the activity's gateway counts the JSON-RPC calls it answered (see
//! `gateway`), and this module reports the count to the ExeUnit as the usage counter
//! the descriptor declares, at most once a second and once more, final, at the end.

use std::time::Duration;

use ya_runtime_sdk::{EventEmitter, RuntimeCounter};

use crate::gateway::Ledger;

/// The usage counter, declared in the plugin descriptor and priced in the preset.
pub const COUNTER: &str = "golem.usage.erigon.requests";

/// The ExeUnit reads usage every second; reporting more often only costs events.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Reports the cumulative count whenever it changed, at most once per
/// [`REPORT_EVERY`]. Nothing is reported while the count is 0: unused activities
/// are not billed. The count is read once a tick rather than waited on, so that
/// billing a call wakes nothing.
pub fn spawn_counter(emitter: EventEmitter, billed: Ledger) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let mut reported = 0u64;
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = billed.billed();
            if now != reported {
                report(&emitter, now).await;
                reported = now;
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
