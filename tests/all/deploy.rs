//! `deploy` through the built binary: first run, bad configuration, unusable folders.

use harness::provider::Provider;
use serde_json::{json, Value};

#[test]
fn first_run_writes_a_complete_default_configuration_and_deploys() {
    let provider = Provider::builder().without_config().build();
    let work = provider.workdir("first");
    let out = provider.deploy(&work);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&provider.config_path).unwrap()).unwrap();
    assert_eq!(written["default_network"], "sepolia");
    assert_eq!(written["erigon_http_port"], 8555);
    let data_dir = provider.root.path().join("xdg/ya-runtime-erigon/data");
    assert_eq!(written["data_dir"], json!(data_dir));
    for net in ["mainnet", "sepolia", "hoodi", "gnosis", "chiado", "dev"] {
        assert!(data_dir.join(net).is_dir());
    }
    assert!(
        data_dir.join("auth").is_dir(),
        "the password folder is prepared"
    );
    let log = std::fs::read_to_string(work.join("ya-runtime-erigon.log")).unwrap();
    assert!(log.contains("wrote the default configuration"), "{log}");
}

#[test]
fn bad_configuration_fails_deploy_naming_file_key_and_what_is_accepted() {
    let cases = [
        (json!({"colour": "blue"}), "unknown field `colour`"),
        (
            json!({"erigon_http_port": "eighty"}),
            "key `erigon_http_port`: \"eighty\" is not a port",
        ),
        (
            json!({"data_dir": "relative/dir"}),
            "key `data_dir`: \"relative/dir\" is a relative path",
        ),
        (json!({"password_default_length": 0}), "accepted: 15 to 128"),
        (
            json!({"password_default_length": 10000}),
            "accepted: 15 to 128",
        ),
        (
            json!({"networks": {"goerli": {"slot": "x"}}}),
            "key `networks.goerli.slot`",
        ),
    ];
    // The control: without a bad key, deploy succeeds and creates the data dir.
    let good = Provider::new(json!({}));
    assert!(good.deploy(&good.workdir("good")).status.success());
    assert!(good.data_dir.exists());
    for (overrides, expected) in cases {
        let provider = Provider::new(overrides.clone());
        let out = provider.deploy(&provider.workdir("bad"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{overrides}");
        assert!(
            stderr.contains(&provider.config_path.display().to_string()),
            "{stderr}"
        );
        assert!(stderr.contains(expected), "{overrides}: {stderr}");
        assert!(!provider.data_dir.exists(), "{overrides}: nothing created");
    }
}

#[test]
fn a_broken_file_and_an_unusable_activities_folder_fail_deploy() {
    let provider = Provider::builder().without_config().build();
    provider.write_config("{ \"public_addr\": ");
    let out = provider.deploy(&provider.workdir("x"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unable to read the configuration file"),
        "{stderr}"
    );
    // The control: the same file, completed, deploys.
    provider.write_config("{ \"public_addr\": \"https://rpc.example.test:8545\" }");
    assert!(provider.deploy(&provider.workdir("x")).status.success());

    // A file where the folder should be: refused even for root.
    let blocker = provider.root.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let provider = Provider::new(json!({
        "socket_dir": blocker,
    }));
    let out = provider.deploy(&provider.workdir("x"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot create activities' folder"),
        "{stderr}"
    );
    assert!(stderr.contains("not-a-dir"), "{stderr}");
    // The control: with the file out of the way, the folder is made.
    std::fs::remove_file(&blocker).unwrap();
    assert!(provider.deploy(&provider.workdir("x")).status.success());
    assert!(blocker.is_dir());
}

#[test]
fn a_data_dir_that_is_a_file_fails_deploy() {
    let provider = Provider::builder().without_config().build();
    std::fs::write(provider.root.path().join("file"), "").unwrap();
    let provider2 = Provider::new(json!({"data_dir": provider.root.path().join("file")}));
    let out = provider2.deploy(&provider2.workdir("x"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot create datadir"), "{stderr}");
    // The control: with the file out of the way, the data dir is made.
    std::fs::remove_file(provider.root.path().join("file")).unwrap();
    assert!(provider2.deploy(&provider2.workdir("x")).status.success());
    assert!(provider.root.path().join("file").is_dir());
}
