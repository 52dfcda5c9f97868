//! The local trial: builds nothing itself (`.ci/trial` builds first), then plays the
//! ExeUnit for one full session against the built runtime, with the real nginx and the
//! shipped site in front, and prints what a requestor would get. Real `erigon`/`rpcdaemon` placed next to the built runtime are used;
//! otherwise the test suite's stand-ins, and the trial says which.
//!
//! Usage: trial [--network NAME] [--keep-files]

// Tests and tools are exempt from Cargo.toml's habits for src/: a failed unwrap is a
// failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::path::Path;
use std::process::ExitCode;

use harness::exeunit::Activity;
use harness::http::call;
use harness::nginx::{free_port, prepare_auth_dir};
use harness::process::try_eventually_async;
use harness::provider::{assemble_plugin_dir, Provider};
use serde_json::json;
use ya_runtime_erigon::node::network::DEFAULT_NETWORKS;

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

const USAGE: &str = "usage: trial [--network NAME] [--keep] [--keep-files]";

fn say(line: &str) {
    eprintln!("trial: {line}");
}

/// `--keep`: the session stays open and takes commands on stdin, as ya-runtime-dbg
/// would; `stop` or end of input goes on to the Shutdown.
async fn interact(
    activity: &Activity,
    url: &str,
    user: &str,
    password: &str,
) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    say("session open; commands: status | call METHOD | run COMMAND | stop");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["status"] | ["run", "STATUS" | "status"] => {
                let (status, code) = activity.status().await;
                println!("{status} (return code {code})");
            }
            ["call", method] => {
                let reply = call(url, Some((user, password)), method).await;
                println!("HTTP {} {}", reply.status, reply.body);
            }
            ["run", command] => println!("{}", activity.refused(command).await),
            ["stop"] => break,
            _ => say("commands: status | call METHOD | run COMMAND | stop"),
        }
    }
    Ok(())
}

/// What the operator sees of the session: `ya-runtime-erigon metrics`' lines for
/// this activity, once its runtime has written the calls just made (it does so once
/// a second).
async fn operator_view(runtime: &Path, config: &Path, user: &str) -> Result<(), String> {
    say("    the operator's view, `ya-runtime-erigon metrics` (this activity's lines):");
    let metrics = || {
        let out = std::process::Command::new(runtime)
            .arg("metrics")
            .arg("--config")
            .arg(config)
            .output()
            .map_err(|e| format!("cannot run {} metrics: {e}", runtime.display()))?;
        if !out.status.success() {
            return Err(format!(
                "metrics failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mine = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(user))
            .map(str::to_owned)
            .collect()
    };
    let answered = |text: &str| {
        mine(text)
            .iter()
            .filter(|l| l.starts_with("ya_runtime_erigon_activity_calls_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    // `metrics` failing ends the wait at once (Ok(Err)); too few calls, at 10 s.
    let text = try_eventually_async(std::time::Duration::from_secs(10), || {
        std::future::ready(match metrics() {
            Err(e) => Ok(Err(e)),
            Ok(text) if answered(&text) >= 3.0 => Ok(Ok(text)),
            Ok(text) => Err(text),
        })
    })
    .await
    .map_err(|e| format!("metrics did not show the 3 calls made: {e}"))??;
    for line in mine(&text).iter().filter(|l| !l.contains("_bucket{")) {
        println!("    {line}");
    }
    Ok(())
}

async fn trial() -> Result<(), String> {
    let mut network = "dev".to_string();
    let mut keep_files = false;
    let mut keep_open = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--network" => network = args.next().ok_or("--network needs a name")?,
            "--keep-files" => keep_files = true,
            "--keep" => keep_open = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    if !DEFAULT_NETWORKS.iter().any(|(name, _)| *name == network) {
        return Err(format!(
            "network {network:?} is not in the default configuration"
        ));
    }

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
    let plugin = assemble_plugin_dir(&runtime, &node_dir, &profile.join("trial"))?;
    let timeout = if real { 600 } else { 30 };
    let nginx_port = free_port();
    let provider = Provider::builder()
        .runtime(plugin.join("ya-runtime-erigon"))
        .config(json!({
            "ready_timeout_secs": timeout,
            "password_hash": "ssha",
            "public_addr": format!("http://127.0.0.1:{nginx_port}"),
        }))
        .build();
    say(&format!("provider HOME {}", provider.root.path().display()));
    prepare_auth_dir(provider.root.path());
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

    let nginx = provider.nginx(nginx_port).start();
    say(&format!(
        "    nginx (conf/nginx/ya-runtime-erigon.conf) listens on 127.0.0.1:{nginx_port}"
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

    let url = status["url"].as_str().unwrap_or_default().to_string();
    let user = status["auth"]["user"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let password = status["auth"]["password"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    say(&format!(
        "4/5 JSON-RPC through nginx at {url}, as the requestor's user would call it"
    ));
    for method in ["eth_chainId", "eth_blockNumber", "web3_clientVersion"] {
        let reply = call(&url, Some((&user, &password)), method).await;
        let (code, reply) = (reply.status, reply.body);
        say(&format!(
            "    with the credentials: {method} -> HTTP {code} {reply}"
        ));
    }
    let code = call(&url, None, "eth_chainId").await.status;
    say(&format!("    without credentials: HTTP {code}"));

    if keep_open {
        interact(&activity, &url, &user, &password).await?;
    }
    operator_view(&runtime, &provider.config_path, &user).await?;

    say("5/5 Shutdown (the ExeUnit allows 5 s, then SIGKILLs the runtime)");
    let took = activity.shutdown().await;
    say(&format!("    Shutdown answered in {} ms", took.as_millis()));
    let left = provider.entries(&network);
    if left
        .iter()
        .any(|line| line.starts_with(&format!("{user}:")))
    {
        return Err(format!("{user} is still in the password file after stop"));
    }
    let code = call(&url, Some((&user, &password)), "eth_chainId")
        .await
        .status;
    if code != 401 {
        return Err(format!(
            "after stop nginx answered HTTP {code} to the revoked credentials"
        ));
    }
    say(&format!(
        "    credentials of {user} revoked: the same call through nginx now gets HTTP {code}"
    ));
    drop(nginx);
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
