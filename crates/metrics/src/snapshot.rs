//! The data a scrape encodes: per-worker counters (fixed label spaces, so they fit in shared
//! memory), folded totals of retired workers, master-side counters, the cache store's counts,
//! and app-defined metrics.

use crate::cache::{CacheStoreCounts, CacheTotals};

/// Methods counted individually; everything else is `other`.
pub const METHODS: [&str; 8] =
    ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "other"];
/// Number of method labels.
pub const N_METHODS: usize = METHODS.len();

/// Status codes counted individually; others are counted per class (`1xx` … `5xx`).
pub const STATUS_CODES: [u16; 29] = [
    100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408,
    409, 413, 414, 417, 422, 429, 431, 500, 502, 503,
];
/// Number of status labels: the codes above plus one per class.
pub const N_STATUS: usize = STATUS_CODES.len() + 5;

/// Upper bounds (seconds) of the request-duration histogram buckets; `+Inf` is implicit.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Number of histogram slots (the bounds above plus `+Inf`).
pub const N_BUCKETS: usize = DURATION_BUCKETS.len() + 1;

/// What woke a worker that had left a waiting connection to its siblings (the `cause` label
/// of `ferrocorn_accept_rechecks_total`), in index order.
pub const ACCEPT_RECHECK_CAUSES: [&str; 3] = ["event", "deadline", "fallback"];
/// Number of accept re-check causes.
pub const N_ACCEPT_RECHECKS: usize = ACCEPT_RECHECK_CAUSES.len();

/// Index of `method` in [`METHODS`].
pub fn method_index(method: &str) -> usize {
    METHODS.iter().position(|m| *m == method).unwrap_or(N_METHODS - 1)
}

/// Index of `status` among the status labels.
pub fn status_index(status: u16) -> usize {
    match STATUS_CODES.iter().position(|c| *c == status) {
        Some(i) => i,
        None => STATUS_CODES.len() + usize::from((status / 100).clamp(1, 5) - 1),
    }
}

/// The `code` label for status index `index` (`"200"`, or a class like `"5xx"`).
pub fn status_label(index: usize) -> String {
    match STATUS_CODES.get(index) {
        Some(code) => code.to_string(),
        None => format!("{}xx", index - STATUS_CODES.len() + 1),
    }
}

/// The histogram slot for a request that took `micros` microseconds.
pub fn duration_bucket(micros: u64) -> usize {
    let seconds = micros as f64 / 1e6;
    DURATION_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(N_BUCKETS - 1)
}

/// Counters that only grow (per worker, or folded from retired workers).
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    /// Completed requests by `[method][status]` index.
    pub requests: [[u64; N_STATUS]; N_METHODS],
    /// Request durations, per bucket (not cumulative; the encoder accumulates).
    pub duration_buckets: [u64; N_BUCKETS],
    /// Sum of request durations in microseconds.
    pub duration_sum_micros: u64,
    /// Request body bytes received.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// Exceptions raised by the app.
    pub exceptions: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Accept re-checks by cause ([`ACCEPT_RECHECK_CAUSES`]).
    pub accept_rechecks: [u64; N_ACCEPT_RECHECKS],
    /// Wake-ups by a waiting connection that a sibling took first.
    pub accept_missed: u64,
    /// The response cache's counters.
    pub cache: CacheTotals,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            requests: [[0; N_STATUS]; N_METHODS],
            duration_buckets: [0; N_BUCKETS],
            duration_sum_micros: 0,
            request_bytes: 0,
            response_bytes: 0,
            exceptions: 0,
            connections: 0,
            accept_rechecks: [0; N_ACCEPT_RECHECKS],
            accept_missed: 0,
            cache: CacheTotals::default(),
        }
    }
}

impl Totals {
    /// Add `other` into `self`.
    pub fn add(&mut self, other: &Totals) {
        for (row, orow) in self.requests.iter_mut().zip(&other.requests) {
            for (c, o) in row.iter_mut().zip(orow) {
                *c += o;
            }
        }
        for (c, o) in self.duration_buckets.iter_mut().zip(&other.duration_buckets) {
            *c += o;
        }
        self.duration_sum_micros += other.duration_sum_micros;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
        self.exceptions += other.exceptions;
        self.connections += other.connections;
        for (c, o) in self.accept_rechecks.iter_mut().zip(&other.accept_rechecks) {
            *c += o;
        }
        self.accept_missed += other.accept_missed;
        self.cache.add(&other.cache);
    }

    /// All completed requests.
    pub fn request_count(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// Approximate latency quantile (`q` in 0..=1) in seconds from the buckets (upper bound of
    /// the bucket that holds it); None without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.duration_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.duration_buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }
}

/// One live worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSnapshot {
    /// Process id.
    pub pid: i32,
    /// `booting`, `idle`, `busy` or `retiring`.
    pub state: String,
    /// Spawn order.
    pub age: u32,
    /// Seconds since the worker was forked.
    pub uptime_seconds: f64,
    /// Requests running now.
    pub in_flight: u64,
    /// Open client connections.
    pub open_connections: u64,
    /// Resident set size in bytes (from /proc).
    pub rss_bytes: u64,
    /// User + system CPU seconds (from /proc).
    pub cpu_seconds: f64,
    /// Its counters so far.
    pub totals: Totals,
    /// Its worker pool (index into [`Snapshot::pools`]).
    pub pool: usize,
    /// Requests it finished.
    pub requests: u64,
}

/// The kind of an app-defined metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// One app-defined metric series (one label combination), already summed over workers.
#[derive(Debug, Clone, PartialEq)]
pub struct UserMetric {
    /// Metric name (for counters without the `_total` suffix).
    pub name: String,
    /// Help text.
    pub help: String,
    /// Kind.
    pub kind: UserMetricKind,
    /// Label pairs.
    pub labels: Vec<(String, String)>,
    /// Counter or gauge value.
    pub value: f64,
    /// Histogram: `(upper bound, count in that bucket (not cumulative))`, `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    /// Histogram: sum of observations.
    pub sum: f64,
}

/// Everything one scrape shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// ferrocorn version.
    pub version: String,
    /// Master start time, Unix seconds.
    pub start_time_seconds: f64,
    /// Target worker count.
    pub workers_target: usize,
    /// Live workers.
    pub workers: Vec<WorkerSnapshot>,
    /// Counters of workers that have exited (so totals never go backwards).
    pub retired: Totals,
    /// Worker restarts by reason (`max_requests`, `timeout`, `memory`, `crash`, `reload`, `scale`).
    pub restarts: Vec<(String, u64)>,
    /// Listen-queue depth per listener address.
    pub listeners: Vec<(String, u64)>,
    /// App-defined metrics.
    pub user: Vec<UserMetric>,
    /// The shared cache store's counts (None: no store is mapped).
    pub cache_store: Option<CacheStoreCounts>,
    /// Purges the master carried out for `ferrocorn ctl cache purge`.
    pub master_cache_purges: u64,
    /// The load balancer's upstreams (empty unless the instance is one).
    pub upstreams: Vec<crate::upstreams::UpstreamCounts>,
    /// The worker pools' prefixes (`/` first; only `/` without `--pool`) and the requests
    /// their reaped workers served.
    pub pools: Vec<(String, u64)>,
}

impl Snapshot {
    /// Counters over live and retired workers.
    pub fn totals(&self) -> Totals {
        let mut t = self.retired.clone();
        for w in &self.workers {
            t.add(&w.totals);
        }
        t
    }

    /// The response cache's counters over live and retired workers, with the master's purges.
    pub fn cache_totals(&self) -> CacheTotals {
        let mut cache = self.totals().cache;
        cache.purges += self.master_cache_purges;
        cache
    }
}

/// The samples of `ferrocorn_pool_workers` / `ferrocorn_pool_requests` (`name`, its `suffix`),
/// one per worker pool — only with pools: a single pool is the instance itself.
pub(crate) fn pool_samples(w: &mut crate::encode::Writer, name: &str, suffix: &str, s: &Snapshot) {
    let pools = if s.pools.len() > 1 { &s.pools[..] } else { &[] };
    for (i, (prefix, retired)) in pools.iter().enumerate() {
        let live = s.workers.iter().filter(|x| x.pool == i);
        let n = match name {
            "ferrocorn_pool_workers" => live.count() as u64,
            _ => retired + live.map(|x| x.requests).sum::<u64>(),
        };
        w.sample(name, suffix, &[("pool", prefix)], crate::encode::Value::Int(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_indexes_round_trip() {
        assert_eq!(METHODS[method_index("POST")], "POST");
        assert_eq!(method_index("BREW"), N_METHODS - 1);
        assert_eq!(status_label(status_index(404)), "404");
        assert_eq!(status_label(status_index(418)), "4xx");
        assert_eq!(status_label(status_index(599)), "5xx");
        assert!(status_index(599) < N_STATUS);
    }

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(duration_bucket(500), 0);
        assert_eq!(duration_bucket(1_000), 0);
        assert_eq!(duration_bucket(1_001), 1);
        assert_eq!(duration_bucket(60_000_000), N_BUCKETS - 1);
        let mut t = Totals::default();
        t.duration_buckets[0] = 98;
        t.duration_buckets[6] = 2;
        assert_eq!(t.quantile(0.5), Some(0.001));
        assert_eq!(t.quantile(0.99), Some(0.1));
    }
}
