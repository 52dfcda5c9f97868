//! Where the metrics live between processes: one small file per live activity,
//! one per network's node, and the provider's running totals, under
//! `<data_dir>/metrics/`.
//!
//! Each activity is its own runtime process, and `metrics` and `top` are others, so
//! the numbers meet in files rather than in a daemon. A live activity's file is
//! replaced (write, rename) once a second by its own runtime, with no lock: a
//! reader sees the old file or the new one. The totals change at starts and stops
//! only; they are read and written under an flock on `lock`, and a stop adds its
//! activity's final bill to its network's totals and removes its file under that
//! lock, so that no reader counts it twice or not at all.
//!
//! A runtime killed with SIGKILL leaves its file behind. Whoever collects next
//! counts it as ended, with the last reading it wrote (at most a second old); a
//! runtime folds it into the totals for good (see [`Store::collect`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::meters::Reading;
use crate::owner::Owner;

/// Bumped when a file's meaning changes; files of another version are skipped.
const VERSION: u32 = 1;
/// A file larger than this is not ours (an activity's is a few KB).
const MAX_FILE: u64 = 1 << 20;

/// One live activity, as its runtime last wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityFile {
    pub version: u32,
    pub user: String,
    pub network: String,
    /// The ExeUnit's activity (its work folder's name), for the operator's logs.
    pub activity: String,
    pub owner: Owner,
    /// When the activity became ready, in seconds since the Unix epoch.
    pub started_at: u64,
    pub reading: Reading,
}

/// What a network's node said at its last probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeFile {
    pub version: u32,
    pub network: String,
    /// When it was probed, in seconds since the Unix epoch.
    pub probed_at: u64,
    /// It answered at all.
    pub up: bool,
    pub synced: Option<bool>,
    pub head_block: Option<u64>,
    pub head_age_secs: Option<i64>,
    pub peers: Option<u64>,
}

/// Calls and compute units of the activities that ended on one network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ended {
    pub activities: u64,
    pub calls: u64,
    pub units: u64,
}

/// The provider's running totals since its metrics folder was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub version: u32,
    /// Starts that served, by network.
    pub starts: BTreeMap<String, u64>,
    /// Starts that failed, by reason (see `failure`).
    pub start_failures: BTreeMap<String, u64>,
    /// Stops of activities that had started, by network.
    pub stops: BTreeMap<String, u64>,
    /// Runtimes that died without stopping (SIGKILL, a crash), by network.
    pub lost: BTreeMap<String, u64>,
    pub ended: BTreeMap<String, Ended>,
}

/// Everything the metrics show, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Aggregate {
    /// Every configured network, so that one with nothing live still shows 0.
    pub networks: BTreeSet<String>,
    pub activities: Vec<ActivityFile>,
    pub nodes: BTreeMap<String, NodeFile>,
    pub totals: Totals,
}

/// Something to count in the totals.
#[derive(Clone, Debug)]
pub enum Event {
    Started {
        network: String,
    },
    StartFailed {
        reason: &'static str,
    },
    /// An activity's final file: its bill joins its network's totals.
    Stopped(Box<ActivityFile>),
}

/// The metrics folder of one provider.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

fn add(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    let at = map.entry(key.to_owned()).or_default();
    *at = at.saturating_add(n);
}

impl Totals {
    fn end(&mut self, file: &ActivityFile) {
        let ended = self.ended.entry(file.network.clone()).or_default();
        ended.activities = ended.activities.saturating_add(1);
        ended.calls = ended.calls.saturating_add(file.reading.billed_calls);
        ended.units = ended.units.saturating_add(file.reading.billed_units);
    }

    fn count(&mut self, event: &Event) {
        match event {
            Event::Started { network } => add(&mut self.starts, network, 1),
            Event::StartFailed { reason } => add(&mut self.start_failures, reason, 1),
            Event::Stopped(file) => {
                add(&mut self.stops, &file.network, 1);
                self.end(file);
            }
        }
    }
}

impl Store {
    pub fn new(data_dir: &Path) -> Store {
        Store {
            dir: data_dir.join("metrics"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn activities(&self) -> PathBuf {
        self.dir.join("activities")
    }

    fn nodes(&self) -> PathBuf {
        self.dir.join("nodes")
    }

    fn totals_path(&self) -> PathBuf {
        self.dir.join("totals.json")
    }

    pub fn activity_path(&self, user: &str) -> PathBuf {
        self.activities().join(format!("{user}.json"))
    }

    pub fn node_path(&self, network: &str) -> PathBuf {
        self.nodes().join(format!("{network}.json"))
    }

    /// Makes the folders (deploy and every start).
    pub fn prepare(&self) -> Result<(), String> {
        for dir in [self.activities(), self.nodes()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create the metrics folder {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Replaces the activity's file: once a second, so not made durable (a crash
    /// loses at most the last second, as it would anyway).
    pub fn write_activity(&self, file: &ActivityFile) -> Result<(), String> {
        let text = serde_json::to_vec(file).map_err(|e| e.to_string())?;
        write_atomic(&self.activity_path(&file.user), &text, false, PRIVATE)
    }

    pub fn write_node(&self, node: &NodeFile) -> Result<(), String> {
        let text = serde_json::to_vec(node).map_err(|e| e.to_string())?;
        write_atomic(&self.node_path(&node.network), &text, false, PRIVATE)
    }

    /// How long ago the network's node was probed by any runtime, if ever.
    pub fn node_age(&self, network: &str) -> Option<std::time::Duration> {
        let modified = std::fs::metadata(self.node_path(network))
            .and_then(|m| m.modified())
            .ok()?;
        Some(modified.elapsed().unwrap_or_default())
    }

    /// Counts `event` in the totals, under the lock; a stop also removes its
    /// activity's file, so that from then on it counts as ended and not as live.
    pub fn count(&self, event: &Event) -> Result<(), String> {
        let _lock = self.lock(FlockArg::LockExclusive, true)?;
        let mut totals = self.read_totals()?;
        totals.count(event);
        self.write_totals(&totals)?;
        if let Event::Stopped(file) = event {
            remove(&self.activity_path(&file.user))?;
        }
        Ok(())
    }

    /// Reads everything. `here` is the collecting process, to tell which activity
    /// files were left by runtimes that died (see `owner`): those count as ended,
    /// and with `fold` (a runtime's collection, which may write) they are moved
    /// into the totals for good. `networks` are the configured networks.
    pub fn collect(
        &self,
        networks: &[String],
        here: &Owner,
        fold: bool,
    ) -> Result<Aggregate, String> {
        self.collect_then(networks, here, fold, Ok)
    }

    /// [`Store::collect`], then `then` on what was read, still under the lock: a
    /// runtime writes `metrics_file` so, lest a reading taken before a stop land
    /// after the stop's own.
    pub fn collect_then<T>(
        &self,
        networks: &[String],
        here: &Owner,
        fold: bool,
        then: impl FnOnce(Aggregate) -> Result<T, String>,
    ) -> Result<T, String> {
        let kind = match fold {
            true => FlockArg::LockExclusive,
            false => FlockArg::LockShared,
        };
        if !self.dir.is_dir() {
            // No runtime has started here yet: nothing live, nothing counted.
            return then(Aggregate {
                networks: networks.iter().cloned().collect(),
                ..Aggregate::default()
            });
        }
        // A reader makes nothing: with no lock file yet, nothing was counted, and
        // activity files are replaced whole.
        let _lock = self.lock(kind, fold)?;
        let mut totals = self.read_totals()?;
        let mut activities = Vec::new();
        let mut dead = Vec::new();
        for file in read_dir::<ActivityFile>(&self.activities())? {
            match file.owner.is_dead_here(here) {
                true => dead.push(file),
                false => activities.push(file),
            }
        }
        for file in &dead {
            add(&mut totals.lost, &file.network, 1);
            totals.end(file);
        }
        if fold && !dead.is_empty() {
            self.write_totals(&totals)?;
            for file in &dead {
                remove(&self.activity_path(&file.user))?;
            }
        }
        let nodes = read_dir::<NodeFile>(&self.nodes())?
            .into_iter()
            .map(|n| (n.network.clone(), n))
            .collect();
        activities.sort_by(|a, b| (&a.network, &a.user).cmp(&(&b.network, &b.user)));
        then(Aggregate {
            networks: networks.iter().cloned().collect(),
            activities,
            nodes,
            totals,
        })
    }

    /// The lock, on a file that a writer (`create`) makes if missing, mode 0640
    /// whatever the umask. A reader that may not write the folder (another user)
    /// takes it read-only, which flock allows; `None` when it does not exist yet.
    fn lock(&self, kind: FlockArg, create: bool) -> Result<Option<Flock<File>>, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join("lock");
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o640)
            .open(&path)
            .or_else(|_| File::open(&path));
        let file = match opened {
            Ok(file) => file,
            Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        Flock::lock(file, kind)
            .map(Some)
            .map_err(|(_, e)| format!("cannot lock {}: {e}", path.display()))
    }

    fn read_totals(&self) -> Result<Totals, String> {
        let path = self.totals_path();
        match read_json::<Totals>(&path) {
            Ok(Some(totals)) if totals.version == VERSION => Ok(totals),
            Ok(Some(_)) => Err(format!(
                "{} is of another version of the runtime",
                path.display()
            )),
            Ok(None) => Ok(Totals {
                version: VERSION,
                ..Totals::default()
            }),
            Err(e) => Err(e),
        }
    }

    fn write_totals(&self, totals: &Totals) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(totals).map_err(|e| e.to_string())?;
        write_atomic(&self.totals_path(), &text, true, PRIVATE)
    }
}

impl ActivityFile {
    pub fn new(user: &str, network: &str, activity: &str, owner: Owner, started_at: u64) -> Self {
        ActivityFile {
            version: VERSION,
            user: user.to_owned(),
            network: network.to_owned(),
            activity: activity.to_owned(),
            owner,
            started_at,
            reading: Reading::default(),
        }
    }
}

impl NodeFile {
    pub fn new(network: &str, probed_at: u64) -> Self {
        NodeFile {
            version: VERSION,
            network: network.to_owned(),
            probed_at,
            ..NodeFile::default()
        }
    }
}

/// The versioned files of our kind in `dir`; others (a temporary file, an older
/// version's, something an operator left) are skipped.
fn read_dir<T: serde::de::DeserializeOwned + Versioned>(dir: &Path) -> Result<Vec<T>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        // Gone between the listing and the read (a stop): skipped.
        if let Ok(Some(item)) = read_json::<T>(&path) {
            if item.version() == VERSION {
                found.push(item);
            }
        }
    }
    Ok(found)
}

trait Versioned {
    fn version(&self) -> u32;
}

impl Versioned for ActivityFile {
    fn version(&self) -> u32 {
        self.version
    }
}

impl Versioned for NodeFile {
    fn version(&self) -> u32 {
        self.version
    }
}

/// A JSON file of ours; `None` if it does not exist. Only a regular file of at
/// most [`MAX_FILE`] is read.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(format!(
            "{shown} is not a metrics file (accepted: a regular file of at most {MAX_FILE} bytes)"
        ));
    }
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| format!("{shown}: {e}"))
}

fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The mode of the metrics folder's files: the runtime's group may read them.
pub const PRIVATE: u32 = 0o640;
/// The mode of `metrics_file`: node_exporter runs as a user of its own
/// (`prometheus` on Debian), and the file holds no secret (user names and numbers).
pub const PUBLIC: u32 = 0o644;

/// Replaces `path` with `bytes` in one rename, with `mode`; `durable` also syncs
/// the file first (the totals: a crash must not leave them empty).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool, mode: u32) -> Result<(), String> {
    let shown = path.display();
    let dir = path
        .parent()
        .ok_or_else(|| format!("{shown} has no parent folder"))?;
    let fail = |e: std::io::Error| format!("cannot write {shown}: {e}");
    let mut tmp = tempfile::Builder::new()
        .prefix(".metrics.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    if durable {
        tmp.as_file().sync_all().map_err(fail)?;
    }
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
    .map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::ProcessIdentity;

    fn file(store: &Store, user: &str, owner: Owner, calls: u64) -> ActivityFile {
        let mut f = ActivityFile::new(user, "dev", "act", owner, 1);
        f.reading.billed_calls = calls;
        f.reading.billed_units = calls * 10;
        store.write_activity(&f).unwrap();
        f
    }

    #[test]
    fn a_stop_moves_its_bill_from_live_to_ended_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let here = Owner::current().unwrap();
        let one = file(&store, "dev-a", here.clone(), 3);
        file(&store, "dev-b", here.clone(), 5);
        store
            .count(&Event::Started {
                network: "dev".into(),
            })
            .unwrap();
        store.count(&Event::StartFailed { reason: "node" }).unwrap();
        let nets = ["dev".to_string(), "sepolia".to_string()];
        let before = store.collect(&nets, &here, false).unwrap();
        assert_eq!(before.activities.len(), 2);
        assert_eq!(before.totals.starts.get("dev"), Some(&1));
        assert_eq!(before.totals.start_failures.get("node"), Some(&1));
        store.count(&Event::Stopped(Box::new(one))).unwrap();
        let after = store.collect(&nets, &here, false).unwrap();
        assert_eq!(after.activities.len(), 1);
        assert_eq!(after.totals.stops.get("dev"), Some(&1));
        let ended = after.totals.ended.get("dev").copied().unwrap_or_default();
        assert_eq!((ended.activities, ended.calls, ended.units), (1, 3, 30));
        assert!(!store.activity_path("dev-a").exists());
    }

    #[test]
    fn a_dead_runtimes_file_counts_as_ended_and_is_folded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let here = Owner::current().unwrap();
        let dead = Owner {
            process: ProcessIdentity {
                start_ticks: here.process.start_ticks + 1,
                ..here.process
            },
            ..here.clone()
        };
        file(&store, "dev-dead", dead, 7);
        let nets = ["dev".to_string()];
        for fold in [false, true, false] {
            let seen = store.collect(&nets, &here, fold).unwrap();
            assert!(seen.activities.is_empty());
            assert_eq!(seen.totals.ended.get("dev").map(|e| e.calls), Some(7));
            assert_eq!(seen.totals.lost.get("dev"), Some(&1));
        }
        assert!(!store.activity_path("dev-dead").exists(), "folded");
    }

    #[test]
    fn foreign_files_are_skipped_and_a_missing_folder_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&dir.path().join("never-made"));
        let here = Owner::current().unwrap();
        let empty = store.collect(&["dev".into()], &here, true).unwrap();
        assert!(empty.activities.is_empty() && empty.totals == Totals::default());
        assert!(!store.dir().exists(), "a reader makes nothing");
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        std::fs::write(store.activities().join("junk.json"), "{not json").unwrap();
        std::fs::write(store.activities().join(".metrics.x.tmp"), "{}").unwrap();
        let seen = store.collect(&[], &here, false).unwrap();
        assert!(seen.activities.is_empty());
    }
}
