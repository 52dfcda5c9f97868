//! The gateway's section of the configuration: each network's per-activity limits, and
//! the folder of the activities' sockets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::check::{absolute, words};
use crate::gateway::{Limits, Policy, RawLimits, Weights, DENIED};
use crate::node::network::NetworkSpec;
use crate::text::printable;

/// Each network's limits: the gateway's defaults, then the configuration's `limits`,
/// then the network's own. `Limits::new` holds each value to at least 1 (0 would refuse
/// every call) and burst to at least batch; `Limits::fits`, cu_burst to the heaviest
/// weight.
pub(super) fn network_limits(
    top: &serde_json::Map<String, serde_json::Value>,
    networks: &BTreeMap<String, NetworkSpec>,
    weights: &Weights,
) -> Result<BTreeMap<String, Limits>, String> {
    let typed = |key: String, object: &serde_json::Map<String, serde_json::Value>| {
        let raw: RawLimits = serde_path_to_error::deserialize(serde_json::Value::Object(
            object.clone(),
        ))
        .map_err(|e| match e.path().to_string().as_str() {
            "." => format!("key `{key}`: {}", e.inner()),
            at => format!("key `{key}.{at}`: {}", e.inner()),
        })?;
        let limits = Limits::new(&raw, &key)?;
        limits.fits(&key, weights)?;
        Ok(limits)
    };
    typed("limits".into(), top)?;
    networks
        .iter()
        .map(|(name, spec)| {
            let mut merged = top.clone();
            merged.extend(spec.limits.clone());
            let key = if spec.limits.is_empty() {
                "limits".to_string()
            } else {
                format!("networks.{name}.limits")
            };
            typed(key, &merged).map(|limits| (name.clone(), limits))
        })
        .collect()
}

/// Each network's method policy: its `methods.allow`, or `http_api`'s namespaces less
/// those no activity may call (rpcdaemon may serve `admin` to the operator; the
/// gateway never passes it on). A denied entry in `methods.allow` is refused.
pub(super) fn network_policies(
    networks: &BTreeMap<String, NetworkSpec>,
    http_api: &[String],
) -> Result<BTreeMap<String, Policy>, String> {
    networks
        .iter()
        .map(|(name, spec)| {
            // http_api is checked where it is read.
            let (key, allow) = match &spec.methods {
                Some(methods) => {
                    let key = format!("networks.{name}.methods.allow");
                    let allow = words(&key, methods.allow.clone(), "_")?;
                    (key, allow)
                }
                None => (
                    "http_api".to_string(),
                    http_api
                        .iter()
                        .filter(|ns| !DENIED.contains(&ns.as_str()))
                        .cloned()
                        .collect(),
                ),
            };
            let policy = Policy::new(allow).map_err(|e| format!("key `{key}`: {e}"))?;
            Ok((name.clone(), policy))
        })
        .collect()
}

/// The activities' folder: `socket_dir`, or the folder of the handbook's
/// `passwd_file_path`. nginx reads the path in the routes file, so characters that
/// would end or expand a quoted nginx string are refused. Unix socket paths are limited
/// to 107 bytes: a folder that leaves no room for the longest activity socket name is
/// refused now, not at an activity's start.
pub(super) fn validate_socket_dir(
    given: Option<PathBuf>,
    passwd_file_path: &str,
) -> Result<PathBuf, String> {
    /// `<16 random>.sock` (see `Config::socket_path`).
    const LONGEST_NAME: usize = 16 + 5;
    const SUN_PATH: usize = 107;
    let (key, dir) = match given {
        Some(dir) => ("socket_dir", dir),
        None => {
            let file = Path::new(passwd_file_path);
            if file.file_name().is_none() || passwd_file_path.ends_with('/') {
                return Err(format!(
                    "key `passwd_file_path`: \"{}\" names a folder; accepted: a file path (its folder holds the activities' files), or set `socket_dir`",
                    printable(passwd_file_path)
                ));
            }
            let dir = file
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
            ("passwd_file_path", dir)
        }
    };
    absolute(key, &dir)?;
    let text = dir.to_string_lossy();
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() || "\"\\$;{}".contains(*c))
    {
        return Err(format!(
            "key `{key}`: {c:?} is not accepted in the activities' folder, a path nginx reads ({{network}} no longer applies: every network's activities share the folder); accepted: a plain absolute path"
        ));
    }
    let room = SUN_PATH.saturating_sub(LONGEST_NAME + 1);
    if dir.as_os_str().len() > room {
        return Err(format!(
            "key `{key}`: the activities' folder {} is {} bytes long; accepted: at most {room}, since a Unix socket path is at most {SUN_PATH} bytes (set `socket_dir` to a shorter folder nginx can reach)",
            printable(&dir.to_string_lossy()),
            dir.as_os_str().len()
        ));
    }
    Ok(dir)
}
