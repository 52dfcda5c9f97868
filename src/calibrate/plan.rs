//! What each method is asked during a calibration, or why it keeps its weight.
//!
//! A weight should be what a requestor's typical call costs on this node, so the
//! parameters come from the node's own chain: its head, a recent block with a
//! transaction, that block's fee recipient as the account, and the transaction's
//! recipient as the contract. Only methods listed here are ever sent, so a
//! state-changing method, or one the runtime does not know, can never be called.

use serde_json::{json, Value};

use super::node::{Node, Reply};

/// How far back a block with a transaction is looked for, and how many blocks
/// eth_getLogs spans: a range wallets and indexers commonly ask.
pub const LOGS_BLOCKS: u64 = 100;

/// Where the representative parameters come from.
#[derive(Clone, Debug)]
pub struct Sample {
    pub head: u64,
    /// The newest block with a transaction, or the head when none of the last
    /// [`LOGS_BLOCKS`] has one.
    pub block: u64,
    pub block_hash: String,
    /// The block's fee recipient (`miner`): an account that exists on every chain.
    pub account: String,
    /// The block's first transaction.
    pub tx: Option<Tx>,
}

#[derive(Clone, Debug)]
pub struct Tx {
    pub hash: String,
    pub from: String,
    /// None for a contract creation.
    pub to: Option<String>,
}

impl Sample {
    /// Asks the node for its head and walks back to a block with a transaction.
    pub async fn from_node(node: &mut Node) -> Result<Sample, String> {
        let head = ask(node, "eth_blockNumber", json!([])).await?;
        let head = hex(&head).ok_or_else(|| {
            format!(
                "eth_blockNumber at {} answered {head}, not a hex number",
                node.url()
            )
        })?;
        let mut newest = None;
        for number in (head.saturating_sub(LOGS_BLOCKS - 1)..=head).rev() {
            let block = ask(
                node,
                "eth_getBlockByNumber",
                json!([format!("{number:#x}"), true]),
            )
            .await?;
            // A pruned or not yet indexed block answers null: look further back.
            if block.is_null() {
                continue;
            }
            let has_tx = block
                .get("transactions")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty());
            if newest.is_none() || has_tx {
                newest = Some((number, block));
            }
            if has_tx {
                break;
            }
        }
        let Some((number, block)) = newest else {
            return Err(format!(
                "eth_getBlockByNumber at {} answered null for each of the last {LOGS_BLOCKS} blocks up to {head:#x}",
                node.url()
            ));
        };
        // Hashes and addresses are sent back and printed: only hex is taken.
        let field = |v: &Value, key: &str| -> Result<String, String> {
            v[key]
                .as_str()
                .filter(|s| is_hex(s))
                .map(str::to_owned)
                .ok_or_else(|| {
                    format!(
                        "eth_getBlockByNumber at {} answered block {number:#x} without a hex `{key}`",
                        node.url()
                    )
                })
        };
        let tx = match block.get("transactions").and_then(|t| t.get(0)) {
            Some(tx) => Some(Tx {
                hash: field(tx, "hash")?,
                from: field(tx, "from")?,
                to: tx.get("to").and_then(Value::as_str).map(str::to_owned),
            }),
            None => None,
        };
        Ok(Sample {
            head,
            block: number,
            block_hash: field(&block, "hash")?,
            account: field(&block, "miner")?,
            tx,
        })
    }

    /// An address with code when the chain has one at hand: the transaction's recipient.
    fn contract(&self) -> &str {
        self.tx
            .as_ref()
            .and_then(|t| t.to.as_deref())
            .unwrap_or(&self.account)
    }

    /// An account with a balance to pay for gas.
    fn sender(&self) -> &str {
        self.tx.as_ref().map_or(&self.account, |t| t.from.as_str())
    }

    pub fn logs_from(&self) -> u64 {
        self.head.saturating_sub(LOGS_BLOCKS - 1)
    }
}

/// A call the calibration makes, or why the method keeps its weight.
#[derive(Debug, PartialEq)]
pub enum Plan {
    Call(Value),
    Keep(&'static str),
}

pub const TRACED: &str = "cost depends on the transaction traced";
pub const WRITES: &str = "changes state: never sent";
pub const FILTERS: &str = "filters: state the node keeps between calls";
pub const WEBSOCKET: &str = "WebSocket only";
pub const NOTIFICATIONS: &str = "pushed by the node, not called";
pub const NO_TX: &str = "no transaction in the last 100 blocks";
const _: () = assert!(LOGS_BLOCKS == 100, "NO_TX names the span");
pub const UNKNOWN: &str = "no representative parameters";

/// The call that stands for `method`'s typical use, or why it is not measured.
pub fn plan(method: &str, s: &Sample) -> Plan {
    let block = format!("{:#x}", s.block);
    let hash = s.block_hash.as_str();
    let account = s.account.as_str();
    let contract = s.contract();
    let transfer = json!({"from": s.sender(), "to": account});
    let tx = s.tx.as_ref().map(|t| t.hash.as_str());
    let with_tx = |params: &dyn Fn(&str) -> Value| match tx {
        Some(tx) => Plan::Call(params(tx)),
        None => Plan::Keep(NO_TX),
    };
    let namespace = method.split_once('_').map_or(method, |(ns, _)| ns);
    Plan::Call(match method {
        _ if matches!(namespace, "trace" | "debug") => return Plan::Keep(TRACED),
        _ if crate::gateway::DENIED.contains(&namespace) => return Plan::Keep(WRITES),
        "eth_sendRawTransaction"
        | "eth_sendTransaction"
        | "eth_sign"
        | "eth_signTransaction"
        | "eth_signTypedData"
        | "eth_submitWork"
        | "eth_submitHashrate" => return Plan::Keep(WRITES),
        "eth_newFilter"
        | "eth_newBlockFilter"
        | "eth_newPendingTransactionFilter"
        | "eth_getFilterChanges"
        | "eth_getFilterLogs"
        | "eth_uninstallFilter" => return Plan::Keep(FILTERS),
        "eth_subscribe" | "eth_unsubscribe" => return Plan::Keep(WEBSOCKET),
        crate::gateway::NOTIFICATION => return Plan::Keep(NOTIFICATIONS),
        "eth_chainId"
        | "eth_blockNumber"
        | "eth_accounts"
        | "eth_gasPrice"
        | "eth_maxPriorityFeePerGas"
        | "eth_blobBaseFee"
        | "eth_syncing"
        | "eth_coinbase"
        | "eth_mining"
        | "eth_hashrate"
        | "eth_protocolVersion"
        | "net_listening"
        | "net_peerCount"
        | "net_version"
        | "web3_clientVersion"
        | "txpool_status"
        | "txpool_content"
        | "erigon_blockNumber"
        | "erigon_forks" => json!([]),
        "web3_sha3" => json!(["0x68656c6c6f"]),
        "eth_call" => json!([{"to": account, "data": "0x"}, "latest"]),
        "eth_estimateGas" => json!([transfer]),
        "eth_createAccessList" => json!([transfer, "latest"]),
        "eth_feeHistory" => json!(["0x5", "latest", [10, 50, 90]]),
        "eth_getBalance" | "eth_getTransactionCount" => json!([account, "latest"]),
        "eth_getCode" => json!([contract, "latest"]),
        "eth_getStorageAt" => json!([contract, "0x0", "latest"]),
        "eth_getProof" => json!([contract, [], "latest"]),
        "eth_getBlockByNumber" => json!([block, true]),
        "eth_getBlockByHash" => json!([hash, true]),
        "eth_getBlockReceipts" => json!([block]),
        "eth_getBlockTransactionCountByNumber" | "eth_getUncleCountByBlockNumber" => {
            json!([block])
        }
        "eth_getBlockTransactionCountByHash" | "eth_getUncleCountByBlockHash" => json!([hash]),
        "eth_getUncleByBlockNumberAndIndex" => json!([block, "0x0"]),
        "eth_getUncleByBlockHashAndIndex" => json!([hash, "0x0"]),
        "erigon_getHeaderByNumber" => json!([block]),
        "erigon_getHeaderByHash" => json!([hash]),
        // A client asks one contract's logs; an unfiltered range's cost grows with the
        // chain's traffic and would price every query as the worst one.
        "eth_getLogs" => json!([{
            "fromBlock": format!("{:#x}", s.logs_from()),
            "toBlock": format!("{:#x}", s.head),
            "address": contract,
        }]),
        "eth_getTransactionByHash"
        | "eth_getTransactionReceipt"
        | "eth_getRawTransactionByHash" => return with_tx(&|tx| json!([tx])),
        "eth_getTransactionByBlockNumberAndIndex" => return with_tx(&|_| json!([block, "0x0"])),
        "eth_getTransactionByBlockHashAndIndex" => return with_tx(&|_| json!([hash, "0x0"])),
        _ => return Plan::Keep(UNKNOWN),
    })
}

/// One untimed call whose result the calibration needs.
pub async fn ask(node: &mut Node, method: &str, params: Value) -> Result<Value, String> {
    match node.call(method, &params).await?.reply {
        Reply::Result(v) => Ok(v),
        Reply::Failed { code, message } => Err(format!(
            "{method} at {} answered an error{}: {message}",
            node.url(),
            code.map(|c| format!(" ({c})")).unwrap_or_default()
        )),
    }
}

/// `0x` and up to 32 bytes of hex digits: a hash or an address.
fn is_hex(text: &str) -> bool {
    text.strip_prefix("0x")
        .is_some_and(|h| !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn hex(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tx: bool) -> Sample {
        Sample {
            head: 0x1234,
            block: 0x1230,
            block_hash: "0xbb".into(),
            account: "0xaa".into(),
            tx: tx.then(|| Tx {
                hash: "0xtt".into(),
                from: "0xff".into(),
                to: Some("0xcc".into()),
            }),
        }
    }

    #[test]
    fn parameters_come_from_the_sample() {
        let s = sample(true);
        assert_eq!(
            plan("eth_call", &s),
            Plan::Call(json!([{"to": "0xaa", "data": "0x"}, "latest"]))
        );
        assert_eq!(
            plan("eth_getLogs", &s),
            Plan::Call(json!([{"fromBlock": "0x11d1", "toBlock": "0x1234", "address": "0xcc"}]))
        );
        assert_eq!(
            plan("eth_getBlockByNumber", &s),
            Plan::Call(json!(["0x1230", true]))
        );
        assert_eq!(
            plan("eth_estimateGas", &s),
            Plan::Call(json!([{"from": "0xff", "to": "0xaa"}]))
        );
        assert_eq!(
            plan("eth_getTransactionReceipt", &s),
            Plan::Call(json!(["0xtt"]))
        );
        let bare = sample(false);
        assert_eq!(plan("eth_getTransactionReceipt", &bare), Plan::Keep(NO_TX));
        assert_eq!(
            plan("eth_getCode", &bare),
            Plan::Call(json!(["0xaa", "latest"]))
        );
    }

    #[test]
    fn nothing_that_writes_or_is_unknown_is_ever_sent() {
        let s = sample(true);
        for (method, why) in [
            ("eth_sendRawTransaction", WRITES),
            ("eth_sendTransaction", WRITES),
            ("personal_sign", WRITES),
            ("anvil_mine", WRITES),
            ("engine_newPayloadV3", WRITES),
            ("debug_traceTransaction", TRACED),
            ("trace_block", TRACED),
            ("eth_newFilter", FILTERS),
            ("eth_subscribe", WEBSOCKET),
            ("eth_subscription", NOTIFICATIONS),
            ("erigon_nodeInfo", UNKNOWN),
            ("eth_chainIdX", UNKNOWN),
        ] {
            assert_eq!(plan(method, &s), Plan::Keep(why), "{method}");
        }
    }

    #[test]
    fn only_hex_is_taken_from_the_node() {
        assert!(is_hex("0x0000000000000000000000000000000000000000"));
        assert!(is_hex(&format!("0x{}", "ab".repeat(32))));
        assert!(!is_hex("0x"));
        assert!(!is_hex("0xzz"));
        assert!(!is_hex("1234"));
        assert!(!is_hex(&format!("0x{}", "ab".repeat(33))));
    }

    #[test]
    fn the_logs_range_stops_at_genesis() {
        let mut s = sample(false);
        s.head = 3;
        assert_eq!(s.logs_from(), 0);
    }
}
