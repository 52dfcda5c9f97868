//! Log files: the runtime's own and its children's, each size-capped and rotated.
//!
//! Under ya-provider the ExeUnit's stdio is null, so whatever is not in a file is lost;
//! and stdout is the protobuf channel, so nothing but the SDK may write there.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
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
            builder.target(env_logger::Target::Pipe(Box::new(log)));
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
