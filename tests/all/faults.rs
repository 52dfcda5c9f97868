//! Faults and hostile input, made to happen for real against the built binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::exeunit::creds;
use harness::nginx::is_root;
use harness::process::{alive, eventually, gone_within, send};
use harness::provider::{htpasswd_verifies, Provider};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Everything under `root` except the folders the runtime may write to.
fn tree_outside(root: &Path, allowed: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if allowed.iter().any(|a| path.starts_with(a)) {
                continue;
            }
            if path.is_dir() {
                stack.push(path.clone());
                out.push((path, vec![]));
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

fn no_node_ran(provider: &Provider) -> bool {
    ["mainnet", "sepolia", "hoodi", "gnosis", "chiado", "dev"]
        .iter()
        .all(|n| {
            provider.standin(n, "erigon").is_none() && provider.standin(n, "rpcdaemon").is_none()
        })
}

/// The control for a refused start: the same provider starts `activity` on dev, whose
/// node runs and whose credential is the only one.
async fn a_valid_start_succeeds(provider: &Provider, activity: &str) {
    let valid = provider.start_on(activity, "dev").await;
    valid.ready_status().await;
    let erigon = provider.standin_pid("dev", "erigon").unwrap();
    assert!(alive(erigon), "{activity}: the node runs");
    assert_eq!(
        provider.entries("dev").len(),
        1,
        "{activity}: its credential is issued"
    );
    valid.shutdown().await;
}

#[tokio::test]
async fn hostile_start_arguments_are_refused_by_name_and_leave_nothing() {
    let provider = Provider::new(json!({}));
    provider.deploy_ok();
    let before = tree_outside(
        provider.root.path(),
        &[provider.data_dir.clone(), provider.root.path().join("work")],
    );
    let big = format!(r#"{{"network": "{}"}}"#, "x".repeat(100 * 1024));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![r#"{"network": "#.into()], "is not valid JSON"),
        (vec!["[1, 2]".into()], "is not a JSON object"),
        (vec!["\"dev\"".into()], "is not a JSON object"),
        (vec!["42".into()], "is not a JSON object"),
        (
            vec![r#"{"network": 1}"#.into()],
            "key \"network\" is 1, not a string",
        ),
        (vec![r#"{"network": ["dev"]}"#.into()], "not a string"),
        (vec![r#"{"network": null}"#.into()], "not a string"),
        (
            vec![r#"{"network": "polygon"}"#.into()],
            "network \"polygon\" is not served by this provider; accepted: chiado, dev",
        ),
        (
            vec![r#"{"network": "ropsten"}"#.into()],
            "network \"ropsten\" is retired",
        ),
        (
            vec![r#"{"network": "goerli"}"#.into()],
            "network \"goerli\" is retired",
        ),
        (
            vec![r#"{"network": "../../x"}"#.into()],
            "network \"../../x\" is not served",
        ),
        (
            vec![r#"{"network": "dev/../../etc"}"#.into()],
            "network \"dev/../../etc\" is not served",
        ),
        (
            vec![r#"{"network": "dev; touch /tmp/yre-pwned"}"#.into()],
            "network \"dev; touch /tmp/yre-pwned\" is not served",
        ),
        (
            vec![r#"{"network": "$(touch /tmp/yre-pwned)"}"#.into()],
            "is not served",
        ),
        (vec![r#"{"network": "dev\u0000"}"#.into()], "is not served"),
        (vec![big], "over the 4096-byte limit"),
        (
            vec![r#"{"network": "dev", "archive": true}"#.into()],
            "unknown key \"archive\"",
        ),
        (vec!["{}".into(), "{}".into()], "start got 2 arguments"),
    ];
    let count = cases.len();
    for (i, (args, expected)) in cases.into_iter().enumerate() {
        let work = provider.workdir(&format!("hostile-{i}"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let activity = provider.start(&work, &refs).await;
        assert!(activity.hello.is_ok(), "case {i}: the runtime answers");
        let (status, code) = activity.status().await;
        let reason = status["reason"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            (status["state"].as_str(), code != 0),
            (Some("failed"), true),
            "case {i}: {status}"
        );
        assert!(
            reason.contains(expected),
            "case {i}: {reason:?} lacks {expected:?}"
        );
        assert!(
            reason.len() < 600,
            "case {i}: the reason is bounded ({} bytes)",
            reason.len()
        );
        activity.shutdown().await;
        let log = std::fs::read_to_string(work.join("ya-runtime-erigon.log")).unwrap();
        assert!(!log.contains("panicked"), "case {i}: {log}");
    }
    assert!(no_node_ran(&provider), "no process was started");
    for net in ["mainnet", "sepolia", "hoodi", "gnosis", "chiado", "dev"] {
        assert!(provider.entries(net).is_empty(), "no credential on {net}");
    }
    let after = tree_outside(
        provider.root.path(),
        &[provider.data_dir.clone(), provider.root.path().join("work")],
    );
    assert_eq!(before, after, "nothing created or changed outside data_dir");
    assert!(!Path::new("/tmp/yre-pwned").exists());
    // The control: the refusals above were the arguments' doing, and a node or a
    // credential would have shown.
    a_valid_start_succeeds(&provider, "valid").await;
    assert!(!no_node_ran(&provider), "a valid start runs a node");
    eprintln!("hostile start arguments tried: {count}");
}

#[tokio::test]
async fn run_refuses_unknown_and_empty_commands_by_name() {
    let provider = Provider::new(json!({}));
    let activity = provider.start_on("a", "dev").await;
    for (bin, expected) in [
        ("ls", "unknown command \"ls\"; the only command is STATUS"),
        ("/bin/sh", "unknown command \"/bin/sh\""),
        ("STATUS; rm -rf /", "unknown command \"STATUS; rm -rf /\""),
        ("", "empty command; the only command is STATUS"),
        ("   ", "empty command"),
    ] {
        let message = activity.refused(bin).await;
        assert!(message.contains(expected), "{bin:?}: {message}");
    }
    assert_eq!(
        activity.run("status").await.0["state"],
        "ready",
        "any case of STATUS works"
    );
    activity.ready_status().await;
    activity.shutdown().await;
}

#[tokio::test]
async fn a_node_ignoring_sigint_is_left_running_but_stop_answers_and_revokes() {
    let provider = Provider::new(json!({}));
    provider.set_behaviour("dev", json!({"rpcdaemon": {"ignore_sigint": true}}));
    let activity = provider.start_on("stubborn", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    assert!(
        htpasswd_verifies(&provider.user_file(&user), &user, &password),
        "verifies while the activity is up"
    );
    let rpcdaemon = provider.standin_pid("dev", "rpcdaemon").unwrap();
    let erigon = provider.standin_pid("dev", "erigon").unwrap();
    assert!(alive(erigon) && alive(rpcdaemon));
    let took = activity.shutdown().await;
    assert!(
        took < Duration::from_secs(4),
        "Shutdown answered in {took:?}, inside the ExeUnit's window"
    );
    assert!(
        !htpasswd_verifies(&provider.user_file(&user), &user, &password),
        "revoked"
    );
    assert!(!alive(erigon), "erigon stopped cleanly");
    assert!(alive(rpcdaemon), "the stubborn child was not SIGKILLed");
    let log = std::fs::read_to_string(provider.workdir("stubborn").join("ya-runtime-erigon.log"))
        .unwrap();
    assert!(
        log.contains(&format!(
            "rpcdaemon (pid {rpcdaemon}) is still finishing its clean stop"
        )),
        "stop reports what it left: {log}"
    );
    send(rpcdaemon, Signal::SIGKILL);
    assert!(gone_within(rpcdaemon, Duration::from_secs(5)).await);
}

/// A small tmpfs mounted over the activities' folder, unmounted when dropped. A
/// read-only remount refuses writes to root too, which file modes do not.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        assert!(
            is_root(),
            "mounting a small tmpfs needs root (CI runs as root)"
        );
        std::fs::create_dir_all(dir).unwrap();
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "tmpfs",
            ],
            dir,
        );
        Self(dir.to_path_buf())
    }

    fn read_only(&self, read_only: bool) {
        let opts = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        mount(&["-o", opts], &self.0);
    }
}

fn mount(args: &[&str], dir: &Path) {
    let out = std::process::Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// What the activities' folder holds besides the files deploy made.
fn activity_files(provider: &Provider) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(provider.auth_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // Seat locks stay: removing a lock file another runtime may be opening is a race.
        .filter(|n| n != ".no-activity.htpasswd" && n != "filler")
        .filter(|n| !(n.starts_with("seat-") && n.ends_with(".lock")))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_read_only_activities_folder_fails_the_start_clearly_and_leaves_nothing() {
    let provider = Provider::new(json!({}));
    let disk = SmallDisk::mount(&provider.auth_dir(), "1m");
    provider.deploy_ok();
    disk.read_only(true);
    let activity = provider.start_on("a", "dev").await;
    let (status, code) = activity.status().await;
    assert_ne!(code, 0);
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("Read-only file system") && reason.contains("socket_dir"),
        "{reason}"
    );
    assert!(no_node_ran(&provider), "refused before any node started");
    activity.shutdown().await;
    disk.read_only(false);
    assert!(
        activity_files(&provider).is_empty(),
        "{:?}",
        activity_files(&provider)
    );

    // The control: writable again, the start succeeds.
    a_valid_start_succeeds(&provider, "fixed").await;
}

#[tokio::test]
async fn a_full_disk_fails_the_start_clearly_and_leaves_nothing() {
    let provider = Provider::new(json!({}));
    let _disk = SmallDisk::mount(&provider.auth_dir(), "64k");
    provider.deploy_ok();
    // Fill the disk: write until it refuses.
    let filler = provider.auth_dir().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut f, &[0u8; 4096]).is_ok() {}
    drop(f);

    let activity = provider.start_on("a", "dev").await;
    let (status, code) = activity.status().await;
    assert_ne!(code, 0);
    let reason: &Value = &status["reason"];
    let reason = reason.as_str().unwrap();
    assert!(reason.contains("No space left on device"), "{reason}");
    assert!(reason.contains("password file"), "{reason}");
    eprintln!("full disk: {reason}");
    assert!(
        !alive(provider.standin_pid("dev", "erigon").unwrap()),
        "the node was stopped"
    );
    activity.shutdown().await;
    assert!(
        activity_files(&provider).is_empty(),
        "no temp file, owner record or socket left behind: {:?}",
        activity_files(&provider)
    );

    // The control: with room again, the start succeeds.
    std::fs::remove_file(&filler).unwrap();
    a_valid_start_succeeds(&provider, "roomy").await;
}

/// The ExeUnit dying closes the runtime's stdin without a Shutdown: the runtime's state
/// is dropped on the way out, which revokes, and its children follow it.
#[tokio::test]
async fn the_exeunit_vanishing_revokes_and_takes_the_node_down() {
    use std::process::Stdio;
    let provider = Provider::new(json!({}));
    provider.deploy_ok();
    let mut cmd = tokio::process::Command::from(provider.command(&provider.workdir("orphaned")));
    cmd.args(["start", r#"{"network": "dev"}"#])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut runtime = cmd.spawn().unwrap();
    // No protocol client here: the entry appearing is the sign that start finished.
    eventually("start issues credentials", Duration::from_secs(20), || {
        !provider.entries("dev").is_empty()
    })
    .await;
    let erigon = provider.standin_pid("dev", "erigon").unwrap();
    assert!(alive(erigon));
    drop(runtime.stdin.take());
    let exit = tokio::time::timeout(Duration::from_secs(5), runtime.wait())
        .await
        .expect("the runtime exits when its ExeUnit is gone")
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(provider.entries("dev").is_empty(), "revoked on the way out");
    assert!(
        gone_within(erigon, Duration::from_secs(5)).await,
        "the node followed the runtime"
    );
}

/// A node whose log file stalls (a FIFO whose reader reads nothing, as a disk that
/// stopped answering) while the node logs as fast as it can: the runtime's threads
/// that copy its output wait, the node waits on its full pipe, and the activity's
/// calls are still answered. (When the runtime's one thread copied the node's output,
/// it waited on the log with every call behind it: `.ci/bench`'s `bench_logs` measured
/// 4.4 s a call against a disk that reads 2 MB/s, and a disk that reads nothing held
/// every call for good.) The stop is not held either.
#[tokio::test]
async fn a_node_logging_into_a_stalled_disk_does_not_hold_the_calls() {
    let provider = Provider::behind_nginx(json!({}));
    provider.set_behaviour("dev", json!({"erigon": {"log_flood": true}}));
    std::fs::write(provider.datadir("dev").join("flood"), b"").unwrap();
    let log_dir = provider.data_dir.join("logs/dev");
    std::fs::create_dir_all(&log_dir).unwrap();
    let fifo = log_dir.join("erigon.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    // Opens the FIFO and never reads: once the pipe's 64 KiB are full, every write
    // to the log waits.
    let (stalled_tx, stalled) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let held = std::fs::File::open(&fifo).unwrap();
        stalled_tx.send(()).unwrap();
        held
    });
    provider.deploy_ok();
    let nginx = provider.site().start();
    let activity = provider.start_on("logs", "dev").await;
    let (user, password) = creds(&activity.ready_status().await);
    stalled.recv().unwrap();
    let _held = reader.join().unwrap();
    // The stand-in floods from its start: wait until its pipe is full, i.e. its
    // stdout writes block, which /proc shows as the thread's wait channel.
    let erigon = provider.standin_pid("dev", "erigon").unwrap();
    eventually(
        "the stand-in's output fills its pipe",
        Duration::from_secs(10),
        || {
            std::fs::read_dir(format!("/proc/{erigon}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|t| {
                    std::fs::read_to_string(t.path().join("wchan"))
                        .is_ok_and(|w| w.contains("pipe_write") || w.contains("pipe_wait"))
                })
        },
    )
    .await;
    let url = nginx.url("/dev");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..20 {
        let answer = client
            .post(&url)
            .basic_auth(&user, Some(&password))
            .json(&json!({"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []}))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("call {i} while the log stalls: {e}"));
        assert_eq!(answer.status(), 200, "call {i}");
    }
    let (status, code) = activity.status().await;
    assert_eq!(
        (status["state"].as_str(), code),
        (Some("ready"), 0),
        "{status}"
    );
    let took = activity.shutdown().await;
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");
}
