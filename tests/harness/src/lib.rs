//! The integration tests' harness: plays the ExeUnit against the built runtime binary, as
//! yagna does, for providers sandboxed in a temporary HOME, with the real nginx in front.
//!
//! - [`provider`]: one provider's sandbox (HOME, configuration, ports, work folders,
//!   password files, the stand-ins' behaviour) and its plugin folder;
//! - [`exeunit`]: the ExeUnit's side of a started runtime (hello, RUN, STATUS, usage
//!   counters, Shutdown);
//! - [`process`]: signals, waiting for processes to go, and the one poll loop for any
//!   state that offers no notification ([`process::eventually`] and its twins);
//! - [`http`]: JSON-RPC calls as a requestor's user makes them;
//! - [`nginx`]: the real nginx with the shipped site;
//! - [`anvil`]: anvil, a real Ethereum JSON-RPC node, as the operator's node;
//! - [`nodefront`]: a TLS-terminating nginx in front of such a node, with certificates
//!   made by openssl (good, wrong name, expired, unknown CA).

pub mod anvil;
pub mod exeunit;
pub mod http;
pub mod nginx;
pub mod nodefront;
pub mod process;
pub mod provider;
