//! ya-runtime-erigon: a Golem self-contained runtime that sells Erigon JSON-RPC
//! endpoints, one node per network, behind nginx basic auth with per-activity
//! credentials. See README.md for how the pieces fit.
//!
//! The crate is a stack of wings, each importing only those below it:
//! - `cli`: one invocation, the ExeUnit's or an operator's command;
//! - `runtime`, `calibrate`, `operator`: what those commands do;
//! - `provider`: the provider's set-up, offer and usage counters;
//! - `config`: the validated configuration, which builds what the rest runs;
//! - `gateway`, `access`, `metrics`: the activity's metered proxy, who may call it,
//!   and what the operator sees;
//! - `node`: the Ethereum node, its networks, processes and the way to it;
//! - `text`, `logging`, `owner`, `cancel`: the ground every wing stands on.

// Unit tests are exempt from Cargo.toml's habits: a failed unwrap is a failed test.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod access;
pub mod calibrate;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod operator;
pub mod owner;
pub mod provider;
pub mod runtime;
pub mod text;

/// The runtime's name, as its binary, its log lines and its operator's commands use it.
pub const NAME: &str = env!("CARGO_PKG_NAME");
