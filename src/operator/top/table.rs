//! What `top` shows, computed from two successive collections and nothing else.
//!
//! The runtimes leave only running totals in the metrics folder; a rate exists only
//! between two readings. Keeping the arithmetic here, apart from the terminal, lets
//! the screen and the plain text show the very same numbers, and lets the tests pin
//! them down without a terminal or a clock: the caller passes the interval and the
//! time.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::metrics::{ActivityFile, Aggregate, NodeFile, Reading};

/// The columns, in screen order.
pub const HEADERS: [&str; 11] = [
    "NETWORK", "USER", "UPTIME", "CALLS/S", "CU/S", "REFUSED", "REF/S", "P50", "P99", "WS", "SUBS",
];

/// Columns shown left-aligned (text); the others are numbers, right-aligned.
pub const LEFT: usize = 2;

/// What the rows can be sorted by, each with its key (see `screen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// Network, then user.
    Name,
    Uptime,
    Calls,
    Units,
    /// Refusals per second, then in total.
    Refusals,
    P99,
    /// WebSockets, then subscriptions.
    WebSockets,
}

impl Column {
    pub const ALL: [Column; 7] = [
        Column::Calls,
        Column::Units,
        Column::Refusals,
        Column::P99,
        Column::Name,
        Column::Uptime,
        Column::WebSockets,
    ];

    /// The key that sorts by this column.
    pub fn key(self) -> char {
        match self {
            Column::Name => 'n',
            Column::Uptime => 't',
            Column::Calls => 'c',
            Column::Units => 'u',
            Column::Refusals => 'r',
            Column::P99 => 'p',
            Column::WebSockets => 'w',
        }
    }

    pub fn of_key(key: char) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.key() == key)
    }

    /// As the footer names it.
    pub fn name(self) -> &'static str {
        match self {
            Column::Name => "network/user",
            Column::Uptime => "uptime",
            Column::Calls => "calls/s",
            Column::Units => "CU/s",
            Column::Refusals => "refusals",
            Column::P99 => "p99",
            Column::WebSockets => "websockets",
        }
    }

    /// The index in [`HEADERS`] marked as sorted.
    pub fn header(self) -> usize {
        match self {
            Column::Name => 0,
            Column::Uptime => 2,
            Column::Calls => 3,
            Column::Units => 4,
            Column::Refusals => 6,
            Column::P99 => 8,
            Column::WebSockets => 9,
        }
    }

    /// Numbers are most useful largest first, names in alphabetical order.
    fn natural_descending(self) -> bool {
        self != Column::Name
    }
}

/// A column and a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    pub column: Column,
    pub descending: bool,
}

impl Default for Sort {
    /// The busiest activity first, as top puts the busiest process first.
    fn default() -> Self {
        Sort::by(Column::Calls)
    }
}

impl Sort {
    /// By `column`, in its natural direction.
    pub fn by(column: Column) -> Sort {
        Sort {
            column,
            descending: column.natural_descending(),
        }
    }

    pub fn reversed(self) -> Sort {
        Sort {
            descending: !self.descending,
            ..self
        }
    }

    pub fn describe(&self) -> String {
        let order = match (self.column, self.descending) {
            (Column::Name, false) => "A to Z",
            (Column::Name, true) => "Z to A",
            (_, true) => "highest first",
            (_, false) => "lowest first",
        };
        format!("sorted by {}, {order}", self.column.name())
    }
}

/// One live activity over the interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub network: String,
    pub user: String,
    pub uptime_secs: u64,
    /// `None` when there is no span to divide by (an activity that started this
    /// second).
    pub calls_per_sec: Option<f64>,
    pub units_per_sec: Option<f64>,
    pub refusals: u64,
    pub refusals_per_sec: Option<f64>,
    /// `None` when the node timed no request of the activity in the interval.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub websockets: u64,
    pub subscriptions: u64,
}

/// One network's line above the table.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkLine {
    pub name: String,
    /// `None` when no runtime has probed its node yet.
    pub node: Option<NodeFile>,
    pub live: usize,
    pub starts: u64,
    pub stops: u64,
    pub lost: u64,
    pub ended_calls: u64,
}

/// The provider's totals since its metrics folder was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderLine {
    pub live: usize,
    pub starts: u64,
    pub failed_starts: u64,
    pub stops: u64,
    pub lost: u64,
    pub ended_calls: u64,
    pub ended_units: u64,
}

/// Over what the rates were taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Span {
    /// The first frame: each activity's average since it started.
    SinceStart,
    /// Between the last two collections, this many seconds apart.
    Interval(f64),
}

/// One frame.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub span: Span,
    /// Unix seconds of the collection.
    pub now: u64,
    pub provider: ProviderLine,
    /// The networks with something to say: a probed node, a live activity, or a
    /// start or stop counted.
    pub networks: Vec<NetworkLine>,
    /// The configured networks with nothing to say, on one line.
    pub idle: Vec<String>,
    pub rows: Vec<Row>,
}

fn sum<'a>(values: impl IntoIterator<Item = &'a u64>) -> u64 {
    values.into_iter().fold(0u64, |s, n| s.saturating_add(*n))
}

fn per_sec(delta: u64, secs: Option<f64>) -> Option<f64> {
    secs.filter(|s| *s > 0.0).map(|s| delta as f64 / s)
}

/// The same activity in the previous collection, if its counters follow on.
fn previous_of<'a>(
    previous: &BTreeMap<(&str, &str), &'a ActivityFile>,
    file: &ActivityFile,
) -> Option<&'a Reading> {
    let was = previous.get(&(file.network.as_str(), file.user.as_str()))?;
    let same = was.activity == file.activity && was.started_at == file.started_at;
    let follows = was.reading.billed_calls <= file.reading.billed_calls
        && was.reading.billed_units <= file.reading.billed_units;
    (same && follows).then_some(&was.reading)
}

fn row(file: &ActivityFile, before: Option<&Reading>, interval: f64, now: u64) -> Row {
    let uptime_secs = now.saturating_sub(file.started_at);
    // Without an earlier reading, the rates are averages over the activity's life.
    let secs = match before {
        Some(_) => Some(interval),
        None => Some(uptime_secs as f64),
    };
    let r = &file.reading;
    let zero = Reading::default();
    let b = before.unwrap_or(&zero);
    Row {
        network: file.network.clone(),
        user: file.user.clone(),
        uptime_secs,
        calls_per_sec: per_sec(r.billed_calls.saturating_sub(b.billed_calls), secs),
        units_per_sec: per_sec(r.billed_units.saturating_sub(b.billed_units), secs),
        refusals: r.refusals(),
        refusals_per_sec: per_sec(r.refusals().saturating_sub(b.refusals()), secs),
        p50: r.node_quantile(before, 0.5),
        p99: r.node_quantile(before, 0.99),
        websockets: r.websockets,
        subscriptions: r.subscriptions,
    }
}

impl View {
    /// The frame for `current`, with rates since `previous` (taken `interval`
    /// seconds earlier), or since each activity started when there is none. `now`
    /// is the current collection's Unix time in seconds.
    pub fn new(previous: Option<&Aggregate>, current: &Aggregate, interval: f64, now: u64) -> View {
        let before: BTreeMap<(&str, &str), &ActivityFile> = previous
            .map(|p| {
                p.activities
                    .iter()
                    .map(|a| ((a.network.as_str(), a.user.as_str()), a))
                    .collect()
            })
            .unwrap_or_default();
        let rows = current
            .activities
            .iter()
            .map(|a| row(a, previous_of(&before, a), interval, now))
            .collect();
        let totals = &current.totals;
        let mut names = current.networks.clone();
        names.extend(current.activities.iter().map(|a| a.network.clone()));
        names.extend(current.nodes.keys().cloned());
        let mut networks = Vec::new();
        let mut idle = Vec::new();
        for name in names {
            let count = |map: &BTreeMap<String, u64>| map.get(&name).copied().unwrap_or(0);
            let line = NetworkLine {
                node: current.nodes.get(&name).cloned(),
                live: current
                    .activities
                    .iter()
                    .filter(|a| a.network == name)
                    .count(),
                starts: count(&totals.starts),
                stops: count(&totals.stops),
                lost: count(&totals.lost),
                ended_calls: totals.ended.get(&name).map_or(0, |e| e.calls),
                name,
            };
            let quiet = line.node.is_none()
                && line.live == 0
                && line.starts == 0
                && line.stops == 0
                && line.lost == 0;
            match quiet {
                true => idle.push(line.name),
                false => networks.push(line),
            }
        }
        View {
            span: match previous {
                Some(_) => Span::Interval(interval),
                None => Span::SinceStart,
            },
            now,
            provider: ProviderLine {
                live: current.activities.len(),
                starts: sum(totals.starts.values()),
                failed_starts: sum(totals.start_failures.values()),
                stops: sum(totals.stops.values()),
                lost: sum(totals.lost.values()),
                ended_calls: sum(totals.ended.values().map(|e| &e.calls)),
                ended_units: sum(totals.ended.values().map(|e| &e.units)),
            },
            networks,
            idle,
            rows,
        }
    }

    /// Orders the rows; equal keys fall back to the user, so that rows do not swap
    /// places from one frame to the next.
    pub fn sort(&mut self, sort: Sort) {
        self.rows.sort_by(|a, b| {
            let key = compare(a, b, sort.column);
            let key = if sort.descending { key.reverse() } else { key };
            key.then_with(|| a.user.cmp(&b.user))
                .then_with(|| a.network.cmp(&b.network))
        });
    }

    /// The lines above the table: the provider, each network, the idle networks.
    pub fn summary(&self) -> Vec<String> {
        let p = &self.provider;
        let mut lines = vec![format!(
            "provider: {} live, {} started, {} failed to start, {} stopped, {} lost; ended: {} calls, {} CU",
            p.live, p.starts, p.failed_starts, p.stops, p.lost, p.ended_calls, p.ended_units
        )];
        let width = self
            .networks
            .iter()
            .map(|n| n.name.len())
            .max()
            .unwrap_or(0);
        for n in &self.networks {
            lines.push(format!(
                "{:<width$}  {}; {} live, {} started, {} stopped, {} lost, {} calls ended",
                n.name,
                node_state(n.node.as_ref(), self.now),
                n.live,
                n.starts,
                n.stops,
                n.lost,
                n.ended_calls
            ));
        }
        if !self.idle.is_empty() {
            lines.push(format!(
                "idle (node not probed, nothing started): {}",
                self.idle.join(" ")
            ));
        }
        lines
    }

    /// How the rates were taken, for the title.
    pub fn span_text(&self) -> String {
        match self.span {
            Span::SinceStart => "rates since each activity started".into(),
            Span::Interval(s) => format!("rates over the last {s:.1}s"),
        }
    }

    /// The headers, the sorted one in brackets.
    pub fn headers(sort: Sort) -> Vec<String> {
        HEADERS
            .iter()
            .enumerate()
            .map(|(i, h)| match i == sort.column.header() {
                true => format!("[{h}]"),
                false => (*h).to_owned(),
            })
            .collect()
    }

    /// Each row's cells, in [`HEADERS`] order.
    pub fn cells(row: &Row) -> [String; HEADERS.len()] {
        [
            row.network.clone(),
            row.user.clone(),
            uptime(row.uptime_secs),
            rate(row.calls_per_sec),
            rate(row.units_per_sec),
            row.refusals.to_string(),
            rate(row.refusals_per_sec),
            latency(row.p50),
            latency(row.p99),
            row.websockets.to_string(),
            row.subscriptions.to_string(),
        ]
    }

    /// The frame as plain text (no escape codes), sorted as it is: for a pipe or a
    /// file. `at` is the time to show in the title.
    pub fn plain(&self, sort: Sort, at: &str) -> String {
        let mut out = format!(
            "{} top at {at}, {}, {}\n",
            crate::NAME,
            self.span_text(),
            sort.describe()
        );
        for line in self.summary() {
            out.push_str(&line);
            out.push('\n');
        }
        out.push('\n');
        let mut table = vec![View::headers(sort)];
        table.extend(self.rows.iter().map(|r| View::cells(r).to_vec()));
        for line in align(&table) {
            out.push_str(&line);
            out.push('\n');
        }
        if self.rows.is_empty() {
            out.push_str("(no live activity)\n");
        }
        out
    }
}

/// Lines of cells padded to their column's width, two spaces apart; text columns to
/// the left, numbers to the right.
pub fn align(table: &[Vec<String>]) -> Vec<String> {
    let widths = widths(table);
    table
        .iter()
        .map(|cells| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, w))| match i < LEFT {
                    true => format!("{cell:<w$}"),
                    false => format!("{cell:>w$}"),
                })
                .collect();
            padded.join("  ").trim_end().to_owned()
        })
        .collect()
}

/// Each column's width: its widest cell, in characters.
pub fn widths(table: &[Vec<String>]) -> Vec<usize> {
    let mut widths = vec![0usize; HEADERS.len()];
    for cells in table {
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

fn compare(a: &Row, b: &Row, column: Column) -> Ordering {
    fn opt<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Ordering {
        // Nothing measured sorts below any measurement.
        match (a, b) {
            (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }
    match column {
        Column::Name => (&a.network, &a.user).cmp(&(&b.network, &b.user)),
        Column::Uptime => a.uptime_secs.cmp(&b.uptime_secs),
        Column::Calls => opt(a.calls_per_sec, b.calls_per_sec),
        Column::Units => opt(a.units_per_sec, b.units_per_sec),
        Column::Refusals => {
            opt(a.refusals_per_sec, b.refusals_per_sec).then(a.refusals.cmp(&b.refusals))
        }
        Column::P99 => opt(a.p99, b.p99),
        Column::WebSockets => (a.websockets, a.subscriptions).cmp(&(b.websockets, b.subscriptions)),
    }
}

fn node_state(node: Option<&NodeFile>, now: u64) -> String {
    let Some(node) = node else {
        return "node not probed yet".into();
    };
    let probed = format!("probed {} ago", uptime(now.saturating_sub(node.probed_at)));
    if !node.up {
        return format!("node DOWN ({probed})");
    }
    let mut parts = vec![match node.synced {
        Some(true) => "node up, synced".to_owned(),
        Some(false) => "node up, SYNCING".to_owned(),
        None => "node up, sync unknown".to_owned(),
    }];
    if let Some(block) = node.head_block {
        let age = node
            .head_age_secs
            .map(|a| format!(" ({} old)", uptime(u64::try_from(a).unwrap_or(0))))
            .unwrap_or_default();
        parts.push(format!("head {block}{age}"));
    }
    if let Some(peers) = node.peers {
        parts.push(format!("{peers} peers"));
    }
    format!("{} ({probed})", parts.join(", "))
}

/// `45s`, `12m05s`, `3h07m`, `2d04h`.
pub fn uptime(secs: u64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match () {
        _ if d > 0 => format!("{d}d{:02}h", h % 24),
        _ if h > 0 => format!("{h}h{:02}m", m % 60),
        _ if m > 0 => format!("{m}m{:02}s", secs % 60),
        _ => format!("{secs}s"),
    }
}

/// One decimal, `-` when there is nothing to divide by.
pub fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// Three significant digits or so, in ms or s; `-` when nothing was timed.
pub fn latency(value: Option<Duration>) -> String {
    let Some(d) = value else {
        return "-".into();
    };
    let ms = d.as_secs_f64() * 1000.0;
    match () {
        _ if ms < 10.0 => format!("{ms:.2}ms"),
        _ if ms < 100.0 => format!("{ms:.1}ms"),
        _ if ms < 1000.0 => format!("{ms:.0}ms"),
        _ => format!("{:.2}s", ms / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Ended, Totals, BUCKETS_MICROS};
    use crate::owner::Owner;

    fn activity(
        user: &str,
        network: &str,
        started_at: u64,
        calls: u64,
        units: u64,
    ) -> ActivityFile {
        let mut a = ActivityFile::new(user, network, "act", Owner::current().unwrap(), started_at);
        a.reading.billed_calls = calls;
        a.reading.billed_units = units;
        a
    }

    /// `n` requests timed at about `micros`.
    fn timed(a: &mut ActivityFile, micros: u64, n: u64) {
        let at = BUCKETS_MICROS.partition_point(|b| *b < micros);
        a.reading.node_buckets.resize(BUCKETS_MICROS.len() + 1, 0);
        a.reading.node_buckets[at] += n;
    }

    fn aggregate(activities: Vec<ActivityFile>) -> Aggregate {
        Aggregate {
            networks: ["dev", "sepolia", "mainnet"].map(String::from).into(),
            activities,
            ..Aggregate::default()
        }
    }

    fn row<'a>(view: &'a View, user: &str) -> &'a Row {
        view.rows.iter().find(|r| r.user == user).unwrap()
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        let mut a = activity("dev-a", "dev", 1000, 100, 2000);
        a.reading.refused.insert("cu_per_sec".into(), 4);
        timed(&mut a, 800, 10);
        let before = aggregate(vec![a.clone()]);
        a.reading.billed_calls = 130;
        a.reading.billed_units = 2600;
        a.reading.refused.insert("cu_per_sec".into(), 10);
        a.reading.websockets = 2;
        a.reading.subscriptions = 3;
        // The interval's requests are slow ones; the earlier fast ones do not count.
        timed(&mut a, 40_000, 20);
        let now = aggregate(vec![a]);
        let view = View::new(Some(&before), &now, 2.0, 1125);
        let r = row(&view, "dev-a");
        assert_eq!(r.uptime_secs, 125);
        assert_eq!(r.calls_per_sec, Some(15.0));
        assert_eq!(r.units_per_sec, Some(300.0));
        assert_eq!((r.refusals, r.refusals_per_sec), (10, Some(3.0)));
        let (p50, p99) = (r.p50.unwrap(), r.p99.unwrap());
        assert!(
            p50 > Duration::from_millis(25) && p99 <= Duration::from_millis(50),
            "{p50:?} {p99:?}"
        );
        assert_eq!((r.websockets, r.subscriptions), (2, 3));
        assert_eq!(view.span, Span::Interval(2.0));
        let cells = View::cells(r);
        assert_eq!(
            cells[..7],
            ["dev", "dev-a", "2m05s", "15.0", "300.0", "10", "3.0"]
        );
        assert_eq!(cells[9..], ["2", "3"]);
    }

    #[test]
    fn nothing_timed_in_the_interval_shows_a_dash() {
        let mut a = activity("dev-a", "dev", 0, 5, 5);
        timed(&mut a, 800, 10);
        let before = aggregate(vec![a.clone()]);
        let view = View::new(Some(&before), &aggregate(vec![a]), 1.0, 10);
        let cells = View::cells(row(&view, "dev-a"));
        assert_eq!(
            (cells[3].as_str(), cells[7].as_str(), cells[8].as_str()),
            ("0.0", "-", "-")
        );
    }

    #[test]
    fn without_an_earlier_reading_rates_are_averages_since_the_start() {
        let old = activity("dev-old", "dev", 100, 50, 500);
        let before = aggregate(vec![old.clone()]);
        let mut fresh = activity("dev-new", "dev", 190, 40, 400);
        timed(&mut fresh, 800, 4);
        let view = View::new(
            Some(&before),
            &aggregate(vec![old.clone(), fresh]),
            1.0,
            200,
        );
        let r = row(&view, "dev-new");
        assert_eq!((r.calls_per_sec, r.units_per_sec), (Some(4.0), Some(40.0)));
        assert!(r.p50.is_some(), "its whole life's requests count");
        assert_eq!(row(&view, "dev-old").calls_per_sec, Some(0.0));
        // The first frame has no earlier collection at all.
        let first = View::new(None, &before, 0.0, 200);
        assert_eq!(first.span, Span::SinceStart);
        assert_eq!(row(&first, "dev-old").calls_per_sec, Some(0.5));
        // One that started this very second has nothing to divide by.
        let now = View::new(
            None,
            &aggregate(vec![activity("dev-z", "dev", 200, 3, 3)]),
            0.0,
            200,
        );
        assert_eq!(View::cells(row(&now, "dev-z"))[3], "-");
    }

    #[test]
    fn a_new_activity_under_an_old_name_starts_over() {
        let old = activity("dev-a", "dev", 100, 500, 5000);
        let new = activity("dev-a", "dev", 150, 20, 200);
        let view = View::new(Some(&aggregate(vec![old])), &aggregate(vec![new]), 1.0, 160);
        assert_eq!(row(&view, "dev-a").calls_per_sec, Some(2.0));
    }

    #[test]
    fn sorting_by_each_column_both_ways_with_ties_by_user() {
        let before = aggregate(vec![
            activity("u-c", "dev", 10, 0, 0),
            activity("u-a", "sepolia", 20, 0, 0),
            activity("u-b", "dev", 30, 0, 0),
        ]);
        let mut now = before.clone();
        for (a, (calls, units, ws)) in
            now.activities
                .iter_mut()
                .zip([(5, 500, 1), (9, 90, 0), (5, 50, 2)])
        {
            a.reading.billed_calls = calls;
            a.reading.billed_units = units;
            a.reading.websockets = ws;
        }
        now.activities[1].reading.refused.insert("batch".into(), 7);
        let mut view = View::new(Some(&before), &now, 1.0, 100);
        let sorted = |view: &mut View, sort: Sort| {
            view.sort(sort);
            view.rows.iter().map(|r| r.user.clone()).collect::<Vec<_>>()
        };
        // Calls tie at 5: the user breaks it, in both directions.
        assert_eq!(sorted(&mut view, Sort::default()), ["u-a", "u-b", "u-c"]);
        assert_eq!(
            sorted(&mut view, Sort::default().reversed()),
            ["u-b", "u-c", "u-a"]
        );
        assert_eq!(
            sorted(&mut view, Sort::by(Column::Units)),
            ["u-c", "u-a", "u-b"]
        );
        assert_eq!(
            sorted(&mut view, Sort::by(Column::Units).reversed()),
            ["u-b", "u-a", "u-c"]
        );
        assert_eq!(
            sorted(&mut view, Sort::by(Column::Name)),
            ["u-b", "u-c", "u-a"]
        );
        assert_eq!(
            sorted(&mut view, Sort::by(Column::Uptime)),
            ["u-c", "u-a", "u-b"]
        );
        assert_eq!(
            sorted(&mut view, Sort::by(Column::Refusals)),
            ["u-a", "u-b", "u-c"]
        );
        assert_eq!(
            sorted(&mut view, Sort::by(Column::WebSockets)),
            ["u-b", "u-c", "u-a"]
        );
        // Nothing timed anywhere: all tie, by user.
        assert_eq!(
            sorted(&mut view, Sort::by(Column::P99)),
            ["u-a", "u-b", "u-c"]
        );
        for column in Column::ALL {
            assert_eq!(Column::of_key(column.key()), Some(column));
        }
    }

    #[test]
    fn a_measured_latency_sorts_above_none() {
        let mut slow = activity("u-slow", "dev", 0, 1, 1);
        timed(&mut slow, 2_000_000, 1);
        let mut fast = activity("u-fast", "dev", 0, 1, 1);
        timed(&mut fast, 200, 1);
        let none = activity("u-none", "dev", 0, 1, 1);
        let mut view = View::new(None, &aggregate(vec![none, fast, slow]), 0.0, 10);
        view.sort(Sort::by(Column::P99));
        let order: Vec<&str> = view.rows.iter().map(|r| r.user.as_str()).collect();
        assert_eq!(order, ["u-slow", "u-fast", "u-none"]);
    }

    #[test]
    fn the_summary_names_each_networks_node_and_the_totals() {
        let mut now = aggregate(vec![activity("dev-a", "dev", 0, 1, 1)]);
        let mut node = NodeFile::new("dev", 95);
        node.up = true;
        node.synced = Some(true);
        node.head_block = Some(1234);
        node.head_age_secs = Some(12);
        node.peers = Some(25);
        now.nodes.insert("dev".into(), node);
        let mut down = NodeFile::new("sepolia", 40);
        down.up = false;
        now.nodes.insert("sepolia".into(), down);
        now.totals = Totals {
            starts: [("dev".to_string(), 5), ("sepolia".to_string(), 2)].into(),
            start_failures: [("node".to_string(), 1), ("ports".to_string(), 2)].into(),
            stops: [("dev".to_string(), 4)].into(),
            lost: [("sepolia".to_string(), 1)].into(),
            ended: [(
                "dev".to_string(),
                Ended {
                    activities: 4,
                    calls: 70,
                    units: 700,
                },
            )]
            .into(),
            ..Totals::default()
        };
        let view = View::new(None, &now, 0.0, 100);
        let lines = view.summary();
        assert_eq!(
            lines[0],
            "provider: 1 live, 7 started, 3 failed to start, 4 stopped, 1 lost; ended: 70 calls, 700 CU"
        );
        assert_eq!(
            lines[1],
            "dev      node up, synced, head 1234 (12s old), 25 peers (probed 5s ago); 1 live, 5 started, 4 stopped, 0 lost, 70 calls ended"
        );
        assert!(
            lines[2].starts_with("sepolia  node DOWN (probed 1m00s ago); 0 live"),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], "idle (node not probed, nothing started): mainnet");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn the_plain_text_is_aligned_and_marks_the_sorted_column() {
        let mut a = activity("dev-long-user-name", "dev", 0, 0, 0);
        timed(&mut a, 800, 3);
        let b = activity("dev-b", "dev", 0, 0, 0);
        let before = aggregate(vec![a.clone(), b.clone()]);
        a.reading.billed_calls = 12;
        let mut view = View::new(Some(&before), &aggregate(vec![a, b]), 1.0, 3700);
        view.sort(Sort::by(Column::Units));
        let text = view.plain(Sort::by(Column::Units), "T");
        assert!(text.starts_with(
            "ya-runtime-erigon top at T, rates over the last 1.0s, sorted by CU/s, highest first\n"
        ));
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("NETWORK")).unwrap();
        assert_eq!(
            lines[header],
            "NETWORK  USER                UPTIME  CALLS/S  [CU/S]  REFUSED  REF/S  P50  P99  WS  SUBS"
        );
        assert_eq!(
            lines[header + 1],
            "dev      dev-b                1h01m      0.0     0.0        0    0.0    -    -   0     0"
        );
        assert!(lines[header + 2].starts_with("dev      dev-long-user-name   1h01m     12.0"));
        assert!(text
            .bytes()
            .all(|b| b == b'\n' || (b' '..=b'~').contains(&b)));
        let empty = View::new(None, &aggregate(vec![]), 0.0, 0);
        assert!(empty
            .plain(Sort::default(), "T")
            .ends_with("(no live activity)\n"));
    }

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(
            [0, 59, 61, 3600 + 120, 86_400 * 2 + 3600 * 4].map(uptime),
            ["0s", "59s", "1m01s", "1h02m", "2d04h"]
        );
        assert_eq!(
            [
                None,
                Some(Duration::from_micros(250)),
                Some(Duration::from_micros(12_340)),
                Some(Duration::from_millis(250)),
                Some(Duration::from_millis(2500))
            ]
            .map(latency),
            ["-", "0.25ms", "12.3ms", "250ms", "2.50s"]
        );
        assert_eq!([None, Some(2.26)].map(rate), ["-", "2.3"]);
    }
}
