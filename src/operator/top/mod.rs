//! `ya-runtime-erigon top`: the provider's activities live, as htop shows processes.
//!
//! `metrics` answers "how much, in total" for Prometheus; an operator watching a
//! busy provider asks "who is calling how fast, right now, and is the node keeping
//! up", which only rates between two readings answer. `top` takes a reading every
//! second from the same files and shows the differences. On a terminal it is a
//! full-screen view (`screen`), since that is where an operator on SSH looks; into a
//! pipe it prints the same table as plain text (`table`), so a cron job, a ticket or
//! a test gets the very numbers the screen shows.

mod screen;
pub mod table;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use table::{Sort, View};

use crate::metrics::Aggregate;
use crate::text::printable;
use crate::NAME;

pub const COMMAND: &str = "top";

pub const USAGE: &str = "\
Usage: ya-runtime-erigon top [--config FILE] [--delay SECS] [--iterations N]

Shows this provider's live activities, refreshed every second: per activity its
network, user, uptime, calls and compute units per second, refusals (in total and
per second), the node's p50 and p99 answer time, its WebSockets and subscriptions;
above them each network's node (up or down, synced, head block and its age, peers)
and the provider's totals (starts, failed starts, stops, calls of ended activities).
The first frame's rates are averages since each activity started; the next ones
are over the last interval. A `-` is a value with nothing to measure yet.

Keys: q, Esc or Ctrl-C quit; c calls/s, u CU/s, r refusals, p p99, n network and
user, t uptime, w websockets sort by that column (marked [LIKE THIS]); R or i
reverses the order; Up, Down, PgUp, PgDn, Home and End scroll.

When standard output is not a terminal, or with --iterations, it prints the table
as plain text instead (no escape codes), sorted by calls/s: once, or N times one
delay apart, and exits.

Options:
  --config FILE       the runtime's configuration (default: the one the runtime reads)
  -d, --delay SECS    seconds between refreshes, 0.2 to 60 (default: 1)
  -n, --iterations N  print N plain-text frames, one per delay, and exit
  -h, --help          print this text
";

/// What went wrong, and the exit code it gets: 2 for the command line itself, as
/// most tools do, 1 for anything else.
enum Failure {
    Usage(String),
    Run(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Run(e)
    }
}

struct Options {
    config: PathBuf,
    delay: Duration,
    iterations: Option<u64>,
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let failure = match options(args) {
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Some(options)) => match run(&options) {
            Ok(code) => return code,
            Err(e) => e,
        },
        Err(e) => e,
    };
    let (e, code) = match failure {
        Failure::Usage(e) => (e, 2),
        Failure::Run(e) => (e, 1),
    };
    eprintln!("{NAME} {COMMAND}: {e} (see `{NAME} {COMMAND} --help`)");
    ExitCode::from(code)
}

fn options(args: impl IntoIterator<Item = OsString>) -> Result<Option<Options>, Failure> {
    let mut args = super::text_args(args).map_err(Failure::Usage)?;
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(None);
    }
    let config = super::config_arg(&mut args).map_err(Failure::Usage)?;
    let delay =
        match super::take_option(&mut args, &["--delay", "-d"], "SECS").map_err(Failure::Usage)? {
            Some(text) => delay(&text)?,
            None => Duration::from_secs(1),
        };
    let iterations = match super::take_option(&mut args, &["--iterations", "-n"], "N")
        .map_err(Failure::Usage)?
    {
        Some(text) => Some(iterations(&text)?),
        None => None,
    };
    if let Some(extra) = args.first() {
        return Err(Failure::Usage(format!(
            "unknown argument {}; accepted: --config FILE, --delay SECS, --iterations N, --help",
            printable(extra)
        )));
    }
    Ok(Some(Options {
        config,
        delay,
        iterations,
    }))
}

fn delay(text: &str) -> Result<Duration, Failure> {
    let refused = || {
        Failure::Usage(format!(
            "--delay {} is not accepted; accepted: seconds from 0.2 to 60, such as 1 or 0.5",
            printable(text)
        ))
    };
    let secs: f64 = text.trim().parse().map_err(|_| refused())?;
    if !(0.2..=60.0).contains(&secs) {
        return Err(refused());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| refused())
}

fn iterations(text: &str) -> Result<u64, Failure> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            Failure::Usage(format!(
                "--iterations {} is not accepted; accepted: a whole number of frames, 1 or more",
                printable(text)
            ))
        })
}

/// Unix seconds now: the activities' start times and the node's probe times are.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time shown in each frame's title.
fn shown_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// One collection, with when it was taken.
struct Sample {
    aggregate: Aggregate,
    at: Instant,
}

impl Sample {
    fn take(source: &super::Source) -> Result<Sample, String> {
        Ok(Sample {
            aggregate: source.collect()?,
            at: Instant::now(),
        })
    }

    /// The frame of `self`, with rates since `previous`.
    fn view(&self, previous: Option<&Sample>, sort: Sort) -> View {
        let secs = previous.map_or(0.0, |p| {
            self.at.saturating_duration_since(p.at).as_secs_f64()
        });
        let mut view = View::new(
            previous.map(|p| &p.aggregate),
            &self.aggregate,
            secs,
            unix_now(),
        );
        view.sort(sort);
        view
    }
}

fn run(options: &Options) -> Result<ExitCode, Failure> {
    let source = super::Source::open(&options.config, COMMAND)?;
    // Read once before anything is drawn, so that an unreadable metrics folder is
    // an error on a clean terminal rather than a screen that says so.
    let first = Sample::take(&source)?;
    if options.iterations.is_none() && std::io::stdout().is_terminal() {
        return Ok(screen::run(&source, first, options.delay)?);
    }
    plain(&source, first, options)?;
    Ok(ExitCode::SUCCESS)
}

/// The frames as text on standard output. A reader that goes away (`| head`) ends
/// the output quietly.
fn plain(source: &super::Source, first: Sample, options: &Options) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let mut previous: Option<Sample> = None;
    let mut next = Some(first);
    for i in 0..options.iterations.unwrap_or(1) {
        let sample = match next.take() {
            Some(sample) => sample,
            None => {
                std::thread::sleep(options.delay);
                Sample::take(source)?
            }
        };
        let sort = Sort::default();
        let mut text = sample
            .view(previous.as_ref(), sort)
            .plain(sort, &shown_now());
        if i > 0 {
            text.insert(0, '\n');
        }
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("cannot write to standard output: {e}")),
            Ok(()) => {}
        }
        previous = Some(sample);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        options(args.iter().map(OsString::from)).map_err(|e| match e {
            Failure::Usage(e) => format!("usage: {e}"),
            Failure::Run(e) => format!("run: {e}"),
        })
    }

    #[test]
    fn the_options_and_their_refusals() {
        let o = parse(&["--config", "/c.json", "-d", "0.5", "--iterations=3"])
            .unwrap()
            .unwrap();
        assert_eq!(o.config, PathBuf::from("/c.json"));
        assert_eq!(
            (o.delay, o.iterations),
            (Duration::from_millis(500), Some(3))
        );
        let o = parse(&["--delay=60", "-n", "1"]).unwrap().unwrap();
        assert_eq!((o.delay, o.iterations), (Duration::from_secs(60), Some(1)));
        assert!(parse(&["x", "--help"]).unwrap().is_none());
        for (args, said) in [
            (
                &["--delay", "0.1"][..],
                "usage: --delay 0.1 is not accepted; accepted: seconds from 0.2 to 60",
            ),
            (&["--delay", "NaN"], "usage: --delay NaN is not accepted"),
            (&["--delay", "61"], "usage: --delay 61 is not accepted"),
            (&["--delay"], "usage: --delay needs a value (SECS)"),
            (
                &["-d", "1", "--delay", "2"],
                "usage: --delay is given twice",
            ),
            (
                &["--iterations", "0"],
                "usage: --iterations 0 is not accepted; accepted: a whole number",
            ),
            (
                &["--bogus"],
                "usage: unknown argument --bogus; accepted: --config FILE, --delay SECS",
            ),
        ] {
            let e = parse(args).err().unwrap_or_default();
            assert!(e.starts_with(said), "{args:?}: {e}");
        }
    }
}
