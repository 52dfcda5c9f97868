//! The operator's own commands beside the ExeUnit's: `metrics` prints the
//! provider's metrics in Prometheus' text format, `top` shows them live. Both read
//! what the runtimes leave in the metrics folder (see `metrics::Store`); neither
//! speaks to a runtime or to the node.

pub mod metrics;
pub mod top;

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::Config;
use crate::metrics::{Aggregate, Store};
use crate::owner::Owner;
use crate::text::printable;

/// `--config FILE`, common to the operator's commands, taken out of `args`; the
/// SDK's default file otherwise.
pub fn config_arg(args: &mut Vec<String>) -> Result<PathBuf, String> {
    let given = take_option(args, &["--config"], "FILE")?;
    Ok(given.map_or_else(crate::config::default_file, PathBuf::from))
}

/// `NAME VALUE` or `NAME=VALUE` for any of `names` (the first is the one errors
/// name), taken out of `args`; given twice, or without its `value`, is an error.
pub fn take_option(
    args: &mut Vec<String>,
    names: &[&str],
    value: &str,
) -> Result<Option<String>, String> {
    let mut found: Option<String> = None;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let (name, inline) = match arg.split_once('=') {
            Some((name, v)) if name.starts_with('-') => (name.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if !names.contains(&name.as_str()) {
            i = i.saturating_add(1);
            continue;
        }
        let long = names.first().copied().unwrap_or_default();
        if found.is_some() {
            return Err(format!("{long} is given twice"));
        }
        args.remove(i);
        found = Some(match inline {
            Some(v) => v,
            None if i < args.len() => args.remove(i),
            None => return Err(format!("{long} needs a value ({value})")),
        });
    }
    Ok(found)
}

/// The arguments as text; one that is not UTF-8 is refused by position.
pub fn text_args(args: impl IntoIterator<Item = OsString>) -> Result<Vec<String>, String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.into_string().map_err(|a| {
                format!(
                    "argument {} ({}) is not UTF-8; accepted: UTF-8 text",
                    i.saturating_add(1),
                    printable(&a.to_string_lossy())
                )
            })
        })
        .collect()
}

/// What the operator's commands read: the configuration's networks and the
/// metrics folder.
pub struct Source {
    store: Store,
    networks: Vec<String>,
    here: Owner,
}

impl Source {
    pub fn open(file: &std::path::Path, command: &str) -> Result<Source, String> {
        let (config, _) = crate::config::load_file(file, command)?;
        Source::of(&config)
    }

    pub fn of(config: &Config) -> Result<Source, String> {
        Ok(Source {
            store: Store::new(config.data_dir()),
            networks: config.network_names(),
            here: Owner::current()?,
        })
    }

    /// Everything, now; read-only (a runtime that died is counted as ended, and
    /// left for a runtime to fold).
    pub fn collect(&self) -> Result<Aggregate, String> {
        self.store.collect(&self.networks, &self.here, false)
    }
}
