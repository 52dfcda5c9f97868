//! The folders and files an activity needs before its node starts: made at deploy
//! (and by `test`, and again by a start whose folders an operator removed).

use std::path::Path;

use crate::config::Config;
use crate::htpasswd::HtpasswdFile;
use crate::network::Network;

/// Deploy (and `test`): every accepted network's folders and password file, and the
/// nginx routes, so a problem shows before any start.
pub fn prepare_all(config: &Config) -> Result<(), String> {
    for network in config.networks().all() {
        prepare_network(config, network)?;
        HtpasswdFile::new(config.passwd_file(network)).ensure_exists()?;
    }
    crate::nginx::write_routes(config)?;
    Ok(())
}

/// The datadir, the log folder and a writable folder for the password file.
pub fn prepare_network(config: &Config, network: &Network) -> Result<(), String> {
    let create = |dir: &Path, what: &str| {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {what} {}: {e}", dir.display()))
    };
    create(&config.datadir(network), "datadir")?;
    create(config.log_dir(), "log folder")?;
    let file = config.passwd_file(network);
    let dir = file.parent().unwrap_or(Path::new("/"));
    create(dir, "password file folder")?;
    tempfile::tempfile_in(dir).map_err(|e| {
        format!(
            "password file folder {} is not writable ({e}); `passwd_file_path` in {} must point to a folder this user can write",
            dir.display(),
            config.file().display()
        )
    })?;
    Ok(())
}
