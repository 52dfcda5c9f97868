//! Erigon's command lines: the spec a network's node runs from, built by the
//! configuration, and the flags it becomes. The flags the runtime manages carry the
//! per-network isolation, so the operator's extra arguments may not repeat them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::logging::RotatingLog;
use crate::node::network::Network;

/// Everything needed to run one network's node. Built only by [`NodeSpec::new`],
/// so a spec whose extra arguments repeat a flag the runtime manages (and with it
/// the per-network isolation) cannot exist.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    parts: NodeParts,
}

/// A node's spec as the configuration gathers it; [`NodeSpec::new`] checks it.
#[derive(Clone, Debug)]
pub struct NodeParts {
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
    /// The operator's extra flags (`erigon_args`, `rpcdaemon_args`).
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
    // Go's flag parsing (urfave/cli) reads `-datadir` as `--datadir`: compare the
    // names without their dashes.
    let name = |flag: &str| flag.trim_start_matches('-').to_owned();
    for arg in args.iter().filter(|a| a.starts_with('-')) {
        let flag = arg.split('=').next().unwrap_or_default();
        if managed.iter().any(|m| name(m) == name(flag)) {
            return Err(format!(
                "key `{key}`: \"{flag}\" is set by the runtime for each network and cannot be overridden; accepted: flags other than the managed ones, in -flag or --flag form: {}",
                managed.join(" ")
            ));
        }
    }
    Ok(())
}

impl NodeSpec {
    /// The spec of `parts`, refused (naming the key) when an extra argument
    /// repeats a managed flag.
    pub fn new(parts: NodeParts) -> Result<NodeSpec, String> {
        refuse_managed("erigon_args", &parts.erigon_args, &ERIGON_FLAGS)?;
        refuse_managed("rpcdaemon_args", &parts.rpcdaemon_args, &RPCDAEMON_FLAGS)?;
        Ok(NodeSpec { parts })
    }

    pub fn network(&self) -> &Network {
        &self.parts.network
    }

    pub fn erigon(&self) -> &Path {
        &self.parts.erigon
    }

    pub fn rpcdaemon(&self) -> &Path {
        &self.parts.rpcdaemon
    }

    pub fn rpc(&self) -> SocketAddr {
        self.parts.rpc
    }

    pub fn datadir(&self) -> &Path {
        &self.parts.datadir
    }

    pub fn log_dir(&self) -> &Path {
        &self.parts.log_dir
    }

    /// erigon's whole command line: the managed flags, then the operator's.
    pub fn erigon_command(&self) -> Vec<String> {
        with_flags(self.erigon_flags(), &self.parts.erigon_args)
    }

    /// rpcdaemon's whole command line: the managed flags, then the operator's.
    pub fn rpcdaemon_command(&self) -> Vec<String> {
        with_flags(self.rpcdaemon_flags(), &self.parts.rpcdaemon_args)
    }

    pub fn private_api(&self) -> SocketAddr {
        SocketAddr::new(
            IpAddr::from([127, 0, 0, 1]),
            self.parts.network.ports().private_api,
        )
    }

    pub fn erigon_flags(&self) -> [(&'static str, String); 11] {
        let p = self.parts.network.ports();
        [
            ("--chain", self.parts.network.chain().to_string()),
            ("--datadir", self.parts.datadir.display().to_string()),
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
        let b = &self.parts.bounds;
        [
            ("--datadir", self.parts.datadir.display().to_string()),
            ("--private.api.addr", self.private_api().to_string()),
            ("--http.addr", self.parts.rpc.ip().to_string()),
            ("--http.port", self.parts.rpc.port().to_string()),
            ("--http.api", self.parts.http_api.join(",")),
            ("--http.vhosts", self.parts.http_vhosts.join(",")),
            ("--ws", "true".to_string()),
            ("--ws.port", self.parts.rpc.port().to_string()),
            // A Go duration.
            ("--rpc.evmtimeout", format!("{}ms", b.evm_timeout_ms)),
            ("--rpc.gascap", b.gas_cap.to_string()),
            ("--rpc.returndata.limit", b.returndata_bytes.to_string()),
            ("--rpc.batch.concurrency", b.batch_concurrency.to_string()),
        ]
    }

    pub fn open_log(&self, name: &str) -> Result<RotatingLog, String> {
        RotatingLog::open(
            &self.parts.log_dir.join(format!("{name}.log")),
            self.parts.log_max_bytes,
            self.parts.log_files,
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

    fn parts() -> NodeParts {
        NodeParts {
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

    fn spec() -> NodeSpec {
        NodeSpec::new(parts()).unwrap()
    }

    #[test]
    fn a_spec_whose_extra_arguments_repeat_a_managed_flag_cannot_be_built() {
        let mut p = parts();
        p.erigon_args.push("--datadir=/elsewhere".into());
        let err = NodeSpec::new(p).unwrap_err();
        assert!(
            err.contains("key `erigon_args`: \"--datadir\" is set by the runtime"),
            "{err}"
        );
        let mut p = parts();
        p.rpcdaemon_args.push("--http.port=1".into());
        let err = NodeSpec::new(p).unwrap_err();
        assert!(
            err.contains("key `rpcdaemon_args`: \"--http.port\""),
            "{err}"
        );
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
        let args = spec.erigon_command();
        assert_eq!(args[0], "--chain=dev");
        assert!(args.contains(&"--port=30403".to_string()), "{args:?}");
        assert!(args.contains(&"--private.api.addr=127.0.0.1:30410".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("--prune.mode=full"));
        let args = spec.rpcdaemon_command();
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
        let err =
            refuse_managed("erigon_args", &["-datadir=/x".into()], &ERIGON_FLAGS).unwrap_err();
        assert!(err.contains("key `erigon_args`: \"-datadir\""), "{err}");
        let err = refuse_managed(
            "rpcdaemon_args",
            &["-http.port".into(), "1".into()],
            &RPCDAEMON_FLAGS,
        )
        .unwrap_err();
        assert!(err.contains("\"-http.port\""), "{err}");
        assert!(refuse_managed(
            "erigon_args",
            &["--prune.mode=full".into(), "datadir".into()],
            &ERIGON_FLAGS
        )
        .is_ok());
    }
}
