//! What a request does after looking its key up: answer the stored copy, wait for the request
//! filling it, fill it (with the lock), or go to the app without the lock. One pure function of
//! what was found, who fills it, the time and the settings; the worker carries it out and asks
//! again after each wait.

use crate::entry::EntryMeta;
use crate::stale::{OnLookup, UseStale, on_lookup};

/// What the store holds for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored<'a> {
    /// Nothing (or only a lock).
    Nothing,
    /// A response, last requested at `last_access` (Unix seconds).
    Response {
        /// Its fixed head.
        meta: &'a EntryMeta,
        /// The request before this one that found it.
        last_access: i64,
    },
    /// A mark that the key's last response could not be stored (hit-for-miss).
    Uncacheable,
}

/// Whether someone is filling the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filler {
    /// Nobody (or a dead request, whose lock is taken over).
    None,
    /// A live request.
    Live,
}

/// The `X-Cache-Status` of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the store, fresh.
    Hit,
    /// Nothing stored: the app answered.
    Miss,
    /// Stored but expired: the app answered (and refreshed it).
    Expired,
    /// An expired copy answered because the refresh failed.
    Stale,
    /// An expired copy answered while another request refreshes it.
    Updating,
    /// An expired copy the app confirmed with `304 Not Modified` (`--cache-revalidate`).
    Revalidated,
    /// Not looked up: the request may not be answered from the store.
    Bypass,
}

impl CacheStatus {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// The settings a lookup weighs.
#[derive(Debug, Clone, Default)]
pub struct LookupRules {
    /// Seconds without a request after which an entry counts as gone (`--cache-inactive`).
    pub inactive: i64,
    /// `--cache-use-stale`.
    pub use_stale: UseStale,
    /// Whether misses wait for the one request filling their key (`--cache-lock`).
    pub lock: bool,
    /// Whether an expired copy that may be answered while updating is answered at once and
    /// refreshed afterwards (`--cache-background-update`).
    pub background_update: bool,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Answer the stored copy with this status (HIT, or UPDATING for a stale one).
    Answer(CacheStatus),
    /// Answer the expired copy (STALE), then refresh it with the lock held: the app's answer
    /// goes to the store only (`--cache-background-update`).
    AnswerThenRefresh,
    /// Another request fills the key: wait a little and look again.
    Wait,
    /// Go to the app, holding the key's fill lock when `lock`, and store what it answers.
    Fill {
        /// MISS or EXPIRED.
        status: CacheStatus,
        /// Whether to take the lock first.
        lock: bool,
    },
    /// Go to the app without the lock; store its answer only when `store`.
    Pass {
        /// MISS or EXPIRED.
        status: CacheStatus,
        /// Whether its answer may be stored.
        store: bool,
    },
}

/// Decide at `now` for a request that found `stored` with `filler` at work, `waited_out`
/// once it has waited `--cache-lock-timeout` for that filler.
pub fn decide(
    stored: Stored<'_>,
    filler: Filler,
    now: i64,
    rules: &LookupRules,
    waited_out: bool,
) -> Step {
    let filling = filler == Filler::Live;
    let wait_or_pass = |status| match rules.lock && !waited_out {
        true => Step::Wait,
        // nginx: a request that waited out the lock goes to the app and is not stored
        false => Step::Pass { status, store: !rules.lock },
    };
    let meta = match stored {
        Stored::Uncacheable => return Step::Pass { status: CacheStatus::Miss, store: true },
        Stored::Response { meta, last_access } if now - last_access <= rules.inactive => meta,
        Stored::Response { .. } | Stored::Nothing => {
            return match filling {
                true => wait_or_pass(CacheStatus::Miss),
                false => Step::Fill { status: CacheStatus::Miss, lock: rules.lock },
            };
        }
    };
    let background = rules.background_update;
    match on_lookup(Some(&meta.freshness), now, filling, &rules.use_stale, background) {
        OnLookup::Hit => Step::Answer(CacheStatus::Hit),
        OnLookup::StaleAndRefreshInBackground => Step::AnswerThenRefresh,
        OnLookup::StaleWhileUpdating => Step::Answer(CacheStatus::Updating),
        OnLookup::FetchWhileUpdating => wait_or_pass(CacheStatus::Expired),
        OnLookup::Miss | OnLookup::Refresh => {
            Step::Fill { status: CacheStatus::Expired, lock: rules.lock }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storability::Freshness;

    const NOW: i64 = 1_700_000_000;

    fn meta(valid_until: i64, updating_sec: Option<u64>) -> EntryMeta {
        EntryMeta {
            status: 200,
            freshness: Freshness { valid_until, updating_sec, error_sec: None, vary: None },
            stored_at: NOW - 100,
        }
    }

    fn rules(lock: bool, updating: bool) -> LookupRules {
        LookupRules {
            inactive: 600,
            use_stale: UseStale { updating, ..UseStale::default() },
            lock,
            background_update: false,
        }
    }

    fn found(meta: &EntryMeta) -> Stored<'_> {
        Stored::Response { meta, last_access: NOW - 1 }
    }

    #[test]
    fn fresh_is_a_hit_whoever_fills() {
        let m = meta(NOW, None);
        for filler in [Filler::None, Filler::Live] {
            let step = decide(found(&m), filler, NOW, &rules(true, false), false);
            assert_eq!(step, Step::Answer(CacheStatus::Hit));
        }
    }

    #[test]
    fn nothing_stored_fills_with_the_lock_or_waits_for_the_filler() {
        let r = rules(true, false);
        assert_eq!(
            decide(Stored::Nothing, Filler::None, NOW, &r, false),
            Step::Fill { status: CacheStatus::Miss, lock: true }
        );
        assert_eq!(decide(Stored::Nothing, Filler::Live, NOW, &r, false), Step::Wait);
        assert_eq!(
            decide(Stored::Nothing, Filler::Live, NOW, &r, true),
            Step::Pass { status: CacheStatus::Miss, store: false }
        );
    }

    #[test]
    fn without_the_lock_concurrent_misses_all_fill() {
        let r = rules(false, false);
        assert_eq!(
            decide(Stored::Nothing, Filler::Live, NOW, &r, false),
            Step::Pass { status: CacheStatus::Miss, store: true }
        );
    }

    #[test]
    fn expired_refreshes_or_answers_stale_while_another_updates() {
        let m = meta(NOW - 1, None);
        assert_eq!(
            decide(found(&m), Filler::None, NOW, &rules(true, true), false),
            Step::Fill { status: CacheStatus::Expired, lock: true }
        );
        assert_eq!(
            decide(found(&m), Filler::Live, NOW, &rules(true, true), false),
            Step::Answer(CacheStatus::Updating)
        );
        assert_eq!(decide(found(&m), Filler::Live, NOW, &rules(true, false), false), Step::Wait);
        // the response's own stale-while-revalidate window counts as `updating`
        let swr = meta(NOW - 5, Some(10));
        assert_eq!(
            decide(found(&swr), Filler::Live, NOW, &rules(true, false), false),
            Step::Answer(CacheStatus::Updating)
        );
    }

    #[test]
    fn with_background_update_expired_is_answered_then_refreshed() {
        let m = meta(NOW - 1, None);
        let r = LookupRules { background_update: true, ..rules(true, true) };
        assert_eq!(decide(found(&m), Filler::None, NOW, &r, false), Step::AnswerThenRefresh);
        // while that refresh runs, others get the stale copy too
        assert_eq!(
            decide(found(&m), Filler::Live, NOW, &r, false),
            Step::Answer(CacheStatus::Updating)
        );
        // without leave to answer stale while updating, it refreshes in the foreground
        let r = LookupRules { background_update: true, ..rules(true, false) };
        assert_eq!(
            decide(found(&m), Filler::None, NOW, &r, false),
            Step::Fill { status: CacheStatus::Expired, lock: true }
        );
    }

    #[test]
    fn an_entry_not_requested_within_inactive_is_gone() {
        let m = meta(NOW + 3600, None);
        let old = Stored::Response { meta: &m, last_access: NOW - 601 };
        assert_eq!(
            decide(old, Filler::None, NOW, &rules(true, false), false),
            Step::Fill { status: CacheStatus::Miss, lock: true }
        );
    }

    #[test]
    fn a_key_marked_uncacheable_skips_the_lock() {
        assert_eq!(
            decide(Stored::Uncacheable, Filler::Live, NOW, &rules(true, false), false),
            Step::Pass { status: CacheStatus::Miss, store: true }
        );
    }
}
