//! The Grafana dashboard shipped in the chart (`helm/hti-guard/dashboards/hti-guard.json`)
//! queries only what the guard exports: every identifier in every query is a PromQL word or a
//! metric name present in a real guard's `/metrics` (its own `hti_guard_*` and the standard
//! `process_*`), and every label a query filters, groups or names in a legend exists on that
//! metric.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::metrics::parse;
use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// Panels the dashboard must have, by title.
const REQUIRED_PANELS: &[&str] = &[
    "Launches by result",
    "Rejections by reason",
    "Launch verify latency (p50, p99)",
    "JWKS freshness per issuer",
    "JWKS keys per issuer",
    "JWKS fetches by result and trigger",
    "Replay checks by result",
    "Replay check latency (p50, p99)",
    "Replay store fill (memory)",
    "Upstream latency (p50, p99)",
    "Responses by status code",
    "Spoofed headers stripped",
    "Sessions by event",
    "SHOF logins by result and reason",
    "SHOF login latency (p50, p99)",
    "Introspection requests by result",
    "Introspection latency (p50, p99)",
    "CPU per pod",
    "Resident memory per pod",
    "Open file descriptors per pod",
    "Builds running",
    "Dependencies up",
    "Pods ready",
    "Config reloads by result",
    "Configurations in use",
];

/// A session sealing key for the second guard (base64 of 40 bytes).
const SESSION_SECRET: &str = "c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5";

/// Labels Prometheus attaches at scrape time: on every series, though not in the exposition.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// The names of the guard's metrics: its own, and the standard process metrics.
const METRIC_PREFIXES: &[&str] = &["hti_guard_", "process_"];

fn is_metric_name(ident: &str) -> bool {
    METRIC_PREFIXES.iter().any(|p| ident.starts_with(p))
}

/// PromQL functions, aggregations and keywords a query may use besides metric names.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "count_values",
    "topk",
    "bottomk",
    "quantile",
    "rate",
    "irate",
    "increase",
    "delta",
    "histogram_quantile",
    "time",
    "vector",
    "scalar",
    "abs",
    "clamp_min",
    "clamp_max",
    "round",
    "absent",
    "changes",
    "resets",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "last_over_time",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
];

fn dashboard() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("helm/hti-guard/dashboards/hti-guard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

/// Every panel, rows and the panels nested in (collapsed) rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A query of the dashboard: where it is, its text, and its legend (panel targets only).
struct Query {
    place: String,
    expr: String,
    legend: Option<String>,
}

/// Every query: each panel target's `expr`, and each query variable's query and definition.
fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!(
                    "panel {:?} target {}",
                    panel["title"].as_str().unwrap_or("?"),
                    target["refId"].as_str().unwrap_or("?")
                ),
                expr: target["expr"].as_str().unwrap_or_default().to_string(),
                legend: target["legendFormat"].as_str().map(str::to_string),
            });
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = match &variable["query"] {
            Value::String(text) => text.clone(),
            other => other["query"].as_str().unwrap_or_default().to_string(),
        };
        for (what, expr) in [
            ("query", query),
            (
                "definition",
                variable["definition"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
        ] {
            if !expr.is_empty() {
                out.push(Query {
                    place: format!(
                        "variable {:?} {what}",
                        variable["name"].as_str().unwrap_or("?")
                    ),
                    expr,
                    legend: None,
                });
            }
        }
    }
    out
}

/// A metric selector in a query: the name and its label matchers (name, operator, value).
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// What a PromQL query refers to.
#[derive(Debug, Default)]
struct Refs {
    selectors: Vec<Selector>,
    /// Labels in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)` and `group_*(...)`,
    /// and the label of `label_values(metric, label)`.
    grouping: BTreeSet<String>,
    /// Whether the query has a `by` clause (then a legend may only name those labels).
    has_by: bool,
    /// Other identifiers: functions, aggregations, keywords.
    words: BTreeSet<String>,
    problems: Vec<String>,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// A small scanner for the PromQL this dashboard uses: strings, `[...]` ranges and Grafana
/// `$variables` are skipped; identifiers are sorted into metrics (followed by `{` or named
/// like one of [`METRIC_PREFIXES`]), grouping labels and other words.
fn scan(expr: &str) -> Refs {
    let mut refs = Refs::default();
    if let Some(inner) = expr
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        match inner.rsplit_once(',') {
            Some((metric, label)) => {
                let mut inner_refs = scan(metric);
                inner_refs.grouping.insert(label.trim().to_string());
                return inner_refs;
            }
            None => {
                refs.problems
                    .push(format!("label_values without a label: {expr}"));
                return refs;
            }
        }
    }
    let b = expr.as_bytes();
    let mut i = 0;
    let skip_space = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
        } else if c == b'[' {
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            i += 1;
        } else if c == b'$' {
            i += 1;
            while i < b.len() && (is_ident(b[i]) || b[i] == b'{' || b[i] == b'}') {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let ident = &expr[start..i];
            let next = skip_space(i);
            let grouping = matches!(
                ident,
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            );
            if grouping && b.get(next) == Some(&b'(') {
                let close = expr[next..]
                    .find(')')
                    .map(|offset| next + offset)
                    .unwrap_or(b.len());
                for label in expr[next + 1..close].split(',') {
                    let label = label.trim();
                    if !label.is_empty() {
                        refs.grouping.insert(label.to_string());
                    }
                }
                refs.has_by |= ident == "by";
                i = close + 1;
            } else if b.get(next) == Some(&b'{') {
                let (matchers, end) = scan_matchers(expr, next, &mut refs.problems);
                refs.selectors.push(Selector {
                    metric: ident.to_string(),
                    matchers,
                });
                i = end;
            } else if is_metric_name(ident) {
                refs.selectors.push(Selector {
                    metric: ident.to_string(),
                    matchers: Vec::new(),
                });
            } else {
                refs.words.insert(ident.to_string());
            }
        } else if c == b'{' {
            refs.problems
                .push(format!("a selector without a metric name: {expr}"));
            i += 1;
        } else {
            i += 1;
        }
    }
    refs
}

/// The index just past the string literal starting at `start`.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() && b[i] != quote {
        if b[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Reads `{name op "value", ...}` from `open`; gives the matchers and the index past `}`.
fn scan_matchers(
    expr: &str,
    open: usize,
    problems: &mut Vec<String>,
) -> (Vec<(String, String, String)>, usize) {
    let b = expr.as_bytes();
    let mut matchers = Vec::new();
    let mut i = open + 1;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            problems.push(format!("unclosed selector: {expr}"));
            return (matchers, i);
        }
        if b[i] == b'}' {
            return (matchers, i + 1);
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        let name = expr[start..i].to_string();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
            i += 1;
        }
        let op = expr[op_start..i].to_string();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if name.is_empty()
            || !matches!(op.as_str(), "=" | "!=" | "=~" | "!~")
            || b.get(i) != Some(&b'"')
        {
            problems.push(format!("cannot read the selector at byte {start}: {expr}"));
            return (matchers, b.len());
        }
        let end = skip_string(b, i);
        let value = expr[i + 1..end - 1].to_string();
        matchers.push((name, op, value));
        i = end;
    }
}

/// The exposition: metric (sample) name -> label -> values seen.
type Families = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn families(exposition: &str) -> Families {
    let mut families = Families::new();
    for sample in parse(exposition) {
        let labels = families.entry(sample.name).or_default();
        for (name, value) in sample.labels {
            labels.entry(name).or_default().insert(value);
        }
    }
    families
}

/// Everything wrong with `query` against `families`; empty when it is fine.
fn check(query: &Query, families: &Families) -> Vec<String> {
    let refs = scan(&query.expr);
    let mut problems: Vec<String> = refs.problems.clone();
    for word in &refs.words {
        if !PROMQL_WORDS.contains(&word.as_str()) {
            problems.push(format!(
                "unknown identifier `{word}` (a misspelled metric name?)"
            ));
        }
    }
    if refs.selectors.is_empty() {
        problems.push("names no metric".to_string());
    }
    let has_label = |metric: &str, label: &str| {
        TARGET_LABELS.contains(&label)
            || families
                .get(metric)
                .is_some_and(|labels| labels.contains_key(label))
    };
    for selector in &refs.selectors {
        let metric = selector.metric.as_str();
        if !is_metric_name(metric) {
            problems.push(format!("`{metric}` is not a hti-guard metric"));
            continue;
        }
        if !families.contains_key(metric) {
            problems.push(format!("`{metric}` is not in /metrics"));
            continue;
        }
        for (label, op, value) in &selector.matchers {
            if !has_label(metric, label) {
                problems.push(format!("`{metric}` has no label `{label}`"));
            } else if op == "="
                && !value.contains('$')
                && !TARGET_LABELS.contains(&label.as_str())
                && !families[metric][label].contains(value)
            {
                problems.push(format!(
                    "`{metric}` has no series with {label}=\"{value}\" (values seen: {:?})",
                    families[metric][label]
                ));
            }
        }
        for label in &refs.grouping {
            if !has_label(metric, label) {
                problems.push(format!("`{metric}` has no label `{label}` to group by"));
            }
        }
    }
    if let Some(legend) = &query.legend {
        for part in legend.split("{{").skip(1) {
            let label = part.split("}}").next().unwrap_or_default().trim();
            if refs.has_by && !refs.grouping.contains(label) {
                problems.push(format!(
                    "legend names `{label}`, which the query aggregates away"
                ));
            }
            for selector in &refs.selectors {
                if !has_label(&selector.metric, label) {
                    problems.push(format!(
                        "legend names `{label}`, not a label of `{}`",
                        selector.metric
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn dashboard_is_grafana_json_with_the_expected_panels() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "hti-guard");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(
        dashboard["id"].is_null(),
        "id must be null so that Grafana assigns one on import"
    );

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let issuer = variable("issuer");
    assert_eq!(issuer["type"], "query");
    let issuer_query = issuer["query"]["query"].as_str().expect("issuer query");
    assert!(
        issuer_query.starts_with("label_values(hti_guard_launches_total")
            && issuer_query.ends_with(", issuer)"),
        "{issuer_query}"
    );

    let all = panels(&dashboard);
    let titles: BTreeSet<&str> = all.iter().filter_map(|p| p["title"].as_str()).collect();
    for title in REQUIRED_PANELS {
        assert!(
            titles.contains(title),
            "no panel {title:?}; have {titles:?}"
        );
    }
    let mut ids = BTreeSet::new();
    for panel in &all {
        let title = &panel["title"];
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: duplicate panel id {id}");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24) && grid["h"].as_u64().is_some(),
            "{title}: bad gridPos {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: the panel's data source must be the variable"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{title}: a target's data source must be the variable"
            );
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: empty expr"
            );
        }
    }
}

#[test]
fn the_checker_catches_wrong_names_and_labels() {
    let exposition = "\
hti_guard_launches_total{issuer=\"https://p\",reason=\"none\",result=\"accepted\"} 1
hti_guard_upstream_duration_seconds_bucket{le=\"0.1\"} 1
process_cpu_seconds_total 1.5
";
    let families = families(exposition);
    let problems = |expr: &str, legend: Option<&str>| {
        check(
            &Query {
                place: "test".into(),
                expr: expr.into(),
                legend: legend.map(str::to_string),
            },
            &families,
        )
    };
    let good = "sum by (result) (rate(hti_guard_launches_total{job=~\"$job\", issuer=~\"$issuer\", result=\"accepted\"}[$__rate_interval]))";
    assert_eq!(problems(good, Some("{{result}}")), Vec::<String>::new());
    assert_eq!(
        problems(
            "histogram_quantile(0.99, sum by (le) (rate(hti_guard_upstream_duration_seconds_bucket[5m])))",
            Some("p99")
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        problems(
            "sum by (instance) (rate(process_cpu_seconds_total{job=~\"$job\"}[5m]))",
            Some("{{instance}}")
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        problems(
            "label_values(hti_guard_launches_total{job=~\"$job\"}, issuer)",
            None
        ),
        Vec::<String>::new()
    );
    for (expr, legend) in [
        ("sum(rate(hti_guard_launch_total[5m]))", None),
        ("sum(rate(hti_gaurd_launches_total[5m]))", None),
        ("sum by (reson) (rate(hti_guard_launches_total[5m]))", None),
        (
            "sum(rate(hti_guard_launches_total{reason=\"none\", store=\"memory\"}[5m]))",
            None,
        ),
        (
            "sum(rate(hti_guard_launches_total{result=\"accept\"}[5m]))",
            None,
        ),
        (
            "sum by (result) (rate(hti_guard_launches_total[5m]))",
            Some("{{issuer}}"),
        ),
        (
            "histogram_quantile(0.5, sum by (le) (rate(hti_guard_upstream_duration_seconds[5m])))",
            None,
        ),
        ("label_values(hti_guard_launches_total, issuers)", None),
        ("sum(rate(process_cpu_second_total[5m]))", None),
        ("sum(rate(node_cpu_seconds_total{mode=\"user\"}[5m]))", None),
        ("vector(1)", None),
    ] {
        assert!(
            !problems(expr, legend).is_empty(),
            "the checker let through {expr} {legend:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_use_only_exported_metrics_and_labels() {
    let fx = Fixture::start().await;

    // One accepted launch, one rejected (the same token again), one passthrough carrying a
    // spoofed header: every labelled series the dashboard reads then exists.
    let token = fx.good_token();
    expect_echo(within(LIMIT, "launch", fx.launch(&token)).await).await;
    fx.expect_refused(&token, 401, "replayed").await;
    let passthrough = within(
        LIMIT,
        "passthrough",
        fx.client
            .get(fx.guard.url("/app/page"))
            .header("X-HTI-Sub", "Patient/spoofed")
            .send(),
    )
    .await
    .expect("GET /app/page");
    expect_echo(passthrough).await;

    // A second guard with sessions: its launch becomes a session (303), so the session
    // series exist too. The two expositions are read as one.
    let with_sessions = Fixture::start_with(|b| {
        b.set("session.enabled", "true")
            .set_str("session.secret", SESSION_SECRET)
    })
    .await;
    let response = within(
        LIMIT,
        "session launch",
        with_sessions.launch(&with_sessions.good_token()),
    )
    .await;
    assert_eq!(response.status(), 303, "a launch with sessions on");

    // A third guard with the SHOF login on: a launch naming another FHIR base is a refused
    // login, so the login series exist (the latency histogram is there from the start).
    let shof = ShofFixture::start_at("127.0.0.1", |b, _| b).await;
    let response = within(
        LIMIT,
        "SHOF launch",
        client()
            .get(shof.guard.url(&format!(
                "/launch?iss=https%3A%2F%2Fother.example%2Ffhir&launch={}",
                shof.token()
            )))
            .send(),
    )
    .await
    .expect("GET /launch");
    assert_eq!(
        response.status(),
        400,
        "a SHOF launch for another FHIR base"
    );

    let exposition = format!(
        "{}\n{}\n{}",
        fx.guard.metrics().await,
        with_sessions.guard.metrics().await,
        shof.guard.metrics().await
    );
    let families = families(&exposition);

    let dashboard = dashboard();
    let queries = queries(&dashboard);
    assert!(queries.len() >= REQUIRED_PANELS.len(), "too few queries");
    let mut used = BTreeSet::new();
    let mut failures = Vec::new();
    for query in &queries {
        for selector in scan(&query.expr).selectors {
            used.insert(selector.metric);
        }
        for problem in check(query, &families) {
            failures.push(format!("{}: {problem}\n    {}", query.place, query.expr));
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries that do not match /metrics:\n{}\n--- /metrics ---\n{exposition}",
        failures.join("\n")
    );
    // The traffic above made the series the queries filter on.
    for name in [
        "hti_guard_launches_total",
        "hti_guard_replay_checks_total",
        "hti_guard_requests_total",
        "hti_guard_spoofed_headers_stripped_total",
        "hti_guard_jwks_last_success_timestamp_seconds",
        "hti_guard_sessions_total",
        "hti_guard_logins_total",
        "hti_guard_introspection_requests_total",
        "hti_guard_introspection_duration_seconds_bucket",
        "hti_guard_replay_entries",
        "hti_guard_replay_capacity",
        "hti_guard_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
    ] {
        assert!(used.contains(name), "the dashboard does not use {name}");
    }
}
