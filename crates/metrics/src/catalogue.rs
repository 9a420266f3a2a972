//! The metric catalogue: the one table of ferrocorn's built-in metrics (name, type, labels,
//! help), from which the encoders take their `# HELP` / `# TYPE` lines and `docs/metrics.md` is
//! generated.

use crate::snapshot::DURATION_BUCKETS;
use MetricKind::{Counter, Gauge, Histogram, Info};

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up; exposed as `<name>_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative buckets: `<name>_bucket{le=…}`, `<name>_sum`, `<name>_count`.
    Histogram,
    /// Constant `1` whose labels carry the information. The name ends in `_info`; Prometheus
    /// text exposes it as a gauge, OpenMetrics as an `info` family named without `_info`.
    Info,
}

impl MetricKind {
    /// The word used in `# TYPE` lines (OpenMetrics spelling for [`MetricKind::Info`]).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Info => "info",
        }
    }
}

/// One built-in metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Metric name; for counters without the `_total` suffix, for info metrics with `_info`.
    pub name: &'static str,
    /// Its type.
    pub kind: MetricKind,
    /// Help text (one line).
    pub help: &'static str,
    /// Label names (histograms' `le` is implicit).
    pub labels: &'static [&'static str],
}

impl MetricDef {
    /// The name a PromQL query uses for the main series: `<name>_total` for counters, the
    /// name itself otherwise (histograms add `_bucket`, `_sum` and `_count`).
    pub fn exposed_name(&self) -> String {
        match self.kind {
            MetricKind::Counter => format!("{}_total", self.name),
            _ => self.name.to_owned(),
        }
    }
}

/// Worker states, in the order `ferrocorn_workers` lists them (always all of them).
pub const WORKER_STATES: [&str; 4] = ["booting", "idle", "busy", "retiring"];

/// Worker restart reasons, in the order `ferrocorn_worker_restarts_total` lists them (always
/// all of them).
pub const RESTART_REASONS: [&str; 6] =
    ["max_requests", "timeout", "memory", "crash", "reload", "scale"];

const fn def(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef { name, kind, help, labels }
}

static CATALOGUE: [MetricDef; 39] = [
    def(
        "ferrocorn_requests",
        Counter,
        &["method", "code"],
        "Completed HTTP requests, by method and status code.",
    ),
    def(
        "ferrocorn_request_duration_seconds",
        Histogram,
        &[],
        "Time taken to handle each request, in seconds.",
    ),
    def("ferrocorn_request_body_bytes", Counter, &[], "Request body bytes received."),
    def("ferrocorn_response_body_bytes", Counter, &[], "Response body bytes sent."),
    def(
        "ferrocorn_requests_in_flight",
        Gauge,
        &[],
        "Requests being handled now, over all workers.",
    ),
    def("ferrocorn_open_connections", Gauge, &[], "Client connections open now, over all workers."),
    def("ferrocorn_connections", Counter, &[], "Client connections accepted."),
    def("ferrocorn_app_exceptions", Counter, &[], "Exceptions raised by the application."),
    def(
        "ferrocorn_accept_rechecks",
        Counter,
        &["cause"],
        "Times a worker that had left a waiting connection to its siblings (over its fair share) looked at it again, by what woke it: event (a request or connection of its own ended, or a sibling took a connection), deadline (a busy sibling's request became long), fallback (nothing happened for 50 ms).",
    ),
    def(
        "ferrocorn_accept_missed",
        Counter,
        &[],
        "Times a worker looked for a waiting connection and found the queue empty: a sibling was quicker, or it was the last look of a burst (a worker takes connections until the queue is empty; an arrival wakes one waiting worker, or every worker watching where exclusive wake-ups cannot be set up).",
    ),
    def(
        "ferrocorn_workers",
        Gauge,
        &["state"],
        "Live worker processes, by state (booting, idle, busy, retiring).",
    ),
    def("ferrocorn_workers_target", Gauge, &[], "Number of workers the master aims to run."),
    def(
        "ferrocorn_worker_restarts",
        Counter,
        &["reason"],
        "Workers replaced, by reason (max_requests, timeout, memory, crash, reload, scale).",
    ),
    def(
        "ferrocorn_worker_resident_memory_bytes",
        Gauge,
        &["pid"],
        "Resident memory of each live worker, in bytes.",
    ),
    def(
        "ferrocorn_worker_cpu_seconds",
        Counter,
        &["pid"],
        "User and system CPU time of each live worker, in seconds.",
    ),
    def(
        "ferrocorn_worker_uptime_seconds",
        Gauge,
        &["pid"],
        "Time since each live worker was forked, in seconds.",
    ),
    def(
        "ferrocorn_listen_queue_depth",
        Gauge,
        &["listener"],
        "Connections waiting in the kernel accept queue, per listening socket.",
    ),
    def(
        "ferrocorn_cache_requests",
        Counter,
        &["status"],
        "Responses of the response cache (--cache), by the X-Cache-Status they carry: hit, miss, expired, stale, updating, revalidated, bypass (PURGE answers are not counted).",
    ),
    def(
        "ferrocorn_cache_lock_waits",
        Counter,
        &[],
        "Requests that waited for another request filling the same cache key (--cache-lock).",
    ),
    def(
        "ferrocorn_cache_lock_wait_seconds",
        Counter,
        &[],
        "Time requests spent waiting for another request filling the same cache key, in seconds.",
    ),
    def("ferrocorn_cache_stores", Counter, &[], "Responses stored by the response cache."),
    def(
        "ferrocorn_cache_not_stored",
        Counter,
        &[],
        "Responses the response cache tried to store and did not: not storable by their status or headers, over --cache-max-entry-size, or cut short.",
    ),
    def(
        "ferrocorn_cache_purges",
        Counter,
        &[],
        "Purges carried out: PURGE requests from allowed clients and ferrocorn ctl cache purge commands.",
    ),
    def(
        "ferrocorn_cache_remote_errors",
        Counter,
        &[],
        "Operations on the cache's Redis backend (--cache-backend redis://...) that failed: unreachable, timed out or refused. Each one degrades to the app answering (nothing stored), never to an error.",
    ),
    def(
        "ferrocorn_cache_entries",
        Gauge,
        &[],
        "Values in the shared cache store now: stored responses with their Vary and hit-for-miss marks, and the app cache's values.",
    ),
    def("ferrocorn_cache_bytes", Gauge, &[], "Bytes of the shared cache store's ring in use now."),
    def(
        "ferrocorn_cache_capacity_bytes",
        Gauge,
        &[],
        "Size of the shared cache store's ring (--cache-max-size), in bytes.",
    ),
    def(
        "ferrocorn_cache_evictions",
        Counter,
        &[],
        "Values dropped from the shared cache store to make room for new ones.",
    ),
    def(
        "ferrocorn_cache_repairs",
        Counter,
        &[],
        "Cache store slots freed after a process died while writing them.",
    ),
    def(
        "ferrocorn_pool_workers",
        Gauge,
        &["pool"],
        "Live workers of each worker pool (--pool), by its URL prefix; only with pools.",
    ),
    def(
        "ferrocorn_pool_requests",
        Counter,
        &["pool"],
        "Requests served by each worker pool (--pool), by its URL prefix; only with pools.",
    ),
    def(
        "ferrocorn_upstream_requests",
        Counter,
        &["upstream"],
        "Attempts the load balancer sent to each upstream (a request that went on to another upstream counts once per upstream tried).",
    ),
    def(
        "ferrocorn_upstream_failures",
        Counter,
        &["upstream", "reason"],
        "Failed attempts per upstream: error (connect, send or receive failed), timeout, invalid_header, http_status (an answer --next-upstream lists).",
    ),
    def(
        "ferrocorn_upstream_retries",
        Counter,
        &["upstream"],
        "Requests that went on from this upstream to another after a failure (--next-upstream).",
    ),
    def(
        "ferrocorn_upstream_active_requests",
        Gauge,
        &["upstream"],
        "Requests in flight to each upstream now, over all balancer workers.",
    ),
    def(
        "ferrocorn_upstream_response_seconds",
        Histogram,
        &["upstream"],
        "Time from choosing an upstream to its response head, per upstream, in seconds.",
    ),
    def(
        "ferrocorn_upstream_state",
        Gauge,
        &["upstream", "state"],
        "Balancer workers that see each upstream in each state: up, slow_start, probing, failed (max_fails or error_limit), unhealthy (active health check), draining, down.",
    ),
    def(
        "ferrocorn_start_time_seconds",
        Gauge,
        &[],
        "Start time of the master process since the Unix epoch, in seconds.",
    ),
    def(
        "ferrocorn_build_info",
        Info,
        &["version"],
        "ferrocorn build information; the value is always 1.",
    ),
];

/// The built-in metrics, in the order they are exposed.
pub fn catalogue() -> &'static [MetricDef] {
    &CATALOGUE
}

/// The first line of `docs/metrics.md`.
pub const HEADER: &str = "<!-- generated from crates/metrics by cargo test; do not edit -->";

fn format_bound(b: f64) -> String {
    let s = b.to_string();
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// The content of `docs/metrics.md`.
pub fn render_metrics_markdown() -> String {
    let mut out = format!(
        "{HEADER}\n\n# Metrics\n\n\
         What a Prometheus scrape of ferrocorn shows: one exposition for the whole server \
         instance, assembled by the master from the workers' shared-memory counters and `/proc`, \
         served at `http://ADDRESS/metrics` when ferrocorn runs with `--metrics-bind ADDRESS` \
         (setting `metrics_bind`). \
         The text is Prometheus 0.0.4 (`text/plain; version=0.0.4`), or OpenMetrics 1.0 \
         (`application/openmetrics-text; version=1.0.0`) when the scrape's `Accept` header asks \
         for `application/openmetrics-text`.\n\n\
         Counters are summed over the live workers plus every worker that has exited, so they \
         never go backwards when a worker is replaced; per-worker series (label `pid`) only \
         cover the live workers. A contrib Grafana dashboard built on these names is in \
         `contrib/grafana-dashboard.json`.\n\n\
         ## Built-in metrics\n\n\
         | Name | Type | Labels | Help |\n|---|---|---|---|\n"
    );
    for d in catalogue() {
        let labels: Vec<String> = d.labels.iter().map(|l| format!("`{l}`")).collect();
        let row = [
            format!("`{}`", d.exposed_name()),
            d.kind.as_str().to_owned(),
            labels.join(", "),
            d.help.to_owned(),
        ];
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    let bounds: Vec<String> = DURATION_BUCKETS.iter().map(|b| format_bound(*b)).collect();
    out.push_str(&format!(
        "\nNotes:\n\n\
         - `ferrocorn_requests_total` has a series only for the `method`/`code` pairs seen so \
         far. `method` is one of GET, POST, PUT, DELETE, HEAD, PATCH, OPTIONS, or `other`; \
         `code` is the status code for common codes and the class (`1xx` … `5xx`) for the \
         rest.\n\
         - `ferrocorn_request_duration_seconds` buckets (`le`, seconds): {}, `+Inf`.\n\
         - `ferrocorn_workers` always has all four states and `ferrocorn_worker_restarts_total` \
         all six reasons, at 0 when there are none, so `rate()` and stacking work from the \
         start.\n\
         - `ferrocorn_cache_requests_total` always has all seven statuses, at 0 without \
         `--cache`. The hit ratio is \
         `sum(rate(ferrocorn_cache_requests_total{{status=\"hit\"}}[5m])) / \
         sum(rate(ferrocorn_cache_requests_total[5m]))`. The `ferrocorn_cache_entries`, \
         `_bytes`, `_capacity_bytes`, `_evictions_total` and `_repairs_total` series are read \
         from the one shared cache store at scrape time; the store is shared with the app cache \
         (`ferrocorn.cache`), so they count its values too. `ferrocorn ctl cache stats` shows \
         the same numbers.\n\
         - `ferrocorn_build_info` is a gauge in Prometheus text and an `info` family \
         (`ferrocorn_build`) in OpenMetrics; either way the series is \
         `ferrocorn_build_info{{version=\"…\"}} 1`.\n\
         - Counters are exposed with `_total`; in OpenMetrics the `# TYPE` line names the family \
         without it, and `_seconds` / `_bytes` families carry a `# UNIT` line.\n",
        bounds.join(", ")
    ));
    out.push_str(
        "\n## App-defined metrics\n\n\
         The application can define its own metrics; they are exposed after the built-in ones, \
         in the same scrape:\n\n\
         ```python\n\
         from ferrocorn import metrics\n\n\
         orders = metrics.Counter(\"shop_orders\", \"Orders placed.\", labelnames=(\"region\",))\n\
         orders.labels(region=\"eu\").inc()\n\n\
         queue = metrics.Gauge(\"shop_queue_length\", \"Jobs waiting.\")\n\
         queue.set(12)\n\n\
         latency = metrics.Histogram(\"shop_checkout_seconds\", \"Checkout time.\",\n\
         \x20                           buckets=(0.1, 0.5, 1.0))\n\
         latency.observe(0.27)\n\
         ```\n\n\
         `metrics.Counter(name, documentation, labelnames=())`, `metrics.Gauge(…)` and \
         `metrics.Histogram(…, buckets=…)` work like prometheus_client's (`labels(…)`, `inc`, \
         `dec`, `set`, `observe`); a counter's name is given without the `_total` suffix. A scrape \
         sums every series over the workers (a gauge's value is the sum of the workers' values, a histogram's buckets, sum and count \
         are added up), so the exposition shows one series per label combination for the whole \
         server. Counters are exposed as `<name>_total`, histograms as `<name>_bucket`, \
         `<name>_sum` and `<name>_count` with the buckets the app gave. A series whose name \
         collides with a built-in metric is not exposed.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Regenerates docs/metrics.md; fails (after writing the new content) when it had drifted,
    /// so a rerun passes and the diff shows up for review.
    #[test]
    fn metrics_doc_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
        let want = render_metrics_markdown();
        let have = std::fs::read_to_string(path).unwrap_or_default();
        if have != want {
            std::fs::write(path, &want).unwrap();
            panic!("docs/metrics.md was out of date and has been regenerated; rerun the tests");
        }
    }

    #[test]
    fn names_follow_conventions() {
        let mut seen = HashSet::new();
        for d in catalogue() {
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            assert!(d.name.starts_with("ferrocorn_"), "{}", d.name);
            assert!(d.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", d.name);
            for suffix in ["_total", "_count", "_sum", "_bucket", "_created"] {
                assert!(!d.name.ends_with(suffix), "{}", d.name);
            }
            assert_eq!(d.kind == MetricKind::Info, d.name.ends_with("_info"), "{}", d.name);
            assert!(!d.labels.contains(&"le"), "{}", d.name);
            assert!(d.help.ends_with('.') && !d.help.contains('\n'), "{}", d.name);
        }
    }

    /// Every `ferrocorn_…` series contrib/grafana-dashboard.json queries is one a scrape shows.
    #[test]
    fn the_grafana_dashboard_queries_only_exposed_series() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/grafana-dashboard.json");
        let text = std::fs::read_to_string(path).unwrap();
        let mut exposed = HashSet::new();
        for d in catalogue() {
            exposed.insert(d.exposed_name());
            if d.kind == MetricKind::Histogram {
                exposed.extend(["_bucket", "_sum", "_count"].map(|s| format!("{}{s}", d.name)));
            }
        }
        let mut queried = 0;
        for (at, _) in text.match_indices("ferrocorn_") {
            let rest = &text[at..];
            let end =
                rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(rest.len());
            assert!(exposed.contains(&rest[..end]), "the dashboard queries {}", &rest[..end]);
            queried += 1;
        }
        assert!(queried > 20 && text.contains("ferrocorn_cache_requests_total"));
    }

    #[test]
    fn doc_lists_every_metric() {
        let md = render_metrics_markdown();
        assert!(md.starts_with(HEADER));
        for d in catalogue() {
            assert!(md.contains(&format!("| `{}` |", d.exposed_name())), "{}", d.name);
        }
        assert!(md.contains("| `ferrocorn_requests_total` | counter | `method`, `code` |"));
        assert!(md.contains("from ferrocorn import metrics"));
        assert!(md.contains("0.001, 0.0025"));
    }
}
