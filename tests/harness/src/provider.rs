//! One provider's sandbox: a private HOME with the runtime's configuration, data dir,
//! password files and port range, the work folders the ExeUnit would make, and the
//! plugin folder holding the built runtime with the stand-in `erigon`/`rpcdaemon` next
//! to it. The runtime runs as yagna runs it: `--workdir W deploy --`, then
//! `--workdir W start <args>` driven by [`Activity`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::exeunit::Activity;
use crate::nginx::{free_port, prepare_auth_dir, Nginx, NginxBuilder};

/// The folder cargo builds into, `target/<profile>`: the parent of the folder holding
/// the running executable (`deps/` for a test, `examples/` for an example).
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/<folder>", exe.display()))
        .to_path_buf()
}

/// The test suite's plugin folder (see [`assemble_plugin_dir`]) for the runtime and the
/// stand-ins that `cargo test` built, assembled once per process.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let build = build_dir();
        let runtime = build.join("ya-runtime-erigon");
        assert!(
            runtime.is_file(),
            "the runtime is not at {}: run the tests with `cargo test`",
            runtime.display()
        );
        // Cargo's CARGO_TARGET_TMPDIR: target/tmp.
        let tmp = build.parent().unwrap_or(&build).join("tmp");
        let dest = tmp.join(format!("plugin-{}", std::process::id()));
        assemble_plugin_dir(&runtime, &build.join("examples"), &dest)
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A provider's plugin folder under `dest`: `ya-runtime-erigon/` holding the runtime
/// and the node binaries from `node_dir` side by side, as in the seed's instructions.
/// Hard links where possible, so the runtime finds the binaries through its own path
/// exactly as it would in production.
pub fn assemble_plugin_dir(
    runtime: &Path,
    node_dir: &Path,
    dest: &Path,
) -> Result<PathBuf, String> {
    let dir = dest.join("ya-runtime-erigon");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut binaries = vec![(runtime.to_path_buf(), "ya-runtime-erigon")];
    for name in ["erigon", "rpcdaemon"] {
        let built = node_dir.join(name);
        if !built.is_file() {
            return Err(format!(
                "{name} is not at {}: the stand-ins are built by `cargo test` (it builds the examples) or `cargo build --examples`",
                built.display()
            ));
        }
        binaries.push((built, name));
    }
    for (from, name) in binaries {
        let to = dir.join(name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
        }
    }
    Ok(dir)
}

/// Two free, non-overlapping loopback port ranges for `slots` networks: rpcdaemon HTTP
/// ports first, then the node ports (20 per slot), checked free for TCP and UDP. They
/// lie below the kernel's ephemeral range, so no outgoing connection can take one
/// between the check and the bind.
fn port_block(slots: u32) -> (u16, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let http = slots.max(10);
    let size = http + slots * 20;
    let (low, high) = (10_000u32, ephemeral_low.saturating_sub(size));
    assert!(
        high > low + size,
        "no room for test ports below {ephemeral_low}"
    );
    let seed = std::process::id() * 7 + NEXT.fetch_add(1, Ordering::SeqCst) * 13;
    for attempt in 0..300 {
        let block = low + ((seed + attempt) * 160) % (high - low);
        let free = (block..block + size).all(|p| {
            std::net::TcpListener::bind(("127.0.0.1", p as u16)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", p as u16)).is_ok()
        });
        if free {
            return (block as u16, (block + http) as u16);
        }
    }
    panic!("no free block of {size} loopback ports");
}

/// One provider: a HOME with the runtime's configuration and data.
pub struct Provider {
    pub runtime: PathBuf,
    pub root: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub http_port: u16,
    pub port_base: u16,
    rust_log: &'static str,
    /// The port of the shipped site in front of it (see [`ProviderBuilder::behind_nginx`]).
    site_port: Option<u16>,
}

/// A provider to make: [`Provider::builder`], then [`ProviderBuilder::build`].
pub struct ProviderBuilder {
    runtime: Option<PathBuf>,
    slots: u32,
    config: Option<Value>,
    rust_log: &'static str,
    behind_nginx: bool,
}

impl ProviderBuilder {
    /// Runs this runtime binary instead of the test suite's (see [`plugin_dir`]).
    pub fn runtime(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime = Some(path.into());
        self
    }

    /// Ports for `slots` networks (the default configuration has 6).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// The configuration file: this provider's paths and ports, plus `overrides`.
    pub fn config(mut self, overrides: Value) -> Self {
        self.config = Some(overrides);
        self
    }

    /// No configuration file: the runtime's first run writes one.
    pub fn without_config(mut self) -> Self {
        self.config = None;
        self
    }

    /// Behind the real nginx with the shipped site, as a provider's users reach it: a
    /// free port for it, the configuration's `public_addr` there (unless the overrides
    /// name one), and the activities' folder readable by nginx's workers. Deploy, then
    /// start it with [`Provider::site`].
    pub fn behind_nginx(mut self) -> Self {
        self.behind_nginx = true;
        self
    }

    /// The runtime's RUST_LOG (`debug` by default).
    pub fn rust_log(mut self, filter: &'static str) -> Self {
        self.rust_log = filter;
        self
    }

    pub fn build(self) -> Provider {
        let root = tempfile::Builder::new()
            .prefix("yre-")
            .tempdir()
            .expect("temp dir");
        let (http_port, port_base) = port_block(self.slots);
        let provider = Provider {
            runtime: self
                .runtime
                .unwrap_or_else(|| plugin_dir().join("ya-runtime-erigon")),
            data_dir: root.path().join("data"),
            config_path: root
                .path()
                .join("xdg/ya-runtime-erigon/ya-runtime-erigon.json"),
            root,
            http_port,
            port_base,
            rust_log: self.rust_log,
            site_port: self.behind_nginx.then(free_port),
        };
        let mut config = self.config;
        if let (Some(port), Some(Value::Object(overrides))) = (provider.site_port, &mut config) {
            overrides
                .entry("public_addr")
                .or_insert_with(|| json!(format!("http://127.0.0.1:{port}")));
        }
        if let Some(overrides) = config {
            provider.configure(overrides);
        }
        if provider.site_port.is_some() {
            prepare_auth_dir(provider.root.path());
        }
        provider
    }
}

impl Provider {
    /// A provider with the test suite's runtime, ports for 6 networks, and a
    /// configuration of its own paths and ports plus `overrides`: what most tests need.
    pub fn new(overrides: Value) -> Self {
        Self::builder().config(overrides).build()
    }

    /// [`Provider::new`]'s defaults (with no overrides), to change one by one.
    pub fn builder() -> ProviderBuilder {
        ProviderBuilder {
            runtime: None,
            slots: 6,
            config: Some(json!({})),
            rust_log: "debug",
            behind_nginx: false,
        }
    }

    /// [`Provider::new`] behind the shipped site (see [`ProviderBuilder::behind_nginx`]):
    /// deploy, then start nginx with [`Provider::site`].
    pub fn behind_nginx(overrides: Value) -> Self {
        Self::builder().config(overrides).behind_nginx().build()
    }

    /// Writes this provider's paths and ports, plus `overrides`, as its configuration.
    fn configure(&self, overrides: Value) {
        let mut config = json!({
            "public_addr": "https://rpc.example.test:8545",
            "data_dir": self.data_dir,
            "passwd_file_path": self.root.path().join("auth/{network}.htpasswd"),
            "password_default_length": 20,
            "erigon_http_addr": "127.0.0.1",
            "erigon_http_port": self.http_port,
            "port_base": self.port_base,
            // Apache's htpasswd -vb verifies {SHA} and bcrypt, not {SSHA}.
            "password_hash": "sha",
            "ready_timeout_secs": 20,
        });
        if let (Some(base), Some(extra)) = (config.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        self.write_config(&serde_json::to_string_pretty(&config).unwrap());
    }

    pub fn write_config(&self, text: &str) {
        std::fs::create_dir_all(self.config_path.parent().unwrap()).unwrap();
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn workdir(&self, activity: &str) -> PathBuf {
        let dir = self.root.path().join("work/agreement").join(activity);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The runtime's command line, environment and cwd as the ExeUnit sets them.
    pub fn command(&self, workdir: &Path) -> Command {
        let mut cmd = Command::new(&self.runtime);
        cmd.current_dir(workdir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("XDG_DATA_HOME", self.root.path().join("xdg"))
            .env("RUST_LOG", self.rust_log)
            .arg("--workdir")
            .arg(workdir);
        cmd
    }

    pub fn deploy(&self, workdir: &Path) -> Output {
        self.command(workdir)
            .args(["deploy", "--"])
            .output()
            .expect("run deploy")
    }

    /// deploy in a work folder of its own, asserting success (showing stderr if not).
    pub fn deploy_ok(&self) {
        let out = self.deploy(&self.workdir("deploy"));
        assert!(
            out.status.success(),
            "deploy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `start <args>` in `workdir`, up to the ExeUnit's `hello` (see [`Activity::spawn`]).
    pub async fn start(&self, workdir: &Path, args: &[&str]) -> Activity {
        let mut cmd = tokio::process::Command::from(self.command(workdir));
        cmd.arg("start").args(args);
        Activity::spawn(cmd, workdir).await
    }

    /// `start '{"network": "<network>"}'` in a fresh work folder named `activity`.
    pub async fn start_on(&self, activity: impl AsRef<str>, network: impl AsRef<str>) -> Activity {
        let arg = json!({ "network": network.as_ref() }).to_string();
        self.start(&self.workdir(activity.as_ref()), &[&arg]).await
    }

    /// The real nginx with the shipped site in front of this provider, on `port` (after
    /// deploy, which writes the routes file); `.start()` it.
    pub fn nginx(&self, port: u16) -> NginxBuilder {
        Nginx::builder(
            &self.root.path().join("nginx"),
            &self.data_dir.join("nginx/routes.conf"),
            port,
        )
    }

    /// The real nginx with the shipped site on the port this provider's `public_addr`
    /// names (it was built [`ProviderBuilder::behind_nginx`]); `.start()` it after deploy.
    pub fn site(&self) -> NginxBuilder {
        let port = self
            .site_port
            .expect("a site for a provider built behind_nginx()");
        self.nginx(port)
    }

    pub fn datadir(&self, network: &str) -> PathBuf {
        self.data_dir.join(network)
    }

    /// What a stand-in recorded about itself (pid, args, env), if it ran.
    pub fn standin(&self, network: &str, name: &str) -> Option<Value> {
        let text =
            std::fs::read_to_string(self.datadir(network).join(format!("standin-{name}.json")))
                .ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn standin_pid(&self, network: &str, name: &str) -> Option<u32> {
        Some(self.standin(network, name)?["pid"].as_u64()? as u32)
    }

    /// Tells the stand-ins of `network` how to behave (see tests/standins/common.rs).
    pub fn set_behaviour(&self, network: &str, behaviour: Value) {
        std::fs::create_dir_all(self.datadir(network)).unwrap();
        std::fs::write(
            self.datadir(network).join("standin.json"),
            behaviour.to_string(),
        )
        .unwrap();
    }

    /// The activities' folder: each activity's password file, owner record and socket.
    pub fn auth_dir(&self) -> PathBuf {
        self.root.path().join("auth")
    }

    /// The password file of the activity whose user is `user`.
    pub fn user_file(&self, user: &str) -> PathBuf {
        self.auth_dir().join(format!("{user}.htpasswd"))
    }

    /// Every htpasswd line of `network`'s activities, from their own files.
    pub fn entries(&self, network: &str) -> Vec<String> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(self.auth_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{network}-")) && name.ends_with(".htpasswd") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                entries.extend(text.lines().map(String::from));
            }
        }
        entries.sort();
        entries
    }

    /// Everything the runtime and the stand-ins wrote under this provider's HOME.
    pub fn all_files_text(&self) -> String {
        let mut text = String::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
        text
    }
}

/// Apache's `htpasswd -vb`: true if the password verifies.
pub fn htpasswd_verifies(file: &Path, user: &str, password: &str) -> bool {
    let out = Command::new("htpasswd")
        .arg("-vb")
        .arg(file)
        .arg(user)
        .arg(password)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "Apache's htpasswd is needed ({e}); install it: apt-get install -y apache2-utils"
            )
        });
    out.status.success()
}
