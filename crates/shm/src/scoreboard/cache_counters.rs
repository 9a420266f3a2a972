//! A slot's response-cache counters (part of its [`super::Counters`], so a reaped worker's
//! counts are folded into the master's retired area with the rest): answers by
//! `X-Cache-Status`, waits on another request's fill, stores, and purges. Only the slot's
//! worker adds to them, with relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrocorn_metrics::{CacheTotals, N_CACHE_STATUSES};

/// The response cache's counters in a slot (see the module docs).
#[repr(C)]
#[derive(Debug)]
pub struct CacheCounters {
    by_status: [AtomicU64; N_CACHE_STATUSES],
    lock_waits: AtomicU64,
    lock_wait_micros: AtomicU64,
    stores: AtomicU64,
    not_stored: AtomicU64,
    purges: AtomicU64,
    remote_errors: AtomicU64,
}

impl CacheCounters {
    /// An answer went out with the `X-Cache-Status` of index `status`
    /// (`ferrocorn_metrics::cache_status_index`).
    pub fn answered(&self, status: usize) {
        self.by_status[status.min(N_CACHE_STATUSES - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// A request started waiting for another request filling its key.
    pub fn lock_wait_started(&self) {
        self.lock_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// A request stopped waiting for another request's fill after `waited`.
    pub fn lock_waited(&self, waited: Duration) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.lock_wait_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A response offered to the store was stored (`true`) or not.
    pub fn store_outcome(&self, stored: bool) {
        let counter = if stored { &self.stores } else { &self.not_stored };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A `PURGE` request was carried out.
    pub fn purged(&self) {
        self.purges.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker's Redis operations that failed so far (its own running count, published).
    pub fn publish_remote_errors(&self, failed_so_far: u64) {
        self.remote_errors.fetch_max(failed_so_far, Ordering::Relaxed);
    }

    pub(super) fn each(&self, mut f: impl FnMut(&AtomicU64)) {
        self.by_status.iter().for_each(&mut f);
        for c in [
            &self.lock_waits,
            &self.lock_wait_micros,
            &self.stores,
            &self.not_stored,
            &self.purges,
            &self.remote_errors,
        ] {
            f(c);
        }
    }

    /// Read the counters into plain totals.
    pub fn totals(&self) -> CacheTotals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheTotals {
            requests: std::array::from_fn(|i| load(&self.by_status[i])),
            lock_waits: load(&self.lock_waits),
            lock_wait_micros: load(&self.lock_wait_micros),
            stores: load(&self.stores),
            not_stored: load(&self.not_stored),
            purges: load(&self.purges),
            remote_errors: load(&self.remote_errors),
        }
    }

    /// Add plain totals (the master folds a reaped worker's counters).
    pub(super) fn add(&self, t: &CacheTotals) {
        for (a, v) in self.by_status.iter().zip(&t.requests) {
            a.fetch_add(*v, Ordering::Relaxed);
        }
        self.lock_waits.fetch_add(t.lock_waits, Ordering::Relaxed);
        self.lock_wait_micros.fetch_add(t.lock_wait_micros, Ordering::Relaxed);
        self.stores.fetch_add(t.stores, Ordering::Relaxed);
        self.not_stored.fetch_add(t.not_stored, Ordering::Relaxed);
        self.purges.fetch_add(t.purges, Ordering::Relaxed);
        self.remote_errors.fetch_add(t.remote_errors, Ordering::Relaxed);
    }
}
