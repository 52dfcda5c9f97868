//! Plays the ExeUnit: runs the built runtime binary exactly as yagna does
//! (`--workdir W deploy --`, then `--workdir W start <args>` driven over ya-runtime-api's
//! own client), with the stand-in `erigon`/`rpcdaemon` next to it, and a private HOME,
//! data dir, password file and port range per test.

#![allow(dead_code)]

pub mod nginx;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use ya_runtime_sdk::runtime_api::server::{
    self, ProcessStatus, RunProcess, RuntimeControl, RuntimeHandler, RuntimeService, RuntimeStatus,
};

/// The ExeUnit's Shutdown window.
pub const SHUTDOWN_WINDOW: Duration = Duration::from_secs(5);

/// The test suite's plugin folder (see [`assemble_plugin_dir`]), built once per process.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let (Some(runtime), Some(tmp)) = (
            option_env!("CARGO_BIN_EXE_ya-runtime-erigon"),
            option_env!("CARGO_TARGET_TMPDIR"),
        ) else {
            panic!("plugin_dir() is for integration tests; other callers assemble their own");
        };
        let runtime = PathBuf::from(runtime);
        let examples = runtime.parent().expect("target dir").join("examples");
        let dest = Path::new(tmp).join(format!("plugin-{}", std::process::id()));
        assemble_plugin_dir(&runtime, &examples, &dest).unwrap_or_else(|e| panic!("{e}"))
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
    pub rust_log: &'static str,
}

impl Provider {
    /// Writes a configuration with this provider's paths and ports, plus `overrides`.
    pub fn new(overrides: Value) -> Self {
        Self::with_runtime(plugin_dir().join("ya-runtime-erigon"), overrides)
    }

    pub fn with_runtime(runtime: PathBuf, overrides: Value) -> Self {
        let provider = Self::bare_with(runtime);
        provider.configure(overrides);
        provider
    }

    /// Writes this provider's paths and ports, plus `overrides`, as its configuration.
    fn configure(&self, overrides: Value) {
        let provider = self;
        let mut config = json!({
            "public_addr": "https://rpc.example.test:8545",
            "data_dir": provider.data_dir,
            "passwd_file_path": provider.root.path().join("auth/{network}.htpasswd"),
            "password_default_length": 20,
            "erigon_http_addr": "127.0.0.1",
            "erigon_http_port": provider.http_port,
            "port_base": provider.port_base,
            // Apache's htpasswd -vb verifies {SHA} and bcrypt, not {SSHA}.
            "password_hash": "sha",
            "ready_timeout_secs": 20,
        });
        if let (Some(base), Some(extra)) = (config.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        provider.write_config(&serde_json::to_string_pretty(&config).unwrap());
    }

    /// A provider with no configuration file yet.
    pub fn bare() -> Self {
        Self::bare_with(plugin_dir().join("ya-runtime-erigon"))
    }

    fn bare_with(runtime: PathBuf) -> Self {
        Self::bare_with_slots(runtime, 6)
    }

    /// A provider with ports for `slots` networks (the defaults have 6).
    pub fn with_slots(slots: u32, overrides: Value) -> Self {
        let provider = Self::bare_with_slots(plugin_dir().join("ya-runtime-erigon"), slots);
        provider.configure(overrides);
        provider
    }

    fn bare_with_slots(runtime: PathBuf, slots: u32) -> Self {
        let root = tempfile::Builder::new()
            .prefix("yre-")
            .tempdir()
            .expect("temp dir");
        let (http_port, port_base) = port_block(slots);
        Self {
            runtime,
            data_dir: root.path().join("data"),
            config_path: root
                .path()
                .join("xdg/ya-runtime-erigon/ya-runtime-erigon.json"),
            root,
            http_port,
            port_base,
            rust_log: "debug",
        }
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

    /// Spawns `start` with ya-runtime-api's client and performs the ExeUnit's `hello`,
    /// which the runtime answers once its start is done.
    pub async fn start(&self, workdir: &Path, args: &[&str]) -> Activity {
        let mut cmd = tokio::process::Command::from(self.command(workdir));
        cmd.arg("start").args(args);
        let (tx, rx) = unbounded_channel();
        let (counter_tx, counter_rx) = unbounded_channel();
        let started = Instant::now();
        let service = server::spawn(cmd, Events(tx, counter_tx))
            .await
            .expect("spawn the runtime");
        let hello = tokio::time::timeout(Duration::from_secs(60), service.hello("0.1.0"))
            .await
            .expect("hello answered within 60 s")
            .map_err(|e| e.message);
        Activity {
            service: Box::new(service),
            events: tokio::sync::Mutex::new(rx),
            counters: tokio::sync::Mutex::new(counter_rx),
            hello,
            start_time: started.elapsed(),
            workdir: workdir.to_path_buf(),
        }
    }

    /// `start '{"network": "<network>"}'` in a fresh work folder named `activity`.
    pub async fn start_on(&self, activity: &str, network: &str) -> Activity {
        let arg = json!({ "network": network }).to_string();
        self.start(&self.workdir(activity), &[&arg]).await
    }

    /// The real nginx with the shipped site, in front of this provider (after deploy,
    /// which writes the routes file).
    pub fn nginx(&self, tls: Option<&nginx::Tls>, port: u16) -> nginx::Nginx {
        nginx::Nginx::start(
            &self.root.path().join("nginx"),
            &self.data_dir.join("nginx/routes.conf"),
            port,
            tls,
            "",
            false,
        )
    }

    /// [`Provider::start_on`] with owned names, for starting many at once.
    pub async fn start_on_owned(&self, activity: String, network: String) -> Activity {
        self.start_on(&activity, &network).await
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

    pub fn passwd_file(&self, network: &str) -> PathBuf {
        self.root.path().join(format!("auth/{network}.htpasswd"))
    }

    /// Every htpasswd line for `network` that grants a user.
    pub fn entries(&self, network: &str) -> Vec<String> {
        std::fs::read_to_string(self.passwd_file(network))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(':') && !l.starts_with('#'))
            .map(String::from)
            .collect()
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

struct Events(
    UnboundedSender<ProcessStatus>,
    UnboundedSender<(String, f64)>,
);

impl RuntimeHandler for Events {
    fn on_process_status<'a>(&self, status: ProcessStatus) -> BoxFuture<'a, ()> {
        let _ = self.0.send(status);
        async {}.boxed()
    }

    /// Usage counters, as the ExeUnit receives them.
    fn on_runtime_status<'a>(&self, status: RuntimeStatus) -> BoxFuture<'a, ()> {
        if let Some(ya_runtime_sdk::runtime_api::server::RuntimeStatusKind::Counter(c)) =
            status.kind
        {
            let _ = self.1.send((c.name, c.value));
        }
        async {}.boxed()
    }
}

pub trait Service: RuntimeService + RuntimeControl {}
impl<T: RuntimeService + RuntimeControl> Service for T {}

/// A started runtime, as the ExeUnit holds it.
pub struct Activity {
    service: Box<dyn Service>,
    events: tokio::sync::Mutex<UnboundedReceiver<ProcessStatus>>,
    counters: tokio::sync::Mutex<UnboundedReceiver<(String, f64)>>,
    pub hello: Result<String, String>,
    pub start_time: Duration,
    pub workdir: PathBuf,
}

impl Activity {
    pub fn pid(&self) -> u32 {
        self.service.id()
    }

    /// RUN STATUS the way the ExeUnit sends it; returns the parsed stdout line and the
    /// command's return code.
    pub async fn status(&self) -> (Value, i32) {
        self.run("STATUS").await
    }

    /// The next value the runtime reports for usage counter `name`.
    pub async fn next_counter(&self, name: &str) -> f64 {
        let mut counters = self.counters.lock().await;
        loop {
            let (got, value) = tokio::time::timeout(Duration::from_secs(5), counters.recv())
                .await
                .unwrap_or_else(|_| panic!("no {name} counter within 5 s"))
                .expect("counter channel open");
            if got == name {
                return value;
            }
        }
    }

    /// STATUS, asserting the activity is ready (the message shows why not).
    pub async fn ready_status(&self) -> Value {
        let (status, code) = self.status().await;
        assert_eq!(
            (status["state"].as_str(), code),
            (Some("ready"), 0),
            "{status}"
        );
        status
    }

    /// RUN `bin`, expecting the runtime to refuse it; returns the error message.
    pub async fn refused(&self, bin: &str) -> String {
        let run = RunProcess {
            bin: bin.into(),
            args: vec![bin.into()],
            ..Default::default()
        };
        tokio::time::timeout(Duration::from_secs(5), self.service.run_process(run))
            .await
            .expect("RUN answered within 5 s")
            .err()
            .unwrap_or_else(|| panic!("RUN {bin:?} was accepted"))
            .message
    }

    pub async fn run(&self, bin: &str) -> (Value, i32) {
        let run = RunProcess {
            bin: bin.into(),
            args: vec![bin.into()],
            ..Default::default()
        };
        let pid = tokio::time::timeout(Duration::from_secs(5), self.service.run_process(run))
            .await
            .expect("RUN answered within 5 s")
            .map_err(|e| e.message)
            .expect("RUN accepted")
            .pid;
        let mut events = self.events.lock().await;
        let mut stdout = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("RUN events within 5 s")
                .expect("event channel open");
            if event.pid != pid {
                continue;
            }
            stdout.extend(event.stdout);
            if !event.running {
                let text = String::from_utf8_lossy(&stdout);
                assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
                let value = serde_json::from_str(&text).expect("STATUS is JSON");
                return (value, event.return_code);
            }
        }
    }

    /// Shutdown with the ExeUnit's 5 s timeout, then SIGKILL as the ExeUnit does.
    /// Returns how long Shutdown took to answer.
    pub async fn shutdown(self) -> Duration {
        let started = Instant::now();
        let answered = tokio::time::timeout(SHUTDOWN_WINDOW, self.service.shutdown()).await;
        let took = started.elapsed();
        self.kill().await;
        assert!(
            matches!(answered, Ok(Ok(()))),
            "Shutdown must answer within the ExeUnit's 5 s window"
        );
        took
    }

    /// SIGKILL, as the ExeUnit does after Shutdown (or a crash would).
    pub async fn kill(&self) {
        self.service.stop();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.service.stopped()).await;
    }
}

/// Sends a real signal, as a crash, an operator or the ExeUnit would.
pub fn send(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("cannot send {signal} to {pid}: {e}"));
}

/// Alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state, Some(rest) if rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits for `pid` to be gone. /proc offers no notification for a non-child, so this
/// polls, bounded by `within`.
pub async fn gone_within(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Waits until `pid` is reaped by its parent (no /proc entry, not even a zombie).
pub async fn reaped_within(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
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

/// An HTTP answer as a requestor's user sees it.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The JSON-RPC `result`, or null.
    pub fn result(&self) -> Value {
        serde_json::from_str::<Value>(&self.body)
            .map(|v| v["result"].clone())
            .unwrap_or(Value::Null)
    }
}

/// A JSON-RPC call with a plain HTTP client, with basic auth if given, as the
/// requestor's user would make it.
pub async fn call(url: &str, auth: Option<(&str, &str)>, method: &str) -> Reply {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client
        .post(url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}));
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url} answers: {e}"));
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}
