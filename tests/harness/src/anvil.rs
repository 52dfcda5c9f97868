//! anvil, Foundry's development node (from npm, `npm ci --prefix tests/tools`), as the
//! operator's node: it answers the Ethereum JSON-RPC methods from real blocks and state,
//! where the stand-in rpcdaemon only answers the few calls the lifecycle needs.
//!
//! Every test and tool starts it here: [`Anvil::start`] for the defaults (a free
//! loopback port, chain 31337, a block only when a transaction comes), or
//! [`Anvil::builder`] for a port, a chain id, a block time. It is ready once it says
//! where it listens, and killed when dropped. A missing binary fails with the line that
//! installs it; nothing is skipped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long anvil may take to listen.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Where `npm ci --prefix tests/tools` (run by `.ci/test`) installs the binary.
pub fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

/// anvil's version (`1.7.1`), for a report's heading; `?` if it cannot be run.
pub fn version() -> String {
    Command::new(binary())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.rsplit(' ').next().map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}

/// A running anvil, killed when dropped.
pub struct Anvil {
    child: Child,
    pub addr: SocketAddr,
}

/// An anvil to start: [`Anvil::builder`], then [`AnvilBuilder::start`].
pub struct AnvilBuilder {
    port: u16,
    args: Vec<String>,
}

impl AnvilBuilder {
    /// Listens on loopback `port` (a provider's node port, say) rather than a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Answers `eth_chainId` with `id` (the default: 31337).
    pub fn chain_id(mut self, id: u64) -> Self {
        self.args.extend(["--chain-id".into(), id.to_string()]);
        self
    }

    /// Mines a block every `seconds` (for subscriptions' new heads), rather than only
    /// when a transaction comes.
    pub fn block_time(mut self, seconds: u64) -> Self {
        self.args
            .extend(["--block-time".into(), seconds.to_string()]);
        self
    }

    /// No gas limit on a block, so that a call may run as long as a test needs (anvil
    /// refuses `--gas-limit` beside it).
    pub fn disable_block_gas_limit(mut self) -> Self {
        self.args.push("--disable-block-gas-limit".into());
        self
    }

    /// Starts anvil; ready once it says where it listens (its own line, no polling),
    /// within 30 s. Panics, with the reason, if it cannot start: a missing binary names
    /// the command that installs it.
    pub async fn start(self) -> Anvil {
        let bin = binary();
        assert!(
            bin.is_file(),
            "anvil is not at {}; install it with:\nnpm ci --prefix tests/tools",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (Some(stdout), Some(mut stderr)) = (stdout, stderr) else {
            unreachable!("both are piped");
        };
        // A thread of its own reads anvil's output, as anvil logs every call: the pipe
        // never fills, whether or not an async runtime is being driven.
        let (listening, ready) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            let mut line = Vec::new();
            let addr = loop {
                line.clear();
                match out.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break None,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        let said = text.trim().strip_prefix("Listening on ");
                        if let Some(addr) = said.and_then(|a| a.parse::<SocketAddr>().ok()) {
                            break Some(addr);
                        }
                    }
                }
            };
            let said = match addr {
                Some(addr) => {
                    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
                    Ok(addr)
                }
                None => {
                    let mut why = String::new();
                    let _ = stderr.read_to_string(&mut why);
                    Err(why)
                }
            };
            let _ = listening.send(said);
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let mut anvil = Anvil {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], self.port)),
        };
        // Killed by its drop should this panic.
        match tokio::time::timeout(READY_WITHIN, ready).await {
            Ok(Ok(Ok(addr))) => anvil.addr = addr,
            Ok(Ok(Err(why))) => panic!(
                "anvil {} exited before listening: {}",
                self.args.join(" "),
                why.trim()
            ),
            Ok(Err(_)) => panic!("anvil's output reader ended before anvil listened"),
            Err(_) => panic!("anvil did not listen within {READY_WITHIN:?}"),
        }
        anvil
    }
}

impl Anvil {
    /// anvil with its defaults on a free loopback port: what most tests need.
    pub async fn start() -> Anvil {
        Self::builder().start().await
    }

    /// [`Anvil::start`]'s defaults, to change one by one.
    pub fn builder() -> AnvilBuilder {
        AnvilBuilder {
            port: 0,
            args: Vec::new(),
        }
    }

    /// Its JSON-RPC over HTTP.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Its JSON-RPC over WebSocket (the same port).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Its process (whose CPU a benchmark counts).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
