//! The sweep on arbitrary owner records: whatever a record holds (a torn write, another
//! version's format, garbage), the sweep never panics, never touches a live activity's
//! files, and removes the record's activity only when it names a dead owner here.
//! `@machine@` and `@boot@` in the input stand for this machine's ids, so the fuzzer
//! reaches records of this machine without guessing them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ya_runtime_erigon::access::htpasswd::{sweep, ActivityFile};
use ya_runtime_erigon::owner::Owner;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir_in("/dev/shm").expect("a temp dir");
    let here = Owner::current().expect("owner");
    let live = ActivityFile::new(dir.path(), "dev-live");
    assert!(live.create("{SHA}x", &here).expect("create"));
    std::fs::write(dir.path().join("dev-fuzzed.htpasswd"), "dev-fuzzed:x\n").expect("write");
    let data = String::from_utf8_lossy(data)
        .replace("@machine@", &here.machine)
        .replace("@boot@", &here.boot_id);
    std::fs::write(dir.path().join("dev-fuzzed.owner"), &data).expect("write");
    let swept = sweep(dir.path(), &here).expect("sweep");
    assert!(live.path().exists(), "a live activity's file was swept");
    let dead = serde_json::from_str::<Owner>(&data).is_ok_and(|o| o.is_dead_here(&here));
    assert_eq!(swept == ["dev-fuzzed"], dead, "{swept:?}");
    assert_eq!(dir.path().join("dev-fuzzed.htpasswd").exists(), !dead);
});
