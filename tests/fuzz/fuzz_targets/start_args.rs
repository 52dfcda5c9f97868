//! The requestor's start arguments: never a panic; an accepted argument names a
//! configured network.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ya_runtime_erigon::node::network::{NetworkSpec, Networks, DEFAULT_NETWORKS};
use ya_runtime_erigon::runtime::request::network_from_start_args;

fuzz_target!(|data: &[u8]| {
    let networks = Networks::new(
        DEFAULT_NETWORKS
            .iter()
            .map(|(n, s)| (n.to_string(), NetworkSpec::managed(*s)))
            .collect(),
        30303,
        8555,
    )
    .expect("defaults are valid");
    let default = networks.resolve("sepolia").expect("sepolia is configured");
    let text = String::from_utf8_lossy(data);
    // One argument, or several split on NUL as the ExeUnit would pass them.
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    match network_from_start_args(&args, &networks, &default) {
        Ok(network) => assert!(networks.contains(network.name())),
        Err(message) => assert!(message.len() < 1024, "unbounded message"),
    }
});
