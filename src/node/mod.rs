//! The Ethereum node an activity's calls reach: which networks there are and their
//! ports, how a managed network's `erigon` and `rpcdaemon` are spelled, spawned, locked
//! and stopped, and how any node, managed or the operator's, is reached and asked how
//! it is doing.
//!
//! This wing knows nothing of activities, credentials or the gateway: it is what a
//! provider would keep if it sold something other than metered JSON-RPC, so it sits
//! below everything that does.
//! - `network`, `ports`: the networks a provider accepts, their chains and slots, and
//!   the ports each slot's node uses.
//! - `spec`: Erigon's command lines, and the flags the runtime keeps for itself.
//! - `managed`: a managed network's node, started in order and stopped cleanly;
//!   `child`: one of its processes, which cannot outlive the runtime; `lock`: one node
//!   per network, across runtimes.
//! - `upstream`: where a node answers (a URL per protocol, plain or TLS) and the one
//!   dialer everything that talks to it uses.
//! - `health`: asking a node over JSON-RPC whether it answers, for which chain, and
//!   how it is doing; `backoff`: the delays between those questions.

pub mod backoff;
pub mod child;
pub mod health;
pub mod lock;
pub mod managed;
pub mod network;
pub mod ports;
pub mod spec;
pub mod upstream;
