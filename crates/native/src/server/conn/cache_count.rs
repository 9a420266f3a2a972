//! What the response cache counts in the worker's scoreboard slot (the
//! `ferrocorn_cache_*_total` metrics): each answer by the `X-Cache-Status` it carries, a
//! request's wait on another request's fill ([`LockWait`]), whether a response offered to the
//! store was stored, and `PURGE` requests. `cache.rs` calls these where it acts.

use std::time::Instant;

use ferrocorn_cache::CacheStatus;
use ferrocorn_metrics::cache_status_index;
use ferrocorn_shm::scoreboard::CacheCounters;

use super::Conn;
use ferrocorn_net::client_stream::ClientStream;

/// The index of `status` in `ferrocorn_metrics::CACHE_STATUSES` (every status has one: a
/// unit test holds the two lists together).
fn status_index(status: CacheStatus) -> Option<usize> {
    cache_status_index(status.as_str())
}

/// One request's waits for another request filling its key: counted once per request however
/// often it looks again, the time of every stretch it waited added up.
#[derive(Debug, Default)]
pub(super) struct LockWait {
    since: Option<Instant>,
    counted: bool,
}

impl LockWait {
    /// Another request fills the key: the wait starts, or goes on.
    pub fn waiting(&mut self, counters: &CacheCounters) {
        if self.since.is_some() {
            return;
        }
        self.since = Some(Instant::now());
        if !self.counted {
            self.counted = true;
            counters.lock_wait_started();
        }
    }

    /// The request stops waiting (nothing when it was not waiting).
    pub fn over(&mut self, counters: &CacheCounters) {
        if let Some(since) = self.since.take() {
            counters.lock_waited(since.elapsed());
        }
    }
}

impl<S: ClientStream> Conn<S> {
    /// The response cache's counters in this worker's slot.
    pub(super) fn cache_counters(&self) -> &CacheCounters {
        self.shared.slot().counters().cache()
    }

    /// An answer goes out with `X-Cache-Status: status`.
    pub(super) fn count_cache_answer(&self, status: CacheStatus) {
        if let Some(index) = status_index(status) {
            self.cache_counters().answered(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocorn_metrics::CACHE_STATUSES;
    use ferrocorn_shm::scoreboard::Scoreboard;

    #[test]
    fn every_cache_status_has_its_own_label() {
        let all = [
            CacheStatus::Hit,
            CacheStatus::Miss,
            CacheStatus::Expired,
            CacheStatus::Stale,
            CacheStatus::Updating,
            CacheStatus::Revalidated,
            CacheStatus::Bypass,
        ];
        // a new status fails to compile here until it is listed (and given a label)
        for status in all {
            match status {
                CacheStatus::Hit
                | CacheStatus::Miss
                | CacheStatus::Expired
                | CacheStatus::Stale
                | CacheStatus::Updating
                | CacheStatus::Revalidated
                | CacheStatus::Bypass => {}
            }
            let index = cache_status_index(status.as_str()).expect("a label for every status");
            assert_eq!(CACHE_STATUSES[index], status.as_str().to_ascii_lowercase());
            assert_eq!(status_index(status), Some(index));
        }
        assert_eq!(all.len(), CACHE_STATUSES.len());
    }

    #[test]
    fn a_request_that_waits_again_counts_once_with_both_stretches() {
        let board = Scoreboard::new(1).unwrap();
        let index = board.claim(0, 1, 0).unwrap();
        let counters = board.slot(index).counters().cache();
        let mut wait = LockWait::default();
        wait.over(counters); // never waited: nothing
        assert_eq!(counters.totals().lock_waits, 0);
        wait.waiting(counters);
        wait.waiting(counters);
        std::thread::sleep(std::time::Duration::from_millis(2));
        wait.over(counters);
        wait.waiting(counters); // lost the race for the lock: waits again
        wait.over(counters);
        let t = counters.totals();
        assert_eq!(t.lock_waits, 1);
        assert!(t.lock_wait_micros >= 2_000, "{t:?}");
    }
}
