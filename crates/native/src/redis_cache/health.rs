//! Whether this process should talk to Redis now, and whether to say that it cannot: after a
//! failure Redis is left alone for [`RETRY_MS`] (requests pass through at once instead of each
//! paying a timeout), then the next operation probes it; a warning is due at most once per
//! [`WARN_EVERY_MS`]. Pure policy over atomics, with the clock (monotonic milliseconds) passed
//! in.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How long Redis is left alone after a failure.
pub const RETRY_MS: u64 = 1_000;
/// The shortest time between two warnings.
pub const WARN_EVERY_MS: u64 = 10_000;

/// The backend's health as this process saw it.
#[derive(Debug, Default)]
pub struct Health {
    /// No operation before this time.
    retry_at: AtomicU64,
    /// One past the time of the last warning (0: none yet).
    warned_at: AtomicU64,
    /// The last operation failed.
    down: AtomicBool,
}

impl Health {
    /// A backend nothing has failed on yet.
    pub const fn new() -> Health {
        Health {
            retry_at: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }
    }

    /// Whether an operation may go to Redis at `now`.
    pub fn allows(&self, now: u64) -> bool {
        now >= self.retry_at.load(Ordering::Relaxed)
    }

    /// An operation failed because Redis could not be reached at `now`: leave it alone for a
    /// while. Returns whether to warn.
    pub fn unreachable(&self, now: u64) -> bool {
        self.down.store(true, Ordering::Relaxed);
        self.retry_at.store(now + RETRY_MS, Ordering::Relaxed);
        self.warning_due(now)
    }

    /// Whether a warning is due at `now` (and, if so, take it).
    pub fn warning_due(&self, now: u64) -> bool {
        let last = self.warned_at.load(Ordering::Relaxed);
        if last != 0 && now + 1 < last + WARN_EVERY_MS {
            return false;
        }
        self.warned_at.compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// An operation succeeded: whether Redis was down until now.
    pub fn reached(&self) -> bool {
        self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_pauses_redis_and_warns_once_per_interval() {
        let h = Health::new();
        assert!(h.allows(0));
        assert!(h.unreachable(5));
        assert!(!h.allows(5 + RETRY_MS - 1));
        assert!(h.allows(5 + RETRY_MS));
        assert!(!h.unreachable(5 + RETRY_MS));
        assert!(!h.unreachable(5 + WARN_EVERY_MS - 1));
        assert!(h.unreachable(5 + WARN_EVERY_MS));
        assert!(h.reached());
        assert!(!h.reached());
    }

    #[test]
    fn the_first_warning_is_due_at_time_zero() {
        let h = Health::new();
        assert!(h.warning_due(0));
        assert!(!h.warning_due(1));
    }
}
