//! The Grafana dashboard (conf/grafana-dashboard.json) against the metrics the
//! runtime exposes (src/metrics): every series it names exists, with the labels it
//! selects and groups by; counters are read through rate()/increase() and gauges
//! are not; histograms through histogram_quantile() by `le`; every panel reads the
//! templated data source and the job/instance/network variables; every family is
//! shown somewhere (or is listed in [`LEFT_OUT`] with its reason). promtool parses
//! every expression.
//!
//! The labels each series carries are not written down here: they are read from
//! the runtime's own exposition of an aggregate in which every family has a sample,
//! so that a label added or dropped in `render` is seen here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use ya_runtime_erigon::metrics::{
    render, ActivityFile, Aggregate, NodeFile, BUCKETS_MICROS, METRICS,
};
use ya_runtime_erigon::owner::Owner;

const DASHBOARD: &str = include_str!("../../conf/grafana-dashboard.json");
const TITLE: &str = "ya-runtime-erigon: activities and node";
const PREFIX: &str = "ya_runtime_erigon_";
/// node_exporter's textfile collector exposes the file's series, and Prometheus adds these.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];
/// Functions whose argument must be a counter (or a histogram's series, which are counters).
const COUNTER_FUNCTIONS: [&str; 3] = ["rate", "increase", "irate"];
/// Functions meant for gauges: on a counter they read resets as drops.
const GAUGE_FUNCTIONS: [&str; 4] = ["delta", "idelta", "deriv", "predict_linear"];
const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];
/// Families the dashboard deliberately does not show, each with the reason.
/// Every family is shown today; an entry here must name a family that no panel uses.
const LEFT_OUT: &[(&str, &str)] = &[];
/// The data source variable every panel and query reads, and the import's input
/// (`__inputs`) it defaults to, so that Grafana asks for a Prometheus at import.
const DATASOURCE_VARIABLE: &str = "datasource";
const DATASOURCE_INPUT: &str = "DS_PROMETHEUS";
/// What promtool is given in place of Grafana's variables.
const GRAFANA_INTERVALS: [(&str, &str); 3] = [
    ("__rate_interval", "5m"),
    ("__interval", "1m"),
    ("__range", "1h"),
];
const INSTALL_PROMTOOL: &str = "apt-get install --no-install-recommends prometheus";

// ---------------------------------------------------------------------------------------
// What the runtime exposes.

/// The families (name → type) and, per series name (a histogram's with its suffix),
/// the labels the runtime gives it.
struct Exposed {
    kinds: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// An aggregate in which every family has a sample.
fn everything() -> Aggregate {
    let owner = Owner::current().expect("this process's owner identity");
    let mut a = ActivityFile::new("user-0", "net", "act", owner, 1_700_000_000);
    a.reading.calls.insert("eth_call".into(), 3);
    a.reading.billed_calls = 3;
    a.reading.billed_units = 78;
    a.reading.refused.insert("policy".into(), 1);
    a.reading.node_errors = 1;
    a.reading.node_buckets = vec![1; BUCKETS_MICROS.len() + 1];
    a.reading.node_micros = 1_000;
    a.reading.websockets = 1;
    a.reading.subscriptions = 1;
    let mut all = Aggregate {
        networks: ["net".to_owned()].into(),
        activities: vec![a],
        ..Aggregate::default()
    };
    all.nodes.insert(
        "net".into(),
        NodeFile {
            up: true,
            synced: Some(true),
            head_block: Some(100),
            head_age_secs: Some(2),
            peers: Some(5),
            ..NodeFile::new("net", 1_700_000_000)
        },
    );
    all.totals.starts.insert("net".into(), 2);
    all.totals.stops.insert("net".into(), 1);
    all.totals.lost.insert("net".into(), 1);
    all.totals.start_failures.insert("node".into(), 1);
    all
}

fn exposed() -> Exposed {
    let kinds: BTreeMap<String, String> = METRICS
        .iter()
        .map(|(name, kind, _)| ((*name).to_owned(), (*kind).to_owned()))
        .collect();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in render(&everything()).lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample line");
        let (name, rest) = line.split_at(name_end);
        let set = labels.entry(name.to_owned()).or_default();
        if let Some(inner) = rest.strip_prefix('{') {
            // Label values in the sample hold no quotes or braces.
            let inner = &inner[..inner.find('}').expect("closed labels")];
            for pair in inner.split(',') {
                let (label, _) = pair.split_once('=').expect("label=value");
                set.insert(label.to_owned());
            }
        }
    }
    for (name, kind) in &kinds {
        let series: Vec<String> = match kind.as_str() {
            "histogram" => HISTOGRAM_SUFFIXES
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect(),
            _ => vec![name.clone()],
        };
        for s in series {
            assert!(
                labels.contains_key(&s),
                "{s} has no sample in this test's exposition: extend everything()"
            );
        }
    }
    Exposed { kinds, labels }
}

impl Exposed {
    /// The family and type of a series name, or None when no family exposes it.
    fn resolve<'a>(&'a self, series: &'a str) -> Option<(&'a str, &'a str)> {
        if let Some((family, kind)) = self.kinds.get_key_value(series) {
            return Some((family, kind));
        }
        HISTOGRAM_SUFFIXES.iter().find_map(|suffix| {
            let family = series.strip_suffix(suffix)?;
            let (family, kind) = self.kinds.get_key_value(family)?;
            (kind == "histogram").then_some((family.as_str(), kind.as_str()))
        })
    }

    /// A counter, or a histogram's `_bucket`/`_sum`/`_count` (counters too).
    fn counts(&self, series: &str) -> bool {
        matches!(self.resolve(series), Some((_, "counter" | "histogram")))
    }

    fn has_label(&self, series: &str, label: &str) -> bool {
        TARGET_LABELS.contains(&label)
            || self
                .labels
                .get(series)
                .is_some_and(|set| set.contains(label))
    }
}

// ---------------------------------------------------------------------------------------
// PromQL, as far as the checks need it.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// Numbers and durations.
    Num,
    /// A Grafana variable: `$name` or `${name}`.
    Var,
    /// `=`, `!=`, `=~`, `!~`, comparison operators, and any other punctuation.
    Op(String),
}

fn tokenize(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let take_while = |mut i: usize, f: &dyn Fn(char) -> bool| {
        while i < chars.len() && f(chars[i]) {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            i = take_while(i, &|c| c != '\n');
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c == '$' {
            let braced = chars.get(i + 1) == Some(&'{');
            let start = if braced { i + 2 } else { i + 1 };
            let end = take_while(start, &|c| c.is_ascii_alphanumeric() || c == '_');
            out.push(Tok::Var);
            i = if braced && chars.get(end) == Some(&'}') {
                end + 1
            } else {
                end
            };
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let end = take_while(i, &|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            out.push(Tok::Ident(chars[i..end].iter().collect()));
            i = end;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let end = take_while(i, &|c| c.is_ascii_alphanumeric() || c == '.');
            out.push(Tok::Num);
            i = end;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["=~", "!~", "!=", "==", ">=", "<="].contains(&two.as_str()) {
                out.push(Tok::Op(two));
                i += 2;
            } else {
                out.push(Tok::Op(c.to_string()));
                i += 1;
            }
        }
    }
    out
}

fn is_op(tok: Option<&Tok>, op: &str) -> bool {
    matches!(tok, Some(Tok::Op(o)) if o == op)
}

fn ident(tok: Option<&Tok>) -> Option<&str> {
    match tok {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// The index of the bracket closing the one at `open`.
fn closing(toks: &[Tok], open: usize) -> Option<usize> {
    let (o, c) = match &toks[open] {
        Tok::Op(o) if o == "(" => ("(", ")"),
        Tok::Op(o) if o == "{" => ("{", "}"),
        Tok::Op(o) if o == "[" => ("[", "]"),
        _ => return None,
    };
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        if is_op(Some(t), o) {
            depth += 1;
        } else if is_op(Some(t), c) {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// The index of the bracket opening the one at `close`.
fn opening(toks: &[Tok], close: usize) -> Option<usize> {
    let mut depth = 0usize;
    for i in (0..=close).rev() {
        if is_op(toks.get(i), ")") {
            depth += 1;
        } else if is_op(toks.get(i), "(") {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// The identifiers of a label list `( a, b, … )` opening at `open`.
fn label_list(toks: &[Tok], open: usize) -> Vec<String> {
    let close = closing(toks, open).unwrap_or(toks.len() - 1);
    toks[open + 1..close]
        .iter()
        .filter_map(|t| ident(Some(t)).map(str::to_owned))
        .collect()
}

/// One metric named in an expression: its token's index and name.
struct Ref {
    at: usize,
    name: String,
}

/// What one expression names and how: the problems found, and the families it reads.
#[derive(Default)]
struct ExprReport {
    problems: Vec<String>,
    families: BTreeSet<String>,
    /// The labels of its `by (…)` lists, or, with none, of the series it reads.
    result_labels: BTreeSet<String>,
}

/// How strictly an expression's selectors are checked.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// A panel's: each selector filters on the job, instance and network variables.
    Panel,
    /// A template variable's: the selector is the variable's own business.
    Variable,
}

fn check_expr(expr: &str, m: &Exposed, place: Place) -> ExprReport {
    let toks = tokenize(expr);
    let mut report = ExprReport::default();
    let mut problem = |p: String| report.problems.push(p);
    let mut refs = Vec::new();
    for (at, tok) in toks.iter().enumerate() {
        match tok {
            Tok::Ident(name) if name.starts_with(PREFIX) => {
                refs.push(Ref {
                    at,
                    name: name.clone(),
                });
            }
            Tok::Str(s) if s.contains(PREFIX) => problem(format!(
                "a metric named inside a string ({s:?}), which this check cannot follow"
            )),
            Tok::Op(o) if o == "{" => {
                let named = at.checked_sub(1).and_then(|i| ident(toks.get(i)));
                if !named.is_some_and(|n| n.starts_with(PREFIX)) {
                    problem(format!(
                        "a selector without a metric name before it (token {at})"
                    ));
                }
            }
            _ => {}
        }
    }
    let within = |r: &Ref, span: (usize, usize)| span.0 < r.at && r.at < span.1;

    // Every name is a family, or a histogram family's series.
    for r in &refs {
        match m.resolve(&r.name) {
            Some((family, _)) => {
                report.families.insert(family.to_owned());
            }
            None => problem(format!(
                "{} is not a metric of src/metrics/expose.rs (METRICS), \
                 nor a histogram's _bucket/_sum/_count",
                r.name
            )),
        }
    }
    let refs: Vec<&Ref> = refs
        .iter()
        .filter(|r| m.resolve(&r.name).is_some())
        .collect();

    // Selectors: the labels exist on the series, and the variables filter them.
    for r in &refs {
        let mut matched = BTreeMap::new();
        if is_op(toks.get(r.at + 1), "{") {
            let close = closing(&toks, r.at + 1).unwrap_or(toks.len());
            let inner = &toks[r.at + 2..close];
            for (k, t) in inner.iter().enumerate() {
                let (Some(label), Some(Tok::Op(op))) = (ident(Some(t)), inner.get(k + 1)) else {
                    continue;
                };
                if !["=", "!=", "=~", "!~"].contains(&op.as_str()) {
                    continue;
                }
                if !m.has_label(&r.name, label) {
                    problem(format!(
                        "{} has no label {label:?} (it has {:?})",
                        r.name, m.labels[&r.name]
                    ));
                }
                if let Some(Tok::Str(value)) = inner.get(k + 2) {
                    matched.insert(label.to_owned(), (op.clone(), value.clone()));
                }
            }
        }
        if place == Place::Panel {
            let mut wanted = vec!["job", "instance"];
            if m.labels[&r.name].contains("network") {
                wanted.push("network");
            }
            for label in wanted {
                let want = (String::from("=~"), format!("${label}"));
                if matched.get(label) != Some(&want) {
                    problem(format!(
                        "{} is not filtered by {label}=~\"${label}\"",
                        r.name
                    ));
                }
            }
        }
    }

    // Counters through rate()/increase()/irate(); gauges not; the others the other way.
    for (at, tok) in toks.iter().enumerate() {
        let Some(function) = ident(Some(tok)) else {
            continue;
        };
        if !is_op(toks.get(at + 1), "(") {
            continue;
        }
        let span = (at + 1, closing(&toks, at + 1).unwrap_or(toks.len()));
        for r in refs.iter().filter(|r| within(r, span)) {
            if COUNTER_FUNCTIONS.contains(&function) && !m.counts(&r.name) {
                problem(format!(
                    "{function}() of {}, which is a gauge: read gauges as they are",
                    r.name
                ));
            }
            if GAUGE_FUNCTIONS.contains(&function) && m.counts(&r.name) {
                problem(format!(
                    "{function}() of {}, which is a counter: use rate() or increase()",
                    r.name
                ));
            }
            if function == "histogram_quantile" && !r.name.ends_with("_bucket") {
                problem(format!(
                    "histogram_quantile() of {}, which is not a histogram's _bucket",
                    r.name
                ));
            }
        }
        if function == "histogram_quantile" {
            let lists: Vec<(String, Vec<String>)> = (span.0..span.1)
                .filter_map(|i| {
                    let word = ident(toks.get(i))?;
                    (["by", "without"].contains(&word) && is_op(toks.get(i + 1), "("))
                        .then(|| (word.to_owned(), label_list(&toks, i + 1)))
                })
                .collect();
            for (word, labels) in lists {
                if (word == "by") != labels.iter().any(|l| l == "le") {
                    problem(format!(
                        "histogram_quantile() over an aggregation {word} ({}) loses `le`",
                        labels.join(", ")
                    ));
                }
            }
        }
    }
    // A histogram's buckets are read only through histogram_quantile().
    for r in refs.iter().filter(|r| r.name.ends_with("_bucket")) {
        let inside = toks.iter().enumerate().any(|(at, t)| {
            ident(Some(t)) == Some("histogram_quantile")
                && is_op(toks.get(at + 1), "(")
                && within(r, (at + 1, closing(&toks, at + 1).unwrap_or(toks.len())))
        });
        if !inside {
            problem(format!("{} outside histogram_quantile()", r.name));
        }
    }

    // Grouping labels exist on what is grouped.
    let mut grouped = false;
    for (at, tok) in toks.iter().enumerate() {
        let Some(word) = ident(Some(tok)) else {
            continue;
        };
        if !is_op(toks.get(at + 1), "(") {
            continue;
        }
        let labels = label_list(&toks, at + 1);
        let span = match word {
            "by" | "without" => {
                grouped |= word == "by";
                if word == "by" {
                    report.result_labels.extend(labels.iter().cloned());
                }
                let before = at.checked_sub(1).and_then(|i| toks.get(i));
                if ident(before).is_some_and(|w| AGGREGATIONS.contains(&w)) {
                    // sum by (…) (expr)
                    let open = closing(&toks, at + 1).map_or(toks.len(), |c| c + 1);
                    (open, closing(&toks, open).unwrap_or(toks.len()))
                } else if is_op(before, ")") {
                    // sum (expr) by (…)
                    let close = at - 1;
                    (opening(&toks, close).unwrap_or(0), close)
                } else {
                    problem(format!("`{word}` not after an aggregation"));
                    continue;
                }
            }
            "on" | "ignoring" | "group_left" | "group_right" => (0, toks.len()),
            _ => continue,
        };
        let inside: Vec<&&Ref> = refs.iter().filter(|r| within(r, span)).collect();
        for label in &labels {
            let missing: Vec<&str> = match word {
                // Matching labels need only be on one side at least.
                "on" | "ignoring" | "group_left" | "group_right" => {
                    match inside.iter().any(|r| m.has_label(&r.name, label)) {
                        true => vec![],
                        false => inside.iter().map(|r| r.name.as_str()).collect(),
                    }
                }
                _ => inside
                    .iter()
                    .filter(|r| !m.has_label(&r.name, label))
                    .map(|r| r.name.as_str())
                    .collect(),
            };
            if !missing.is_empty() {
                problem(format!(
                    "{word} ({label}): no label {label:?} on {}",
                    missing.join(", ")
                ));
            }
        }
    }
    if !grouped {
        for r in &refs {
            report
                .result_labels
                .extend(m.labels[&r.name].iter().cloned());
            report.result_labels.extend(TARGET_LABELS.map(String::from));
        }
    }
    report
}

// ---------------------------------------------------------------------------------------
// The dashboard.

/// Every panel, rows' nested panels included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn datasource() -> Value {
    json!({"type": "prometheus", "uid": format!("${{{DATASOURCE_VARIABLE}}}")})
}

/// A query variable's query: a string, or (Grafana ≥ 9's editor) an object holding it.
fn variable_query(variable: &Value) -> Option<&str> {
    variable["query"]
        .as_str()
        .or(variable["query"]["query"].as_str())
}

/// `label_values(selector, label)` → (selector, label).
fn label_values(query: &str) -> Option<(&str, &str)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim(), label.trim()))
}

/// Every expression of the dashboard, named by where it is: the panels' targets,
/// then the template variables' selectors.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let title = panel["title"].as_str().unwrap_or("?");
                let refid = target["refId"].as_str().unwrap_or("?");
                out.push((format!("panel {title:?} target {refid}"), expr.to_owned()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some((selector, _)) = variable_query(variable).and_then(label_values) {
            let name = variable["name"].as_str().unwrap_or("?");
            out.push((format!("variable {name}"), selector.to_owned()));
        }
    }
    out
}

/// Everything wrong with `dashboard`, one line each.
fn check(dashboard: &Value, m: &Exposed) -> Vec<String> {
    let mut problems = Vec::new();
    let ds = datasource();

    if dashboard["title"] != TITLE {
        problems.push(format!("title is {}, not {TITLE:?}", dashboard["title"]));
    }
    if !dashboard["schemaVersion"]
        .as_u64()
        .is_some_and(|v| (36..=39).contains(&v))
    {
        problems.push(format!(
            "schemaVersion {} is not one Grafana 9 to 11 reads (36..=39)",
            dashboard["schemaVersion"]
        ));
    }
    let inputs = dashboard["__inputs"].as_array().into_iter().flatten();
    if !inputs
        .clone()
        .any(|i| i["name"] == DATASOURCE_INPUT && i["pluginId"] == "prometheus")
    {
        problems.push(format!(
            "no __inputs entry {DATASOURCE_INPUT} for a Prometheus data source, which import asks for"
        ));
    }

    // Template variables.
    let variables: Vec<&Value> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let variable = |name: &str| variables.iter().copied().find(|v| v["name"] == name);
    match variable(DATASOURCE_VARIABLE) {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {
            if v["current"]["value"] != format!("${{{DATASOURCE_INPUT}}}").as_str() {
                problems.push(format!(
                    "the data source variable does not default to the imported ${{{DATASOURCE_INPUT}}}"
                ));
            }
        }
        _ => problems.push(format!(
            "no Prometheus data source variable {DATASOURCE_VARIABLE:?}"
        )),
    }
    for name in ["job", "instance", "network"] {
        match variable(name) {
            None => problems.push(format!("no template variable {name:?}")),
            Some(v) => {
                if v["type"] != "query" || v["datasource"] != ds {
                    problems.push(format!(
                        "variable {name}: not a query of the templated data source"
                    ));
                }
                if v["multi"] != true || v["includeAll"] != true {
                    problems.push(format!("variable {name}: not multi-select with All"));
                }
                match variable_query(v).and_then(label_values) {
                    None => problems.push(format!(
                        "variable {name}: its query is not label_values(selector, label)"
                    )),
                    Some((selector, label)) => {
                        let report = check_expr(selector, m, Place::Variable);
                        problems.extend(
                            report
                                .problems
                                .into_iter()
                                .map(|p| format!("variable {name}: {p}")),
                        );
                        if label != name {
                            problems
                                .push(format!("variable {name}: lists the values of {label:?}"));
                        }
                        for series in tokenize(selector).iter().filter_map(|t| ident(Some(t))) {
                            if series.starts_with(PREFIX)
                                && m.resolve(series).is_some()
                                && !m.has_label(series, label)
                            {
                                problems.push(format!(
                                    "variable {name}: {series} has no label {label:?}"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(v) = variable("network") {
        let query = variable_query(v).unwrap_or_default();
        if !query.starts_with(&format!("label_values({PREFIX}network_activities")) {
            problems.push(
                "variable network: not the networks of ya_runtime_erigon_network_activities".into(),
            );
        }
    }

    // Panels.
    let mut titles = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in all_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let kind = panel["type"].as_str().unwrap_or_default();
        let at = format!("panel {title:?}");
        if title.trim().is_empty() || title.trim() != title {
            problems.push(format!(
                "{at}: a panel ({kind}) without a title, or with spaces around it"
            ));
        }
        if !titles.insert(title) {
            problems.push(format!("{at}: two panels have this title"));
        }
        if !ids.insert(panel["id"].to_string()) || !panel["id"].is_u64() {
            problems.push(format!("{at}: id {} missing or not unique", panel["id"]));
        }
        if kind == "row" {
            if panel.get("targets").is_some() {
                problems.push(format!("{at}: a row with queries"));
            }
            continue;
        }
        if !panel["description"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty())
        {
            problems.push(format!("{at}: no description of what it shows"));
        }
        if panel["datasource"] != ds {
            problems.push(format!(
                "{at}: data source {} is not the templated {ds}",
                panel["datasource"]
            ));
        }
        if !panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
        {
            problems.push(format!("{at}: no unit"));
        }
        let targets: Vec<&Value> = panel["targets"].as_array().into_iter().flatten().collect();
        if targets.is_empty() {
            problems.push(format!("{at}: no queries"));
        }
        let mut refids = BTreeSet::new();
        for target in targets {
            let refid = target["refId"].as_str().unwrap_or_default();
            let at = format!("{at} target {refid:?}");
            if refid.is_empty() || !refids.insert(refid) {
                problems.push(format!("{at}: refId missing or not unique"));
            }
            if target["datasource"] != ds {
                problems.push(format!(
                    "{at}: data source {} is not the templated {ds}",
                    target["datasource"]
                ));
            }
            let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                problems.push(format!("{at}: no expr"));
                continue;
            };
            let report = check_expr(expr, m, Place::Panel);
            problems.extend(report.problems.iter().map(|p| format!("{at}: {p}")));
            used.extend(report.families.iter().cloned());
            // Legends name labels the query's series keep.
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            for piece in legend.split("{{").skip(1) {
                let label = piece.split("}}").next().unwrap_or_default().trim();
                if !report.result_labels.contains(label) {
                    problems.push(format!(
                        "{at}: legend names {label:?}, which its series do not keep ({:?})",
                        report.result_labels
                    ));
                }
            }
        }
    }

    // Every family shown, but those left out on purpose.
    for (name, _, _) in METRICS {
        let left_out = LEFT_OUT.iter().any(|(n, _)| n == name);
        if !used.contains(*name) && !left_out {
            problems.push(format!(
                "{name} is shown by no panel: show it, or list it in LEFT_OUT with the reason"
            ));
        }
    }
    for (name, reason) in LEFT_OUT {
        if m.resolve(name).is_none() || reason.trim().is_empty() {
            problems.push(format!(
                "LEFT_OUT: {name} is not a family, or has no reason"
            ));
        }
        if used.contains(*name) {
            problems.push(format!(
                "LEFT_OUT: {name} is shown after all; drop it from the list"
            ));
        }
    }
    problems
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("conf/grafana-dashboard.json is JSON")
}

#[test]
fn the_dashboard_shows_the_metrics_that_exist_as_they_are() {
    let m = exposed();
    let dashboard = dashboard();
    let problems = check(&dashboard, &m);
    assert!(
        problems.is_empty(),
        "conf/grafana-dashboard.json:\n{}",
        problems.join("\n")
    );
    let panels = all_panels(&dashboard)
        .iter()
        .filter(|p| p["type"] != "row")
        .count();
    println!(
        "{panels} panels, {} expressions, every family shown",
        expressions(&dashboard).len()
    );
}

// ---------------------------------------------------------------------------------------
// promtool.

/// Grafana's interval variables as durations, and any other variable (they are
/// regular expressions in label matchers) as `.*`.
fn for_promtool(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').unwrap_or(braced.len());
                (&braced[..end], end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match GRAFANA_INTERVALS.iter().find(|(v, _)| *v == name) {
            Some((_, duration)) => out.push_str(duration),
            // An interval variable this list does not know stays, and promtool refuses it.
            None if name.starts_with("__") => out.push_str(&rest[at..at + 1 + len]),
            None => out.push_str(".*"),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

fn promtool() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

/// `promtool check rules` on one rules file holding each expression as a recording
/// rule: Err with promtool's words when it refuses the file.
fn promtool_rules(exprs: &[&str], dir: &Path) -> Result<(), String> {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(expr).expect("a JSON string is a YAML string");
        rules.push_str(&format!(
            "      - record: dashboard:expression_{i}\n        expr: {quoted}\n"
        ));
    }
    let file = dir.join("dashboard.rules.yml");
    std::fs::write(&file, rules).expect("write the rules file");
    let output = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): install it with `{INSTALL_PROMTOOL}`, or name it in PROMTOOL",
                promtool()
            )
        });
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// The expressions promtool does not parse, with its words.
fn promtool_problems(exprs: &[(String, String)]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let substituted: Vec<String> = exprs.iter().map(|(_, e)| for_promtool(e)).collect();
    let all: Vec<&str> = substituted.iter().map(String::as_str).collect();
    if promtool_rules(&all, dir.path()).is_ok() {
        return Vec::new();
    }
    // Which ones: each on its own.
    exprs
        .iter()
        .zip(&substituted)
        .filter_map(|((at, _), expr)| {
            promtool_rules(&[expr], dir.path())
                .err()
                .map(|e| format!("{at}: promtool refuses {expr:?}: {}", e.trim()))
        })
        .collect()
}

#[test]
fn promtool_parses_every_expression() {
    let exprs = expressions(&dashboard());
    assert!(exprs.len() > 20, "{} expressions", exprs.len());
    let problems = promtool_problems(&exprs);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// The checks bite.

/// The real dashboard with its panels replaced by one with these queries.
fn with_panel(title: &str, targets: &[(&str, &str)]) -> Value {
    let mut dashboard = dashboard();
    let targets: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, (expr, legend))| {
            json!({"refId": format!("{}", char::from(b'A' + i as u8)), "datasource": datasource(),
                   "expr": expr, "legendFormat": legend})
        })
        .collect();
    dashboard["panels"] = json!([{
        "id": 1, "type": "timeseries", "title": title, "description": "a test's",
        "datasource": datasource(), "gridPos": {"x": 0, "y": 0, "w": 24, "h": 8},
        "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []}, "targets": targets,
    }]);
    dashboard
}

/// The problems of one panel with this query, but those of the families it leaves unshown.
fn problems_of(expr: &str, legend: &str) -> Vec<String> {
    check(&with_panel("Test?", &[(expr, legend)]), &exposed())
        .into_iter()
        .filter(|p| !p.contains("is shown by no panel"))
        .collect()
}

const F: &str = r#"{job=~"$job", instance=~"$instance", network=~"$network"}"#;

#[test]
fn a_made_up_metric_name_is_refused() {
    let m = exposed();
    let text = DASHBOARD.replace(
        "ya_runtime_erigon_activity_websockets{",
        "ya_runtime_erigon_activity_open_websockets{",
    );
    assert_ne!(text, DASHBOARD);
    let problems = check(&serde_json::from_str(&text).expect("JSON"), &m);
    assert!(
        problems.iter().any(|p| p.contains(
            "ya_runtime_erigon_activity_open_websockets is not a metric of src/metrics/expose.rs"
        )),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("ya_runtime_erigon_activity_websockets is shown by no panel")),
        "{problems:#?}"
    );
    // A suffix only a histogram has.
    let problems = problems_of(
        &format!("sum by (network) (rate(ya_runtime_erigon_activity_calls_total_bucket{F}[5m]))"),
        "",
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("ya_runtime_erigon_activity_calls_total_bucket is not a metric")),
        "{problems:#?}"
    );
}

#[test]
fn the_expression_checks_bite() {
    // `family{the variables' filters}`
    let sel = |family: &str| format!("{PREFIX}{family}{F}");
    // A correct query passes, so that each of the others fails for its one fault.
    let good = format!(
        "sum by (network, user) (rate({}[$__rate_interval]))",
        sel("activity_calls_total")
    );
    assert_eq!(
        problems_of(&good, "{{network}} {{user}}"),
        Vec::<String>::new()
    );

    let bucket = sel("activity_node_answer_seconds_bucket");
    let cases: Vec<(String, &str, &str)> =
        vec![
        (
            format!("sum by (network) (rate({}[5m]))", sel("activity_websockets")),
            "",
            "rate() of ya_runtime_erigon_activity_websockets, which is a gauge",
        ),
        (
            format!("sum by (network) (deriv({}[5m]))", sel("activity_calls_total")),
            "",
            "deriv() of ya_runtime_erigon_activity_calls_total, which is a counter",
        ),
        (
            format!(
                "sum by (network, method) (rate({}[5m]))",
                sel("activity_compute_units_total")
            ),
            "",
            "by (method): no label \"method\" on ya_runtime_erigon_activity_compute_units_total",
        ),
        (
            format!(
                "sum(rate({PREFIX}activity_calls_total{{reason=\"policy\", {}[5m]))",
                &F[1..]
            ),
            "",
            "ya_runtime_erigon_activity_calls_total has no label \"reason\"",
        ),
        (
            format!("sum by (reason) (increase({}[1h]))", sel("start_failures_total")),
            "",
            "ya_runtime_erigon_start_failures_total has no label \"network\"",
        ),
        (
            format!("sum({PREFIX}network_activities{{job=~\"$job\", network=~\"$network\"}})"),
            "",
            "is not filtered by instance=~\"$instance\"",
        ),
        (
            format!("histogram_quantile(0.99, sum by (network) (rate({bucket}[5m])))"),
            "",
            "loses `le`",
        ),
        (
            format!("sum by (le) (rate({bucket}[5m]))"),
            "",
            "outside histogram_quantile()",
        ),
        (
            format!(
                "histogram_quantile(0.5, sum by (le) (rate({}[5m])))",
                sel("activity_node_answer_seconds_sum")
            ),
            "",
            "not a histogram's _bucket",
        ),
        (
            format!("sum by (network) ({})", sel("activity_websockets")),
            "{{user}}",
            "legend names \"user\"",
        ),
        (
            format!("sum({PREFIX}network_activities{{__name__=~\"{PREFIX}.*\"}})"),
            "",
            "a metric named inside a string",
        ),
    ];
    for (expr, legend, expected) in &cases {
        let problems = problems_of(expr, legend);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expr} should give {expected:?}: {problems:#?}"
        );
    }
}

#[test]
fn the_panel_checks_bite() {
    let m = exposed();
    let expr = format!("sum by (network) (ya_runtime_erigon_network_activities{F})");
    let mut two = with_panel("Same?", &[(&expr, "")]);
    let mut copy = two["panels"][0].clone();
    copy["id"] = json!(2);
    copy["datasource"] = json!({"type": "prometheus", "uid": "P1809F7"});
    copy["targets"][0]["datasource"] = copy["datasource"].clone();
    copy["description"] = json!("");
    two["panels"].as_array_mut().expect("panels").push(json!({
        "id": 3, "type": "row", "title": "", "collapsed": true, "panels": [copy],
    }));
    let problems = check(&two, &m);
    for expected in [
        "panel \"Same?\": two panels have this title",
        "panel \"Same?\": data source {\"type\":\"prometheus\",\"uid\":\"P1809F7\"} is not",
        "panel \"Same?\" target \"A\": data source",
        "panel \"Same?\": no description",
        "panel \"\": a panel (row) without a title",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected:?}: {problems:#?}"
        );
    }

    let mut dashboard = dashboard();
    dashboard["templating"]["list"]
        .as_array_mut()
        .expect("variables")
        .retain(|v| v["name"] != "network");
    let problems = check(&dashboard, &m);
    assert!(
        problems
            .iter()
            .any(|p| p == "no template variable \"network\""),
        "{problems:#?}"
    );
}

#[test]
fn promtool_refuses_what_does_not_parse() {
    let good = (
        "good".to_owned(),
        format!(
            "sum by (network) (rate(ya_runtime_erigon_activity_calls_total{F}[$__rate_interval]))"
        ),
    );
    let bad = (
        "bad".to_owned(),
        format!(
            "sum by (network (rate(ya_runtime_erigon_activity_calls_total{F}[$__rate_interval]))"
        ),
    );
    let unknown = (
        "unknown interval".to_owned(),
        format!("rate(ya_runtime_erigon_activity_calls_total{F}[$__rate_intervall])"),
    );
    assert_eq!(
        promtool_problems(std::slice::from_ref(&good)),
        Vec::<String>::new()
    );
    let problems = promtool_problems(&[good, bad, unknown]);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("bad: promtool refuses"),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("unknown interval: promtool refuses"),
        "{problems:#?}"
    );
}
