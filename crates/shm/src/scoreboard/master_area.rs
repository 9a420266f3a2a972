//! The master's own area at the head of the scoreboard: counters folded from reaped workers,
//! restarts by reason, the cache purges the master carried out itself, and how far into the
//! slots any worker has ever been.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::Counters;

/// Why workers were replaced, as counted by the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// Retired after `max_requests`.
    MaxRequests = 0,
    /// Killed after a heartbeat or boot timeout.
    Timeout = 1,
    /// Recycled for memory use.
    Memory = 2,
    /// Died unexpectedly.
    Crash = 3,
    /// Replaced by a reload (HUP).
    Reload = 4,
    /// Removed by scaling down.
    Scale = 5,
}

impl RestartReason {
    /// Every reason, in label order.
    pub const ALL: [RestartReason; 6] = [
        RestartReason::MaxRequests,
        RestartReason::Timeout,
        RestartReason::Memory,
        RestartReason::Crash,
        RestartReason::Reload,
        RestartReason::Scale,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RestartReason::MaxRequests => "max_requests",
            RestartReason::Timeout => "timeout",
            RestartReason::Memory => "memory",
            RestartReason::Crash => "crash",
            RestartReason::Reload => "reload",
            RestartReason::Scale => "scale",
        }
    }
}

/// Master-owned shared counters: totals of exited workers and restarts by reason.
#[repr(C)]
#[derive(Debug)]
pub struct MasterArea {
    /// Counters folded from reaped workers, so totals never go backwards.
    pub retired: Counters,
    restarts: [AtomicU64; 6],
    /// One past the highest slot index ever claimed: slots beyond it have never held a worker.
    pub(super) claimed_end: AtomicUsize,
    /// Purges of the response cache the master carried out (`ferrocorn ctl cache purge`).
    cache_purges: AtomicU64,
    /// Requests served by reaped workers, per worker pool (the first [`MAX_POOLS`]).
    pool_requests: [AtomicU64; MAX_POOLS],
}

/// Worker pools whose requests are counted apart (`ferrocorn_pool_requests_total`).
pub const MAX_POOLS: usize = 32;

impl MasterArea {
    /// Count one restart.
    pub fn count_restart(&self, reason: RestartReason) {
        self.restarts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Fold the requests of a reaped worker of `pool`.
    pub fn retire_pool_requests(&self, pool: usize, requests: u64) {
        if let Some(counter) = self.pool_requests.get(pool) {
            counter.fetch_add(requests, Ordering::Relaxed);
        }
    }

    /// Requests served by reaped workers of `pool`.
    pub fn retired_pool_requests(&self, pool: usize) -> u64 {
        self.pool_requests.get(pool).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Count one purge of the response cache carried out by the master.
    pub fn count_cache_purge(&self) {
        self.cache_purges.fetch_add(1, Ordering::Relaxed);
    }

    /// Purges of the response cache carried out by the master.
    pub fn cache_purges(&self) -> u64 {
        self.cache_purges.load(Ordering::Relaxed)
    }

    /// Restarts by reason label.
    pub fn restarts(&self) -> Vec<(&'static str, u64)> {
        RestartReason::ALL
            .iter()
            .map(|r| (r.label(), self.restarts[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}
