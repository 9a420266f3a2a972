//! Prometheus text (0.0.4) and OpenMetrics (1.0) encodings of a [`Snapshot`]: the built-in
//! families in catalogue order, then the app-defined ones, each with `# HELP` and `# TYPE`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::catalogue::{MetricDef, MetricKind, RESTART_REASONS, WORKER_STATES, catalogue};
use crate::snapshot::{
    ACCEPT_RECHECK_CAUSES, DURATION_BUCKETS, METHODS, Snapshot, UserMetric, UserMetricKind,
    status_label,
};

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics text format 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The format a scrape asks for: OpenMetrics when the `Accept` header lists
    /// `application/openmetrics-text` with a quality at least that of `text/plain`, else
    /// Prometheus text.
    pub fn from_accept(accept_header: Option<&str>) -> Format {
        let Some(accept) = accept_header else { return Format::Prometheus };
        let (mut openmetrics, mut text) = (0.0_f64, 0.0_f64);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0;
            for param in parts {
                if let Some((key, value)) = param.split_once('=')
                    && key.trim().eq_ignore_ascii_case("q")
                {
                    q = value.trim().parse().unwrap_or(0.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The exposition of `snapshot` in `format`.
pub fn encode(snapshot: &Snapshot, format: Format) -> String {
    let mut w = Writer { out: String::with_capacity(8192), format, used: HashSet::new() };
    for def in catalogue() {
        w.family(def.name, def.kind, def.help, true);
        builtin_samples(&mut w, def, snapshot);
    }
    user_families(&mut w, &snapshot.user);
    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

/// A sample value: integers print exactly, floats in a form both parsers accept.
#[derive(Clone, Copy)]
pub(crate) enum Value {
    Int(u64),
    Float(f64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => f.write_str(&format_float(x)),
        }
    }
}

/// `0.001`, `1.0`, `1e-7`, `+Inf`, `-Inf`, `NaN`: Rust's shortest round-trip form, which Go's
/// `ParseFloat` and Python's `float` both read, and the canonical OpenMetrics form for `le`.
fn format_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_owned()
    } else if x == f64::INFINITY {
        "+Inf".to_owned()
    } else if x == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{x:?}")
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Help text escaped for `format` (Prometheus text leaves `"` alone).
fn escape_help(help: &str, format: Format) -> String {
    let mut out = String::with_capacity(help.len());
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// Every name a family occupies: its family name(s) and sample names.
fn occupied_names(name: &str, kind: MetricKind) -> Vec<String> {
    match kind {
        MetricKind::Counter => {
            vec![name.to_owned(), format!("{name}_total"), format!("{name}_created")]
        }
        MetricKind::Gauge => vec![name.to_owned()],
        MetricKind::Histogram => ["", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        MetricKind::Info => {
            vec![name.to_owned(), name.strip_suffix("_info").unwrap_or(name).to_owned()]
        }
    }
}

pub(crate) struct Writer {
    out: String,
    format: Format,
    /// Family and sample names written so far (to keep app-defined families from clashing).
    used: HashSet<String>,
}

impl Writer {
    /// Whether a family `name` of `kind` would clash with one already written.
    fn clashes(&self, name: &str, kind: MetricKind) -> bool {
        occupied_names(name, kind).iter().any(|n| self.used.contains(n))
    }

    /// `# HELP`, `# TYPE` (and for built-in OpenMetrics `_seconds`/`_bytes` families `# UNIT`).
    fn family(&mut self, name: &str, kind: MetricKind, help: &str, builtin: bool) {
        self.used.extend(occupied_names(name, kind));
        let (family, type_word) = match (self.format, kind) {
            (Format::Prometheus, MetricKind::Counter) => (format!("{name}_total"), "counter"),
            (Format::Prometheus, MetricKind::Info) => (name.to_owned(), "gauge"),
            (Format::OpenMetrics, MetricKind::Info) => {
                (name.strip_suffix("_info").unwrap_or(name).to_owned(), "info")
            }
            (_, kind) => (name.to_owned(), kind.as_str()),
        };
        let help = escape_help(help, self.format);
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {type_word}");
        if self.format == Format::OpenMetrics && builtin {
            for unit in ["seconds", "bytes"] {
                if family.ends_with(&format!("_{unit}")) {
                    let _ = writeln!(self.out, "# UNIT {family} {unit}");
                }
            }
        }
    }

    /// One sample line.
    pub(crate) fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        value: Value,
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// `_bucket` (cumulating the per-bucket `counts`), `_sum` and `_count` of one histogram
    /// series. `+Inf` is added when the last bound is finite.
    pub(crate) fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: impl IntoIterator<Item = (f64, u64)>,
        sum: f64,
    ) {
        let mut cumulative = 0_u64;
        let mut saw_inf = false;
        for (bound, count) in buckets {
            cumulative += count;
            saw_inf = bound == f64::INFINITY;
            self.bucket(name, labels, bound, cumulative);
        }
        if !saw_inf {
            self.bucket(name, labels, f64::INFINITY, cumulative);
        }
        self.sample(name, "_sum", labels, Value::Float(sum));
        self.sample(name, "_count", labels, Value::Int(cumulative));
    }

    fn bucket(&mut self, name: &str, labels: &[(&str, &str)], bound: f64, cumulative: u64) {
        let le = format_float(bound);
        let mut with_le = labels.to_vec();
        with_le.push(("le", &le));
        self.sample(name, "_bucket", &with_le, Value::Int(cumulative));
    }
}

/// Counts by key: `fixed` keys first (0 when absent), then other keys in first-seen order.
fn counts_by<'a>(
    fixed: &[&'a str],
    items: impl IntoIterator<Item = (&'a str, u64)>,
) -> Vec<(&'a str, u64)> {
    let mut out: Vec<(&str, u64)> = fixed.iter().map(|k| (*k, 0)).collect();
    for (key, n) in items {
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, total)) => *total += n,
            None => out.push((key, n)),
        }
    }
    out
}

fn builtin_samples(w: &mut Writer, def: &MetricDef, s: &Snapshot) {
    let name = def.name;
    let suffix = if def.kind == MetricKind::Counter { "_total" } else { "" };
    let int = |w: &mut Writer, n: u64| w.sample(name, suffix, &[], Value::Int(n));
    match name {
        "ferrocorn_requests" => {
            let totals = s.totals();
            for (method, row) in METHODS.iter().zip(&totals.requests) {
                for (status, n) in row.iter().enumerate().filter(|(_, n)| **n > 0) {
                    let code = status_label(status);
                    w.sample(name, suffix, &[("method", method), ("code", &code)], Value::Int(*n));
                }
            }
        }
        "ferrocorn_request_duration_seconds" => {
            let totals = s.totals();
            let bounds = DURATION_BUCKETS.iter().copied().chain([f64::INFINITY]);
            let sum = totals.duration_sum_micros as f64 / 1e6;
            w.histogram(name, &[], bounds.zip(totals.duration_buckets), sum);
        }
        "ferrocorn_request_body_bytes" => int(w, s.totals().request_bytes),
        "ferrocorn_response_body_bytes" => int(w, s.totals().response_bytes),
        "ferrocorn_requests_in_flight" => int(w, s.workers.iter().map(|x| x.in_flight).sum()),
        "ferrocorn_open_connections" => int(w, s.workers.iter().map(|x| x.open_connections).sum()),
        "ferrocorn_connections" => int(w, s.totals().connections),
        "ferrocorn_app_exceptions" => int(w, s.totals().exceptions),
        "ferrocorn_accept_missed" => int(w, s.totals().accept_missed),
        "ferrocorn_accept_rechecks" => {
            let totals = s.totals();
            for (cause, n) in ACCEPT_RECHECK_CAUSES.iter().zip(totals.accept_rechecks) {
                w.sample(name, suffix, &[("cause", cause)], Value::Int(n));
            }
        }
        cache if cache.starts_with("ferrocorn_cache_") => {
            crate::cache::samples(w, name, suffix, s);
        }
        "ferrocorn_pool_workers" | "ferrocorn_pool_requests" => {
            crate::snapshot::pool_samples(w, name, suffix, s);
        }
        upstream if upstream.starts_with("ferrocorn_upstream_") => {
            crate::upstreams::samples(w, name, suffix, &s.upstreams);
        }
        "ferrocorn_workers" => {
            let states = s.workers.iter().map(|x| (x.state.as_str(), 1));
            for (state, n) in counts_by(&WORKER_STATES, states) {
                w.sample(name, suffix, &[("state", state)], Value::Int(n));
            }
        }
        "ferrocorn_workers_target" => int(w, s.workers_target as u64),
        "ferrocorn_worker_restarts" => {
            let restarts = s.restarts.iter().map(|(reason, n)| (reason.as_str(), *n));
            for (reason, n) in counts_by(&RESTART_REASONS, restarts) {
                w.sample(name, suffix, &[("reason", reason)], Value::Int(n));
            }
        }
        "ferrocorn_worker_resident_memory_bytes" => {
            for x in &s.workers {
                w.sample(name, suffix, &[("pid", &x.pid.to_string())], Value::Int(x.rss_bytes));
            }
        }
        "ferrocorn_worker_cpu_seconds" => {
            for x in &s.workers {
                let pid = x.pid.to_string();
                w.sample(name, suffix, &[("pid", &pid)], Value::Float(x.cpu_seconds));
            }
        }
        "ferrocorn_worker_uptime_seconds" => {
            for x in &s.workers {
                let pid = x.pid.to_string();
                w.sample(name, suffix, &[("pid", &pid)], Value::Float(x.uptime_seconds));
            }
        }
        "ferrocorn_listen_queue_depth" => {
            for (listener, depth) in &s.listeners {
                w.sample(name, suffix, &[("listener", listener)], Value::Int(*depth));
            }
        }
        "ferrocorn_start_time_seconds" => {
            w.sample(name, suffix, &[], Value::Float(s.start_time_seconds));
        }
        "ferrocorn_build_info" => w.sample(name, "", &[("version", &s.version)], Value::Int(1)),
        other => unreachable!("catalogue metric {other} has no encoder"),
    }
}

/// App-defined families: series grouped by name in first-seen order; a family takes its help
/// and kind from its first series (series of another kind are left out), and a family whose
/// names clash with one already written is left out.
fn user_families(w: &mut Writer, user: &[UserMetric]) {
    let mut order: Vec<(String, Vec<&UserMetric>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for m in user {
        let name = match m.kind {
            UserMetricKind::Counter => m.name.strip_suffix("_total").unwrap_or(&m.name),
            _ => &m.name,
        };
        let i = *index.entry(name.to_owned()).or_insert_with(|| {
            order.push((name.to_owned(), Vec::new()));
            order.len() - 1
        });
        order[i].1.push(m);
    }
    for (name, series) in &order {
        let first = series[0];
        let kind = match first.kind {
            UserMetricKind::Counter => MetricKind::Counter,
            UserMetricKind::Gauge => MetricKind::Gauge,
            UserMetricKind::Histogram => MetricKind::Histogram,
        };
        if w.clashes(name, kind) {
            continue;
        }
        w.family(name, kind, &first.help, false);
        for m in series.iter().filter(|m| m.kind == first.kind) {
            let labels: Vec<(&str, &str)> =
                m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match m.kind {
                UserMetricKind::Counter => w.sample(name, "_total", &labels, Value::Float(m.value)),
                UserMetricKind::Gauge => w.sample(name, "", &labels, Value::Float(m.value)),
                UserMetricKind::Histogram => {
                    let mut buckets = m.buckets.clone();
                    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                    w.histogram(name, &labels, buckets, m.sum);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Totals, WorkerSnapshot, method_index, status_index};

    fn totals(requests: &[(&str, u16, u64)], buckets: &[(usize, u64)], sum_micros: u64) -> Totals {
        let mut t = Totals::default();
        for (m, code, n) in requests {
            t.requests[method_index(m)][status_index(*code)] += n;
        }
        for (i, n) in buckets {
            t.duration_buckets[*i] += n;
        }
        t.duration_sum_micros = sum_micros;
        t.request_bytes = 100;
        t.response_bytes = 2000;
        t.exceptions = 1;
        t.connections = 10;
        t.cache.requests[0] = 2; // hit
        t.cache.requests[1] = 1; // miss
        t.cache.lock_waits = 1;
        t.cache.lock_wait_micros = 250_000;
        t.cache.stores = 1;
        t.cache.purges = 1;
        t
    }

    fn worker(pid: i32, state: &str, t: Totals) -> WorkerSnapshot {
        WorkerSnapshot {
            pid,
            state: state.to_owned(),
            age: pid as u32,
            uptime_seconds: 12.5,
            in_flight: 2,
            open_connections: 3,
            rss_bytes: 50_000_000,
            cpu_seconds: 1.25,
            totals: t,
            pool: 0,
            requests: 0,
        }
    }

    fn user(name: &str, kind: UserMetricKind, labels: &[(&str, &str)], value: f64) -> UserMetric {
        UserMetric {
            name: name.to_owned(),
            help: format!("Help for {name}."),
            kind,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            value,
            buckets: Vec::new(),
            sum: 0.0,
        }
    }

    pub(crate) fn sample_snapshot() -> Snapshot {
        let mut hist = user("shop_checkout_seconds", UserMetricKind::Histogram, &[], 0.0);
        hist.buckets = vec![(0.1, 1), (0.5, 2), (f64::INFINITY, 1)];
        hist.sum = 2.5;
        Snapshot {
            version: "0.1.0".to_owned(),
            start_time_seconds: 1_700_000_000.5,
            workers_target: 3,
            workers: vec![
                worker(
                    101,
                    "idle",
                    totals(&[("GET", 200, 5), ("POST", 404, 1)], &[(0, 5), (6, 1)], 150_000),
                ),
                worker(102, "busy", totals(&[("GET", 200, 2), ("BREW", 418, 1)], &[(2, 3)], 9_000)),
            ],
            retired: totals(&[("GET", 200, 3), ("GET", 503, 1)], &[(0, 3), (14, 1)], 40_000_000),
            restarts: vec![("max_requests".to_owned(), 2), ("crash".to_owned(), 1)],
            listeners: vec![
                ("0.0.0.0:8000".to_owned(), 4),
                ("unix:/run/a \"b\"\\c\nd".to_owned(), 0),
            ],
            user: vec![
                user("shop_orders", UserMetricKind::Counter, &[("region", "eu")], 3.0),
                user("shop_queue_length", UserMetricKind::Gauge, &[], 7.0),
                user("shop_orders", UserMetricKind::Counter, &[("region", "say \"hi\"\n")], 1.0),
                hist,
                user("ferrocorn_requests", UserMetricKind::Counter, &[], 1.0),
            ],
            cache_store: Some(crate::cache::CacheStoreCounts {
                entries: 12,
                bytes: 4096,
                capacity: 1 << 20,
                evictions: 5,
                repairs: 0,
            }),
            master_cache_purges: 1,
            upstreams: Vec::new(),
            pools: Vec::new(),
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn prometheus_counters_and_gauges() {
        let text = encode(&sample_snapshot(), Format::Prometheus);
        let l = lines(&text);
        for want in [
            "# HELP ferrocorn_requests_total Completed HTTP requests, by method and status code.",
            "# TYPE ferrocorn_requests_total counter",
            "ferrocorn_requests_total{method=\"GET\",code=\"200\"} 10",
            "ferrocorn_requests_total{method=\"GET\",code=\"503\"} 1",
            "ferrocorn_requests_total{method=\"POST\",code=\"404\"} 1",
            "ferrocorn_requests_total{method=\"other\",code=\"4xx\"} 1",
            "ferrocorn_request_body_bytes_total 300",
            "ferrocorn_connections_total 30",
            "ferrocorn_app_exceptions_total 3",
            "ferrocorn_requests_in_flight 4",
            "ferrocorn_open_connections 6",
            "ferrocorn_workers{state=\"booting\"} 0",
            "ferrocorn_workers{state=\"idle\"} 1",
            "ferrocorn_workers{state=\"busy\"} 1",
            "ferrocorn_workers{state=\"retiring\"} 0",
            "ferrocorn_workers_target 3",
            "ferrocorn_worker_restarts_total{reason=\"max_requests\"} 2",
            "ferrocorn_worker_restarts_total{reason=\"timeout\"} 0",
            "ferrocorn_worker_restarts_total{reason=\"scale\"} 0",
            "ferrocorn_worker_resident_memory_bytes{pid=\"101\"} 50000000",
            "ferrocorn_worker_cpu_seconds_total{pid=\"102\"} 1.25",
            "ferrocorn_listen_queue_depth{listener=\"0.0.0.0:8000\"} 4",
            "ferrocorn_start_time_seconds 1700000000.5",
            "# TYPE ferrocorn_build_info gauge",
            "ferrocorn_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        // Only non-zero request combinations.
        assert_eq!(l.iter().filter(|x| x.starts_with("ferrocorn_requests_total{")).count(), 4);
        assert!(!text.contains("# EOF"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn cache_counters_sum_over_workers_and_the_store_is_read_as_is() {
        let text = encode(&sample_snapshot(), Format::Prometheus);
        let l = lines(&text);
        for want in [
            "# TYPE ferrocorn_cache_requests_total counter",
            "ferrocorn_cache_requests_total{status=\"hit\"} 6",
            "ferrocorn_cache_requests_total{status=\"miss\"} 3",
            "ferrocorn_cache_requests_total{status=\"bypass\"} 0",
            "ferrocorn_cache_lock_waits_total 3",
            "ferrocorn_cache_lock_wait_seconds_total 0.75",
            "ferrocorn_cache_stores_total 3",
            "ferrocorn_cache_not_stored_total 0",
            "ferrocorn_cache_purges_total 4",
            "# TYPE ferrocorn_cache_entries gauge",
            "ferrocorn_cache_entries 12",
            "ferrocorn_cache_bytes 4096",
            "ferrocorn_cache_capacity_bytes 1048576",
            "ferrocorn_cache_evictions_total 5",
            "ferrocorn_cache_repairs_total 0",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        let statuses = l.iter().filter(|x| x.starts_with("ferrocorn_cache_requests_total{"));
        assert_eq!(statuses.count(), crate::cache::CACHE_STATUSES.len());
        // without a store: the families are described, with no sample
        let empty = encode(&Snapshot::default(), Format::Prometheus);
        assert!(empty.contains("# TYPE ferrocorn_cache_entries gauge\n"));
        assert!(!empty.contains("\nferrocorn_cache_entries "));
        assert!(empty.contains("ferrocorn_cache_requests_total{status=\"hit\"} 0\n"));
        let om = encode(&sample_snapshot(), Format::OpenMetrics);
        assert!(om.contains("# UNIT ferrocorn_cache_lock_wait_seconds seconds\n"));
        assert!(om.contains("# UNIT ferrocorn_cache_capacity_bytes bytes\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let text = encode(&sample_snapshot(), Format::Prometheus);
        let buckets: Vec<&str> = text
            .lines()
            .filter(|x| x.starts_with("ferrocorn_request_duration_seconds_bucket"))
            .collect();
        assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(buckets[0], "ferrocorn_request_duration_seconds_bucket{le=\"0.001\"} 8");
        assert_eq!(buckets[1], "ferrocorn_request_duration_seconds_bucket{le=\"0.0025\"} 8");
        assert_eq!(buckets[2], "ferrocorn_request_duration_seconds_bucket{le=\"0.005\"} 11");
        assert_eq!(buckets[6], "ferrocorn_request_duration_seconds_bucket{le=\"0.1\"} 12");
        assert_eq!(buckets[9], "ferrocorn_request_duration_seconds_bucket{le=\"1.0\"} 12");
        assert_eq!(buckets[14], "ferrocorn_request_duration_seconds_bucket{le=\"+Inf\"} 13");
        let l = lines(&text);
        assert!(l.contains(&"ferrocorn_request_duration_seconds_sum 40.159"));
        assert!(l.contains(&"ferrocorn_request_duration_seconds_count 13"));
        assert!(l.contains(&"# TYPE ferrocorn_request_duration_seconds histogram"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let text = encode(&sample_snapshot(), Format::Prometheus);
        let l = lines(&text);
        assert!(
            l.contains(&r#"ferrocorn_listen_queue_depth{listener="unix:/run/a \"b\"\\c\nd"} 0"#)
        );
        assert!(l.contains(&r#"shop_orders_total{region="say \"hi\"\n"} 1.0"#));
        assert_eq!(escape_help("a \"b\" \\ c\nd", Format::Prometheus), "a \"b\" \\\\ c\\nd");
        assert_eq!(escape_help("a \"b\"", Format::OpenMetrics), "a \\\"b\\\"");
    }

    #[test]
    fn user_metrics_grouped_into_families() {
        let text = encode(&sample_snapshot(), Format::Prometheus);
        let l = lines(&text);
        let at = |s: &str| l.iter().position(|x| *x == s).unwrap_or_else(|| panic!("{s}"));
        let type_line = at("# TYPE shop_orders_total counter");
        assert_eq!(l[type_line - 1], "# HELP shop_orders_total Help for shop_orders.");
        assert_eq!(l[type_line + 1], "shop_orders_total{region=\"eu\"} 3.0");
        assert_eq!(l[type_line + 2], r#"shop_orders_total{region="say \"hi\"\n"} 1.0"#);
        assert_eq!(l.iter().filter(|x| x.starts_with("# TYPE shop_orders")).count(), 1);
        assert!(
            at("# TYPE shop_orders_total counter")
                > at("ferrocorn_build_info{version=\"0.1.0\"} 1")
        );
        assert!(l.contains(&"# TYPE shop_queue_length gauge"));
        assert!(l.contains(&"shop_queue_length 7.0"));
        assert!(l.contains(&"# TYPE shop_checkout_seconds histogram"));
        assert!(l.contains(&"shop_checkout_seconds_bucket{le=\"0.1\"} 1"));
        assert!(l.contains(&"shop_checkout_seconds_bucket{le=\"0.5\"} 3"));
        assert!(l.contains(&"shop_checkout_seconds_bucket{le=\"+Inf\"} 4"));
        assert!(l.contains(&"shop_checkout_seconds_sum 2.5"));
        assert!(l.contains(&"shop_checkout_seconds_count 4"));
        // A user family that clashes with a built-in one is left out.
        assert_eq!(
            l.iter().filter(|x| x.starts_with("# TYPE ferrocorn_requests_total")).count(),
            1
        );
        assert!(!l.contains(&"ferrocorn_requests_total 1.0"));
    }

    #[test]
    fn openmetrics_names_units_and_eof() {
        let text = encode(&sample_snapshot(), Format::OpenMetrics);
        let l = lines(&text);
        for want in [
            "# TYPE ferrocorn_requests counter",
            "ferrocorn_requests_total{method=\"GET\",code=\"200\"} 10",
            "# TYPE ferrocorn_worker_cpu_seconds counter",
            "# UNIT ferrocorn_worker_cpu_seconds seconds",
            "# UNIT ferrocorn_request_body_bytes bytes",
            "# TYPE ferrocorn_request_duration_seconds histogram",
            "# UNIT ferrocorn_request_duration_seconds seconds",
            "# TYPE ferrocorn_build info",
            "ferrocorn_build_info{version=\"0.1.0\"} 1",
            "# TYPE shop_orders counter",
            "shop_orders_total{region=\"eu\"} 3.0",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        assert_eq!(l.last(), Some(&"# EOF"));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(!text.contains("_total counter"));
    }

    #[test]
    fn every_family_has_help_and_type() {
        let snapshot = sample_snapshot();
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = encode(&snapshot, format);
            let mut families: Vec<(String, bool, bool)> = Vec::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# HELP ") {
                    families.push((rest.split(' ').next().unwrap().to_owned(), true, false));
                } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let last = families.last_mut().expect("TYPE without HELP");
                    assert_eq!(rest.split(' ').next().unwrap(), last.0);
                    last.2 = true;
                } else if !line.starts_with('#') {
                    let (family, ..) = families.last().expect("sample before any family");
                    assert!(line.starts_with(family.as_str()), "{line} outside {family}");
                }
            }
            assert!(families.iter().all(|(_, help, ty)| *help && *ty));
            // The built-ins plus three app-defined families.
            assert_eq!(families.len(), catalogue().len() + 3, "{format:?}");
        }
    }

    #[test]
    fn empty_snapshot_encodes() {
        let text = encode(&Snapshot::default(), Format::Prometheus);
        assert!(text.contains("ferrocorn_workers{state=\"booting\"} 0\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_sum 0.0\n"));
        assert!(text.contains("# TYPE ferrocorn_requests_total counter\n"));
        assert!(!text.contains("ferrocorn_requests_total{"));
    }

    #[test]
    fn float_formatting() {
        assert_eq!(format_float(0.001), "0.001");
        assert_eq!(format_float(30.0), "30.0");
        assert_eq!(format_float(1e-7), "1e-7");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }

    #[test]
    fn accept_negotiation() {
        use Format::*;
        assert_eq!(Format::from_accept(None), Prometheus);
        assert_eq!(Format::from_accept(Some("text/plain")), Prometheus);
        assert_eq!(Format::from_accept(Some("*/*")), Prometheus);
        assert_eq!(Format::from_accept(Some("application/openmetrics-text")), OpenMetrics);
        let prometheus_server = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus_server)), OpenMetrics);
        let text_first = "text/plain;version=0.0.4;q=0.9, application/openmetrics-text; q=0.5";
        assert_eq!(Format::from_accept(Some(text_first)), Prometheus);
        assert_eq!(Format::from_accept(Some("Application/OpenMetrics-Text; q=0")), Prometheus);
        assert_eq!(
            OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert_eq!(Prometheus.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    }
}
