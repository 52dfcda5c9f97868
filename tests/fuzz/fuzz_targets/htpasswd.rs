//! The htpasswd reader/writer on arbitrary existing content: adding then removing an
//! entry gives back the file byte for byte, whatever else it held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ya_runtime_erigon::htpasswd::{entry_user, HtpasswdFile};
use ya_runtime_erigon::owner::Owner;

const USER: &str = "fuzz-user-0123456789";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The runtime owns its users; content that already grants USER is not ours to keep.
    if text.split('\n').any(|l| entry_user(l) == Some(USER)) {
        return;
    }
    let dir = tempfile::tempdir_in("/dev/shm").expect("a temp dir");
    let path = dir.path().join("h");
    std::fs::write(&path, text).expect("write");
    let file = HtpasswdFile::new(path.clone());
    let owner = Owner::current().expect("owner");
    assert!(file.add(USER, "{SHA}x", &owner).expect("add"));
    assert!(file.contains(USER).expect("read"));
    assert_eq!(file.remove(USER).expect("remove"), 1);
    let after = std::fs::read_to_string(&path).expect("read back");
    // Only a missing final newline may be added.
    let expected = if text.is_empty() || text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    };
    assert_eq!(after, expected);
});
