//! The compute-unit table: what each JSON-RPC method weighs, in the usage counter
//! `golem.usage.erigon.compute-units` and in the `cu_per_sec` limit.
//!
//! The runtime reads `compute-units.json` next to its configuration file when it is
//! there (`ya-runtime-erigon calibrate --write` puts it there, measured on the
//! provider's own node), and the table shipped in `conf/compute-units.json` (built
//! in) otherwise. `method_weights` in the configuration then overrides single methods.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::gateway::Weights;

/// The table's file name, next to the configuration file.
pub const FILE: &str = "compute-units.json";

/// The shipped table, built into the binary so that a provider without the file
/// still prices calls by their cost.
const SHIPPED: &str = include_str!("../../conf/compute-units.json");

/// The largest table file read (a table of every method is a few KiB).
pub const MAX_FILE: u64 = 1 << 20;

/// A weight no method may exceed: a million times the cheapest call's 10.
pub const MAX_WEIGHT: u32 = 10_000_000;

/// The file's schema.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Where the numbers come from, for the operator who reads the file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub about: String,
    /// The weight of a method the table does not list.
    pub default: u32,
    pub methods: BTreeMap<String, u32>,
}

impl Table {
    /// The shipped table.
    pub fn shipped() -> Result<Table, String> {
        Table::parse(SHIPPED, Path::new("conf/compute-units.json (built in)"))
    }

    /// Reads a table, checking every weight.
    pub fn parse(text: &str, from: &Path) -> Result<Table, String> {
        let shown = from.display();
        let mut de = serde_json::Deserializer::from_str(text);
        let table: Table = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            format!(
                "compute-unit table {shown}: key `{}`: {}; accepted: {{\"default\": N, \"methods\": {{\"eth_call\": N, …}}}}",
                e.path(),
                e.inner()
            )
        })?;
        let heavy = std::iter::once(("default", table.default))
            .chain(table.methods.iter().map(|(m, w)| (m.as_str(), *w)))
            .find(|(_, w)| *w > MAX_WEIGHT);
        if let Some((method, weight)) = heavy {
            return Err(format!(
                "compute-unit table {shown}: `{method}` weighs {weight}; accepted: 0 to {MAX_WEIGHT}"
            ));
        }
        if table.default == 0 {
            return Err(format!(
                "compute-unit table {shown}: `default` is 0; accepted: 1 to {MAX_WEIGHT} (an unlisted method would be free)"
            ));
        }
        Ok(table)
    }

    /// The table the runtime uses: `path` when it exists, else the shipped one.
    /// Only a regular file of at most [`MAX_FILE`] bytes is read: the path is
    /// configuration, and `/dev/zero` must not hang a start.
    pub fn load(path: &Path) -> Result<Table, String> {
        use std::io::Read;
        let shown = path.display();
        // Looked at before it is opened: opening a named pipe would wait for
        // a writer.
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Table::shipped(),
            Err(e) => return Err(format!("cannot read {shown}: {e}")),
        };
        if !meta.is_file() || meta.len() > MAX_FILE {
            return Err(format!(
                "compute-unit table {shown}: accepted: a regular file of at most {MAX_FILE} bytes"
            ));
        }
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let mut text = String::new();
        file.take(MAX_FILE)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        Table::parse(&text, path)
    }

    pub fn weights(&self) -> Weights {
        let mut weights = Weights {
            default: self.default,
            ..Weights::default()
        };
        weights.methods.extend(self.methods.clone());
        weights
    }
}

/// Where the runtime looks for the table: next to the configuration file.
pub fn path_next_to(config_file: &Path) -> PathBuf {
    config_file
        .parent()
        .map_or_else(|| PathBuf::from(FILE), |dir| dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_loads_and_prices_as_hosted_services_do() {
        let w = Table::shipped().unwrap().weights();
        assert_eq!(w.call(Some("eth_chainId")), 10);
        assert_eq!(w.call(Some("eth_call")), 17);
        assert_eq!(w.call(Some("eth_getLogs")), 75);
        assert_eq!(w.call(Some("debug_traceTransaction")), 309);
        assert_eq!(w.call(Some("erigon_nodeInfo")), 100);
        assert_eq!(w.notification(), 0);
    }

    #[test]
    fn a_bad_table_names_its_file_and_key() {
        let at = Path::new("/p/compute-units.json");
        let err = Table::parse(r#"{"default": 1, "methods": {"eth_call": -1}}"#, at).unwrap_err();
        assert!(
            err.contains("/p/compute-units.json: key `methods.eth_call`"),
            "{err}"
        );
        let err = Table::parse(r#"{"default": 0, "methods": {}}"#, at).unwrap_err();
        assert!(err.contains("`default` is 0"), "{err}");
        let err = Table::parse(r#"{"default": 1, "methods": {"x": 99999999}}"#, at).unwrap_err();
        assert!(err.contains("`x` weighs 99999999"), "{err}");
        let err = Table::parse(r#"{"default": 1, "method": {}}"#, at).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        // Only a regular file, bounded, is read; a missing one is the shipped table.
        let err = Table::load(Path::new("/dev/zero")).unwrap_err();
        assert!(err.contains("/dev/zero: accepted: a regular file"), "{err}");
        assert!(Table::load(Path::new("/nonexistent/compute-units.json")).is_ok());
        // A named pipe is refused without being opened (opening it would wait for a
        // writer): on a thread, so that a regression fails here instead of hanging.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("compute-units.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(Table::load(&fifo).map(drop)));
        let loaded = rx.recv_timeout(std::time::Duration::from_secs(5));
        let err = loaded.expect("a named pipe is not waited on").unwrap_err();
        assert!(err.contains("accepted: a regular file"), "{err}");
    }
}
