//! The activity's part of the operator's metrics (see `metrics`): its reading
//! written once a second when it changed, its network's node probed when no runtime
//! has done so lately, and the provider's `metrics_file` rewritten when it is
//! older than [`TEXT_EVERY`]; the starts, failed starts and stops counted.
//!
//! All of it is file work, and the runtime has one thread, which serves the
//! activity's calls: every file is read and written on the blocking pool, and a
//! failure is logged once, not once a second, and never stops the activity.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

use crate::config::Config;
use crate::gateway::Ledger;
use crate::metrics::{ActivityFile, Event, Meters, NodeFile, Reading, Store};
use crate::node::health::{JsonRpc, NodeReport};
use crate::owner::Owner;
use crate::runtime::session::Session;

/// How often the activity's reading is looked at (and written if it changed):
/// `top` refreshes at this pace.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// How old a network's node state may be before a runtime of that network probes
/// the node again: five light calls, whichever runtime gets there first.
const PROBE_EVERY: Duration = Duration::from_secs(15);
/// How old `metrics_file` may be before a runtime rewrites it. Prometheus scrapes
/// every 15 s or more, and node_exporter reads the file at each scrape.
const TEXT_EVERY: Duration = Duration::from_secs(5);
/// The most a stop waits for its final count (it has 5 s in all).
const FINISH_WITHIN: Duration = Duration::from_millis(500);

/// What the provider's metrics need from every runtime, whether or not its
/// activity started.
#[derive(Clone, Debug)]
pub struct Counting {
    store: Store,
    textfile: Option<PathBuf>,
    networks: Vec<String>,
}

impl Counting {
    pub fn new(config: &Config) -> Counting {
        Counting {
            store: Store::new(config.data_dir()),
            textfile: config.metrics_file().map(PathBuf::from),
            networks: config.network_names(),
        }
    }

    /// Counts a start or a failed start, in the background; `metrics_file` follows.
    pub fn count(&self, event: Event) {
        let this = self.clone();
        drop(tokio::task::spawn_blocking(move || {
            let counted = this.store.prepare().and_then(|()| this.store.count(&event));
            if let Err(e) = counted {
                log::warn!("metrics: {e}");
            }
            this.write_text(None);
        }));
    }

    /// Rewrites `metrics_file`, if the operator named one, when it is older than
    /// `older_than` (always when `None`). Blocking.
    fn write_text(&self, older_than: Option<Duration>) -> Option<String> {
        let path = self.textfile.as_ref()?;
        if let Some(age) = older_than {
            let modified = std::fs::metadata(path).and_then(|m| m.modified());
            let fresh = modified.is_ok_and(|m| m.elapsed().is_ok_and(|e| e < age));
            if fresh {
                return None;
            }
        }
        let written = Owner::current()
            .and_then(|here| crate::metrics::write_text(&self.store, &self.networks, &here, path));
        written.err()
    }
}

/// One activity's publishing: what it writes, and what it reads the numbers from.
pub struct Publisher {
    counting: Counting,
    file: ActivityFile,
    meters: Arc<Meters>,
    ledger: Ledger,
    rpc: JsonRpc,
    /// Held while the activity's file is written, and true once the stop counted
    /// it: a write still running on the blocking pool when the loop is aborted
    /// must not bring the file back after the stop removed it (it would then
    /// count as a lost runtime's, twice).
    ended: Mutex<bool>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Publisher {
    /// `None` for a session already cut off, or when this process cannot be named
    /// (then a stale file could not be told from a live one).
    pub fn new(counting: Counting, session: &Session, activity: &str) -> Option<Publisher> {
        let owner = match Owner::current() {
            Ok(owner) => owner,
            Err(e) => {
                log::warn!("metrics: {e}; this activity is left out of them");
                return None;
            }
        };
        let network = session.network().name();
        let file = ActivityFile::new(session.user(), network, activity, owner, unix_now());
        Some(Publisher {
            counting,
            file,
            meters: session.meters()?,
            ledger: session.billed()?,
            rpc: session.rpc().clone(),
            ended: Mutex::new(false),
        })
    }

    fn reading(&self) -> Reading {
        let mut reading = self.meters.read();
        let bill = self.ledger.billed();
        reading.billed_calls = bill.calls;
        reading.billed_units = bill.units;
        reading
    }

    fn file_now(&self) -> ActivityFile {
        ActivityFile {
            reading: self.reading(),
            ..self.file.clone()
        }
    }

    /// The loop, until aborted at the stop.
    pub fn spawn(self: Arc<Self>) -> JoinHandle<()> {
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(WRITE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut written: Option<Reading> = None;
            let mut last_error = None;
            loop {
                tick.tick().await;
                let now = self.file_now();
                let changed = written.as_ref() != Some(&now.reading);
                let reading = now.reading.clone();
                let this = Arc::clone(&self);
                let work = tokio::task::spawn_blocking(move || this.write(changed.then_some(now)));
                let Ok((probe_due, error)) = work.await else {
                    continue;
                };
                if changed && error.is_none() {
                    written = Some(reading);
                }
                if error.is_some() && error != last_error {
                    log::warn!("metrics: {}", error.as_deref().unwrap_or_default());
                }
                last_error = error;
                if probe_due {
                    self.probe().await;
                }
            }
        })
    }

    /// One tick's file work: the activity's file, then `metrics_file` if it is due.
    /// Whether the node is due for a probe, and the first error.
    fn write(&self, file: Option<ActivityFile>) -> (bool, Option<String>) {
        let store = &self.counting.store;
        let mut error = file.and_then(|f| {
            let ended = self.ended.lock().ok()?;
            match *ended {
                true => None,
                false => store.write_activity(&f).err(),
            }
        });
        let due = store
            .node_age(&self.file.network)
            .map_or(true, |age| age >= PROBE_EVERY);
        let text = self.counting.write_text(Some(TEXT_EVERY));
        error = error.or(text);
        (due, error)
    }

    async fn probe(&self) {
        let report = crate::node::health::probe(&self.rpc).await;
        let node = node_file(&self.file.network, &report);
        let store = self.counting.store.clone();
        let written = tokio::task::spawn_blocking(move || store.write_node(&node)).await;
        if let Ok(Err(e)) = written {
            log::debug!("metrics: {e}");
        }
    }

    /// The stop: the final reading joins the network's totals and the file goes,
    /// in one step under the lock; then `metrics_file` follows. Bounded, since the
    /// ExeUnit kills the runtime 5 s after Shutdown.
    pub async fn finish(self: Arc<Self>) {
        let file = self.file_now();
        let work = tokio::task::spawn_blocking(move || {
            let store = &self.counting.store;
            match self.ended.lock() {
                Ok(mut ended) if !*ended => {
                    *ended = true;
                    if let Err(e) = store.count(&Event::Stopped(Box::new(file))) {
                        log::warn!("metrics: {e}");
                    }
                }
                _ => {}
            }
            self.counting.write_text(None)
        });
        match tokio::time::timeout(FINISH_WITHIN, work).await {
            Ok(Ok(Some(e))) => log::warn!("metrics: {e}"),
            Ok(_) => {}
            Err(_) => log::warn!(
                "metrics: the final count took over {} ms; it finishes in the background",
                FINISH_WITHIN.as_millis()
            ),
        }
    }
}

/// What a probe says, as the metrics keep it.
fn node_file(network: &str, report: &NodeReport) -> NodeFile {
    NodeFile {
        up: report.chain_id.is_some(),
        synced: report.sync.as_ref().map(|s| !s.syncing),
        head_block: report.head.as_ref().map(|h| h.number),
        head_age_secs: report.head.as_ref().map(|h| h.age_secs),
        peers: report.peers,
        ..NodeFile::new(network, unix_now())
    }
}
