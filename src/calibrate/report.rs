//! A calibration's result: each method's outcome, the table it gives, and the table
//! the operator reads.

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::units::{Table, MAX_WEIGHT};

/// The call every weight is relative to: it does no work but the request's own, so
/// its weight is what any call costs at least.
pub const BASELINE: &str = "eth_chainId";
pub const BASELINE_WEIGHT: u32 = 10;

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `baseline`: the median of the eth_chainId calls interleaved with this method's,
    /// so that the machine's drift during a run (another process, a clock change)
    /// weighs on both sides of the ratio alike.
    Measured {
        median: Duration,
        baseline: Duration,
    },
    Kept(String),
}

impl Outcome {
    /// The weight the timings give, for `method`.
    pub fn weight(&self, method: &str) -> Option<u32> {
        match self {
            Outcome::Measured { .. } if method == BASELINE => Some(BASELINE_WEIGHT),
            Outcome::Measured { median, baseline } => Some(weight(*median, *baseline)),
            Outcome::Kept(_) => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Row {
    pub method: String,
    /// The weight in the table calibrated, if it lists the method.
    pub before: Option<u32>,
    pub outcome: Outcome,
}

/// The middle of the timings: unlike the mean, one call stalled by the scheduler or
/// the node's own work does not move it.
pub fn median(times: &mut [Duration]) -> Option<Duration> {
    times.sort_unstable();
    let half = times.len() / 2;
    let upper = *times.get(half)?;
    if times.len() % 2 == 1 {
        return Some(upper);
    }
    let lower = half.checked_sub(1).and_then(|i| times.get(i))?;
    lower.checked_add(upper).and_then(|sum| sum.checked_div(2))
}

/// round(10 × median / baseline), at least 1 (no call is free) and at most
/// [`MAX_WEIGHT`] (what a table may hold).
pub fn weight(median: Duration, baseline: Duration) -> u32 {
    let base = baseline.as_nanos().max(1);
    let scaled = median
        .as_nanos()
        .saturating_mul(2 * u128::from(BASELINE_WEIGHT))
        .saturating_add(base)
        .checked_div(base.saturating_mul(2))
        .unwrap_or(u128::MAX);
    u32::try_from(scaled.clamp(1, u128::from(MAX_WEIGHT))).unwrap_or(MAX_WEIGHT)
}

pub struct Calibration {
    pub rows: Vec<Row>,
}

impl Calibration {
    /// The weight a row gets in the new table.
    pub fn weight(&self, row: &Row) -> Option<u32> {
        row.outcome.weight(&row.method).or(row.before)
    }

    /// `before` with the measured weights over it.
    pub fn table(&self, before: &Table, about: String) -> Table {
        let mut methods = before.methods.clone();
        for row in &self.rows {
            if let Some(w) = self.weight(row) {
                methods.insert(row.method.clone(), w);
            }
        }
        Table {
            about,
            default: before.default,
            methods,
        }
    }

    pub fn kept(&self) -> impl Iterator<Item = &str> + '_ {
        self.rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Kept(_)))
            .map(|r| r.method.as_str())
    }

    /// Columns separated by spaces, one method a line, `default` last.
    pub fn render(&self, default: u32) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.method.chars().count())
            .chain([6])
            .max()
            .unwrap_or(6);
        let mut out = format!(
            "{:<width$}  {:>10}  {:>11}  {:>6}  measured\n",
            "method", "median µs", "baseline µs", "before"
        );
        let shown = |w: Option<u32>| w.map_or_else(|| "-".to_owned(), |w| w.to_string());
        let default_row = Row {
            method: "default".into(),
            before: Some(default),
            outcome: Outcome::Kept("the weight of methods the table does not list".into()),
        };
        for row in self.rows.iter().chain([&default_row]) {
            let (median, baseline, now) = match &row.outcome {
                Outcome::Measured { median, baseline } => {
                    (micros(*median), micros(*baseline), shown(self.weight(row)))
                }
                Outcome::Kept(why) => ("-".into(), "-".into(), format!("kept: {why}")),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {median:>10}  {baseline:>11}  {:>6}  {now}",
                row.method,
                shown(row.before)
            );
        }
        out
    }
}

pub fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn weights_are_rounded_ratios_to_the_baseline() {
        assert_eq!(weight(100 * US, 100 * US), 10);
        assert_eq!(weight(126 * US, 100 * US), 13);
        assert_eq!(weight(124 * US, 100 * US), 12);
        assert_eq!(weight(125 * US, 100 * US), 13, "half rounds up");
        assert_eq!(weight(US, 100 * US), 1, "no call is free");
        assert_eq!(weight(Duration::ZERO, Duration::ZERO), 1);
        assert_eq!(weight(Duration::MAX, US), MAX_WEIGHT);
    }

    #[test]
    fn the_median_is_the_middle_timing() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3 * US, US, 100 * US]), Some(3 * US));
        assert_eq!(median(&mut [4 * US, US, 2 * US, 100 * US]), Some(3 * US));
    }

    #[test]
    fn the_new_table_keeps_what_was_not_measured() {
        let before = Table {
            about: String::new(),
            default: 100,
            methods: [("eth_call", 26), ("trace_block", 24), ("eth_chainId", 10)]
                .map(|(m, w)| (m.to_owned(), w))
                .into(),
        };
        let row = |method: &str, outcome| Row {
            method: method.into(),
            before: before.methods.get(method).copied(),
            outcome,
        };
        let measured = |median, baseline| Outcome::Measured { median, baseline };
        let calibration = Calibration {
            rows: vec![
                row("eth_chainId", measured(80 * US, 80 * US)),
                row("eth_call", measured(200 * US, 80 * US)),
                row("trace_block", Outcome::Kept("traced".into())),
            ],
        };
        let table = calibration.table(&before, "measured".into());
        assert_eq!(table.methods["eth_call"], 25);
        assert_eq!(table.methods["trace_block"], 24);
        assert_eq!(table.methods["eth_chainId"], 10);
        assert_eq!(table.default, 100);
        assert_eq!(calibration.kept().collect::<Vec<_>>(), ["trace_block"]);
        let text = calibration.render(100);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[1], ["eth_chainId", "80.0", "80.0", "10", "10"]);
        assert_eq!(lines[2], ["eth_call", "200.0", "80.0", "26", "25"]);
        assert_eq!(lines[3], ["trace_block", "-", "-", "24", "kept:", "traced"]);
        assert_eq!(lines[4][..4], ["default", "-", "-", "100"]);
    }
}
