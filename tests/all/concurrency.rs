//! Twenty runtimes starting and stopping at once in one activities' folder, each start
//! sweeping it in the background, while a reader checks every live activity's password
//! file in a tight loop the way nginx opens it on every request.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use harness::provider::Provider;
use serde_json::json;

const RUNTIMES: usize = 20;
const ROUNDS: usize = 2;
/// Activities of runtimes that died without revoking, planted before the first round.
const DEAD: usize = 40;
const FOREIGN: &str = "alice:{PLAIN}secret\n";

/// An activity's file holds exactly its own entry `<user>:{SHA}<28 base64>\n`.
fn check(dir: &Path, user: &str) -> Result<(), String> {
    let path = dir.join(format!("{user}.htpasswd"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("live activity's file {} is unreadable: {e}", path.display()))?;
    let hash = text
        .strip_suffix('\n')
        .and_then(|t| t.strip_prefix(&format!("{user}:")))
        .ok_or(format!("not {user}'s entry alone: {text:?}"))?;
    if hash.len() != "{SHA}".len() + 28 || !hash.starts_with("{SHA}") {
        return Err(format!("corrupt entry: {text:?}"));
    }
    Ok(())
}

/// Files the sweep must never touch: an operator's file, and an activity of another
/// machine (its owner cannot be judged from here).
fn plant_foreign(dir: &Path) -> Vec<(PathBuf, String)> {
    let elsewhere = json!({"machine": "another-host", "boot_id": "b", "pid": 1, "start_ticks": 1});
    let files = vec![
        (dir.join("alice.htpasswd"), FOREIGN.to_string()),
        (
            dir.join("n00-elsewhere0000000.htpasswd"),
            "n00-elsewhere0000000:x\n".into(),
        ),
        (
            dir.join("n00-elsewhere0000000.owner"),
            elsewhere.to_string(),
        ),
    ];
    for (path, text) in &files {
        std::fs::write(path, text).unwrap();
    }
    files
}

/// Activities whose runtime ran on this machine in an earlier boot: dead for sure.
fn plant_dead(dir: &Path) -> Vec<PathBuf> {
    let machine = std::fs::read_to_string("/etc/machine-id")
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|_| nix::unistd::gethostname().unwrap().to_string_lossy().into());
    let owner =
        json!({"machine": machine, "boot_id": "an-earlier-boot", "pid": 1, "start_ticks": 1});
    let mut paths = Vec::new();
    for i in 0..DEAD {
        let user = format!("n{:02}-dead{i:012}", i % RUNTIMES);
        let entry = dir.join(format!("{user}.htpasswd"));
        std::fs::write(&entry, format!("{user}:x\n")).unwrap();
        std::fs::write(dir.join(format!("{user}.owner")), owner.to_string()).unwrap();
        paths.push(entry);
    }
    paths
}

#[tokio::test]
async fn twenty_runtimes_and_their_sweeps_never_lose_or_corrupt_a_live_entry() {
    let networks: BTreeMap<String, serde_json::Value> = (0..RUNTIMES)
        .map(|i| (format!("n{i:02}"), json!({"slot": i, "chain": "dev"})))
        .collect();
    let provider = Provider::builder()
        .slots(RUNTIMES as u32)
        .config(json!({"networks": networks, "default_network": "n00"}))
        .build();
    provider.deploy_ok();
    let dir = provider.auth_dir();
    let foreign = plant_foreign(&dir);
    let dead = plant_dead(&dir);

    // The reader: live set first, then the files. An activity joins the set only after
    // its file is known to exist, and leaves it before its stop begins, waiting until
    // every pass that may have seen it is over; so a missing or partial live file can
    // only be a lost or torn write, or a wrong sweep. Passes are counted, so that an
    // activity can wait for them.
    let live = Arc::new(Mutex::new(HashSet::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let (passes_tx, passes) = tokio::sync::watch::channel(0usize);
    let reader = {
        let (live, done, reads, dir) = (live.clone(), done.clone(), reads.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut violations = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let expected = live.lock().unwrap().clone();
                for user in &expected {
                    reads.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = check(&dir, user) {
                        violations.push(e);
                    }
                }
                passes_tx.send_modify(|n| *n += 1);
                // Two cores are shared with 60 processes: let them run between reads.
                std::thread::yield_now();
            }
            violations
        })
    };

    // Each activity starts, is read live for a few passes, and stops on its own
    // schedule, so starts, stops, sweeps and reads all overlap.
    let one = |round: usize, i: usize| {
        let (provider, live, dir) = (&provider, live.clone(), dir.clone());
        let mut passes = passes.clone();
        async move {
            let activity = provider
                .start_on(format!("r{round}a{i}"), format!("n{i:02}"))
                .await;
            let status = activity.ready_status().await;
            let user = status["auth"]["user"].as_str().unwrap().to_string();
            check(&dir, &user).unwrap();
            live.lock().unwrap().insert(user.clone());
            let seen = *passes.borrow();
            passes.wait_for(|n| *n >= seen + 3).await.unwrap();
            live.lock().unwrap().remove(&user);
            // The pass under way may have taken the set before the removal.
            let seen = *passes.borrow();
            passes.wait_for(|n| *n >= seen + 2).await.unwrap();
            let took = activity.shutdown().await;
            for suffix in ["htpasswd", "owner"] {
                let path = dir.join(format!("{user}.{suffix}"));
                assert!(!path.exists(), "{} revoked", path.display());
            }
            (user, took)
        }
    };
    for round in 0..ROUNDS {
        let t = std::time::Instant::now();
        let ended = futures::future::join_all((0..RUNTIMES).map(|i| one(round, i))).await;
        let users: HashSet<_> = ended.iter().map(|(u, _)| u.clone()).collect();
        assert_eq!(users.len(), RUNTIMES, "no user issued twice");
        eprintln!(
            "round {round}: 20 activities in {:?}; slowest Shutdown {:?}",
            t.elapsed(),
            ended.iter().map(|(_, took)| took).max()
        );
    }

    done.store(true, Ordering::SeqCst);
    let violations = reader.join().unwrap();
    let reads = reads.load(Ordering::SeqCst);
    eprintln!("reader: {reads} reads, {} violations", violations.len());
    assert!(reads > 100, "the reader ran throughout ({reads} reads)");
    assert!(
        violations.is_empty(),
        "{} violations, first: {:?}",
        violations.len(),
        violations.first()
    );
    // 40 starts swept the folder, each in the background of its start, while the
    // others issued and revoked.
    let left: Vec<_> = dead.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "dead runtimes' files left: {left:?}");
    for (path, text) in &foreign {
        assert_eq!(
            &std::fs::read_to_string(path).unwrap(),
            text,
            "{}",
            path.display()
        );
    }
}
