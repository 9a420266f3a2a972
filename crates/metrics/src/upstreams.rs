//! The load balancer's share of a scrape: the fixed label spaces its per-upstream counters
//! use — why an attempt failed ([`UPSTREAM_FAILURES`]) and the state an upstream is in as a
//! worker sees it ([`UPSTREAM_STATES`]) — and the [`UpstreamCounts`] of one upstream, read by
//! the master from shared memory when it is scraped.

use crate::snapshot::N_BUCKETS;

/// Why an attempt on an upstream failed (the `reason` label of
/// `ferrocorn_upstream_failures_total`), in index order: nginx's `proxy_next_upstream`
/// cases, with every counted HTTP status as `http_status`.
pub const UPSTREAM_FAILURES: [&str; 4] = ["error", "timeout", "invalid_header", "http_status"];
/// Number of failure reasons.
pub const N_UPSTREAM_FAILURES: usize = UPSTREAM_FAILURES.len();

/// The states of an upstream (the `state` label of `ferrocorn_upstream_state`), in index
/// order: in service (`up`, `slow_start` while its weight ramps back), `probing` (one request
/// sent to see whether it is back), out (`failed` by max_fails or error_limit, `unhealthy` by
/// the active check), and set by the operator or the configuration (`draining`, `down`).
pub const UPSTREAM_STATES: [&str; 7] =
    ["up", "slow_start", "probing", "failed", "unhealthy", "draining", "down"];
/// Number of upstream states.
pub const N_UPSTREAM_STATES: usize = UPSTREAM_STATES.len();

/// One upstream's counters, summed over the balancer's workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    /// Its address, as configured (the `upstream` label).
    pub name: String,
    /// Attempts sent to it.
    pub requests: u64,
    /// Failed attempts, by [`UPSTREAM_FAILURES`] index.
    pub failures: [u64; N_UPSTREAM_FAILURES],
    /// Requests that went on from it to another upstream.
    pub retries: u64,
    /// Requests in flight to it now.
    pub active: u64,
    /// Time to its response head, in the request-duration buckets.
    pub duration_buckets: [u64; N_BUCKETS],
    /// Sum of those times, in microseconds.
    pub duration_sum_micros: u64,
    /// Workers that see it in each state, by [`UPSTREAM_STATES`] index.
    pub states: [u64; N_UPSTREAM_STATES],
}

/// The samples of the `ferrocorn_upstream_*` family `name` (its `suffix`: `_total` for
/// counters), one series per upstream (and per reason or state).
pub(crate) fn samples(
    w: &mut crate::encode::Writer,
    name: &str,
    suffix: &str,
    upstreams: &[UpstreamCounts],
) {
    use crate::encode::Value::Int;
    for u in upstreams {
        let upstream = ("upstream", u.name.as_str());
        match name {
            "ferrocorn_upstream_requests" => w.sample(name, suffix, &[upstream], Int(u.requests)),
            "ferrocorn_upstream_failures" => {
                for (reason, n) in UPSTREAM_FAILURES.iter().zip(u.failures) {
                    w.sample(name, suffix, &[upstream, ("reason", reason)], Int(n));
                }
            }
            "ferrocorn_upstream_retries" => w.sample(name, suffix, &[upstream], Int(u.retries)),
            "ferrocorn_upstream_active_requests" => {
                w.sample(name, suffix, &[upstream], Int(u.active));
            }
            "ferrocorn_upstream_response_seconds" => {
                let bounds = crate::DURATION_BUCKETS.iter().copied().chain([f64::INFINITY]);
                let sum = u.duration_sum_micros as f64 / 1e6;
                w.histogram(name, &[upstream], bounds.zip(u.duration_buckets), sum);
            }
            "ferrocorn_upstream_state" => {
                for (state, n) in UPSTREAM_STATES.iter().zip(u.states) {
                    w.sample(name, suffix, &[upstream, ("state", state)], Int(n));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, Snapshot, encode};

    #[test]
    fn each_upstream_is_a_series_with_its_reasons_and_states() {
        let mut a =
            UpstreamCounts { name: "127.0.0.1:8001".into(), requests: 10, ..Default::default() };
        a.failures[1] = 2;
        a.retries = 2;
        a.active = 3;
        a.duration_buckets[0] = 8;
        a.duration_buckets[3] = 2;
        a.duration_sum_micros = 30_000;
        a.states[0] = 1;
        a.states[3] = 1;
        let snapshot = Snapshot { upstreams: vec![a], ..Default::default() };
        let text = encode(&snapshot, Format::Prometheus);
        for line in [
            "ferrocorn_upstream_requests_total{upstream=\"127.0.0.1:8001\"} 10",
            "ferrocorn_upstream_failures_total{upstream=\"127.0.0.1:8001\",reason=\"timeout\"} 2",
            "ferrocorn_upstream_failures_total{upstream=\"127.0.0.1:8001\",reason=\"error\"} 0",
            "ferrocorn_upstream_retries_total{upstream=\"127.0.0.1:8001\"} 2",
            "ferrocorn_upstream_active_requests{upstream=\"127.0.0.1:8001\"} 3",
            "ferrocorn_upstream_response_seconds_bucket{upstream=\"127.0.0.1:8001\",le=\"0.01\"} 10",
            "ferrocorn_upstream_response_seconds_count{upstream=\"127.0.0.1:8001\"} 10",
            "ferrocorn_upstream_state{upstream=\"127.0.0.1:8001\",state=\"failed\"} 1",
            "ferrocorn_upstream_state{upstream=\"127.0.0.1:8001\",state=\"up\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn no_upstreams_no_samples() {
        let text = encode(&Snapshot::default(), Format::Prometheus);
        assert!(!text.lines().any(|l| l.starts_with("ferrocorn_upstream_requests_total")));
    }
}
