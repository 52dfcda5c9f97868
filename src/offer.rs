//! What the provider puts on the market (`offer-template`) and the self-test
//! ya-provider runs at start-up (`test`, which blocks the provider when it fails).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Config;

/// Property names, under the runtime's namespace (README, "On the market").
pub const NETWORKS: &str = "golem.runtime.erigon.networks";
pub const MANAGED: &str = "golem.runtime.erigon.managed-networks";
pub const SHARED: &str = "golem.runtime.erigon.shared-networks";
pub const VERSION: &str = "golem.runtime.erigon.version";
pub const HTTP: &str = "golem.runtime.erigon.endpoint.http";
pub const WS: &str = "golem.runtime.erigon.endpoint.ws";
pub const TLS: &str = "golem.runtime.erigon.endpoint.tls";
pub const APIS: &str = "golem.runtime.erigon.endpoint.apis";
pub const BILLING: &str = "golem.runtime.erigon.request-counter";

const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// `{"properties": …, "constraints": ""}`: what a requestor can constrain its demand on.
pub async fn template(config: &Config) -> Value {
    let (shared, managed): (Vec<_>, Vec<_>) = config.networks.all().partition(|n| n.is_shared());
    let names = |list: &[crate::network::Network]| {
        list.iter().map(|n| n.name().to_owned()).collect::<Vec<_>>()
    };
    let version = if managed.is_empty() {
        None
    } else {
        erigon_version(&config.erigon_path)
            .await
            .map_err(|e| log::warn!("offer without an Erigon version: {e}"))
            .ok()
    };
    json!({
        "constraints": "",
        "properties": {
            NETWORKS: names(&config.networks.all().collect::<Vec<_>>()),
            MANAGED: names(&managed),
            SHARED: names(&shared),
            VERSION: version.unwrap_or_else(|| "unknown".into()),
            HTTP: true,
            WS: true,
            TLS: config.public_addr.scheme() == "https",
            APIS: config.http_api,
            BILLING: crate::billing::COUNTER,
        }
    })
}

/// `erigon version 3.0.17-7d3cab29` → `3.0.17-7d3cab29`.
pub async fn erigon_version(erigon: &Path) -> Result<String, String> {
    let out = run(erigon, "--version").await?;
    out.lines()
        .find_map(|l| l.split_once(" version ").map(|(_, v)| v.trim().to_owned()))
        .ok_or_else(|| format!("{} --version printed no version: {out:?}", erigon.display()))
}

async fn run(program: &Path, arg: &str) -> Result<String, String> {
    let child = tokio::process::Command::new(program)
        .arg(arg)
        .env_clear()
        .envs(crate::node::child_env())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(VERSION_TIMEOUT, child)
        .await
        .map_err(|_| {
            format!(
                "{} {arg} did not finish in {} s",
                program.display(),
                VERSION_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot run {} {arg}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {arg} exited with {}: {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The checks behind `ya-runtime-erigon test`. Each failure names its fix; warnings do
/// not fail the test.
pub async fn self_test(config: &Config) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    if config.networks.all().any(|n| !n.is_shared()) {
        for (path, key) in [
            (&config.erigon_path, "erigon_path"),
            (&config.rpcdaemon_path, "rpcdaemon_path"),
        ] {
            crate::node::check_executable(path, key)?;
        }
        let version = erigon_version(&config.erigon_path).await.map_err(|e| {
            format!(
                "{e}; put an Erigon 3 release binary at {}",
                config.erigon_path.display()
            )
        })?;
        log::info!("test: erigon {version} at {}", config.erigon_path.display());
        // rpcdaemon has no --version; --help proves it runs.
        run(&config.rpcdaemon_path, "--help").await.map_err(|e| {
            format!(
                "{e}; put the rpcdaemon of the same Erigon release at {}",
                config.rpcdaemon_path.display()
            )
        })?;
    }
    let site = &config.nginx_site_path;
    let routes = crate::nginx::routes_path(config);
    match std::fs::read_to_string(site) {
        Ok(text) if text.contains(&routes.display().to_string()) => {}
        Ok(_) => {
            return Err(format!(
                "the nginx site {} does not include {}; reinstall it with conf/setup-provider",
                site.display(),
                routes.display()
            ))
        }
        Err(e) => {
            return Err(format!(
                "the nginx site {} cannot be read ({e}); install it with conf/setup-provider, or set `nginx_site_path` in {}",
                site.display(),
                config.file.display()
            ))
        }
    }
    if !nginx_running() {
        warnings.push(
            "nginx is not running: start it (systemctl start nginx) before requestors arrive"
                .into(),
        );
    }
    Ok(warnings)
}

fn nginx_running() -> bool {
    std::fs::read_to_string("/run/nginx.pid")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .and_then(crate::owner::ProcessIdentity::of)
        .is_some_and(|p| p.is_alive())
}
