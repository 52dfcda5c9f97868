//! Unit tests of the configuration: the handbook file, every bad value, defaults.

use super::*;
use serde_json::json;

fn load(value: serde_json::Value) -> Result<Config, String> {
    Config::from_value(&value, Path::new("/etc/x.json"), Path::new("/opt/rt"))
}

#[test]
fn the_handbook_example_file_loads_unchanged() {
    let cfg = load(json!({
      "public_addr": "https://0.erigon.golem.network:8545",
      "data_dir": "/data/erigon",
      "passwd_tool_path": "htpasswd",
      "passwd_file_path": "/etc/nginx/erigon_htpasswd",
      "password_default_length": 15,
      "erigon_http_addr": "127.0.0.1",
      "erigon_http_port": "8555"
    }))
    .expect("the seed's file is valid");
    let sepolia = cfg.networks().resolve("sepolia").unwrap();
    assert_eq!(cfg.rpc_addr(&sepolia).port(), 8556, "8555 + slot 1");
    assert_eq!(cfg.password_length(), 15);
    assert_eq!(cfg.erigon_path(), Path::new("/opt/rt/erigon"));
    assert_eq!(cfg.rpcdaemon_path(), Path::new("/opt/rt/rpcdaemon"));
    assert_eq!(cfg.log_dir(), Path::new("/data/erigon/logs"));
    assert_eq!(cfg.passwd_tool_path(), Some("htpasswd"));
    assert_eq!(cfg.socket_dir(), Path::new("/etc/nginx"), "its folder");
    assert_eq!(
        cfg.public_url(&sepolia),
        "https://0.erigon.golem.network:8545/sepolia"
    );
}

#[test]
fn a_network_may_name_a_different_erigon_chain() {
    let cfg = load(json!({
        "networks": {"ethereum": {"slot": 0, "chain": "mainnet"}, "dev": {"slot": 1}},
        "default_network": "ethereum"
    }))
    .unwrap();
    assert_eq!(cfg.default_network().chain(), "mainnet");
    assert_eq!(cfg.networks().resolve("dev").unwrap().chain(), "dev");
}

#[test]
fn a_network_is_managed_or_shared() {
    let cfg = load(json!({
        "networks": {"a": {"slot": 0, "mode": "shared"}, "b": {"slot": 1}},
        "default_network": "a"
    }))
    .unwrap();
    assert!(cfg.default_network().is_shared());
    assert!(!cfg.networks().resolve("b").unwrap().is_shared());
    let err =
        load(json!({"networks": {"a": {"slot": 0, "mode": "pooled"}}, "default_network": "a"}))
            .unwrap_err();
    assert!(
        err.contains("key `networks.a.mode`") && err.contains("expected `managed` or `shared`"),
        "{err}"
    );
}

#[test]
fn a_chain_id_may_be_written_as_nodes_answer_it() {
    let cfg = load(json!({
        "networks": {"mine": {"slot": 0, "chain_id": "0x539"}},
        "default_network": "mine"
    }))
    .unwrap();
    assert_eq!(cfg.default_network().expected_chain_id(), Some(1337));
}

#[test]
fn builds_the_node_spec_of_a_network() {
    let cfg = load(json!({
        "data_dir": "/d",
        "erigon_http_port": 9000,
        "networks": {"dev": {"slot": 5}},
        "default_network": "dev",
        "erigon_args": ["--prune.mode=full"]
    }))
    .unwrap();
    let spec = cfg.node_spec(cfg.default_network()).unwrap();
    assert_eq!(spec.rpc(), "127.0.0.1:9005".parse().unwrap());
    assert_eq!(spec.datadir(), Path::new("/d/dev"));
    assert_eq!(spec.log_dir(), Path::new("/d/logs/dev"));
    assert_eq!(
        spec.erigon_command().last().map(String::as_str),
        Some("--prune.mode=full")
    );
}

#[test]
fn defaults_are_valid_and_round_trip() {
    let cfg = load(ErigonConf::default().0).expect("defaults are valid");
    assert_eq!(cfg.default_network().name(), "sepolia");
    assert_eq!(cfg.password_hash(), HashScheme::Ssha);
    assert!(cfg.socket_dir().ends_with("auth"));
}

#[test]
fn every_bad_value_names_its_key_and_what_is_accepted() {
    let cases = [
        (json!({"colour": 1}), "unknown field `colour`"),
        (
            json!({"password_default_length": "x"}),
            "key `password_default_length`",
        ),
        (json!({"password_default_length": 0}), "accepted: 15 to 128"),
        (
            json!({"password_default_length": 10000}),
            "accepted: 15 to 128",
        ),
        (json!({"erigon_http_port": "80a"}), "\"80a\" is not a port"),
        (json!({"erigon_http_port": 70000}), "70000 is not a port"),
        (json!({"erigon_http_port": 0}), "0 is not a port"),
        (json!({"erigon_http_port": "+8555"}), "\"+8555\" is not a port"),
        (json!({"erigon_http_port": " 8555"}), "\" 8555\" is not a port"),
        (json!({"seats": 1025}), "key `seats`"),
        (json!({"port_base": 0}), "key `port_base`"),
        (json!({"public_addr": "http://x/?a=1"}), "key `public_addr`"),
        (json!({"rpc_returndata_bytes": 999}), "key `rpc_returndata_bytes`"),
        (
            json!({"erigon_args": ["-datadir=/x"]}),
            "key `erigon_args`: \"-datadir\" is set by the runtime",
        ),
        (
            json!({"data_dir": "data"}),
            "key `data_dir`: \"data\" is a relative path",
        ),
        (json!({"passwd_file_path": "x"}), "key `passwd_file_path`"),
        (
            json!({"passwd_file_path": "/a$x;/h"}),
            "key `passwd_file_path`: '$' is not accepted",
        ),
        (
            json!({"passwd_file_path": "/a/{network}/h"}),
            "'{' is not accepted in the activities' folder",
        ),
        (json!({"passwd_file_path": "/a/"}), "names a folder"),
        (json!({"socket_dir": "/a/$x"}), "key `socket_dir`: '$' is not accepted"),
        (json!({"public_addr": "ftp://x"}), "key `public_addr`"),
        (
            json!({"erigon_http_addr": "localhost"}),
            "not an IP address",
        ),
        (
            json!({"default_network": "goerli"}),
            "key `default_network`: network \"goerli\" is retired",
        ),
        (json!({"networks": {}}), "`networks` is empty"),
        (
            json!({"networks": {"a": {"slot": "1"}}}),
            "key `networks.a.slot`",
        ),
        (
            json!({"networks": {"a": {"slot": 1, "x": 2}}}),
            "key `networks.a.x`: unknown field `x`, expected one of `slot`, `chain`, `chain_id`, `mode`",
        ),
        (json!({"bcrypt_cost": 3}), "accepted: 4 to 31"),
        (
            json!({"password_hash": "md5"}),
            "key `password_hash`: \"md5\" is not a scheme",
        ),
        (json!({"stop_timeout_ms": 5000}), "accepted: 100 to 3800"),
        (json!({"ready_timeout_secs": 0}), "key `ready_timeout_secs`"),
        (json!({"log_files": 0}), "key `log_files`"),
        (json!({"http_api": ["eth;rm"]}), "key `http_api`"),
        (
            json!({"erigon_args": ["--datadir=/x"]}),
            "cannot be overridden",
        ),
        (
            json!({"rpcdaemon_args": ["--http.port", "1"]}),
            "cannot be overridden",
        ),
        (json!({"erigon_path": "erigon"}), "key `erigon_path`"),
        (json!({"limits": {"batch": 0}}), "key `limits.batch` is 0; accepted: 1 to"),
        (json!({"limits": {"colour": 1}}), "key `limits.colour`: unknown field `colour`, expected one of `calls_per_sec`"),
        (
            json!({"networks": {"a": {"slot": 0, "limits": {"burst": "x"}}}, "default_network": "a"}),
            "key `networks.a.limits.burst`",
        ),
        (
            json!({"socket_dir": format!("/{}", "s".repeat(90))}),
            "key `socket_dir`: the activities' folder",
        ),
        (json!({"socket_dir": "run"}), "key `socket_dir`: \"run\" is a relative path"),
        (
            json!({"networks": {"a": {"slot": 65535}}, "default_network": "a"}),
            "`networks.a.slot` is 65535",
        ),
        (
            json!({"networks": {"a": {"slot": 0, "chain_id": "1337"}}, "default_network": "a"}),
            "key `networks.a.chain_id`: \"1337\" is not a chain id",
        ),
        (
            json!({"limits": {"burst": 50, "batch": 100}}),
            "key `limits.burst` is 50 but `limits.batch` is 100: a full batch could never pass",
        ),
        (
            json!({"networks": {"a": {"slot": 0, "limits": {"cu_burst": 1000}}}, "default_network": "a"}),
            "key `networks.a.limits.cu_burst` is 1000 but trace_replayBlockTransactions weighs 2983",
        ),
        (
            json!({"method_weights": {"x": 99_999_999}}),
            "key `method_weights.x` is 99999999; accepted: 0 to 10000000",
        ),
        (
            json!({"networks": {"a": {"slot": 0, "methods": {"allow": ["eth", "evm_mine"]}}}, "default_network": "a"}),
            "key `networks.a.methods.allow`: \"evm_mine\" can never be allowed",
        ),
        (
            json!({"networks": {"a": {"slot": 0, "methods": {"allow": ["eth;x"]}}}, "default_network": "a"}),
            "key `networks.a.methods.allow`: \"eth;x\" is not accepted; accepted: letters, digits and \"_\"",
        ),
        (
            json!({"networks": {"a": {"slot": 0, "methods": {"deny": []}}}, "default_network": "a"}),
            "unknown field `deny`",
        ),
        (json!({"rpc_gas_cap": 5}), "key `rpc_gas_cap` is 5; accepted: 21000 to"),
        (json!({"rpc_evm_timeout_ms": 0}), "key `rpc_evm_timeout_ms` is 0"),
        (json!({"rpc_batch_concurrency": 0}), "key `rpc_batch_concurrency` is 0"),
        (json!({"compute_units_file": "units.json"}), "key `compute_units_file`: \"units.json\" is a relative path"),
        (json!({"metrics_file": "m.prom"}), "key `metrics_file`: \"m.prom\" is a relative path"),
        (json!({"metrics_file": "/var/lib/m.txt"}), "key `metrics_file`: /var/lib/m.txt does not end in .prom"),
        (json!([1, 2]), "configuration file /etc/x.json"),
    ];
    for (value, expected) in cases {
        let err = load(value.clone()).expect_err(&value.to_string());
        assert!(err.starts_with("configuration file /etc/x.json: "), "{err}");
        assert!(err.contains(expected), "for {value}: {err}");
    }
}

#[test]
fn prices_policies_and_bounds_come_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ya-runtime-erigon.json");
    let value = json!({
        "networks": {
            "a": {"slot": 0, "methods": {"allow": ["eth_call", "net"]}},
            "b": {"slot": 1}
        },
        "default_network": "a",
        "http_api": ["eth", "admin", "net"],
        "method_weights": {"eth_call": 40},
        "rpc_evm_timeout_ms": 5000
    });
    let cfg = Config::from_value(&value, &file, Path::new("/opt/rt")).unwrap();
    let (a, b) = (
        cfg.networks().resolve("a").unwrap(),
        cfg.networks().resolve("b").unwrap(),
    );
    assert!(cfg.policy(&a).allows(Some("eth_call")) && !cfg.policy(&a).allows(Some("eth_getLogs")));
    // http_api's namespaces, less those the gateway never passes on.
    assert_eq!(cfg.policy(&b).allowed(), ["eth", "net"]);
    // The shipped table, with method_weights over it.
    assert_eq!(cfg.weights().call(Some("eth_call")), 40);
    assert_eq!(cfg.weights().call(Some("eth_chainId")), 10);
    assert_eq!(
        cfg.compute_units_file(),
        dir.path().join("compute-units.json")
    );
    let args = crate::node::spec::with_flags(cfg.node_spec(&a).unwrap().rpcdaemon_flags(), &[]);
    assert!(
        args.contains(&"--rpc.evmtimeout=5000ms".to_string()),
        "{args:?}"
    );

    // A table next to the configuration replaces the shipped one; a bad one is named.
    std::fs::write(
        cfg.compute_units_file(),
        r#"{"default": 5, "methods": {"eth_chainId": 1}}"#,
    )
    .unwrap();
    let cfg = Config::from_value(&value, &file, Path::new("/opt/rt")).unwrap();
    assert_eq!(cfg.weights().call(Some("eth_chainId")), 1);
    assert_eq!(cfg.weights().call(Some("debug_traceTransaction")), 5);
    std::fs::write(
        cfg.compute_units_file(),
        r#"{"default": 5, "methods": {"eth_chainId": "x"}}"#,
    )
    .unwrap();
    let err = Config::from_value(&value, &file, Path::new("/opt/rt")).unwrap_err();
    assert!(
        err.contains("compute-units.json: key `methods.eth_chainId`"),
        "{err}"
    );
}

#[test]
fn writes_defaults_once_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/ya-runtime-erigon.json");
    assert_eq!(write_defaults_if_missing(&path), Ok(true));
    std::fs::write(&path, "{\"bcrypt_cost\": 6}").unwrap();
    assert_eq!(write_defaults_if_missing(&path), Ok(false));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"bcrypt_cost\": 6}"
    );
}

#[test]
fn a_shared_networks_node_may_be_anywhere_and_a_managed_ones_may_not() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), "not a certificate").unwrap();
    let cfg = load(json!({
        "networks": {
            "dev": {"slot": 0, "mode": "shared", "node": {"http": "http://10.0.0.7:8545/rpc"}},
            "gnosis": {"slot": 1, "mode": "shared",
                       "node": {"http": "http://10.0.0.8:8545/", "ws": "ws://10.0.0.8:8546/"}},
            "sepolia": {"slot": 2, "mode": "shared"},
            "mainnet": {"slot": 3}
        },
        "default_network": "dev"
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let node = |name: &str| cfg.upstream(&cfg.networks().resolve(name).unwrap());
    assert_eq!(node("dev").http().url(), "http://10.0.0.7:8545/rpc");
    assert_eq!(node("dev").ws().url(), "ws://10.0.0.7:8545/rpc", "derived");
    assert_eq!(node("gnosis").ws().url(), "ws://10.0.0.8:8546/");
    assert_eq!(
        node("sepolia").http().url(),
        "http://127.0.0.1:8557/",
        "the default"
    );
    assert_eq!(node("mainnet").ws().url(), "ws://127.0.0.1:8558/");
    assert!(!node("dev").is_tls());

    let shared = |node: serde_json::Value| {
        load(
            json!({"networks": {"dev": {"slot": 0, "mode": "shared", "node": node}},
                    "default_network": "dev"}),
        )
    };
    let refused = [
        (
            json!({"http": "http://10.0.0.7:8545/"}),
            false,
            "key `networks.dev.node`: dev is a managed network",
        ),
        (
            json!({"http": "10.0.0.7:8545"}),
            true,
            "key `networks.dev.node.http`: \"10.0.0.7:8545\" is not a URL",
        ),
        (
            json!({"http": "https://a.lan/", "ws": "https://a.lan/"}),
            true,
            "key `networks.dev.node.ws`: \"https://a.lan/\" has the scheme https:",
        ),
        (
            json!({"http": "http://a.lan/", "ca_file": "ca.pem"}),
            true,
            "key `networks.dev.node.ca_file`",
        ),
        (
            json!({"http": "http://a.lan/", "ca_file": ca.path()}),
            true,
            "but the node is reached without TLS (http://a.lan/)",
        ),
        (
            json!({"http": "https://a.lan/", "ca_file": ca.path()}),
            true,
            "key `networks.dev.node.ca_file`",
        ),
        (
            json!({"http": "https://a.lan/", "ca_file": "/nonexistent/ca.pem"}),
            true,
            "cannot read /nonexistent/ca.pem",
        ),
        (
            json!({"https": "https://a.lan/"}),
            true,
            "unknown field `https`",
        ),
    ];
    for (node, is_shared, expected) in refused {
        let err = if is_shared {
            shared(node.clone())
        } else {
            load(json!({"networks": {"dev": {"slot": 0, "node": node}}, "default_network": "dev"}))
        }
        .err()
        .unwrap_or_else(|| panic!("{node} accepted"));
        assert!(err.contains(expected), "{node}: {err}");
    }
    let err = shared(json!({"http": "https://a.lan/", "ca_file": ca.path()})).unwrap_err();
    assert!(
        err.contains("is not a PEM file of certificates") || err.contains("holds no certificate"),
        "{err}"
    );
}
