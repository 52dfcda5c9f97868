//! Log files: the runtime's own and its children's, each size-capped and rotated.
//!
//! Under ya-provider the ExeUnit's stdio is null, so whatever is not in a file is lost;
//! and stdout is the protobuf channel, so nothing but the SDK may write there.
//!
//! No log is written on the thread that serves the activity's calls: the runtime's
//! own records go through a bounded queue to a thread of their own (`Spool`), and
//! each child's output is copied by threads of its own (see `node::child`). A disk that
//! stalls then delays the log, never a call; past the queue, records are dropped and
//! the log says how much was.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use log::{Level, Log, Metadata, Record};

/// Name of the runtime's log in the activity's work folder.
pub const RUNTIME_LOG: &str = "ya-runtime-erigon.log";
const RUNTIME_LOG_BYTES: usize = 4 * 1024 * 1024;
const RUNTIME_LOG_FILES: usize = 2;
const LOG_MODE: u32 = 0o640;

/// A size-capped log file with `keep` rotated copies (`<file>.1` newest), shared by
/// any number of writers.
///
/// Hand-written rather than file-rotate, whose rotation `expect`s and `unwrap`s on I/O
/// errors (a log folder removed by an operator would panic the runtime). Here every
/// I/O error is swallowed: a failing log never takes the runtime or its node down, and
/// the next write tries again.
#[derive(Clone)]
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    inner: Arc<Mutex<Current>>,
}

struct Current {
    file: Option<File>,
    written: u64,
}

impl RotatingLog {
    /// Opens (creating folder and file) a log capped at `max_bytes` × (`keep` + 1).
    pub fn open(path: &Path, max_bytes: usize, keep: usize) -> Result<Self, String> {
        let dir = path
            .parent()
            .ok_or_else(|| format!("log file {} has no folder", path.display()))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create log folder {}: {e}", dir.display()))?;
        let file = open_append(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        let written = file.metadata().map_or(0, |m| m.len());
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: u64::try_from(max_bytes).unwrap_or(u64::MAX).max(1),
            keep,
            inner: Arc::new(Mutex::new(Current {
                file: Some(file),
                written,
            })),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one chunk; a failing log never takes the runtime down.
    pub fn write(&self, bytes: &[u8]) {
        let mut current = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.write_locked(&mut current, bytes);
    }

    /// Like [`RotatingLog::write`], but gives up rather than wait for the lock: for
    /// the panic hook, which may run while this thread holds it.
    fn try_write(&self, bytes: &[u8]) {
        if let Ok(mut current) = self.inner.try_lock() {
            self.write_locked(&mut current, bytes);
        }
    }

    fn write_locked(&self, current: &mut Current, bytes: &[u8]) {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if current.written > 0 && current.written.saturating_add(len) > self.max_bytes {
            current.file = None;
            self.rotate();
            current.written = 0;
        }
        if current.file.is_none() {
            current.file = open_append(&self.path).ok();
            current.written = current
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len());
        }
        if let Some(file) = current.file.as_mut() {
            if file.write_all(bytes).is_ok() {
                current.written = current.written.saturating_add(len);
            }
        }
    }

    /// `<file>.N-1` → `<file>.N` … `<file>` → `<file>.1`; the oldest is overwritten.
    fn rotate(&self) {
        let numbered = |n: usize| {
            let mut name = self.path.as_os_str().to_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        for n in (1..self.keep).rev() {
            // `n` is below `keep`, a usize: `n + 1` cannot overflow.
            let _ = std::fs::rename(numbered(n), numbered(n.saturating_add(1)));
        }
        let _ = std::fs::rename(&self.path, numbered(1));
    }

    pub fn banner(&self, text: &str) {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        self.write(format!("=== {now} ya-runtime-erigon: {text} ===\n").as_bytes());
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_MODE)
        .open(path)
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        RotatingLog::write(self, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How long an exiting runtime waits for its log to be written.
pub const EXIT_FLUSH: Duration = Duration::from_millis(500);

/// Records waiting for the log's thread. At a few hundred bytes each this is about
/// a megabyte; a runtime logs a few lines a second.
const SPOOLED: usize = 4096;

/// What the log's thread is handed.
enum Spooled {
    Bytes(Vec<u8>),
    /// Answered once everything before it is written.
    Flush(SyncSender<()>),
}

/// The runtime's own log as env_logger writes it: each record handed to the log's
/// thread without waiting; dropped, and counted, when the thread is that far behind.
struct Spool {
    queue: SyncSender<Spooled>,
    dropped: Arc<AtomicU64>,
}

/// The queue of the process's spool, for [`flush`].
static SPOOL: OnceLock<SyncSender<Spooled>> = OnceLock::new();

impl Spool {
    /// Starts the log's thread; `None` if it cannot start (the caller then writes
    /// directly).
    fn start(log: RotatingLog) -> Option<Spool> {
        let (queue, spooled) = sync_channel(SPOOLED);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("log".into())
            .stack_size(64 << 10)
            .spawn(move || write_spooled(&log, &spooled, &counted))
            .ok()?;
        let _ = SPOOL.set(queue.clone());
        Some(Spool { queue, dropped })
    }
}

fn write_spooled(log: &RotatingLog, spooled: &Receiver<Spooled>, dropped: &AtomicU64) {
    while let Ok(item) = spooled.recv() {
        match item {
            Spooled::Bytes(bytes) => {
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    log.write(
                        format!("[{lost} bytes of log dropped: the log file did not keep up]\n")
                            .as_bytes(),
                    );
                }
                log.write(&bytes);
            }
            Spooled::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.queue.try_send(Spooled::Bytes(buf.to_vec())).is_err() {
            let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
            self.dropped.fetch_add(len, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    /// env_logger flushes after every record: waiting here would wait for the disk.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits, at most `within`, until every record logged so far is written: before the
/// process exits. Nothing to wait for when the log goes to stderr.
pub fn flush(within: Duration) {
    if let Some(queue) = SPOOL.get() {
        flush_queue(queue, within);
    }
}

fn flush_queue(queue: &SyncSender<Spooled>, within: Duration) {
    // `within` is one of the flush constants, seconds at most.
    #[allow(clippy::arithmetic_side_effects)]
    let deadline = Instant::now() + within;
    let (done, written) = sync_channel(1);
    let mut flush = Spooled::Flush(done);
    loop {
        match queue.try_send(flush) {
            Ok(()) => break,
            Err(std::sync::mpsc::TrySendError::Full(again)) if Instant::now() < deadline => {
                flush = again;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return,
        }
    }
    let _ = written.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

/// ya-runtime-api traces every event it sends, and STATUS's stdout carries the
/// password; so its trace level never reaches a log, whatever RUST_LOG says.
struct NoSecrets(env_logger::Logger);

impl NoSecrets {
    fn allowed(metadata: &Metadata) -> bool {
        !(metadata.level() == Level::Trace && metadata.target().starts_with("ya_runtime_api"))
    }
}

impl Log for NoSecrets {
    fn enabled(&self, metadata: &Metadata) -> bool {
        Self::allowed(metadata) && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if Self::allowed(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Sends the runtime's log to `<workdir>/ya-runtime-erigon.log`, or to stderr for the
/// commands the provider runs without a work folder (`test`, `offer-template`), whose
/// stderr it shows to the operator. Level from RUST_LOG, default info.
pub fn init(workdir: Option<&Path>) -> Result<Option<PathBuf>, String> {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let path = match workdir {
        Some(dir) => {
            let log =
                RotatingLog::open(&dir.join(RUNTIME_LOG), RUNTIME_LOG_BYTES, RUNTIME_LOG_FILES)?;
            let path = log.path().to_path_buf();
            log_panics_to(log.clone());
            match Spool::start(log.clone()) {
                Some(spool) => builder.target(env_logger::Target::Pipe(Box::new(spool))),
                None => builder.target(env_logger::Target::Pipe(Box::new(log))),
            };
            Some(path)
        }
        None => {
            builder.target(env_logger::Target::Stderr);
            None
        }
    };
    let logger = builder.build();
    let max = logger.filter();
    log::set_boxed_logger(Box::new(NoSecrets(logger)))
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    log::set_max_level(max);
    Ok(path)
}

/// Under the ExeUnit stderr goes nowhere, so a panic's message would be lost: it is
/// written to the runtime's log too, directly (not through `log`, whose writer the
/// panicking thread may hold), and then the default hook runs as before.
fn log_panics_to(log: RotatingLog) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        log.try_write(format!("[{now} ERROR panic] the runtime panicked: {info}\n").as_bytes());
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_so_the_total_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let log = RotatingLog::open(&path, 1000, 2).unwrap();
        for _ in 0..100 {
            log.write(&[b'a'; 99]);
            log.write(b"\n");
        }
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 3, "current file plus 2 rotated");
        assert!(total <= 3 * 1100, "{total} bytes");
    }

    #[test]
    fn a_removed_log_folder_is_recreated_on_rotation_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        let path = sub.join("x.log");
        let log = RotatingLog::open(&path, 100, 1).unwrap();
        log.write(&[b'a'; 80]);
        std::fs::remove_dir_all(&sub).unwrap();
        log.write(&[b'b'; 80]);
        assert!(!path.exists(), "the folder is gone; the write is dropped");
        std::fs::create_dir_all(&sub).unwrap();
        log.write(b"back\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "back\n");
    }

    #[test]
    fn an_unwritable_folder_is_an_error_not_a_panic() {
        let err = RotatingLog::open(Path::new("/proc/no/x.log"), 1000, 1)
            .err()
            .unwrap();
        assert!(err.contains("/proc/no"), "{err}");
    }

    #[test]
    fn the_spool_writes_in_order_and_a_flush_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut spool = Spool::start(RotatingLog::open(&path, 1 << 20, 1).unwrap()).unwrap();
        for i in 0..1000 {
            spool.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        flush_queue(&spool.queue, Duration::from_secs(10));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!((lines[0], lines[999]), ("line 0", "line 999"));
    }

    /// A log file nobody drains (a FIFO whose reader reads nothing, as a stalled disk):
    /// the writer never waits; past the queue, records are dropped and counted, and
    /// the log says so once it moves again.
    #[test]
    fn a_stalled_log_never_holds_the_writer_and_says_what_it_dropped() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stalled.log");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader_path = path.clone();
        let (opened, reader) = std::sync::mpsc::channel();
        let (go, drain) = std::sync::mpsc::channel::<()>();
        let (read_all, drained) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut fifo = File::open(&reader_path).unwrap();
            opened.send(()).unwrap();
            drain.recv().unwrap();
            // The log's thread keeps the FIFO open: read up to the last record.
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            while !text.ends_with(b"after the stall\n") {
                match fifo.read(&mut buf) {
                    Ok(n) if n > 0 => text.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let _ = read_all.send(String::from_utf8_lossy(&text).into_owned());
        });
        let log = RotatingLog::open(&path, 1 << 40, 0).unwrap();
        reader.recv().unwrap();
        let spool = Spool::start(log).unwrap();
        // 1 KiB records: the pipe holds 64 of them, the queue 4096; the rest drop.
        // The writes run on a thread of their own, so that a writer that waits shows
        // as a failure rather than a test that never ends.
        let (written, wrote) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut spool = spool;
            let record = [b'x'; 1023];
            for _ in 0..10_000 {
                spool.write_all(&record).unwrap();
                spool.write_all(b"\n").unwrap();
            }
            written.send(spool).unwrap();
        });
        let mut spool = wrote
            .recv_timeout(Duration::from_secs(20))
            .expect("the writer waited for the stalled log");
        assert!(
            spool.dropped.load(Ordering::Relaxed) > 0,
            "nothing was dropped"
        );
        go.send(()).unwrap();
        // The queue is full: a record now would be dropped too. Once what it holds
        // is written, the next one goes through.
        flush_queue(&spool.queue, Duration::from_secs(30));
        spool.write_all(b"after the stall\n").unwrap();
        let text = drained
            .recv_timeout(Duration::from_secs(30))
            .expect("the log never showed the record written after the stall");
        assert!(
            text.contains("bytes of log dropped: the log file did not keep up]"),
            "no note of the drop"
        );
        assert!(
            text.ends_with("after the stall\n"),
            "{}",
            &text[text.len().saturating_sub(200)..]
        );
    }

    #[test]
    fn trace_of_the_protocol_crate_is_never_logged() {
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        assert!(!NoSecrets::allowed(&meta(
            "ya_runtime_api::server",
            Level::Trace
        )));
        assert!(NoSecrets::allowed(&meta(
            "ya_runtime_api::server",
            Level::Debug
        )));
        assert!(NoSecrets::allowed(&meta("ya_runtime_erigon", Level::Trace)));
    }
}
