//! The ExeUnit's side of a started runtime: spawned and driven over ya-runtime-api's own
//! client, as yagna's ExeUnit does (hello, RUN, STATUS, usage counters, Shutdown).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use ya_runtime_api::server::{
    self, ProcessStatus, RunProcess, RuntimeControl, RuntimeHandler, RuntimeService, RuntimeStatus,
    RuntimeStatusKind,
};

/// The user and password a ready STATUS line hands out.
pub fn creds(status: &Value) -> (String, String) {
    let field = |name: &str| {
        status["auth"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no auth.{name} in STATUS: {status}"))
            .to_string()
    };
    (field("user"), field("password"))
}

/// The ExeUnit's Shutdown window.
const SHUTDOWN_WINDOW: Duration = Duration::from_secs(5);

/// A RUN as the ExeUnit and the debugger send it: no work dir, no output spec.
fn run_process(bin: &str, argv: &[&str]) -> RunProcess {
    RunProcess {
        bin: bin.into(),
        args: argv.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

/// What the runtime reports on its own: process events and usage counters.
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
        if let Some(RuntimeStatusKind::Counter(c)) = status.kind {
            let _ = self.1.send((c.name, c.value));
        }
        async {}.boxed()
    }
}

trait Service: RuntimeService + RuntimeControl {}
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
    /// Whether the runtime's log shows `needle` within `within`: for work the runtime
    /// does beside a start (the sweep), whose log line is the only event.
    pub async fn log_shows_within(&self, needle: &str, within: Duration) -> bool {
        let log = self.workdir.join("ya-runtime-erigon.log");
        crate::process::file_contains_within(&log, needle, within).await
    }

    /// Spawns `start` (the full command line, run in `workdir`) with ya-runtime-api's
    /// client and performs the ExeUnit's `hello`, which the runtime answers once its start
    /// is done.
    pub async fn spawn(start: tokio::process::Command, workdir: &Path) -> Self {
        let (tx, rx) = unbounded_channel();
        let (counter_tx, counter_rx) = unbounded_channel();
        let started = Instant::now();
        let service = server::spawn(start, Events(tx, counter_tx))
            .await
            .expect("spawn the runtime");
        let hello = tokio::time::timeout(Duration::from_secs(60), service.hello("0.1.0"))
            .await
            .expect("hello answered within 60 s")
            .map_err(|e| e.message);
        Self {
            service: Box::new(service),
            events: tokio::sync::Mutex::new(rx),
            counters: tokio::sync::Mutex::new(counter_rx),
            hello,
            start_time: started.elapsed(),
            workdir: workdir.to_path_buf(),
        }
    }

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
        self.refused_argv(bin, &[bin]).await
    }

    /// RUN `bin` with `argv` (argv\[0\] first), expecting a refusal; returns its message.
    pub async fn refused_argv(&self, bin: &str, argv: &[&str]) -> String {
        tokio::time::timeout(
            Duration::from_secs(5),
            self.service.run_process(run_process(bin, argv)),
        )
        .await
        .expect("RUN answered within 5 s")
        .err()
        .unwrap_or_else(|| panic!("RUN {bin:?} {argv:?} was accepted"))
        .message
    }

    /// RUN `bin`, expecting the runtime to accept it and print one JSON line; returns
    /// that line parsed and the command's return code.
    pub async fn run(&self, bin: &str) -> (Value, i32) {
        self.run_argv(bin, &[bin]).await
    }

    /// [`Activity::run`] with the whole argv, as ya-runtime-dbg's shell mode sends it
    /// (`/bin/bash` with `["bash", "-c", "STATUS"]`).
    pub async fn run_argv(&self, bin: &str, argv: &[&str]) -> (Value, i32) {
        let run = run_process(bin, argv);
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

    /// Shutdown as [`Activity::shutdown`] does, then the last value of usage counter
    /// `name` the runtime reported *before* the Shutdown answer (0 if none): what the
    /// ExeUnit bills, since it kills the runtime right after the answer.
    pub async fn shutdown_billed(self, name: &str) -> f64 {
        let counters = std::mem::replace(&mut *self.counters.lock().await, unbounded_channel().1);
        self.shutdown().await;
        let mut counters = counters;
        let mut last = 0.0;
        while let Ok((got, value)) = counters.try_recv() {
            if got == name {
                last = value;
            }
        }
        last
    }

    /// SIGKILL, as the ExeUnit does after Shutdown (or a crash would).
    pub async fn kill(&self) {
        self.service.stop();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.service.stopped()).await;
    }
}
