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
    // Every counter the runtime reports is declared, and priced by the preset.
    for counter in [
        ya_runtime_erigon::provider::billing::COUNTER,
        ya_runtime_erigon::provider::billing::CU_COUNTER,
    ] {
        assert_eq!(
            entry["config"]["counters"][counter]["price"], true,
            "{counter}"
        );
        let coeff = &preset["usage-coeffs"][counter];
        assert!(
            coeff.as_f64().is_some_and(|c| c > 0.0),
            "{counter}: {coeff}"
        );
    }
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
    let sepolia = config.networks().resolve("sepolia").unwrap();
    assert_eq!(
        config.socket_dir(),
        Path::new("/etc/nginx/ya-runtime-erigon")
    );
    assert_eq!(
        config.public_url(&sepolia),
        "https://rpc.example.com:8545/sepolia"
    );
}

#[test]
fn the_release_tarball_holds_the_descriptor_and_the_runtime() {
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = std::process::Command::new("bash")
        .arg(root.join(".ci/package"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_ya-runtime-erigon"))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tarball = out.path().join(format!(
        "ya-runtime-erigon-{}.tar.gz",
        env!("CARGO_PKG_VERSION")
    ));
    let list = std::process::Command::new("tar")
        .arg("tvzf")
        .arg(&tarball)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields[0], fields[fields.len() - 1])
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("-rw-r--r--", "ya-runtime-erigon.json"),
            ("drwxr-xr-x", "ya-runtime-erigon/"),
            ("-rwxr-xr-x", "ya-runtime-erigon/ya-runtime-erigon"),
        ],
        "the layout the descriptor's runtime-path expects"
    );
}
