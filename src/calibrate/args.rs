//! `calibrate`'s command line, parsed by hand: the SDK's structopt CLI knows only the
//! ExeUnit's commands, and a typo must be refused rather than measured around.

use std::ffi::OsString;
use std::ops::RangeInclusive;

use crate::text::printable;

pub const DEFAULT_ROUNDS: u32 = 50;
/// More than a few thousand calls only lengthens the run: the median has settled.
pub const ROUNDS: RangeInclusive<u32> = 1..=10_000;

pub const USAGE: &str = "\
Usage: ya-runtime-erigon calibrate [--network NAME] [--rounds N] [--write]

Times the read-only JSON-RPC methods of the compute-unit table against this
provider's own node and prints the table the timings give: eth_chainId weighs 10,
and each measured method round(10 × its median / eth_chainId's median), with
eth_chainId timed between the method's calls. Methods the node does not serve,
state-changing methods, filters, subscriptions and the trace_/debug_ families keep
their weights. Run it while the node is in sync and idle: requestors' calls and a
syncing node skew the timings.

Options:
  --network NAME  the network whose node is measured
                  (default: the configuration's default_network)
  --rounds N      timed calls per method, 1 to 10000 (default: 50)
  --write         also write the table where the runtime reads it
                  (compute-units.json next to the configuration)
  -h, --help      print this text
";

const ACCEPTED: &str = "accepted: --network NAME, --rounds N, --write, --help";

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub network: Option<String>,
    pub rounds: u32,
    pub write: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Args),
    Help,
}

/// The arguments after `calibrate`.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut parsed = Args {
        network: None,
        rounds: DEFAULT_ROUNDS,
        write: false,
    };
    let mut rounds_given = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.into_string().map_err(|a| {
            format!(
                "argument {} is not UTF-8; {ACCEPTED}",
                printable(&a.to_string_lossy())
            )
        })?;
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| format!("{name} needs {what}")),
            }
        };
        match name {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--write" if inline.is_none() => parsed.write = true,
            "--network" if parsed.network.is_none() => {
                parsed.network = Some(value("a network name")?);
            }
            "--rounds" if !rounds_given => {
                let text = value("a number")?;
                parsed.rounds = text
                    .parse::<u32>()
                    .ok()
                    .filter(|n| ROUNDS.contains(n))
                    .ok_or_else(|| {
                        format!(
                            "--rounds {}: accepted: {} to {}",
                            printable(&text),
                            ROUNDS.start(),
                            ROUNDS.end()
                        )
                    })?;
                rounds_given = true;
            }
            "--network" | "--rounds" => return Err(format!("{name} is given twice")),
            _ => {
                return Err(format!(
                    "unknown argument `{}`; {ACCEPTED}",
                    printable(&arg)
                ))
            }
        }
    }
    Ok(Parsed::Run(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn reads_every_spelling_and_defaults() {
        assert_eq!(
            parse_str(&[]),
            Ok(Parsed::Run(Args {
                network: None,
                rounds: DEFAULT_ROUNDS,
                write: false
            }))
        );
        let want = Parsed::Run(Args {
            network: Some("sepolia".into()),
            rounds: 7,
            write: true,
        });
        assert_eq!(
            parse_str(&["--network", "sepolia", "--rounds", "7", "--write"]),
            Ok(want)
        );
        let want = Parsed::Run(Args {
            network: Some("sepolia".into()),
            rounds: 7,
            write: false,
        });
        assert_eq!(parse_str(&["--rounds=7", "--network=sepolia"]), Ok(want));
        assert_eq!(parse_str(&["--write", "-h"]), Ok(Parsed::Help));
    }

    #[test]
    fn refuses_what_it_does_not_know_naming_what_it_accepts() {
        let err = parse_str(&["--netwrok", "x"]).unwrap_err();
        assert!(err.contains("unknown argument `--netwrok`"), "{err}");
        assert!(err.contains("accepted: --network NAME"), "{err}");
        let err = parse_str(&["--rounds", "0"]).unwrap_err();
        assert!(err.contains("accepted: 1 to 10000"), "{err}");
        let err = parse_str(&["--rounds", "many"]).unwrap_err();
        assert!(err.contains("--rounds many"), "{err}");
        let err = parse_str(&["--network"]).unwrap_err();
        assert!(err.contains("--network needs a network name"), "{err}");
        let err = parse_str(&["--network", "a", "--network", "b"]).unwrap_err();
        assert!(err.contains("given twice"), "{err}");
        let err = parse_str(&["--write=yes"]).unwrap_err();
        assert!(err.contains("unknown argument `--write=yes`"), "{err}");
    }
}
