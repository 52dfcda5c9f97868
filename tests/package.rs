//! The files a provider installs: descriptor, preset and example configuration.

use std::path::Path;

use serde_json::Value;

fn read(path: &str) -> Value {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_json::from_str(&std::fs::read_to_string(&full).unwrap()).unwrap()
}

#[test]
fn the_descriptor_matches_the_crate_and_the_preset() {
    let descriptor = read("plugins/ya-runtime-erigon.json");
    let entry = &descriptor[0];
    assert_eq!(entry["name"], "erigon");
    assert_eq!(entry["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(entry["supervisor-path"], "exe-unit");
    assert_eq!(entry["runtime-path"], "ya-runtime-erigon/ya-runtime-erigon");
    assert_eq!(
        entry["extra-args"],
        serde_json::json!(["--runtime-managed-image"])
    );

    let presets = read("plugins/presets.json");
    assert_eq!(presets["ver"], "V1");
    let preset = &presets["presets"][0];
    assert_eq!(
        preset["exeunit-name"], entry["name"],
        "exeunit-name must equal the descriptor's name"
    );
    assert!(presets["active"]
        .as_array()
        .unwrap()
        .contains(&preset["name"]));
    assert!(
        preset["usage-coeffs"]["golem.usage.duration_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn the_example_configuration_is_valid() {
    let value = read("conf/ya-runtime-erigon.json");
    let config = ya_runtime_erigon::config::Config::from_value(
        &value,
        Path::new("conf/ya-runtime-erigon.json"),
        Path::new("/opt/ya-runtime-erigon"),
    )
    .unwrap();
    let sepolia = config.networks.resolve("sepolia").unwrap();
    assert_eq!(
        config.passwd_file(&sepolia),
        Path::new("/etc/nginx/erigon/sepolia.htpasswd")
    );
    assert_eq!(
        config.public_url(&sepolia),
        "https://rpc.example.com:8545/sepolia"
    );
}
