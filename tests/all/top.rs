//! `ya-runtime-erigon top` as an operator sees it: the built binary reading a
//! provider's metrics folder, into a pipe and on a real terminal (tmux), with the
//! activities' files written through the library as the runtimes write them, and
//! changed while `top` watches so that its rates are not zero.
//!
//! tmux is the terminal because it is one a test can read back (capture-pane) and
//! type into (send-keys); the test waits on what the screen shows, never on sleeps.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use harness::process::{eventually_blocking, try_eventually_blocking};
use ya_runtime_erigon::metrics::{ActivityFile, NodeFile, Store, BUCKETS_MICROS};
use ya_runtime_erigon::owner::Owner;

const RUNTIME: &str = env!("CARGO_BIN_EXE_ya-runtime-erigon");
/// How long the screen may take to show what is expected.
const PATIENCE: Duration = Duration::from_secs(20);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A provider's configuration and metrics folder, with two live activities on
/// `dev`: alpha, heavy calls (50 CU each), and beta, many light ones (10 CU each)
/// and refused often. Both "started" 100 s ago; the test process is their owner, so
/// they count as live while it runs.
struct Sandbox {
    dir: tempfile::TempDir,
    config: PathBuf,
    store: Store,
    alpha: ActivityFile,
    beta: ActivityFile,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("ya-runtime-erigon.json");
        let text = serde_json::json!({ "data_dir": data }).to_string();
        std::fs::write(&config, text).unwrap();
        let store = Store::new(&data);
        store.prepare().unwrap();
        let owner = Owner::current().unwrap();
        let started = unix_now() - 100;
        let mut alpha = ActivityFile::new("dev-alpha", "dev", "act-1", owner.clone(), started);
        alpha.reading.billed_calls = 1000;
        alpha.reading.billed_units = 50_000;
        alpha.reading.websockets = 1;
        alpha.reading.subscriptions = 2;
        let mut beta = ActivityFile::new("dev-beta", "dev", "act-2", owner, started);
        beta.reading.billed_calls = 3000;
        beta.reading.billed_units = 30_000;
        beta.reading.refused.insert("calls_per_sec".into(), 40);
        let mut node = NodeFile::new("dev", unix_now());
        node.up = true;
        node.synced = Some(true);
        node.head_block = Some(123_456);
        node.head_age_secs = Some(3);
        node.peers = Some(7);
        store.write_node(&node).unwrap();
        let mut down = NodeFile::new("sepolia", unix_now());
        down.up = false;
        store.write_node(&down).unwrap();
        let sandbox = Sandbox {
            dir,
            config,
            store,
            alpha,
            beta,
        };
        sandbox.write();
        sandbox
    }

    fn write(&self) {
        self.store.write_activity(&self.alpha).unwrap();
        self.store.write_activity(&self.beta).unwrap();
    }

    fn top(&self, args: &[&str]) -> Output {
        Command::new(RUNTIME)
            .arg("top")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Calls as the runtimes would count them, 20 ticks a second: alpha 20 calls/s
    /// (1000 CU/s) timed at 1-2.5 ms, beta 60 calls/s (600 CU/s) and 20 refusals/s.
    fn traffic(mut self) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let dir = self.dir.path().to_path_buf();
        let thread = std::thread::spawn(move || {
            let timed = BUCKETS_MICROS.partition_point(|b| *b < 2_000);
            self.alpha
                .reading
                .node_buckets
                .resize(BUCKETS_MICROS.len() + 1, 0);
            while !stopped.load(Ordering::SeqCst) {
                let (a, b) = (&mut self.alpha.reading, &mut self.beta.reading);
                a.billed_calls += 1;
                a.billed_units += 50;
                a.node_buckets[timed] += 1;
                b.billed_calls += 3;
                b.billed_units += 30;
                *b.refused.entry("calls_per_sec".into()).or_default() += 1;
                self.write();
                std::thread::sleep(Duration::from_millis(50));
            }
            self
        });
        Traffic {
            stop,
            thread: Some(thread),
            dir,
        }
    }
}

/// The activities' traffic, until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Sandbox>>,
    dir: PathBuf,
}

impl Traffic {
    fn config(&self) -> PathBuf {
        self.dir.join("ya-runtime-erigon.json")
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // The sandbox (its folder) goes with the thread's end.
            let _ = thread.join();
        }
    }
}

/// The cells of `user`'s row: network, user, uptime, calls/s, CU/s, refused,
/// refusals/s, p50, p99, websockets, subscriptions.
fn row<'a>(screen: &'a str, user: &str) -> Option<Vec<&'a str>> {
    let line = screen
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(user))?;
    Some(line.split_whitespace().collect())
}

fn number(screen: &str, user: &str, column: usize) -> Option<f64> {
    row(screen, user)?.get(column)?.parse().ok()
}

/// Where `user`'s row is on the screen.
fn line_of(screen: &str, user: &str) -> Option<usize> {
    screen
        .lines()
        .position(|l| l.split_whitespace().nth(1) == Some(user))
}

fn above(screen: &str, first: &str, second: &str) -> bool {
    matches!((line_of(screen, first), line_of(screen, second)), (Some(a), Some(b)) if a < b)
}

#[test]
fn plain_text_into_a_pipe() {
    let sandbox = Sandbox::new();
    let out = sandbox.top(&["--iterations", "1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains('\x1b'),
        "escape codes in plain text: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ya-runtime-erigon top at ")
            && lines[0]
                .ends_with(", rates since each activity started, sorted by calls/s, highest first"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("provider: 2 live, 0 started, 0 failed to start, 0 stopped"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("dev      node up, synced, head 123456 (3s old), 7 peers (probed ")
            && lines[2].ends_with("; 2 live, 0 started, 0 stopped, 0 lost, 0 calls ended"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("sepolia  node DOWN (probed "),
        "{text}"
    );
    assert_eq!(
        lines[4], "idle (node not probed, nothing started): chiado gnosis hoodi mainnet",
        "{text}"
    );
    let header = lines.iter().position(|l| l.starts_with("NETWORK")).unwrap();
    let columns: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "NETWORK",
            "USER",
            "UPTIME",
            "[CALLS/S]",
            "CU/S",
            "REFUSED",
            "REF/S",
            "P50",
            "P99",
            "WS",
            "SUBS"
        ]
    );
    // The busiest first; one frame's rates are averages over the 100 s (or 101 s).
    assert!(above(&text, "dev-beta", "dev-alpha"), "{text}");
    let beta = row(&text, "dev-beta").unwrap();
    assert_eq!(
        (beta[0], beta[5], beta[7], beta[8]),
        ("dev", "40", "-", "-"),
        "{text}"
    );
    let alpha = row(&text, "dev-alpha").unwrap();
    assert_eq!((alpha[9], alpha[10]), ("1", "2"), "{text}");
    for (user, calls, units) in [("dev-alpha", 10.0, 500.0), ("dev-beta", 30.0, 300.0)] {
        let shown = (
            number(&text, user, 3).unwrap(),
            number(&text, user, 4).unwrap(),
        );
        assert!(
            (calls * 0.97..=calls).contains(&shown.0) && (units * 0.97..=units).contains(&shown.1),
            "{user}: {shown:?}\n{text}"
        );
        assert!(row(&text, user).unwrap()[2].starts_with("1m4"), "{text}");
    }
    assert_eq!(lines.len(), header + 3, "{text}");
}

#[test]
fn plain_frames_one_delay_apart() {
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let out = sandbox.top(&["--iterations", "3", "--delay", "0.2"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let titles: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ya-runtime-erigon top at "))
        .collect();
    assert_eq!(titles.len(), 3, "{text}");
    assert!(titles[0].contains("rates since each activity started"));
    // Nothing called in between: the later frames' rates are zero, and nothing timed.
    assert!(titles[2].contains("rates over the last 0.2s"), "{text}");
    let last = &text[text.rfind("ya-runtime-erigon top at ").unwrap()..];
    for user in ["dev-alpha", "dev-beta"] {
        let cells = row(last, user).unwrap();
        assert_eq!(
            (cells[3], cells[4], cells[6], cells[8]),
            ("0.0", "0.0", "0.0", "-"),
            "{last}"
        );
    }
}

#[test]
fn bad_arguments_and_configurations_are_named() {
    let sandbox = Sandbox::new();
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();
    for (args, code, said) in [
        (&["--delay", "0.1"][..], 2, "--delay 0.1 is not accepted; accepted: seconds from 0.2 to 60"),
        (&["--delay", "soon"], 2, "--delay soon is not accepted; accepted: seconds from 0.2 to 60"),
        (&["--iterations", "-1"], 2, "--iterations -1 is not accepted; accepted: a whole number of frames, 1 or more"),
        (&["--frobnicate"], 2, "unknown argument --frobnicate; accepted: --config FILE, --delay SECS, --iterations N, --help"),
    ] {
        let out = sandbox.top(args);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {e}");
        assert!(e.starts_with("ya-runtime-erigon top: ") && e.contains(said), "{args:?}: {e}");
        assert!(e.ends_with("(see `ya-runtime-erigon top --help`)\n"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let missing = sandbox.dir.path().join("missing.json");
    let bad = sandbox.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"data_dir": "/tmp/x", "colour": "blue"}"#).unwrap();
    for (file, said) in [(&missing, "does not exist"), (&bad, "colour")] {
        let out = Command::new(RUNTIME)
            .args(["top", "--config"])
            .arg(file)
            .output()
            .unwrap();
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert!(
            e.contains(&file.display().to_string()) && e.contains(said),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let help = Command::new(RUNTIME)
        .args(["top", "--help"])
        .output()
        .unwrap();
    let usage = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.status.success() && usage.contains("--iterations N"),
        "{usage}"
    );
}

/// A tmux server of the test's own, 160x40, killed when dropped; its socket is in
/// its own folder, so that no other server is touched and nothing is left behind.
struct Tmux {
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Tmux {
    /// A session running `top` on `config`; the script reports how `top` exited and
    /// whether the terminal's settings came back, then keeps the pane open.
    fn start(config: &Path) -> Tmux {
        match Command::new("tmux").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            _ => panic!(
                "tmux is needed to test `top` on a terminal: apt-get install tmux (.ci/setup-debian installs it)"
            ),
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let script = dir.path().join("run.sh");
        let pid = dir.path().join("top.pid");
        std::fs::write(
            &script,
            format!(
                r#"before=$(stty -g)
sh -c 'echo $$ > "$0"; exec "$1" top --config "$2"' '{pid}' '{RUNTIME}' '{config}'
rc=$?
if [ "$(stty -g)" = "$before" ]; then echo "tty settings restored"; else echo "tty settings NOT restored"; fi
echo "top exited with $rc"
exec sleep 600
"#,
                pid = pid.display(),
                config = config.display(),
            ),
        )
        .unwrap();
        let tmux = Tmux { socket, dir };
        let script = script.display().to_string();
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "160",
            "-y",
            "40",
            "sh",
            &script,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// The pane's `#{format}`.
    fn pane(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", "top", format])
            .trim()
            .to_owned()
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "top", keys]);
    }

    /// The screen, once `ready` holds for it.
    fn wait(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        eventually_blocking(&format!("the screen shows {what}"), PATIENCE, || {
            let screen = self.screen();
            match ready(&screen) {
                true => Ok(screen),
                false => Err(format!("the screen:\n{screen}")),
            }
        })
    }

    fn top_pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.dir.path().join("top.pid")).unwrap();
        text.trim().parse().unwrap()
    }

    /// After `top` has exited with `code`: the shell's report, and tmux's view of
    /// the pane (main screen, cursor shown).
    fn assert_restored(&self, code: i32) {
        let exited = format!("top exited with {code}");
        let screen = self.wait(&exited, |s| s.contains("top exited with"));
        assert!(screen.contains(&exited), "{screen}");
        assert!(screen.contains("tty settings restored"), "{screen}");
        assert!(
            !screen.contains("NETWORK"),
            "the table stayed on the main screen:\n{screen}"
        );
        assert_eq!(self.pane("#{alternate_on} #{cursor_flag}"), "0 1");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// Both rows on an interval's rates, near what the traffic makes.
fn live_rates(screen: &str) -> bool {
    let near = |user, column, rate: f64| {
        number(screen, user, column).is_some_and(|n| (rate * 0.75..=rate * 1.25).contains(&n))
    };
    screen.contains("rates over the last")
        && near("dev-alpha", 3, 20.0)
        && near("dev-beta", 3, 60.0)
        && near("dev-alpha", 4, 1000.0)
        && near("dev-beta", 4, 600.0)
}

#[test]
fn on_a_terminal_sorting_by_keys_and_quitting_restores_it() {
    let traffic = Sandbox::new().traffic();
    let tmux = Tmux::start(&traffic.config());
    let screen = tmux.wait("both activities' live rates", live_rates);
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[0].starts_with("ya-runtime-erigon top  "), "{screen}");
    assert!(lines[0].ends_with(", refreshed every 1s"), "{screen}");
    assert!(lines[1].starts_with("provider: 2 live"), "{screen}");
    assert!(
        lines[2].starts_with("dev      node up, synced, head 123456"),
        "{screen}"
    );
    assert!(lines[3].starts_with("sepolia  node DOWN"), "{screen}");
    let header: Vec<&str> = lines[6].split_whitespace().collect();
    assert_eq!(
        header[..5],
        ["NETWORK", "USER", "UPTIME", "[CALLS/S]", "CU/S"],
        "{screen}"
    );
    assert!(
        above(&screen, "dev-beta", "dev-alpha"),
        "calls/s, highest first:\n{screen}"
    );
    let alpha = row(&screen, "dev-alpha").unwrap();
    assert!(
        alpha[7].ends_with("ms") && alpha[8].ends_with("ms"),
        "{screen}"
    );
    let beta = row(&screen, "dev-beta").unwrap();
    assert!(
        number(&screen, "dev-beta", 6).is_some_and(|r| r > 10.0),
        "{screen}"
    );
    assert_eq!(
        (beta[7], beta[8]),
        ("-", "-"),
        "beta timed nothing:\n{screen}"
    );
    let footer = lines.last().copied().unwrap_or_default();
    assert!(
        footer.starts_with("q quit  c calls/s  u CU/s  r refusals  p p99"),
        "{screen}"
    );
    assert!(
        footer.ends_with("sorted by calls/s, highest first"),
        "{screen}"
    );
    assert_eq!(tmux.pane("#{alternate_on} #{cursor_flag}"), "1 0");

    tmux.keys("u");
    let by_units = tmux.wait("alpha first by CU/s", |s| {
        s.contains("[CU/S]")
            && s.contains("sorted by CU/s, highest first")
            && above(s, "dev-alpha", "dev-beta")
    });
    let target = Path::new(RUNTIME).parent().and_then(Path::parent).unwrap();
    std::fs::write(target.join("top-screen.txt"), &by_units).unwrap();

    tmux.keys("R");
    tmux.wait("beta first, CU/s lowest first", |s| {
        s.contains("sorted by CU/s, lowest first") && above(s, "dev-beta", "dev-alpha")
    });
    tmux.keys("n");
    tmux.wait("alpha first by name", |s| {
        s.contains("[NETWORK]")
            && s.contains("sorted by network/user, A to Z")
            && above(s, "dev-alpha", "dev-beta")
    });
    // A key that means nothing changes nothing, and the view goes on refreshing.
    tmux.keys("x");
    tmux.wait("live rates still", |s| {
        live_rates(s) && s.contains("[NETWORK]")
    });

    tmux.keys("q");
    tmux.assert_restored(0);
}

/// Whether the process `pid` has ended (a zombie has: it only waits to be reaped).
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z"),
    }
}

#[test]
fn ctrl_c_sigterm_and_a_hangup_end_it_cleanly() {
    let sandbox = Sandbox::new();
    let ctrl_c = Tmux::start(&sandbox.config);
    let term = Tmux::start(&sandbox.config);
    let hangup = Tmux::start(&sandbox.config);
    for tmux in [&ctrl_c, &term, &hangup] {
        tmux.wait("the table", |s| {
            s.contains("dev-alpha") && s.contains("[CALLS/S]")
        });
    }
    ctrl_c.keys("C-c");
    ctrl_c.assert_restored(0);
    let pid = nix::unistd::Pid::from_raw(term.top_pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    term.assert_restored(143);
    // The terminal goes away, as with a dropped SSH connection: nothing is left
    // running (or spinning on a dead terminal).
    let pid = hangup.top_pid();
    hangup.run(&["kill-server"]);
    if try_eventually_blocking(PATIENCE, || ended(pid)).is_err() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("top (pid {pid}) still ran {PATIENCE:?} after its terminal went away");
    }
}
