//! Per-call billing: the activity's gateway counts the JSON-RPC calls the node answered
//! and their compute units (see `gateway::meter`), and this module reports both to the
//! ExeUnit as the usage counters the descriptor declares, at most once a second and
//! once more, final, at the end.

use std::time::Duration;

use ya_runtime_sdk::{EventEmitter, RuntimeCounter};

use crate::gateway::{Bill, Ledger};

/// The usage counters, declared in the plugin descriptor and priced in the preset:
/// calls the node answered, and their weights in compute units.
pub const COUNTER: &str = "golem.usage.erigon.requests";
pub const CU_COUNTER: &str = "golem.usage.erigon.compute-units";

/// The ExeUnit reads usage every second; reporting more often only costs events.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Reports the cumulative bill whenever it changed, at most once per
/// `REPORT_EVERY`. Nothing is reported while the bill is 0: unused activities
/// are not billed. The bill is read once a tick rather than waited on, so that
/// billing a call wakes nothing.
pub fn spawn_counter(emitter: EventEmitter, billed: Ledger) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let mut reported = Bill::default();
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

/// One report of both cumulative counters; the last one the ExeUnit receives is
/// billed. (An f64 holds every count below 2^53 exactly: 285 years at a million a
/// second.)
pub async fn report(emitter: &EventEmitter, total: Bill) {
    let mut emitter = emitter.clone();
    for (name, value) in [(COUNTER, total.calls), (CU_COUNTER, total.units)] {
        let counter = RuntimeCounter {
            name: name.to_owned(),
            value: value as f64,
        };
        emitter.counter(counter).await;
    }
}

/// The last report, made before the Shutdown answer. The SDK hands an event through
/// two local tasks (its emitter's, then the protocol writer's) before it reaches
/// stdout, while the Shutdown answer is written by the request loop itself, which the
/// ExeUnit kills the runtime after. So the report is followed by a few turns of the
/// executor, in which those tasks (already woken) take the event and write it out.
pub async fn report_final(emitter: &EventEmitter, total: Bill) {
    /// Each hop needs one turn; the margin costs microseconds.
    const TURNS: usize = 8;
    report(emitter, total).await;
    for _ in 0..TURNS {
        tokio::task::yield_now().await;
    }
}
