//! The local trial: builds nothing itself (`.ci/trial` builds first), then plays the
//! ExeUnit for one full session against the built runtime and prints what a requestor
//! would get. Real `erigon`/`rpcdaemon` placed next to the built runtime are used;
//! otherwise the test suite's stand-ins, and the trial says which.
//!
//! Usage: trial [--network NAME] [--keep-files]

#[path = "../common/mod.rs"]
mod common;

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use ya_runtime_erigon::network::DEFAULT_NETWORKS;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match trial().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trial: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: trial [--network NAME] [--keep-files]";

fn say(line: &str) {
    eprintln!("trial: {line}");
}

async fn trial() -> Result<(), String> {
    let mut network = "dev".to_string();
    let mut keep_files = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--network" => network = args.next().ok_or("--network needs a name")?,
            "--keep-files" => keep_files = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let slot = DEFAULT_NETWORKS
        .iter()
        .find(|(name, _)| *name == network)
        .map(|(_, slot)| *slot)
        .ok_or_else(|| format!("network {network:?} is not in the default configuration"))?;

    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let profile = me
        .parent()
        .and_then(Path::parent)
        .ok_or("the trial runs from target/<profile>/examples")?;
    let runtime = profile.join("ya-runtime-erigon");
    if !runtime.is_file() {
        return Err(format!(
            "{} is not built; run: cargo build --release --bins --examples",
            runtime.display()
        ));
    }
    let real = profile.join("erigon").is_file() && profile.join("rpcdaemon").is_file();
    let node_dir = if real {
        say(&format!(
            "using the REAL erigon and rpcdaemon found next to the runtime in {}",
            profile.display()
        ));
        profile.to_path_buf()
    } else {
        say(&format!(
            "using the STAND-IN erigon and rpcdaemon (tests/standins); put the real binaries in {} to run Erigon itself",
            profile.display()
        ));
        profile.join("examples")
    };
    let plugin = common::assemble_plugin_dir(&runtime, &node_dir, &profile.join("trial"))?;
    let timeout = if real { 600 } else { 30 };
    let provider = common::Provider::with_runtime(
        plugin.join("ya-runtime-erigon"),
        json!({"ready_timeout_secs": timeout, "password_hash": "ssha"}),
    );
    say(&format!("provider HOME {}", provider.root.path().display()));
    let work = provider.workdir("trial-activity");

    say("1/5 deploy: ya-runtime-erigon --workdir W deploy --");
    let deploy = provider.deploy(&work);
    if !deploy.status.success() {
        return Err(format!(
            "deploy failed: {}",
            String::from_utf8_lossy(&deploy.stderr)
        ));
    }
    say(&format!(
        "    deploy answered {}",
        String::from_utf8_lossy(&deploy.stdout).trim()
    ));

    let arg = format!(r#"{{"network": "{network}"}}"#);
    say(&format!(
        "2/5 start '{arg}' and hello (answered once the node is ready)"
    ));
    let activity = provider.start(&work, &[&arg]).await;
    activity
        .hello
        .as_ref()
        .map_err(|e| format!("hello failed: {e}"))?;
    say(&format!(
        "    started in {} ms",
        activity.start_time.as_millis()
    ));

    say("3/5 RUN STATUS; what the requestor receives as stdout:");
    let (status, code) = activity.status().await;
    println!(
        "{}",
        serde_json::to_string_pretty(&status).unwrap_or_default()
    );
    if code != 0 {
        activity.shutdown().await;
        return Err(format!(
            "STATUS says the start failed: {}",
            status["reason"]
        ));
    }

    let node = format!("http://127.0.0.1:{}/", provider.http_port + slot);
    say(&format!(
        "4/5 JSON-RPC straight to the node at {node} (through nginx with the credentials once the nginx front end lands)"
    ));
    for method in ["eth_chainId", "eth_blockNumber", "web3_clientVersion"] {
        let reply = common::json_rpc(&node, method).await;
        say(&format!("    {method} -> {reply}"));
    }

    say("5/5 Shutdown (the ExeUnit allows 5 s, then SIGKILLs the runtime)");
    let user = status["auth"]["user"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let took = activity.shutdown().await;
    say(&format!("    Shutdown answered in {} ms", took.as_millis()));
    let left = provider.entries(&network);
    if left
        .iter()
        .any(|line| line.starts_with(&format!("{user}:")))
    {
        return Err(format!("{user} is still in the password file after stop"));
    }
    say(&format!(
        "    credentials of {user} revoked; the password no longer works"
    ));
    say(&format!(
        "    runtime log: {}{}",
        work.join("ya-runtime-erigon.log").display(),
        if keep_files {
            ""
        } else {
            " (removed on exit; --keep-files keeps it)"
        }
    ));
    if keep_files {
        let kept = provider.root.keep();
        say(&format!("kept {}", kept.display()));
    }
    say("OK: deploy, start, STATUS, JSON-RPC and stop all worked");
    Ok(())
}
