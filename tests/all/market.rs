//! `offer-template` and `test`, run the way ya-provider runs them: no --workdir.

use std::process::Output;

use harness::provider::{plugin_dir, Provider};
use serde_json::{json, Map, Value};

fn run(provider: &Provider, command: &str) -> Output {
    let mut cmd = std::process::Command::new(&provider.runtime);
    cmd.current_dir("/")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", provider.root.path())
        .env("XDG_DATA_HOME", provider.root.path().join("xdg"))
        .arg(command);
    cmd.output().unwrap()
}

/// Golem's demand constraints, an LDAP-style filter: `(&(a=b)(|(c=d)(!(e=f))))`. A list
/// property matches when any element does; `*` at the end of a value is a prefix match.
fn matches(filter: &str, props: &Map<String, Value>) -> bool {
    fn parse<'a>(s: &'a str, props: &Map<String, Value>) -> (bool, &'a str) {
        let s = s.trim_start().strip_prefix('(').expect("(");
        let (result, rest) = match s.chars().next() {
            Some(op @ ('&' | '|')) => {
                let mut rest = &s[1..];
                let mut all = Vec::new();
                while rest.trim_start().starts_with('(') {
                    let (r, next) = parse(rest, props);
                    all.push(r);
                    rest = next;
                }
                (
                    if op == '&' {
                        all.iter().all(|r| *r)
                    } else {
                        all.iter().any(|r| *r)
                    },
                    rest,
                )
            }
            Some('!') => {
                let (r, rest) = parse(&s[1..], props);
                (!r, rest)
            }
            _ => {
                let end = s.find(')').expect(")");
                let (key, want) = s[..end].split_once('=').expect("=");
                let one = |v: &Value| {
                    let have = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    match want.strip_suffix('*') {
                        Some(prefix) => have.starts_with(prefix),
                        None => have == want,
                    }
                };
                let hit = match props.get(key) {
                    Some(Value::Array(list)) => list.iter().any(one),
                    Some(v) => one(v),
                    None => false,
                };
                (hit, &s[end..])
            }
        };
        (result, rest.trim_start().strip_prefix(')').expect(")"))
    }
    parse(filter, props).0
}

#[test]
fn the_offer_advertises_what_a_requestor_can_constrain_on() {
    let provider = Provider::new(json!({
        "networks": {
            "sepolia": {"slot": 1},
            "mainnet": {"slot": 0, "mode": "shared", "limits": {"calls_per_sec": 50}}
        },
        "limits": {"batch": 20},
        "method_weights": {"debug_traceTransaction": 20}
    }));
    let out = run(&provider, "offer-template");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offer: Value = serde_json::from_slice(&out.stdout).expect("stdout is the offer JSON");
    assert_eq!(offer["constraints"], "");
    let props = offer["properties"].as_object().unwrap();
    assert_eq!(
        props["golem.runtime.erigon.networks"],
        json!(["mainnet", "sepolia"])
    );
    assert_eq!(
        props["golem.runtime.erigon.managed-networks"],
        json!(["sepolia"])
    );
    assert_eq!(
        props["golem.runtime.erigon.shared-networks"],
        json!(["mainnet"])
    );
    assert_eq!(
        props["golem.runtime.erigon.version"], "3.1.0-standin-7d3cab29",
        "from erigon --version"
    );
    assert_eq!(
        props["golem.runtime.erigon.endpoint.tls"], true,
        "public_addr is https"
    );
    assert_eq!(props["golem.runtime.erigon.endpoint.ws"], true);
    assert_eq!(props["golem.runtime.erigon.endpoint.apis"][0], "eth");
    assert_eq!(
        props["golem.runtime.erigon.request-counter"],
        "golem.usage.erigon.requests"
    );
    // Limits per network: the gateway's defaults, the provider's `limits`, then the
    // network's own; and the prices of methods in compute units.
    let limit = |key: &str| props[&format!("golem.runtime.erigon.limits.{key}")].clone();
    assert_eq!(limit("sepolia.calls-per-sec"), 200);
    assert_eq!(limit("mainnet.calls-per-sec"), 50);
    assert_eq!(limit("sepolia.batch"), 20);
    assert_eq!(limit("mainnet.batch"), 20);
    assert_eq!(limit("sepolia.websockets"), 16);
    assert_eq!(limit("sepolia.cu-per-sec"), 5000);
    assert_eq!(limit("sepolia.call-timeout-ms"), 30000);
    assert_eq!(limit("sepolia.logs-blocks"), 10000);
    assert_eq!(limit("sepolia.subscriptions"), 32);
    // Each method's price in compute units: the shipped table, with the
    // configuration's `method_weights` over it; and the counter that sums them.
    let units = |m: &str| props[&format!("golem.runtime.erigon.compute-units.{m}")].clone();
    assert_eq!(units("debug_traceTransaction"), 20);
    assert_eq!(units("eth_call"), 17);
    assert_eq!(units("eth_subscription"), 0);
    assert_eq!(units("default"), 100);
    assert_eq!(
        props["golem.runtime.erigon.compute-unit-counter"],
        "golem.usage.erigon.compute-units"
    );
    // The method policy: http_api's namespaces, and the ones never allowed.
    assert_eq!(
        props["golem.runtime.erigon.methods.sepolia.allow"],
        json!(["eth", "erigon", "web3", "net", "debug", "trace", "txpool"])
    );
    let denied = &props["golem.runtime.erigon.methods.denied"];
    for ns in [
        "admin", "anvil", "evm", "hardhat", "personal", "miner", "engine",
    ] {
        assert!(denied.as_array().unwrap().contains(&json!(ns)), "{denied}");
    }

    // The README's requestor-side example, and its misses.
    let wanted = "(&(golem.runtime.erigon.networks=sepolia)(golem.runtime.erigon.endpoint.ws=true)(golem.runtime.erigon.version=3.*))";
    assert!(matches(wanted, props));
    assert!(!matches("(golem.runtime.erigon.networks=goerli)", props));
    assert!(matches(
        "(|(golem.runtime.erigon.networks=goerli)(golem.runtime.erigon.shared-networks=mainnet))",
        props
    ));
    assert!(!matches(
        "(!(golem.runtime.erigon.endpoint.tls=true))",
        props
    ));
}

#[test]
fn the_self_test_passes_and_names_the_fix_for_each_failure() {
    let provider = Provider::new(json!({}));
    let site = provider.root.path().join("site.conf");
    let routes = provider.data_dir.join("nginx/routes.conf");
    let locations = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf/nginx/ya-runtime-erigon-locations.conf");
    std::fs::write(
        &site,
        format!(
            "include {};\ninclude {};\n",
            routes.display(),
            locations.display()
        ),
    )
    .unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&provider.config_path).unwrap()).unwrap();
    config["nginx_site_path"] = json!(site);
    provider.write_config(&config.to_string());
    let ok = run(&provider, "test");
    let stderr = String::from_utf8_lossy(&ok.stderr).to_string();
    assert!(ok.status.success(), "{stderr}");
    assert!(
        stderr.contains("test: erigon 3.1.0-standin-7d3cab29"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nginx is not running") || std::path::Path::new("/run/nginx.pid").exists(),
        "{stderr}"
    );
    assert!(routes.is_file(), "test prepares the routes file");

    let failing = |edit: Value, expected: &[&str]| {
        let mut broken = config.clone();
        for (k, v) in edit.as_object().unwrap() {
            broken[k] = v.clone();
        }
        provider.write_config(&broken.to_string());
        let out = run(&provider, "test");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{edit}: {stderr}");
        for part in expected {
            assert!(stderr.contains(part), "{edit}: {stderr:?} lacks {part:?}");
        }
    };
    failing(
        json!({"nginx_site_path": provider.root.path().join("missing.conf")}),
        &["missing.conf cannot be read", "conf/setup-provider"],
    );
    std::fs::write(provider.root.path().join("other.conf"), "server {}\n").unwrap();
    failing(
        json!({"nginx_site_path": provider.root.path().join("other.conf")}),
        &["does not include", "routes.conf"],
    );
    let old_site = provider.root.path().join("old-site.conf");
    std::fs::write(&old_site, format!("include {};\n", routes.display())).unwrap();
    failing(
        json!({"nginx_site_path": old_site}),
        &[
            "does not check each activity's own password file",
            "reinstall it",
        ],
    );
    let proxy_to_node = provider.root.path().join("proxy-to-node.conf");
    std::fs::write(
        &proxy_to_node,
        format!(
            "include {};\nauth_basic_user_file $erigon_auth_file;\nproxy_pass http://127.0.0.1:8545;\n",
            routes.display()
        ),
    )
    .unwrap();
    failing(
        json!({"nginx_site_path": proxy_to_node}),
        &["does not proxy to the activities' gateways", "reinstall it"],
    );
    let not_exec = provider.root.path().join("erigon-not-executable");
    std::fs::write(&not_exec, "").unwrap();
    failing(json!({"erigon_path": not_exec}), &["chmod +x"]);
    failing(
        json!({"erigon_path": plugin_dir().join("rpcdaemon")}),
        &["--version", "put an Erigon 3 release binary at"],
    );
    failing(json!({"bcrypt_cost": 99}), &["key `bcrypt_cost` is 99"]);
}

/// An argument that is not UTF-8 is refused by name, never a panic (the SDK reads its
/// arguments as UTF-8 and would panic on it).
#[test]
fn an_argument_that_is_not_utf8_is_refused_without_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let provider = Provider::new(json!({}));
    let out = std::process::Command::new(&provider.runtime)
        .current_dir("/")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", provider.root.path())
        .env("XDG_DATA_HOME", provider.root.path().join("xdg"))
        .arg("offer-template")
        .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("argument 2 (\\u{fffd}\\u{fffd}) is not UTF-8; accepted: UTF-8 text"),
        "{stderr}"
    );
}
