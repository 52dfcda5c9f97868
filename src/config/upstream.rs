//! The `node` section of each network: where its node answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::check::absolute;
use crate::node::network::Networks;
use crate::node::upstream::{NodeKeys, Upstream};

/// Each network's node, by name: the `node` URLs of a shared network, or this
/// machine's `erigon_http_addr` and `erigon_http_port + slot`. A managed network's
/// node is the runtime's own rpcdaemon, which listens on this machine only, so a
/// `node` section there is a mistake the operator hears about now.
pub(super) fn network_upstreams(
    networks: &Networks,
    http_addr: std::net::IpAddr,
) -> Result<BTreeMap<String, Arc<Upstream>>, String> {
    let mut upstreams = BTreeMap::new();
    for network in networks.all() {
        let name = network.name();
        let local = SocketAddr::new(http_addr, network.ports().http);
        let upstream = match network.node_address() {
            None => Upstream::local(local),
            Some(_) if !network.is_shared() => {
                return Err(format!(
                    "key `networks.{name}.node`: {name} is a managed network, whose node is the runtime's own rpcdaemon at {local} (`erigon_http_addr`, `erigon_http_port` + slot); `node` names the operator's node of a shared network: set \"mode\": \"shared\" or remove `node`"
                ))
            }
            Some(node) => {
                let at = format!("networks.{name}.node");
                if let Some(path) = &node.ca_file {
                    absolute(&format!("{at}.ca_file"), path)?;
                }
                let keys = NodeKeys {
                    at: &at,
                    http: node.http.as_deref(),
                    ws: node.ws.as_deref(),
                    ca_file: node.ca_file.as_deref(),
                };
                Upstream::configured(keys, local)?
            }
        };
        upstreams.insert(name.to_owned(), Arc::new(upstream));
    }
    Ok(upstreams)
}
