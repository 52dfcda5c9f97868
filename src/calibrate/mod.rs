//! `ya-runtime-erigon calibrate`: prices the compute-unit table on the provider's own
//! node.
//!
//! The shipped table holds hosted services' figures, but what a call costs depends on
//! the node, its disks and its chain: a provider whose eth_getLogs is slow gives it away
//! at another's price. Timing each method against eth_chainId, which does no work but
//! the request's own, gives ratios that hold however fast the machine is, and the
//! operator sees them before deciding to write them (see `config::units` for where the runtime
//! reads them).
//!
//! - `args`: the command line;
//! - `node`: the timed connection to the node;
//! - `plan`: what each method is asked, or why it keeps its weight;
//! - `report`: the weights the timings give, the new table and its display.

mod args;
mod node;
mod plan;
mod report;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::config::units::Table;
use crate::config::Config;
use crate::node::network::Network;
use crate::text::printable;
use crate::NAME;
use args::{Args, Parsed};
use node::{Node, Reply, NOT_FOUND};
use plan::{Plan, Sample};
use report::{Calibration, Outcome, Row, BASELINE};

/// The first argument that selects this command instead of the SDK's.
pub const COMMAND: &str = "calibrate";

/// Untimed calls before each method's timed ones: the first connection, the node's
/// caches and the code paths warm up on them.
const WARMUP: u32 = 5;

/// Runs `calibrate` with the arguments after it; errors go to stderr.
pub async fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match args::parse(args) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{NAME} {COMMAND}: {e} (see `{NAME} {COMMAND} --help`)");
            return ExitCode::from(2);
        }
    };
    match calibrate(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NAME} {COMMAND}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn calibrate(args: &Args) -> Result<(), String> {
    let (config, raw) = crate::config::load_file(&crate::config::default_file(), COMMAND)?;
    let network = match &args.network {
        Some(name) => config
            .networks()
            .resolve(name)
            .map_err(|e| format!("--network: {e} (in {})", config.file().display()))?,
        None => config.default_network().clone(),
    };
    let before = Table::load(config.compute_units_file())?;
    let mut node = Node::new(config.upstream(&network));
    let chain_id = plan::ask(&mut node, BASELINE, json!([]))
        .await
        .map_err(|e| unreachable(&e, &network, &config))?;
    let chain_id = chain_id.as_str().map(printable).ok_or_else(|| {
        format!(
            "{BASELINE} at {} answered {}, not a hex string",
            node.url(),
            printable(&chain_id.to_string())
        )
    })?;
    crate::node::health::check_chain(&chain_id, &network)
        .map_err(|e| format!("{}: {e}", node.url()))?;
    let client = plan::ask(&mut node, "web3_clientVersion", json!([]))
        .await
        .ok()
        .and_then(|v| v.as_str().map(printable))
        .unwrap_or_else(|| "a node that does not name itself".into());
    let sample = Sample::from_node(&mut node).await?;
    let calibration = measure(&mut node, &before, &sample, args.rounds).await?;

    let tx = sample
        .tx
        .as_ref()
        .map(|t| format!(", transaction {}", t.hash))
        .unwrap_or_default();
    println!(
        "Calibrated network {network} at {} ({client}, chain {chain_id}): {} timed calls per method after {WARMUP} warm-up calls.",
        node.url(),
        args.rounds
    );
    println!(
        "Parameters from block {:#x}{tx}; eth_getLogs over blocks {:#x}-{:#x}.\n",
        sample.block,
        sample.logs_from(),
        sample.head
    );
    print!("{}", calibration.render(before.default));
    println!();
    let overridden: Vec<String> = raw
        .get("method_weights")
        .and_then(serde_json::Value::as_object)
        .map(|m| m.keys().map(|k| printable(k)).collect())
        .unwrap_or_default();
    if !overridden.is_empty() {
        println!(
            "Note: `method_weights` in {} sets {}: the runtime bills those at the configured weights, not this table's.",
            config.file().display(),
            overridden.join(", ")
        );
    }
    let target = config.compute_units_file();
    if !args.write {
        let rounds = match args.rounds {
            args::DEFAULT_ROUNDS => String::new(),
            n => format!(" --rounds {n}"),
        };
        println!(
            "Nothing written. To have the runtime bill with measured weights, run `{NAME} {COMMAND} --network {network}{rounds} --write`: it measures again and writes {}.",
            target.display()
        );
        return Ok(());
    }
    let about = format!(
        "Measured by `{NAME} {COMMAND}` on {} against {client} at {} (network {network}, chain {chain_id}, block {:#x}): eth_chainId weighs 10, each measured method round(10 × its median / the median of the eth_chainId calls interleaved with it), over {} calls each. Kept from the previous table: {}.",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        node.url(),
        sample.block,
        args.rounds,
        calibration.kept().collect::<Vec<_>>().join(", ")
    );
    write(&config, &raw, &calibration.table(&before, about))?;
    println!(
        "Wrote {}. Activities started from now on bill with it; restart ya-provider so that its offers advertise it.",
        target.display()
    );
    Ok(())
}

/// Times each method of `before`. eth_chainId comes first: a node that cannot answer
/// it cannot be calibrated. An error is the node no longer answering; a method it
/// refuses is kept.
async fn measure(
    node: &mut Node,
    before: &Table,
    sample: &Sample,
    rounds: u32,
) -> Result<Calibration, String> {
    let others = before.methods.keys().map(String::as_str);
    let methods: Vec<&str> = std::iter::once(BASELINE)
        .chain(others.filter(|m| *m != BASELINE))
        .collect();
    let bar = progress(methods.len());
    let mut rows = Vec::with_capacity(methods.len());
    for method in methods {
        bar.set_message(method.to_owned());
        let outcome = match plan::plan(method, sample) {
            Plan::Keep(why) => Outcome::Kept(why.into()),
            Plan::Call(params) => time(node, method, &params, rounds).await?,
        };
        if let (BASELINE, Outcome::Kept(why)) = (method, &outcome) {
            return Err(format!(
                "{BASELINE} at {}, which every weight is relative to, cannot be timed: {why}",
                node.url()
            ));
        }
        if bar.is_hidden() {
            eprintln!("{NAME} {COMMAND}: {}", progress_line(method, &outcome));
        }
        bar.inc(1);
        rows.push(Row {
            method: method.to_owned(),
            before: before.methods.get(method).copied(),
            outcome,
        });
    }
    bar.finish_and_clear();
    Ok(Calibration { rows })
}

/// [`WARMUP`] untimed calls, then `rounds` timed ones, each after a timed eth_chainId
/// (the baseline's own rounds are not doubled). Any error answer keeps the method:
/// its parameters do not fit this node, or it is not served.
async fn time(
    node: &mut Node,
    method: &str,
    params: &Value,
    rounds: u32,
) -> Result<Outcome, String> {
    let capacity = usize::try_from(rounds).unwrap_or_default();
    let (mut times, mut baselines) = (Vec::with_capacity(capacity), Vec::with_capacity(capacity));
    let paired = method != BASELINE;
    let no_params = json!([]);
    for round in 0..WARMUP.saturating_add(rounds) {
        let timed = round >= WARMUP;
        if paired && timed {
            let answer = node.call(BASELINE, &no_params).await?;
            if let Reply::Failed { message, .. } = answer.reply {
                return Err(format!(
                    "{BASELINE} at {} failed between {method} calls: {message}",
                    node.url()
                ));
            }
            baselines.push(answer.elapsed);
        }
        let answer = node.call(method, params).await?;
        if let Reply::Failed { code, message } = answer.reply {
            return Ok(Outcome::Kept(match code {
                Some(NOT_FOUND) => format!("the node does not serve it ({NOT_FOUND})"),
                Some(code) => format!("the node answers an error ({code}): {message}"),
                None => format!("the node answers {message}"),
            }));
        }
        if timed {
            times.push(answer.elapsed);
        }
    }
    let median = report::median(&mut times).ok_or_else(|| format!("{method}: no timed call"))?;
    let baseline = report::median(&mut baselines).unwrap_or(median);
    Ok(Outcome::Measured { median, baseline })
}

/// One step a method, on stderr: the bar is drawn only on a terminal, and a log
/// gets a line for each method instead.
fn progress(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(u64::try_from(len).unwrap_or(u64::MAX));
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix("calibrating");
    bar
}

fn progress_line(method: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Measured { median, baseline } => format!(
            "{method}: median {} µs, eth_chainId {} µs, weight {}",
            report::micros(*median),
            report::micros(*baseline),
            outcome.weight(method).unwrap_or_default()
        ),
        Outcome::Kept(why) => format!("{method}: kept: {why}"),
    }
}

/// Why the first call failed, with where the address comes from: a managed
/// network's node listens only while an activity runs it.
fn unreachable(error: &str, network: &Network, config: &Config) -> String {
    let hint = if network.is_shared() {
        format!(
            "is the node running? its address comes from {} in {}",
            if network.node_address().is_some() {
                format!("`networks.{network}.node`")
            } else {
                format!(
                    "`erigon_http_addr` and `erigon_http_port` + slot {}",
                    network.slot()
                )
            },
            config.file().display()
        )
    } else {
        format!(
            "network {network} is managed: its node runs only while an activity uses it, so calibrate while one does"
        )
    };
    format!("cannot calibrate network {network}: {error} ({hint})")
}

/// Replaces the table atomically, once the runtime is known to accept it: a weight
/// above a `cu_burst` would make the configuration invalid, and every activity would
/// then fail to start.
fn write(config: &Config, raw: &Value, table: &Table) -> Result<(), String> {
    let path = config.compute_units_file();
    let shown = path.display();
    let dir = path
        .parent()
        .ok_or_else(|| format!("{shown} has no parent folder"))?;
    let text = serde_json::to_string_pretty(table)
        .map_err(|e| format!("cannot serialize the table: {e}"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".compute-units.")
        .suffix(".json")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot write {shown}: {e}"))?;
    tmp.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.path().display()))?;
    check(config, raw, tmp.path())?;
    tmp.persist(path)
        .map_err(|e| format!("cannot write {shown}: {}", e.error))?;
    Ok(())
}

/// Loads the configuration with the table at `candidate`, as the runtime will.
fn check(config: &Config, raw: &Value, candidate: &Path) -> Result<(), String> {
    let candidate = std::path::absolute(candidate)
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .ok_or_else(|| format!("{} is not a UTF-8 path", candidate.display()))?;
    let mut with_table = raw.clone();
    if let Some(keys) = with_table.as_object_mut() {
        keys.insert("compute_units_file".into(), Value::String(candidate));
    }
    Config::from_value(&with_table, config.file(), &crate::config::runtime_dir()?)
        .map(drop)
        .map_err(|e| {
            format!(
                "not written: with the measured table the runtime would refuse its configuration: {e}"
            )
        })
}
