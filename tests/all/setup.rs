//! conf/setup-provider against a temporary HOME and prefix: a first run installs, a
//! second changes nothing, an operator's edit is kept, a dry run changes nothing, an
//! unknown user and a value that would break the templated nginx site are refused by
//! name before anything changes, and the manifest matches paths exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::nginx::{is_root, nginx_bin};
use harness::provider::plugin_dir;
use serde_json::Value;

fn setup_provider() -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/setup-provider"))
}

struct Host {
    root: tempfile::TempDir,
    home_name: &'static str,
}

impl Host {
    fn new() -> Self {
        Self::with_home("home")
    }
    /// A host whose provider home is `<root>/<home_name>`.
    fn with_home(home_name: &'static str) -> Self {
        Self {
            root: tempfile::Builder::new()
                .prefix("yre-setup-")
                .tempdir()
                .unwrap(),
            home_name,
        }
    }
    fn home(&self) -> PathBuf {
        self.root.path().join(self.home_name)
    }
    fn prefix(&self) -> PathBuf {
        self.root.path().join("prefix")
    }
    fn setup(&self, extra: &[&str]) -> Output {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        let group = if is_root() {
            "www-data".to_string()
        } else {
            nix::unistd::Group::from_gid(nix::unistd::getegid())
                .unwrap()
                .unwrap()
                .name
        };
        std::fs::create_dir_all(self.home()).unwrap();
        let plugin = plugin_dir();
        setup_provider()
            .args([
                "--user",
                &user,
                "--nginx-group",
                &group,
                "--server-name",
                "rpc.example.test",
            ])
            .args(["--public-addr", "https://rpc.example.test"])
            .arg("--home")
            .arg(self.home())
            .arg("--prefix")
            .arg(self.prefix())
            .arg("--runtime")
            .arg(plugin.join("ya-runtime-erigon"))
            .arg("--erigon")
            .arg(plugin.join("erigon"))
            .arg("--rpcdaemon")
            .arg(plugin.join("rpcdaemon"))
            .args(extra)
            // A relative path it were given would land here, not in the checkout.
            .current_dir(self.root.path())
            .env_remove("XDG_DATA_HOME")
            .output()
            .unwrap()
    }
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>, u32)> {
        use std::os::unix::fs::MetadataExt;
        let mut files = Vec::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    stack.push(path.clone());
                }
                let body = if meta.is_file() {
                    std::fs::read(&path).unwrap()
                } else {
                    vec![]
                };
                files.push((path, body, meta.mode()));
            }
        }
        files.sort();
        files
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn installs_once_then_changes_nothing_and_keeps_edits() {
    let host = Host::new();
    let first = host.setup(&[]);
    assert!(first.status.success(), "{}", text(&first));
    let log = text(&first);
    assert!(log.contains("ya-runtime-erigon test passed"), "{log}");

    let plugins = host.home().join(".local/lib/yagna/plugins");
    let descriptor: Value =
        serde_json::from_slice(&std::fs::read(plugins.join("ya-runtime-erigon.json")).unwrap())
            .unwrap();
    assert_eq!(
        descriptor[0]["runtime-path"],
        "ya-runtime-erigon/ya-runtime-erigon"
    );
    for bin in ["ya-runtime-erigon", "erigon", "rpcdaemon"] {
        assert!(
            plugins.join("ya-runtime-erigon").join(bin).is_file(),
            "{bin}"
        );
    }
    let presets: Value = serde_json::from_slice(
        &std::fs::read(host.home().join(".local/share/ya-provider/presets.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(presets["active"], serde_json::json!(["erigon"]));
    let config_path = host
        .home()
        .join(".local/share/ya-runtime-erigon/ya-runtime-erigon.json");
    let config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(config["public_addr"], "https://rpc.example.test");
    let auth = host.prefix().join("etc/nginx/ya-runtime-erigon");
    assert_eq!(config["socket_dir"], auth.display().to_string());
    assert!(config.get("passwd_file_path").is_none(), "{config}");

    // The activities' folder: setgid, group nginx's, closed to others; `test` made the
    // file unknown users are checked against.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&auth).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o2750);
    let nobody = std::fs::metadata(auth.join(".no-activity.htpasswd")).unwrap();
    assert_eq!(nobody.mode() & 0o777, 0o640);
    assert_eq!(nobody.gid(), meta.gid(), "inherits the folder's group");
    let routes = host
        .prefix()
        .join("var/lib/ya-runtime-erigon/nginx/routes.conf");
    let routes = std::fs::read_to_string(&routes).unwrap();
    assert!(routes.contains("    sepolia 1;\n"), "{routes}");
    // The activities' sockets, seats' and own, go into the folder nginx's group can reach.
    let seat = format!("server unix:{}/seat-0.sock;", auth.display());
    let own = format!("\"unix:{}/$erigon_o.sock:\"", auth.display());
    assert!(routes.contains(&seat) && routes.contains(&own), "{routes}");

    // The installed site is valid for the real nginx.
    let site = host
        .prefix()
        .join("etc/nginx/sites-enabled/ya-runtime-erigon.conf");
    nginx_accepts(&host, &site);

    // A second run changes nothing at all.
    let before = host.snapshot();
    let second = host.setup(&[]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("0 change(s) made"),
        "{}",
        text(&second)
    );
    assert!(!text(&second).contains("installed "), "{}", text(&second));
    assert_eq!(before, host.snapshot(), "the second run changed files");

    // An operator's edit is kept, and the new version is put beside it.
    let edited = std::fs::read_to_string(&config_path).unwrap().replace(
        "\"password_default_length\": 24",
        "\"password_default_length\": 32",
    );
    std::fs::write(&config_path, &edited).unwrap();
    let third = host.setup(&[]);
    assert!(third.status.success(), "{}", text(&third));
    assert!(
        text(&third).contains(&format!("KEPT       {}", config_path.display())),
        "{}",
        text(&third)
    );
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), edited);
    assert!(config_path.with_extension("json.new").is_file());
}

#[test]
fn a_dry_run_changes_nothing() {
    let host = Host::new();
    let before = host.snapshot();
    let out = host.setup(&["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("would be made; nothing was changed"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("installed "),
        "it says what it would install"
    );
    // Only the (empty) home the harness created exists.
    let after: Vec<_> = host.snapshot().into_iter().map(|(p, _, _)| p).collect();
    assert_eq!(
        after,
        before
            .into_iter()
            .map(|(p, _, _)| p)
            .chain([host.home()])
            .collect::<Vec<_>>()
    );
}

#[test]
fn an_unknown_user_is_named_and_nothing_changes() {
    let host = Host::new();
    // Baseline: the same invocation with this host's own user goes through.
    let ok = host.setup(&["--dry-run"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let before = host.snapshot();

    // Without --home, the home comes from the password database.
    let out = setup_provider()
        .args(["--user", "yre-no-such-user", "--dry-run", "--prefix"])
        .current_dir(host.root.path())
        .arg(host.prefix())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("there is no user \"yre-no-such-user\" on this host"),
        "{err}"
    );

    // With --home, the account is still checked before anything is installed.
    let out = host.setup(&["--user", "yre-no-such-user"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("there is no user \"yre-no-such-user\" on this host"),
        "{err}"
    );
    assert_eq!(before, host.snapshot(), "a refused run changed files");
}

#[test]
fn values_that_would_break_the_site_are_refused_by_name() {
    let host = Host::new();
    let prefix = host.prefix().display().to_string();
    // Baseline: values of every accepted form go through, and a real run with some of
    // them writes a site nginx accepts.
    for extra in [
        &["--listen", "127.0.0.1:18080"][..],
        &["--listen", "[::1]:18080"],
        &["--listen", "localhost"],
        &["--listen", "unix:/run/yre.sock"],
        &["--server-name", "*.example.test"],
        &["--server-name", "_"],
        &["--tls", "/etc/ssl/yre/c.pem,/etc/ssl/yre/k.pem"],
        &["--public-addr", "https://[::1]:8545/rpc/v1"],
    ] {
        let out = host.setup(&[extra, &["--dry-run"]].concat());
        assert!(out.status.success(), "{extra:?}: {}", text(&out));
    }
    let out = host.setup(&[
        "--listen",
        "127.0.0.1:18080",
        "--server-name",
        "*.example.test",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let site = host
        .prefix()
        .join("etc/nginx/sites-enabled/ya-runtime-erigon.conf");
    let body = std::fs::read_to_string(&site).unwrap();
    assert!(body.contains("listen 127.0.0.1:18080;"), "{body}");
    assert!(body.contains("server_name *.example.test;"), "{body}");
    nginx_accepts(&host, &site);

    // Each refusal names the option, shows the value escaped, says what is accepted,
    // and comes before anything changes.
    let before = host.snapshot();
    let refused = |option: &str, value: &str, shown: &str| {
        let out = host.setup(&[option, value]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{option} {shown}: {}",
            text(&out)
        );
        assert!(
            err.starts_with(&format!("setup-provider: {option}")),
            "{option} {shown}: {err}"
        );
        assert!(
            err.contains(&format!(" is {shown}; accepted: ")),
            "{option} {shown}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line, the value escaped: {err}");
    };
    for (option, value) in [
        ("--server-name", "rpc.example.test; include /etc/passwd"),
        ("--server-name", "a}b{"),
        ("--server-name", "$host"),
        ("--server-name", "rpc.example.test|x"),
        ("--listen", "80; return 200"),
        ("--listen", "80|x"),
        ("--listen", "65536"),
        ("--listen", "127.0.0.1:0"),
        ("--listen", ""),
        ("--prefix", &format!("{prefix}/a|b")),
        ("--prefix", &format!("{prefix}/a&b")),
        ("--prefix", &format!("{prefix}/a b")),
        ("--prefix", &format!("{prefix}/a@ROUTES@")),
        ("--prefix", "relative/prefix"),
        ("--tls", "/etc/ssl/c.pem"),
        ("--tls", "/etc/ssl/c.pem,/etc/ssl/k;.pem"),
        ("--tls", "/etc/ssl/c.pem,/etc/ssl/$k.pem"),
        ("--public-addr", "https://rpc.example.test/?q=1"),
        ("--public-addr", "ftp://rpc.example.test"),
    ] {
        refused(option, value, &format!("\"{value}\""));
    }
    refused("--server-name", "a\nb", r#""a\nb""#);
    refused("--server-name", "a\u{1}b", r#""a\x01b""#);
    refused(
        "--public-addr",
        "https://rpc.example.test/\"",
        r#""https://rpc.example.test/\"""#,
    );
    refused(
        "--prefix",
        &format!("{prefix}/a\\b"),
        &format!(r#""{prefix}/a\\b""#),
    );
    assert_eq!(before, host.snapshot(), "a refused run changed files");
}

#[test]
fn the_manifest_matches_paths_exactly() {
    // A home with a space, a bracket expression and a star: awk's fields and grep's
    // patterns would not match its paths as they are.
    let host = Host::with_home("the home [1]*");
    let first = host.setup(&[]);
    assert!(first.status.success(), "{}", text(&first));
    let manifest = host
        .home()
        .join(".local/share/ya-runtime-erigon/setup-manifest");
    let lines = |what: &str| {
        let body = std::fs::read_to_string(&manifest).unwrap();
        let paths: Vec<String> = body
            .lines()
            .map(|l| l.split_once("  ").expect("<hash>  <path>").1.to_string())
            .collect();
        let mut unique = paths.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(paths.len(), unique.len(), "{what}: a path twice: {body}");
        paths.len()
    };
    let recorded = lines("first run");
    assert!(recorded >= 7, "{recorded}");

    // Our own earlier version is updated, not taken for an operator's edit.
    let config = host
        .home()
        .join(".local/share/ya-runtime-erigon/ya-runtime-erigon.json");
    let second = host.setup(&["--public-addr", "https://other.example.test"]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains(&format!("updated    {}", config.display())),
        "{}",
        text(&second)
    );
    assert!(!text(&second).contains("KEPT"), "{}", text(&second));
    assert_eq!(lines("second run"), recorded);

    // And a third run with the same values changes nothing.
    let before = host.snapshot();
    let third = host.setup(&["--public-addr", "https://other.example.test"]);
    assert!(third.status.success(), "{}", text(&third));
    assert!(
        text(&third).contains("0 change(s) made"),
        "{}",
        text(&third)
    );
    assert_eq!(before, host.snapshot(), "the third run changed files");
}

/// `nginx -t` of a main configuration that includes `site`, as Debian's would.
fn nginx_accepts(host: &Host, site: &Path) {
    let main = host.root.path().join("nginx-test.conf");
    std::fs::write(
        &main,
        format!(
            "pid {0}/t.pid; error_log {0}/t.log; events {{}} http {{ include {1}; }}\n",
            host.root.path().display(),
            site.display()
        ),
    )
    .unwrap();
    let check = Command::new(nginx_bin())
        .arg("-t")
        .arg("-c")
        .arg(&main)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
}
