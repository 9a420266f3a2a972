//! ferrocorn's metrics, free of I/O: the fixed label spaces the scoreboard counts in
//! ([`METHODS`], [`STATUS_CODES`], [`DURATION_BUCKETS`]), the [`Snapshot`] of a whole server
//! instance that the master assembles from shared memory and `/proc`, the one metric catalogue,
//! and its Prometheus text (0.0.4) and OpenMetrics (1.0) encodings. The response cache's label
//! space and counts are in `cache.rs`, the load balancer's in `upstreams.rs`.

mod cache;
mod catalogue;
mod encode;
mod snapshot;
mod upstreams;

pub use cache::{
    CACHE_STATUSES, CacheStoreCounts, CacheTotals, N_CACHE_STATUSES, cache_status_index,
};
pub use catalogue::{MetricDef, MetricKind, catalogue, render_metrics_markdown};
pub use encode::{Format, encode};
pub use snapshot::{
    ACCEPT_RECHECK_CAUSES, DURATION_BUCKETS, METHODS, N_ACCEPT_RECHECKS, N_BUCKETS, N_METHODS,
    N_STATUS, STATUS_CODES, Snapshot, Totals, UserMetric, UserMetricKind, WorkerSnapshot,
    duration_bucket, method_index, status_index, status_label,
};
pub use upstreams::{
    N_UPSTREAM_FAILURES, N_UPSTREAM_STATES, UPSTREAM_FAILURES, UPSTREAM_STATES, UpstreamCounts,
};
