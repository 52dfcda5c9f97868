//! `ya-runtime-erigon metrics`: the provider's metrics, printed once in
//! Prometheus' text format. For a look by hand, for a scrape through a script
//! exporter, or for node_exporter's textfile folder from cron when the runtimes'
//! own `metrics_file` is not wanted.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::NAME;

pub const COMMAND: &str = "metrics";

pub const USAGE: &str = "\
Usage: ya-runtime-erigon metrics [--config FILE]

Prints this provider's metrics in Prometheus' text format: each live activity's
calls, compute units, refusals, node errors and answer times; each network's live
activities, node state and the totals of the activities that ended; starts, failed
starts and stops. The runtimes keep `metrics_file` current with the same text when
the configuration names one (see the README's section for operators).

Options:
  --config FILE  the runtime's configuration (default: the one the runtime reads)
  -h, --help     print this text
";

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    match run(args) {
        Ok(Some(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{NAME} {COMMAND}: {e} (see `{NAME} {COMMAND} --help`)");
            ExitCode::FAILURE
        }
    }
}

fn run(args: impl IntoIterator<Item = OsString>) -> Result<Option<String>, String> {
    let mut args = super::text_args(args)?;
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(None);
    }
    let file = super::config_arg(&mut args)?;
    if let Some(extra) = args.first() {
        return Err(format!(
            "unknown argument {}; accepted: --config FILE, --help",
            crate::text::printable(extra)
        ));
    }
    let source = super::Source::open(&file, COMMAND)?;
    Ok(Some(crate::metrics::render(&source.collect()?)))
}
