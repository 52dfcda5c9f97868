//! Twenty runtimes starting and stopping at once against one password file, while a
//! reader parses the file in a tight loop the way nginx reads it on every request.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use harness::provider::Provider;
use serde_json::json;

const RUNTIMES: usize = 20;
const ROUNDS: usize = 2;
const FOREIGN: &str = "# kept by hand\r\n\r\nalice:{PLAIN}secret\r\n";

/// What the reader saw that it must never see.
#[derive(Default)]
struct Violations(Vec<String>);

/// Every line is a comment, blank, the operator's, or a runtime entry `<user>:{SHA}<28
/// base64>`; no user twice; every activity the test counts as live is present.
fn check(text: &str, live: &HashSet<String>) -> Result<(), String> {
    if !text.starts_with(FOREIGN) {
        return Err(format!(
            "the operator's lines changed or vanished: {text:?}"
        ));
    }
    let mut users = HashSet::new();
    for line in text[FOREIGN.len()..].split_terminator('\n') {
        let (user, hash) = line
            .split_once(':')
            .ok_or(format!("not an entry: {line:?}"))?;
        let valid = hash.len() == "{SHA}".len() + 28 && hash.starts_with("{SHA}");
        if !valid || !user.starts_with('n') {
            return Err(format!("corrupt entry: {line:?}"));
        }
        if !users.insert(user.to_string()) {
            return Err(format!("duplicate entry for {user}"));
        }
    }
    if !text.ends_with('\n') {
        return Err(format!("partial file: {text:?}"));
    }
    match live.iter().find(|u| !users.contains(*u)) {
        Some(lost) => Err(format!("live activity's entry {lost} is missing")),
        None => Ok(()),
    }
}

#[tokio::test]
async fn twenty_runtimes_never_lose_duplicate_or_corrupt_an_entry() {
    let networks: BTreeMap<String, serde_json::Value> = (0..RUNTIMES)
        .map(|i| (format!("n{i:02}"), json!({"slot": i, "chain": "dev"})))
        .collect();
    let provider = Provider::builder()
        .slots(RUNTIMES as u32)
        .config(json!({"networks": networks, "default_network": "n00"}))
        .build();
    let file = provider.root.path().join("auth/shared.htpasswd");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, FOREIGN).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&provider.config_path).unwrap()).unwrap();
    config["passwd_file_path"] = json!(file);
    provider.write_config(&config.to_string());
    provider.deploy_ok();

    // The reader: live set first, then the file. An activity joins the set only after its
    // entry is known to exist and leaves it before its stop begins, so a missing live
    // entry can only mean a lost write.
    let live = Arc::new(Mutex::new(HashSet::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (live, done, reads, file) = (live.clone(), done.clone(), reads.clone(), file.clone());
        std::thread::spawn(move || {
            let mut violations = Violations::default();
            while !done.load(Ordering::SeqCst) {
                let expected = live.lock().unwrap().clone();
                let text =
                    std::fs::read_to_string(&file).unwrap_or_else(|e| format!("unreadable: {e}"));
                reads.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = check(&text, &expected) {
                    violations.0.push(e);
                }
                // Two cores are shared with 60 processes: let them run between reads.
                std::thread::yield_now();
            }
            violations
        })
    };

    for round in 0..ROUNDS {
        let t = std::time::Instant::now();
        let activities = futures::future::join_all(
            (0..RUNTIMES).map(|i| provider.start_on(format!("r{round}a{i}"), format!("n{i:02}"))),
        )
        .await;
        eprintln!("round {round}: started in {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let statuses = futures::future::join_all(activities.iter().map(|a| a.ready_status())).await;
        let mut users = Vec::new();
        for status in statuses {
            let user = status["auth"]["user"].as_str().unwrap().to_string();
            live.lock().unwrap().insert(user.clone());
            users.push(user);
        }
        let text = std::fs::read_to_string(&file).unwrap();
        check(&text, &users.iter().cloned().collect()).unwrap();
        assert_eq!(
            text.lines().count(),
            3 + RUNTIMES,
            "exactly the live entries: {text}"
        );
        eprintln!("round {round}: 20 STATUS in {:?}", t.elapsed());
        let t = std::time::Instant::now();
        live.lock().unwrap().clear();
        let took = futures::future::join_all(activities.into_iter().map(|a| a.shutdown())).await;
        eprintln!(
            "round {round}: stopped in {:?}; slowest Shutdown {:?}",
            t.elapsed(),
            took.iter().max()
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            FOREIGN,
            "round {round}: every entry revoked"
        );
    }

    done.store(true, Ordering::SeqCst);
    let violations = reader.join().unwrap();
    let reads = reads.load(Ordering::SeqCst);
    eprintln!("reader: {reads} reads, {} violations", violations.0.len());
    assert!(reads > 100, "the reader ran throughout ({reads} reads)");
    assert!(
        violations.0.is_empty(),
        "{} violations, first: {:?}",
        violations.0.len(),
        violations.0.first()
    );
}
