//! The response cache's share of a scrape: the `X-Cache-Status` values it counts answers by
//! ([`CACHE_STATUSES`], a fixed label space like the request methods, so the counts fit in a
//! scoreboard slot), the per-worker [`CacheTotals`], and the [`CacheStoreCounts`] the master
//! reads from the shared store when it is scraped.

use crate::snapshot::Snapshot;

/// The `X-Cache-Status` values, lower case, in index order (the `status` label of
/// `ferrocorn_cache_requests_total`): nginx's, REVALIDATED included (`--cache-revalidate`,
/// `ferrocorn_cache::revalidate`).
pub const CACHE_STATUSES: [&str; 7] =
    ["hit", "miss", "expired", "stale", "updating", "revalidated", "bypass"];
/// Number of cache statuses.
pub const N_CACHE_STATUSES: usize = CACHE_STATUSES.len();

/// Index of an `X-Cache-Status` value (`HIT`, `miss`, …) in [`CACHE_STATUSES`]; None for a
/// value the label space does not have.
pub fn cache_status_index(status: &str) -> Option<usize> {
    CACHE_STATUSES.iter().position(|s| s.eq_ignore_ascii_case(status))
}

/// The response cache's counters (per worker, or folded from retired workers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheTotals {
    /// Answers tagged with `X-Cache-Status`, by [`CACHE_STATUSES`] index.
    pub requests: [u64; N_CACHE_STATUSES],
    /// Requests that waited for another request filling their key.
    pub lock_waits: u64,
    /// Time they waited, in microseconds.
    pub lock_wait_micros: u64,
    /// Responses stored.
    pub stores: u64,
    /// Responses offered to the store and not stored.
    pub not_stored: u64,
    /// `PURGE` requests carried out.
    pub purges: u64,
    /// Operations on the Redis backend that failed (`--cache-backend redis://…`).
    pub remote_errors: u64,
}

impl CacheTotals {
    /// Add `other` into `self`.
    pub fn add(&mut self, other: &CacheTotals) {
        for (c, o) in self.requests.iter_mut().zip(&other.requests) {
            *c += o;
        }
        self.lock_waits += other.lock_waits;
        self.lock_wait_micros += other.lock_wait_micros;
        self.stores += other.stores;
        self.not_stored += other.not_stored;
        self.purges += other.purges;
        self.remote_errors += other.remote_errors;
    }

    /// Answers with any `X-Cache-Status`.
    pub fn answered(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// The answers counted as `status` (0 for a status not in [`CACHE_STATUSES`]).
    pub fn count(&self, status: &str) -> u64 {
        cache_status_index(status).map_or(0, |i| self.requests[i])
    }

    /// HITs over all answers with an `X-Cache-Status` (None before the first).
    pub fn hit_ratio(&self) -> Option<f64> {
        let all = self.answered();
        (all > 0).then(|| self.count("hit") as f64 / all as f64)
    }
}

/// The shared cache store's counts at the moment of a scrape (the response cache's and the
/// app cache's values together: they share the store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStoreCounts {
    /// Keys with a value.
    pub entries: u64,
    /// Bytes of the ring in use.
    pub bytes: u64,
    /// The ring's size.
    pub capacity: u64,
    /// Values dropped to make room, since the store was mapped.
    pub evictions: u64,
    /// Slots freed after a writer died inside them, since the store was mapped.
    pub repairs: u64,
}

/// The samples of the `ferrocorn_cache_*` family `name` (its `suffix`: `_total` for
/// counters): the answers by `X-Cache-Status` and the other counters over every worker, and
/// the shared store's counts (no sample without a store).
pub(crate) fn samples(w: &mut crate::encode::Writer, name: &str, suffix: &str, s: &Snapshot) {
    use crate::encode::Value::{Float, Int};
    let totals = s.cache_totals();
    let store = s.cache_store.as_ref();
    let value = match name {
        "ferrocorn_cache_requests" => {
            for (status, n) in CACHE_STATUSES.iter().zip(totals.requests) {
                w.sample(name, suffix, &[("status", status)], Int(n));
            }
            return;
        }
        "ferrocorn_cache_lock_wait_seconds" => Some(Float(totals.lock_wait_micros as f64 / 1e6)),
        "ferrocorn_cache_lock_waits" => Some(Int(totals.lock_waits)),
        "ferrocorn_cache_stores" => Some(Int(totals.stores)),
        "ferrocorn_cache_not_stored" => Some(Int(totals.not_stored)),
        "ferrocorn_cache_purges" => Some(Int(totals.purges)),
        "ferrocorn_cache_remote_errors" => Some(Int(totals.remote_errors)),
        "ferrocorn_cache_entries" => store.map(|c| Int(c.entries)),
        "ferrocorn_cache_bytes" => store.map(|c| Int(c.bytes)),
        "ferrocorn_cache_capacity_bytes" => store.map(|c| Int(c.capacity)),
        "ferrocorn_cache_evictions" => store.map(|c| Int(c.evictions)),
        "ferrocorn_cache_repairs" => store.map(|c| Int(c.repairs)),
        _ => None,
    };
    if let Some(value) = value {
        w.sample(name, suffix, &[], value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_index_the_label_space() {
        assert_eq!(cache_status_index("HIT"), Some(0));
        assert_eq!(cache_status_index("bypass"), Some(N_CACHE_STATUSES - 1));
        assert_eq!(cache_status_index("Updating").map(|i| CACHE_STATUSES[i]), Some("updating"));
        assert_eq!(cache_status_index("REVALIDATED"), Some(5));
        assert_eq!(cache_status_index("HIT-ISH"), None);
    }

    #[test]
    fn totals_add_up_and_give_the_hit_ratio() {
        let mut t = CacheTotals::default();
        assert_eq!(t.hit_ratio(), None);
        t.requests[cache_status_index("HIT").unwrap()] = 3;
        t.requests[cache_status_index("MISS").unwrap()] = 1;
        let mut sum = CacheTotals { lock_waits: 2, lock_wait_micros: 500, purges: 1, ..t.clone() };
        sum.add(&t);
        assert_eq!((sum.count("hit"), sum.count("miss"), sum.answered()), (6, 2, 8));
        assert_eq!((sum.lock_waits, sum.lock_wait_micros, sum.purges), (2, 500, 1));
        assert_eq!(sum.hit_ratio(), Some(0.75));
        assert_eq!(sum.count("revalidated"), 0);
        assert_eq!(sum.count("nonsense"), 0);
    }
}
