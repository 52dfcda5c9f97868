//! The configuration file: never a panic, and every refusal names the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ya_runtime_erigon::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Err(message) = Config::from_value(&value, Path::new("/etc/c.json"), Path::new("/opt/r"))
    {
        assert!(
            message.starts_with("configuration file /etc/c.json"),
            "{message}"
        );
    }
});
