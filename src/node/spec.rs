//! Erigon's command lines: the spec a network's node runs from, built by the
//! configuration, and the flags it becomes. The flags the runtime manages carry the
//! per-network isolation, so the operator's extra arguments may not repeat them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::logging::RotatingLog;
use crate::node::network::Network;

/// Everything needed to run one network's node, built by the configuration.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub network: Network,
    pub erigon: PathBuf,
    pub rpcdaemon: PathBuf,
    pub datadir: PathBuf,
    /// The network's own log folder: `erigon.log` and `rpcdaemon.log` go there.
    pub log_dir: PathBuf,
    pub log_max_bytes: usize,
    pub log_files: usize,
    /// Where rpcdaemon serves JSON-RPC (and nginx or the runtime calls it).
    pub rpc: SocketAddr,
    pub http_api: Vec<String>,
    pub http_vhosts: Vec<String>,
    /// The operator's extra flags, already checked against the managed ones.
    pub erigon_args: Vec<String>,
    pub rpcdaemon_args: Vec<String>,
    pub bounds: CallBounds,
}

/// What one call may make rpcdaemon do, whatever the client asks: rpcdaemon's own
/// defaults (a 5-minute EVM time and 30-minute writes) let one call hold the node far
/// past the gateway's call timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallBounds {
    /// `--rpc.evmtimeout`: one `eth_call`, `eth_estimateGas` or trace's EVM time.
    pub evm_timeout_ms: u64,
    /// `--rpc.gascap`: gas of one `eth_call` or `eth_estimateGas`.
    pub gas_cap: u64,
    /// `--rpc.returndata.limit`: bytes an `eth_call` may return.
    pub returndata_bytes: u64,
    /// `--rpc.batch.concurrency`: calls of one batch served at once.
    pub batch_concurrency: u32,
}

/// Flags the runtime sets on erigon for each network; configuration may not repeat
/// them, because they carry the per-network isolation.
pub const ERIGON_FLAGS: [&str; 11] = [
    "--chain",
    "--datadir",
    "--http",
    "--port",
    "--p2p.allowed-ports",
    "--torrent.port",
    "--authrpc.port",
    "--private.api.addr",
    "--caplin.discovery.port",
    "--caplin.discovery.tcpport",
    "--sentinel.port",
];

/// Flags the runtime sets on rpcdaemon. `--ws` serves WebSocket upgrades on the HTTP
/// port; `--ws.port` set to the same port stops newer rpcdaemons from opening a second,
/// WebSocket-only listener on 8546, which would collide between networks.
pub const RPCDAEMON_FLAGS: [&str; 12] = [
    "--datadir",
    "--private.api.addr",
    "--http.addr",
    "--http.port",
    "--http.api",
    "--http.vhosts",
    "--ws",
    "--ws.port",
    "--rpc.evmtimeout",
    "--rpc.gascap",
    "--rpc.returndata.limit",
    "--rpc.batch.concurrency",
];

/// Refuses operator arguments that would override a managed flag; `key` is the
/// configuration key they came from.
pub fn refuse_managed(key: &str, args: &[String], managed: &[&str]) -> Result<(), String> {
    for arg in args {
        let flag = arg.split('=').next().unwrap_or_default();
        if managed.contains(&flag) {
            return Err(format!(
                "key `{key}`: \"{flag}\" is set by the runtime for each network and cannot be overridden; managed flags: {}",
                managed.join(" ")
            ));
        }
    }
    Ok(())
}

impl NodeSpec {
    pub fn private_api(&self) -> SocketAddr {
        SocketAddr::new(
            IpAddr::from([127, 0, 0, 1]),
            self.network.ports().private_api,
        )
    }

    pub fn erigon_flags(&self) -> [(&'static str, String); 11] {
        let p = self.network.ports();
        [
            ("--chain", self.network.chain().to_string()),
            ("--datadir", self.datadir.display().to_string()),
            ("--http", "false".to_string()),
            ("--port", p.p2p.to_string()),
            ("--p2p.allowed-ports", p.p2p_allowed()),
            ("--torrent.port", p.torrent.to_string()),
            ("--authrpc.port", p.authrpc.to_string()),
            ("--private.api.addr", self.private_api().to_string()),
            ("--caplin.discovery.port", p.caplin_discovery.to_string()),
            ("--caplin.discovery.tcpport", p.caplin_tcp.to_string()),
            ("--sentinel.port", p.sentinel.to_string()),
        ]
    }

    pub fn rpcdaemon_flags(&self) -> [(&'static str, String); 12] {
        let b = &self.bounds;
        [
            ("--datadir", self.datadir.display().to_string()),
            ("--private.api.addr", self.private_api().to_string()),
            ("--http.addr", self.rpc.ip().to_string()),
            ("--http.port", self.rpc.port().to_string()),
            ("--http.api", self.http_api.join(",")),
            ("--http.vhosts", self.http_vhosts.join(",")),
            ("--ws", "true".to_string()),
            ("--ws.port", self.rpc.port().to_string()),
            // A Go duration.
            ("--rpc.evmtimeout", format!("{}ms", b.evm_timeout_ms)),
            ("--rpc.gascap", b.gas_cap.to_string()),
            ("--rpc.returndata.limit", b.returndata_bytes.to_string()),
            ("--rpc.batch.concurrency", b.batch_concurrency.to_string()),
        ]
    }

    pub fn open_log(&self, name: &str) -> Result<RotatingLog, String> {
        RotatingLog::open(
            &self.log_dir.join(format!("{name}.log")),
            self.log_max_bytes,
            self.log_files,
        )
    }
}

/// `--flag=value`: urfave/cli reads `--http false` as a flag and a stray argument.
pub fn with_flags(
    flags: impl IntoIterator<Item = (&'static str, String)>,
    extra: &[String],
) -> Vec<String> {
    flags
        .into_iter()
        .map(|(flag, value)| format!("{flag}={value}"))
        .chain(extra.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::network::test_network;

    fn spec() -> NodeSpec {
        NodeSpec {
            network: test_network("dev", 5),
            erigon: "/opt/erigon".into(),
            rpcdaemon: "/opt/rpcdaemon".into(),
            datadir: "/d/dev".into(),
            log_dir: "/d/logs/dev".into(),
            log_max_bytes: 1 << 20,
            log_files: 2,
            rpc: "127.0.0.1:8560".parse().unwrap(),
            http_api: vec!["eth".into(), "net".into()],
            http_vhosts: vec!["localhost".into()],
            erigon_args: vec!["--prune.mode=full".into()],
            rpcdaemon_args: vec![],
            bounds: CallBounds {
                evm_timeout_ms: 25_000,
                gas_cap: 50_000_000,
                returndata_bytes: 100_000,
                batch_concurrency: 2,
            },
        }
    }

    #[test]
    fn every_managed_flag_is_set_and_listed_as_managed() {
        let spec = spec();
        let erigon: Vec<_> = spec.erigon_flags().iter().map(|(f, _)| *f).collect();
        assert_eq!(erigon, ERIGON_FLAGS);
        let rpcdaemon: Vec<_> = spec.rpcdaemon_flags().iter().map(|(f, _)| *f).collect();
        assert_eq!(rpcdaemon, RPCDAEMON_FLAGS);
    }

    #[test]
    fn flags_carry_the_network_ports_and_the_operator_extras_last() {
        let spec = spec();
        let args = with_flags(spec.erigon_flags(), &spec.erigon_args);
        assert_eq!(args[0], "--chain=dev");
        assert!(args.contains(&"--port=30403".to_string()), "{args:?}");
        assert!(args.contains(&"--private.api.addr=127.0.0.1:30410".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("--prune.mode=full"));
        let args = with_flags(spec.rpcdaemon_flags(), &spec.rpcdaemon_args);
        assert!(args.contains(&"--http.port=8560".to_string()), "{args:?}");
        assert!(args.contains(&"--ws.port=8560".to_string()), "{args:?}");
        assert!(
            args.contains(&"--rpc.evmtimeout=25000ms".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"--rpc.gascap=50000000".to_string()),
            "{args:?}"
        );
    }

    #[test]
    fn managed_flags_cannot_be_overridden() {
        let err =
            refuse_managed("erigon_args", &["--datadir=/x".into()], &ERIGON_FLAGS).unwrap_err();
        assert!(err.contains("key `erigon_args`: \"--datadir\""), "{err}");
        assert!(
            refuse_managed("erigon_args", &["--prune.mode=full".into()], &ERIGON_FLAGS).is_ok()
        );
    }
}
