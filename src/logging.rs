//! Log files: the runtime's own and its children's, each size-capped and rotated.
//!
//! Under ya-provider the ExeUnit's stdio is null, so whatever is not in a file is lost;
//! and stdout is the protobuf channel, so nothing but the SDK may write there.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use log::{Level, Log, Metadata, Record};

/// Name of the runtime's log in the activity's work folder.
pub const RUNTIME_LOG: &str = "ya-runtime-erigon.log";
const RUNTIME_LOG_BYTES: usize = 4 * 1024 * 1024;
const RUNTIME_LOG_FILES: usize = 2;
const LOG_MODE: u32 = 0o640;

/// A rotating file any number of writers can share.
#[derive(Clone)]
pub struct RotatingLog {
    path: PathBuf,
    inner: Arc<Mutex<FileRotate<AppendCount>>>,
}

impl RotatingLog {
    /// Opens (creating folder and file) a log capped at `max_bytes` × (`keep` + 1).
    pub fn open(path: &Path, max_bytes: usize, keep: usize) -> Result<Self, String> {
        let dir = path
            .parent()
            .ok_or_else(|| format!("log file {} has no folder", path.display()))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create log folder {}: {e}", dir.display()))?;
        // file-rotate panics where it cannot create or open; find that out here first.
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(LOG_MODE)
            .open(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        let rotate = FileRotate::new(
            path,
            AppendCount::new(keep),
            ContentLimit::BytesSurpassed(max_bytes.max(1)),
            Compression::None,
            Some(LOG_MODE),
        );
        Ok(Self {
            path: path.to_path_buf(),
            inner: Arc::new(Mutex::new(rotate)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one chunk; a failing log never takes the runtime down.
    pub fn write(&self, bytes: &[u8]) {
        if let Ok(mut file) = self.inner.lock() {
            let _ = file.write_all(bytes);
            let _ = file.flush();
        }
    }

    pub fn banner(&self, text: &str) {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        self.write(format!("=== {now} ya-runtime-erigon: {text} ===\n").as_bytes());
    }
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
