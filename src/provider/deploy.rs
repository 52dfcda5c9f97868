//! The folders and files an activity needs before its node starts: made at deploy
//! (and by `test`, and again by a start whose folders an operator removed).

use std::path::Path;

use crate::config::Config;
use crate::node::network::Network;

/// Deploy (and `test`): every accepted network's folders, the activities' folder with
/// the file nginx checks unknown users against, and the nginx routes, so a problem
/// shows before any start.
pub fn prepare_all(config: &Config) -> Result<(), String> {
    for network in config.networks().all() {
        prepare_network(config, network)?;
    }
    prepare_activities_dir(config)?;
    crate::access::htpasswd::ensure_nobody_file(config.socket_dir())?;
    crate::provider::nginx::write_routes(config)?;
    crate::metrics::Store::new(config.data_dir()).prepare()?;
    if let Some(file) = config.metrics_file() {
        prepare_metrics_file(config, file)?;
    }
    Ok(())
}

/// `metrics_file`'s folder must exist and be writable (node_exporter's textfile
/// folder, which its package makes): a mistake shows at deploy and in `test`, not
/// as a warning in every activity's log.
fn prepare_metrics_file(config: &Config, file: &Path) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    tempfile::tempfile_in(dir).map(drop).map_err(|e| {
        format!(
            "key `metrics_file` in {}: cannot write in {} ({e}); accepted: a file in a folder this user can write, such as node_exporter's textfile folder (/var/lib/prometheus/node-exporter on Debian) with this user in its group",
            config.file().display(),
            dir.display()
        )
    })
}

/// The network's datadir and the log folder.
pub fn prepare_network(config: &Config, network: &Network) -> Result<(), String> {
    create(&config.datadir(network), "datadir")?;
    create(config.log_dir(), "log folder")
}

/// The activities' folder, shared by every network: it must exist and be writable.
pub fn prepare_activities_dir(config: &Config) -> Result<(), String> {
    let dir = config.socket_dir();
    create(dir, "activities' folder")?;
    tempfile::tempfile_in(dir).map_err(|e| {
        format!(
            "the activities' folder {} is not writable ({e}); it holds each activity's password file and socket: set `socket_dir` in {} to a folder this user can write and nginx's group can read",
            dir.display(),
            config.file().display()
        )
    })?;
    Ok(())
}

fn create(dir: &Path, what: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {what} {}: {e}", dir.display()))
}
