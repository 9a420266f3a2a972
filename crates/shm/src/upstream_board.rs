//! The load balancer's table in shared memory: per upstream, counters every balancer worker
//! adds into (attempts, failures by reason, retries, requests in flight, time to the response
//! head), the state each worker sees it in (one byte per worker slot and upstream), and the
//! operator's runtime overrides (`ferrocorn ctl upstreams`: drain, down, up, a new weight),
//! which the master writes and bumps a generation for, and each worker applies when it sees
//! the generation move. Mapped by the master before the first fork; atomics only, so a killed
//! worker leaves nothing held. Rows are by the upstream's position in the configured list; a
//! reload [`UpstreamBoard::reorder`]s them so each upstream keeps its counters under its new
//! position, drops the overrides (a reload returns to the configuration, as in nginx and
//! HAProxy without a state file), and moves the list generation: workers of the old list
//! (draining after the HUP) stop writing to rows that may now mean other upstreams.
//!
//! Active health checks run in one worker at a time, the holder of the prober lease (a word
//! of the pid and the lease's end, taken by compare-and-swap, renewed at every round, taken
//! over by another worker once it lapses): it publishes each upstream's verdict in its row and
//! bumps the health generation, and every other worker adopts the verdicts instead of
//! checking itself. So an instance sends one check per upstream per interval, whatever its
//! worker count, and its workers agree on which upstreams are healthy.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use ferrocorn_metrics::{
    N_BUCKETS, N_UPSTREAM_FAILURES, N_UPSTREAM_STATES, UpstreamCounts, duration_bucket,
};

use crate::mapping::map_shared_zeroed;

/// Upstreams the table has rows for; a longer list is balanced but only the first this many
/// are counted.
pub const MAX_UPSTREAMS: usize = 64;

/// An operator's override of one upstream (`ferrocorn ctl upstreams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Override {
    /// 0: none; 1: up; 2: drain; 3: down.
    pub admin: u8,
    /// A new weight (0: unchanged).
    pub weight: u32,
}

/// One upstream's counters. Rows start on a cache line of their own (as does the [`Head`]):
/// every worker adds to its upstream's row on each request, and the generations in the head
/// are read on each request, so a head sharing a line with the first row (as it did) was
/// pulled from the other core at every request of any worker.
#[repr(C, align(64))]
struct Row {
    requests: AtomicU64,
    failures: [AtomicU64; N_UPSTREAM_FAILURES],
    retries: AtomicU64,
    active: AtomicI64,
    duration_buckets: [AtomicU64; N_BUCKETS],
    duration_micros: AtomicU64,
    /// `admin | weight << 8` ([`Override`]).
    admin: AtomicU64,
    /// The prober's verdict: [`HEALTH_UNKNOWN`], [`HEALTH_UP`] or [`HEALTH_DOWN`].
    health: AtomicU64,
}

/// No verdict yet (no check has finished).
pub const HEALTH_UNKNOWN: u8 = 0;
/// The upstream passes its check.
pub const HEALTH_UP: u8 = 1;
/// The upstream fails its check.
pub const HEALTH_DOWN: u8 = 2;

#[repr(C, align(64))]
struct Head {
    admin_generation: AtomicU64,
    /// Moves at each [`UpstreamBoard::reorder`]: rows are by position in this generation's list.
    list_generation: AtomicU64,
    /// Upstreams configured (rows in use).
    upstreams: AtomicU32,
    /// Moves whenever the prober publishes a changed verdict.
    health_generation: AtomicU64,
    /// The prober lease: `pid << 32 | end`, the end in tenths of a second of the monotonic
    /// clock (0: nobody holds it).
    prober: AtomicU64,
}

/// The balancer's table (see the module docs).
pub struct UpstreamBoard {
    head: *const Head,
    rows: *const Row,
    states: *const AtomicU8,
    slots: usize,
    bytes: usize,
}

// SAFETY: the mapping is process-shared memory accessed only through atomics; the pointers
// stay valid for the board's lifetime (unmapped in Drop) and are never reallocated.
unsafe impl Send for UpstreamBoard {}
// SAFETY: as above; every access is an atomic operation.
unsafe impl Sync for UpstreamBoard {}

impl UpstreamBoard {
    /// Map a zeroed table for `slots` worker slots.
    pub fn new(slots: usize) -> std::io::Result<UpstreamBoard> {
        let slots = slots.max(1);
        let head = size_of::<Head>().next_multiple_of(align_of::<Row>());
        let rows = MAX_UPSTREAMS * size_of::<Row>();
        let bytes = head + rows + slots * MAX_UPSTREAMS;
        let base = map_shared_zeroed(bytes)?;
        // All-zero is a valid Head, Row and state byte (atomics at 0); the mapping is
        // page-aligned and `head` a multiple of Row's alignment.
        // SAFETY: both offsets are inside the `bytes`-long mapping.
        let (rows_at, states_at) = unsafe { (base.add(head), base.add(head + rows)) };
        Ok(UpstreamBoard {
            head: base.cast::<Head>(),
            rows: rows_at.cast::<Row>(),
            states: states_at.cast::<AtomicU8>(),
            slots,
            bytes,
        })
    }

    fn head(&self) -> &Head {
        // SAFETY: points at the start of the live mapping, an initialised Head of atomics.
        unsafe { &*self.head }
    }

    fn row(&self, upstream: usize) -> Option<&Row> {
        // SAFETY: in bounds of the rows area of the live mapping; Row is made of atomics.
        (upstream < MAX_UPSTREAMS).then(|| unsafe { &*self.rows.add(upstream) })
    }

    /// Record how many upstreams are configured (the master, at start and on reload).
    pub fn set_upstream_count(&self, n: usize) {
        self.head().upstreams.store(n.min(MAX_UPSTREAMS) as u32, Ordering::Relaxed);
    }

    /// An attempt was sent to `upstream`.
    pub fn attempt_started(&self, upstream: usize) {
        if let Some(row) = self.row(upstream) {
            row.requests.fetch_add(1, Ordering::Relaxed);
            row.active.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An attempt on `upstream` ended: with its response head after `waited`, or failed
    /// (`failure`: a [`ferrocorn_metrics::UPSTREAM_FAILURES`] index).
    pub fn attempt_ended(&self, upstream: usize, waited: Option<Duration>, failure: Option<usize>) {
        let Some(row) = self.row(upstream) else { return };
        row.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(waited) = waited {
            let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
            row.duration_buckets[duration_bucket(micros)].fetch_add(1, Ordering::Relaxed);
            row.duration_micros.fetch_add(micros, Ordering::Relaxed);
        }
        if let Some(reason) = failure {
            row.failures[reason.min(N_UPSTREAM_FAILURES - 1)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request went on from `upstream` to another.
    pub fn retried(&self, upstream: usize) {
        if let Some(row) = self.row(upstream) {
            row.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn state_cell(&self, slot: usize, upstream: usize) -> Option<&AtomicU8> {
        // SAFETY: in bounds of the states area (slots * MAX_UPSTREAMS bytes) of the live
        // mapping; AtomicU8 has no alignment requirement beyond a byte.
        (slot < self.slots && upstream < MAX_UPSTREAMS)
            .then(|| unsafe { &*self.states.add(slot * MAX_UPSTREAMS + upstream) })
    }

    /// The state worker `slot` sees `upstream` in (a [`ferrocorn_metrics::UPSTREAM_STATES`]
    /// index); stored plus one, so 0 means "no worker there".
    pub fn publish_state(&self, slot: usize, upstream: usize, state: usize) {
        if let Some(cell) = self.state_cell(slot, upstream) {
            cell.store(state.min(N_UPSTREAM_STATES - 1) as u8 + 1, Ordering::Relaxed);
        }
    }

    /// Forget what worker `slot` saw (it exited).
    pub fn clear_slot(&self, slot: usize) {
        for upstream in 0..MAX_UPSTREAMS {
            if let Some(cell) = self.state_cell(slot, upstream) {
                cell.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Set the operator's override of `upstream` and bump the generation workers watch.
    pub fn set_override(&self, upstream: usize, change: Override) {
        if let Some(row) = self.row(upstream) {
            let value = u64::from(change.admin) | (u64::from(change.weight) << 8);
            row.admin.store(value, Ordering::Relaxed);
            self.head().admin_generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The generation of the overrides: it moves whenever one is set.
    pub fn override_generation(&self) -> u64 {
        self.head().admin_generation.load(Ordering::Acquire)
    }

    /// The operator's override of `upstream`.
    pub fn override_of(&self, upstream: usize) -> Override {
        let value = self.row(upstream).map_or(0, |r| r.admin.load(Ordering::Relaxed));
        Override { admin: (value & 0xff) as u8, weight: (value >> 8) as u32 }
    }

    /// Take or renew the prober lease for process `pid` until `now_ms + lease` (monotonic
    /// milliseconds): granted when nobody else holds a live lease. Only one of several
    /// workers trying at once gets it.
    pub fn take_prober_lease(&self, pid: u32, now_ms: u64, lease: Duration) -> bool {
        let prober = &self.head().prober;
        let current = prober.load(Ordering::Acquire);
        let (holder, ends) = ((current >> 32) as u32, current as u32);
        if holder != 0 && holder != pid && tenths(now_ms) < ends {
            return false;
        }
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let until = tenths(now_ms.saturating_add(lease_ms)).max(1);
        let taken = (u64::from(pid) << 32) | u64::from(until);
        prober.compare_exchange(current, taken, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Give the lease up, if `pid` holds it (a worker leaving), so another takes it at once.
    pub fn release_prober_lease(&self, pid: u32) {
        let prober = &self.head().prober;
        let current = prober.load(Ordering::Acquire);
        if (current >> 32) as u32 == pid {
            let _ = prober.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// The process holding a live prober lease at `now_ms`.
    pub fn prober(&self, now_ms: u64) -> Option<u32> {
        let current = self.head().prober.load(Ordering::Acquire);
        let (holder, ends) = ((current >> 32) as u32, current as u32);
        (holder != 0 && tenths(now_ms) < ends).then_some(holder)
    }

    /// Publish the prober's verdict on `upstream` ([`HEALTH_UP`], [`HEALTH_DOWN`]); the health
    /// generation moves when it changed.
    pub fn publish_health(&self, upstream: usize, verdict: u8) {
        let Some(row) = self.row(upstream) else { return };
        if row.health.swap(u64::from(verdict), Ordering::AcqRel) != u64::from(verdict) {
            self.head().health_generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The prober's verdict on `upstream` ([`HEALTH_UNKNOWN`] before its first).
    pub fn health_of(&self, upstream: usize) -> u8 {
        self.row(upstream).map_or(HEALTH_UNKNOWN, |r| r.health.load(Ordering::Acquire) as u8)
    }

    /// The generation of the verdicts: it moves whenever one changes.
    pub fn health_generation(&self) -> u64 {
        self.head().health_generation.load(Ordering::Acquire)
    }

    /// The generation of the upstream list the rows follow (see [`UpstreamBoard::reorder`]).
    pub fn list_generation(&self) -> u64 {
        self.head().list_generation.load(Ordering::Acquire)
    }

    /// Re-lay the rows for a reloaded upstream list (the master, on a reload): the new list's
    /// upstream `j` takes the counters of the old list's `moves[j]`, or starts from zero
    /// (`None`: an upstream new to the list); an upstream no longer listed is forgotten. Every
    /// override is dropped. Requests in flight start again from zero (the old list's workers
    /// no longer report theirs), what each worker saw is forgotten until it publishes again,
    /// and both generations move.
    pub fn reorder(&self, moves: &[Option<usize>]) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let snapshot: Vec<RowValues> = (0..MAX_UPSTREAMS)
            .filter_map(|i| self.row(i))
            .map(|row| RowValues {
                requests: load(&row.requests),
                failures: std::array::from_fn(|k| load(&row.failures[k])),
                retries: load(&row.retries),
                duration_buckets: std::array::from_fn(|k| load(&row.duration_buckets[k])),
                duration_micros: load(&row.duration_micros),
                health: load(&row.health),
            })
            .collect();
        self.head().list_generation.fetch_add(1, Ordering::AcqRel);
        // the old list's prober stops writing: a worker of the new list takes over at once
        self.head().prober.store(0, Ordering::Release);
        for j in 0..MAX_UPSTREAMS {
            let Some(row) = self.row(j) else { continue };
            let from = moves.get(j).copied().flatten().and_then(|i| snapshot.get(i));
            let values = from.copied().unwrap_or_default();
            let store = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
            store(&row.requests, values.requests);
            row.failures.iter().zip(values.failures).for_each(|(a, v)| store(a, v));
            store(&row.retries, values.retries);
            row.active.store(0, Ordering::Relaxed);
            row.duration_buckets.iter().zip(values.duration_buckets).for_each(|(a, v)| store(a, v));
            store(&row.duration_micros, values.duration_micros);
            store(&row.admin, 0);
            store(&row.health, values.health);
        }
        self.head().health_generation.fetch_add(1, Ordering::Release);
        for slot in 0..self.slots {
            self.clear_slot(slot);
        }
        self.head().admin_generation.fetch_add(1, Ordering::Release);
    }

    /// The counters of the configured upstreams, named by `names` (in configured order);
    /// states are read from the worker slots `live` accepts.
    pub fn counts(&self, names: &[String], live: impl Fn(usize) -> bool) -> Vec<UpstreamCounts> {
        let n = (self.head().upstreams.load(Ordering::Relaxed) as usize).min(names.len());
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (0..n)
            .filter_map(|i| Some((i, self.row(i)?)))
            .map(|(i, row)| {
                let mut states = [0u64; N_UPSTREAM_STATES];
                for slot in (0..self.slots).filter(|&s| live(s)) {
                    if let Some(cell) = self.state_cell(slot, i) {
                        let seen = cell.load(Ordering::Relaxed);
                        if seen > 0 {
                            states[usize::from(seen - 1).min(N_UPSTREAM_STATES - 1)] += 1;
                        }
                    }
                }
                UpstreamCounts {
                    name: names[i].clone(),
                    requests: load(&row.requests),
                    failures: std::array::from_fn(|k| load(&row.failures[k])),
                    retries: load(&row.retries),
                    active: row.active.load(Ordering::Relaxed).max(0) as u64,
                    duration_buckets: std::array::from_fn(|k| load(&row.duration_buckets[k])),
                    duration_sum_micros: load(&row.duration_micros),
                    states,
                }
            })
            .collect()
    }
}

/// One row's values, copied out by [`UpstreamBoard::reorder`].
#[derive(Clone, Copy, Default)]
struct RowValues {
    requests: u64,
    failures: [u64; N_UPSTREAM_FAILURES],
    retries: u64,
    duration_buckets: [u64; N_BUCKETS],
    duration_micros: u64,
    health: u64,
}

/// Monotonic milliseconds in tenths of a second, as the lease word keeps them (wraps after
/// 13 years of uptime).
fn tenths(ms: u64) -> u32 {
    (ms / 100) as u32
}

impl Drop for UpstreamBoard {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference outlives `self`.
        unsafe { libc::munmap(self.head.cast_mut().cast(), self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_states_are_per_worker() {
        let board = UpstreamBoard::new(4).unwrap();
        board.set_upstream_count(2);
        board.attempt_started(0);
        board.attempt_started(0);
        board.attempt_ended(0, Some(Duration::from_millis(2)), None);
        board.attempt_ended(0, None, Some(1));
        board.retried(0);
        board.attempt_started(1);
        board.publish_state(0, 0, 0);
        board.publish_state(1, 0, 3);
        board.publish_state(1, 1, 0);
        let names = vec!["a".to_owned(), "b".to_owned()];
        let counts = board.counts(&names, |_| true);
        assert_eq!(counts.len(), 2);
        assert_eq!((counts[0].requests, counts[0].active, counts[0].retries), (2, 0, 1));
        assert_eq!(counts[0].failures, [0, 1, 0, 0]);
        assert_eq!(counts[0].duration_buckets.iter().sum::<u64>(), 1);
        assert_eq!(counts[0].states[0], 1);
        assert_eq!(counts[0].states[3], 1);
        assert_eq!(counts[1].active, 1);
        board.clear_slot(1);
        assert_eq!(board.counts(&names, |_| true)[0].states[3], 0);
        assert_eq!(board.counts(&names, |s| s != 0)[0].states[0], 0);
    }

    #[test]
    fn a_reorder_keeps_each_upstream_s_counters_under_its_new_position_and_drops_overrides() {
        let board = UpstreamBoard::new(2).unwrap();
        board.set_upstream_count(3);
        for (upstream, n) in [(0, 1), (1, 2), (2, 3)] {
            for _ in 0..n {
                board.attempt_started(upstream);
                board.attempt_ended(upstream, Some(Duration::from_millis(1)), None);
            }
        }
        board.attempt_started(1); // in flight across the reload
        board.set_override(1, Override { admin: 3, weight: 0 });
        board.publish_state(0, 1, 6);
        let (list, admin) = (board.list_generation(), board.override_generation());
        // old [a, b, c] -> new [c, b, d]: a forgotten, d new
        board.reorder(&[Some(2), Some(1), None]);
        board.set_upstream_count(3);
        assert!(board.list_generation() > list && board.override_generation() > admin);
        let names: Vec<String> = ["c", "b", "d"].map(String::from).into();
        let counts = board.counts(&names, |_| true);
        let requests: Vec<u64> = counts.iter().map(|c| c.requests).collect();
        assert_eq!(requests, [3, 3, 0]);
        assert_eq!(counts[1].active, 0, "the old list's in-flight count is not carried");
        assert!((0..3).all(|i| board.override_of(i) == Override::default()));
        assert!(counts.iter().all(|c| c.states.iter().all(|&n| n == 0)));
    }

    #[test]
    fn one_worker_holds_the_prober_lease_until_it_lapses_or_is_given_up() {
        let board = UpstreamBoard::new(2).unwrap();
        let lease = Duration::from_secs(5);
        let t = 1_000_000;
        assert_eq!(board.prober(t), None);
        assert!(board.take_prober_lease(11, t, lease));
        assert!(!board.take_prober_lease(22, t + 1_000, lease), "11 holds a live lease");
        assert!(board.take_prober_lease(11, t + 4_000, lease), "the holder renews");
        assert_eq!(board.prober(t + 8_900), Some(11));
        assert_eq!(board.prober(t + 9_000), None, "lapsed 5 s after the renewal");
        assert!(board.take_prober_lease(22, t + 9_000, lease), "taken over once lapsed");
        assert!(!board.take_prober_lease(11, t + 9_100, lease));
        board.release_prober_lease(11);
        assert_eq!(board.prober(t + 9_100), Some(22), "only the holder gives it up");
        board.release_prober_lease(22);
        assert_eq!(board.prober(t + 9_100), None);
        assert!(board.take_prober_lease(11, t + 9_100, lease));
    }

    #[test]
    fn verdicts_move_the_health_generation_only_when_they_change_and_follow_a_reorder() {
        let board = UpstreamBoard::new(1).unwrap();
        board.set_upstream_count(2);
        let g0 = board.health_generation();
        assert_eq!(board.health_of(1), HEALTH_UNKNOWN);
        board.publish_health(0, HEALTH_UP);
        board.publish_health(1, HEALTH_DOWN);
        let g1 = board.health_generation();
        assert!(g1 > g0);
        board.publish_health(0, HEALTH_UP);
        assert_eq!(board.health_generation(), g1, "the same verdict again");
        assert!(board.take_prober_lease(7, 0, Duration::from_secs(60)));
        board.reorder(&[Some(1), None]);
        assert_eq!((board.health_of(0), board.health_of(1)), (HEALTH_DOWN, HEALTH_UNKNOWN));
        assert!(board.health_generation() > g1);
        assert_eq!(board.prober(0), None, "a reload frees the lease for the new list's workers");
    }

    #[test]
    fn overrides_move_the_generation() {
        let board = UpstreamBoard::new(1).unwrap();
        let before = board.override_generation();
        board.set_override(3, Override { admin: 2, weight: 7 });
        assert!(board.override_generation() > before);
        assert_eq!(board.override_of(3), Override { admin: 2, weight: 7 });
        assert_eq!(board.override_of(MAX_UPSTREAMS + 1), Override::default());
    }
}
