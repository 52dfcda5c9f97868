//! The operator's view: what each activity is doing, as Prometheus metrics, as
//! `ya-runtime-erigon metrics` and as `ya-runtime-erigon top`.
//!
//! - `meters`: an activity's live counters, kept by its gateway per call;
//! - `store`: the files where each runtime leaves its activity's reading, its
//!   network's node state and the provider's totals, read by anyone;
//! - `expose`: all of it in Prometheus' text format.
//!
//! Each activity is a process of its own, and a provider runs no daemon of ours, so
//! the metrics reach Prometheus the ways node operators already use: node_exporter's
//! textfile collector reads `metrics_file`, which the live runtimes keep current,
//! and `ya-runtime-erigon metrics` prints the same text on demand.

mod expose;
mod meters;
mod store;

pub use expose::{render, METRICS};
pub use meters::{
    Meters, MethodSlot, Methods, Reading, WebSocketGauge, BUCKETS_MICROS, OTHER, REASONS,
};
pub use store::{
    write_atomic, ActivityFile, Aggregate, Ended, Event, NodeFile, Store, Totals, PRIVATE, PUBLIC,
};

/// Rewrites `path` (`metrics_file`) with everything, folding dead runtimes' files
/// into the totals, all under the store's lock (see [`Store::collect_then`]).
pub fn write_text(
    store: &Store,
    networks: &[String],
    here: &crate::owner::Owner,
    path: &std::path::Path,
) -> Result<(), String> {
    store.collect_then(networks, here, true, |all| {
        write_atomic(path, render(&all).as_bytes(), false, PUBLIC)
    })
}
