//! The runtime under each real driver: ya-runtime-dbg's shell-mode RUN, the SIGHUP a
//! debugger's terminal sends, a supervisor that vanishes while the start still waits
//! for the node, and a supervisor whose input closes while the node is stopping.

use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::exeunit::creds;
use harness::process::{alive, eventually, gone_within, reaped_within, send};
use harness::provider::{htpasswd_verifies, Provider};
use nix::sys::signal::Signal;
use serde_json::json;

/// How long a vanished supervisor's runtime and node may take to be gone.
const GONE_WITHIN: Duration = Duration::from_secs(3);

#[tokio::test]
async fn the_debuggers_shell_mode_run_is_status_and_nothing_else() {
    let provider = Provider::new(json!({}));
    let activity = provider.start_on("dbg", "dev").await;
    // The ExeUnit's form first: the baseline the wrapped form must match.
    let plain = activity.ready_status().await;
    // Exactly what ya-runtime-dbg sends in its default `--exec-mode shell`.
    let (wrapped, code) = activity
        .run_argv("/bin/bash", &["bash", "-c", "STATUS"])
        .await;
    assert_eq!(
        (wrapped["state"].as_str(), code),
        (Some("ready"), 0),
        "{wrapped}"
    );
    assert_eq!(wrapped["auth"], plain["auth"]);
    assert_eq!(wrapped["url"], plain["url"]);
    let (spaced, _) = activity
        .run_argv("/bin/sh", &["sh", "-c", "  status\n"])
        .await;
    assert_eq!(spaced["state"], "ready");
    for (bin, argv, named) in [
        (
            "/bin/bash",
            ["bash", "-c", "STATUS; id"],
            "\"STATUS; id\" in /bin/bash -c",
        ),
        ("/bin/bash", ["bash", "-c", "ls"], "\"ls\" in /bin/bash -c"),
        (
            "/bin/bash",
            ["bash", "-x", "STATUS"],
            "\"/bin/bash\" with arguments",
        ),
        ("/usr/bin/zsh", ["zsh", "-c", "STATUS"], "\"/usr/bin/zsh\""),
    ] {
        let refusal = activity.refused_argv(bin, &argv).await;
        assert!(
            refusal.contains(named) && refusal.contains("the only command is STATUS"),
            "{bin} {argv:?}: {refusal}"
        );
    }
    // No shell ran: the refused scripts left nothing, and the activity still serves.
    activity.ready_status().await;
    activity.shutdown().await;
}

#[tokio::test]
async fn sighup_stops_like_a_shutdown_then_exits() {
    let provider = Provider::new(json!({}));
    let activity = provider.start_on("hup", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    let file = provider.user_file(&user);
    assert!(htpasswd_verifies(&file, &user, &password), "works while up");
    let children: Vec<u32> = ["erigon", "rpcdaemon"]
        .iter()
        .map(|name| provider.standin_pid("dev", name).unwrap())
        .collect();
    assert!(children.iter().all(|pid| alive(*pid)));
    let runtime = activity.pid();
    send(runtime, Signal::SIGHUP);
    assert!(
        reaped_within(runtime, Duration::from_secs(5)).await,
        "the runtime exits after its stop"
    );
    assert!(!htpasswd_verifies(&file, &user, &password), "revoked");
    for pid in children {
        assert!(
            !alive(pid),
            "child {pid} was stopped before the runtime exited"
        );
    }
    let log = std::fs::read_to_string(activity.workdir.join("ya-runtime-erigon.log")).unwrap();
    assert!(log.contains("got SIGHUP"), "{log}");
    assert!(log.contains("stopped in"), "{log}");
}

/// ya-provider SIGTERMs the ExeUnit, which exits without a Shutdown and without killing
/// the runtime, while the start still waits for a node that never answers. Here the
/// supervisor is a shell that SIGKILL takes away; the runtime's input stays open (the
/// shell's other child holds the pipe), so only its parent's death can tell it.
#[tokio::test]
async fn a_supervisor_vanishing_mid_start_leaves_nothing_and_frees_the_network() {
    let provider = Provider::new(json!({"ready_timeout_secs": 120}));
    provider.deploy_ok();
    provider.set_behaviour("dev", json!({"rpcdaemon": {"never_ready": true}}));
    let work = provider.workdir("orphan");
    let runtime_cmd = provider.command(&work);
    let mut supervisor = tokio::process::Command::new("sh");
    supervisor
        .arg("-c")
        .arg(r#"sleep 600 | "$0" "$@""#)
        .arg(runtime_cmd.get_program())
        .args(runtime_cmd.get_args())
        .args(["start", r#"{"network": "dev"}"#])
        .env_clear()
        .envs(
            runtime_cmd
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut supervisor = supervisor.spawn().unwrap();
    let shell = supervisor.id().unwrap();
    // The start is waiting for rpcdaemon once the stand-in has recorded itself.
    let (erigon, rpcdaemon) = eventually(
        "the start reaches rpcdaemon",
        Duration::from_secs(20),
        || {
            Some((
                provider.standin_pid("dev", "erigon")?,
                provider.standin_pid("dev", "rpcdaemon")?,
            ))
        },
    )
    .await;
    let (sleeper, runtime) = shell_children(shell);
    // Should an assertion fail, nothing of this test may outlive it.
    let _cleanup = KillOnDrop(vec![sleeper, runtime, erigon, rpcdaemon]);
    assert!(
        alive(runtime) && alive(erigon) && alive(rpcdaemon),
        "all up mid-start"
    );
    let hello_never_came = provider.entries("dev").is_empty();
    assert!(hello_never_came, "no credential before the node is ready");

    send(shell, Signal::SIGKILL);
    let killed = Instant::now();
    supervisor.wait().await.unwrap();
    for (name, pid) in [
        ("runtime", runtime),
        ("erigon", erigon),
        ("rpcdaemon", rpcdaemon),
    ] {
        let left = GONE_WITHIN.saturating_sub(killed.elapsed());
        assert!(
            gone_within(pid, left).await,
            "{name} (pid {pid}) still runs {} ms after its supervisor vanished",
            killed.elapsed().as_millis()
        );
    }
    assert!(provider.entries("dev").is_empty(), "no credential exists");
    let log = std::fs::read_to_string(work.join("ya-runtime-erigon.log")).unwrap();
    assert!(log.contains("got SIGTERM"), "{log}");
    assert!(log.contains("start abandoned: start cancelled"), "{log}");

    // The network is free at once: the next activity starts on it.
    provider.set_behaviour("dev", json!({}));
    let next = provider.start_on("next", "dev").await;
    assert!(next.ready_status().await["auth"]["user"].is_string());
    next.shutdown().await;
}

/// SIGKILLs what is still alive of the listed processes when dropped.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in self.0.iter().copied().filter(|pid| alive(*pid)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The shell's two children: `sleep` (holding the runtime's input open) and the runtime.
fn shell_children(shell: u32) -> (u32, u32) {
    let listed = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let pids: Vec<u32> = listed
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let sleeper = *pids.iter().find(|p| comm(**p).trim() == "sleep").unwrap();
    let runtime = *pids.iter().find(|p| **p != sleeper).unwrap();
    (sleeper, runtime)
}

/// A debugger or an ExeUnit that goes away closes the runtime's input; the runtime then
/// runs the stop a Shutdown would, and exits only when it is done.
#[tokio::test]
async fn end_of_input_runs_the_bounded_stop_before_exiting() {
    let provider = Provider::new(json!({"stop_timeout_ms": 3000}));
    provider.deploy_ok();
    provider.set_behaviour("dev", json!({"erigon": {"stop_delay_ms": 1500}}));
    let work = provider.workdir("eof");
    let mut cmd = tokio::process::Command::from(provider.command(&work));
    cmd.args(["start", r#"{"network": "dev"}"#])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut runtime = cmd.spawn().unwrap();
    eventually("start issues credentials", Duration::from_secs(20), || {
        !provider.entries("dev").is_empty()
    })
    .await;
    let erigon = provider.standin_pid("dev", "erigon").unwrap();
    assert!(alive(erigon), "the node runs before the input closes");
    drop(runtime.stdin.take());
    let exit = tokio::time::timeout(Duration::from_secs(5), runtime.wait())
        .await
        .expect("the runtime exits within its stop bound")
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(
        !alive(erigon),
        "erigon finished its 1.5 s clean stop before the runtime exited"
    );
    assert!(provider.entries("dev").is_empty(), "revoked");
    let log = std::fs::read_to_string(work.join("ya-runtime-erigon.log")).unwrap();
    assert!(log.contains("input closed"), "{log}");
    assert!(log.contains("erigon exited with status 0"), "{log}");
    assert!(log.contains("stopped in"), "{log}");
}
