//! anvil, Foundry's development node (from npm, `npm ci --prefix tests/tools`), as the
//! operator's node: it answers the Ethereum JSON-RPC methods from real blocks and state,
//! where the stand-in rpcdaemon only answers the few calls the lifecycle needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running anvil, killed when dropped.
pub struct Anvil {
    _child: Child,
    pub addr: SocketAddr,
}

/// Where `npm ci --prefix tests/tools` (run by `.ci/test`) installs the binary.
pub fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

impl Anvil {
    /// Starts anvil on loopback `port` (0: a free one) with `extra` arguments; ready
    /// once it says where it listens.
    pub async fn start(port: u16, extra: &[&str]) -> Anvil {
        let bin = binary();
        assert!(
            bin.is_file(),
            "anvil is not at {}; install it with:\nnpm ci --prefix tests/tools",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut lines = BufReader::new(child.stdout.take().expect("anvil's stdout")).lines();
        let listening = async {
            while let Some(line) = lines.next_line().await.expect("anvil's stdout") {
                if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                    return addr
                        .parse::<SocketAddr>()
                        .expect("anvil listens on an address");
                }
            }
            panic!("anvil exited before listening");
        };
        let addr = tokio::time::timeout(Duration::from_secs(30), listening)
            .await
            .expect("anvil listens within 30 s");
        // anvil logs every call: keep its pipe from filling.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Anvil {
            _child: child,
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}
