//! Whether a worker takes a connection waiting on the shared listener, decided from plain
//! values (what each serving worker published in the scoreboard, and the time): no I/O, no
//! clock of its own, so every rule is unit-tested here with the clock passed in.
//!
//! The rules (ARCHITECTURE.md, "Workers accept only up to their fair share"):
//! - A worker takes connections up to its fair share of the connections the instance holds in
//!   use (the average over serving workers, plus one). Keep-alive connections stay with the
//!   worker that accepted them, so without the rule the worker that wakes first when a client
//!   opens many at once would take most of them and serve them one at a time.
//! - A connection counts while it can still carry a request. One whose last response is
//!   written and that is only closing (HTTP/1.0, `Connection: close`) does not: under a client
//!   that opens a connection per request every worker would otherwise look "over its share"
//!   for the moment between its response and the client's FIN.
//! - Sync workers serve one request at a time, so their share has no slack, and they weigh
//!   how long requests take: a worker whose recent requests take [`LONG_REQUEST_MS`] or more
//!   (or that is in such a request) leaves new connections to its quick siblings, which share
//!   them among themselves up to twice the overall share; and a sync worker takes a
//!   connection beyond its share when every sibling is in the middle of a long request (the
//!   connection would otherwise wait in the kernel queue for a worker that cannot serve it).
//!
//! A decision to leave the connection says when time alone could change it
//! ([`Decision::Leave`]): the moment a busy sibling's request becomes long. Every other input
//! changes only by an event (a request of this worker ends, a connection of it starts closing
//! or closes, a sibling takes the connection), so the accept loop waits for those instead of
//! polling.

/// A sync worker whose current request has run this long, or whose recent requests took this
/// long on average, is a slow place for a new connection: one accepted there waits behind
/// those requests.
pub const LONG_REQUEST_MS: u64 = 50;

/// One serving worker (idle or busy) as its scoreboard slot shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerView {
    /// This is the deciding worker's own slot.
    pub me: bool,
    /// Connections it holds that can still carry a request (open, not closing).
    pub connections: u64,
    /// When it entered its current request ([`ferrocorn_shm::monotonic_ms`]); None when
    /// idle.
    pub busy_since_ms: Option<u64>,
    /// Moving average of its recent request durations, in microseconds.
    pub recent_request_micros: u64,
}

impl WorkerView {
    /// In the middle of a request that has run [`LONG_REQUEST_MS`] or more at `now_ms`.
    fn in_long_request(&self, now_ms: u64) -> bool {
        self.busy_since_ms.is_some_and(|since| now_ms.saturating_sub(since) >= LONG_REQUEST_MS)
    }

    /// A slow place for a new connection at `now_ms`.
    fn slow(&self, now_ms: u64) -> bool {
        self.in_long_request(now_ms) || self.recent_request_micros >= LONG_REQUEST_MS * 1000
    }

    /// When its current request becomes long, if it is in one that is not long yet.
    fn becomes_long_at(&self, now_ms: u64) -> Option<u64> {
        let since = self.busy_since_ms?;
        let at = since + LONG_REQUEST_MS;
        (at > now_ms).then_some(at)
    }
}

/// What a worker does with a waiting connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Accept it.
    Take,
    /// Leave it to a sibling; look again after the next event of this worker, or at
    /// `recheck_at_ms` (when a busy sibling's request becomes long) if that comes first.
    Leave {
        /// The earliest moment time alone could turn the decision into `Take`.
        recheck_at_ms: Option<u64>,
    },
}

/// How a worker's class weighs its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighing {
    /// One request at a time (the sync class): no slack, and slow workers step aside.
    OneAtATime,
    /// Several requests at once (gthread, gevent, asgi): the share plus one.
    Concurrent,
}

/// Decide for the worker whose slot is marked `me` among `workers` (every serving worker,
/// including it) at `now_ms`.
pub fn decide(now_ms: u64, weighing: Weighing, workers: &[WorkerView]) -> Decision {
    let Some(me) = workers.iter().find(|w| w.me) else {
        return Decision::Take; // not serving by the scoreboard (starting up): nothing to weigh
    };
    let mine = me.connections;
    if mine == 0 || workers.len() <= 1 {
        return Decision::Take;
    }
    let mut all = Share::default();
    workers.iter().for_each(|w| all.add(w.connections));
    let taken = match weighing {
        Weighing::Concurrent => all.admits(mine, 1),
        Weighing::OneAtATime => one_at_a_time_admits(now_ms, me, workers, all),
    };
    if taken {
        return Decision::Take;
    }
    let recheck_at_ms = match weighing {
        Weighing::Concurrent => None,
        Weighing::OneAtATime => {
            workers.iter().filter(|w| !w.me).filter_map(|w| w.becomes_long_at(now_ms)).min()
        }
    };
    Decision::Leave { recheck_at_ms }
}

/// The sync rules: see the module doc.
fn one_at_a_time_admits(now_ms: u64, me: &WorkerView, workers: &[WorkerView], all: Share) -> bool {
    let siblings_free_soon = workers.iter().filter(|w| !w.me && !w.in_long_request(now_ms)).count();
    if siblings_free_soon == 0 {
        return true;
    }
    let mut quick = Share::default();
    let mut quick_fewest = u64::MAX;
    for w in workers.iter().filter(|w| !w.slow(now_ms)) {
        quick.add(w.connections);
        quick_fewest = quick_fewest.min(w.connections);
    }
    let mine = me.connections;
    let quick_cap = 2 * (all.connections / all.workers + 1);
    // (When every worker is quick this is the same rule as below: the cap never binds.)
    if quick.workers > 0 && quick_fewest < quick_cap {
        return !me.slow(now_ms) && quick.admits(mine, 0) && mine < quick_cap;
    }
    all.admits(mine, 0)
}

/// Connections in use over a group of serving workers.
#[derive(Debug, Default, Clone, Copy)]
struct Share {
    connections: u64,
    workers: u64,
}

impl Share {
    fn add(&mut self, connections: u64) {
        self.connections += connections;
        self.workers += 1;
    }

    /// Whether a worker holding `mine` of these connections is within its share: at most the
    /// group's average plus `slack` (the worker with the fewest always is).
    fn admits(&self, mine: u64, slack: u64) -> bool {
        mine * self.workers <= self.connections + slack * self.workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 10_000;

    fn me(connections: u64) -> WorkerView {
        WorkerView { me: true, connections, busy_since_ms: None, recent_request_micros: 100 }
    }

    fn sibling(connections: u64) -> WorkerView {
        WorkerView { me: false, ..me(connections) }
    }

    fn busy_for(mut w: WorkerView, ms: u64) -> WorkerView {
        w.busy_since_ms = Some(NOW - ms);
        w
    }

    fn slow_recently(mut w: WorkerView) -> WorkerView {
        w.recent_request_micros = 80_000;
        w
    }

    use Weighing::{Concurrent, OneAtATime};

    const LEAVE: Decision = Decision::Leave { recheck_at_ms: None };

    #[test]
    fn a_worker_without_connections_always_takes() {
        for weighing in [OneAtATime, Concurrent] {
            let workers = [me(0), sibling(0), slow_recently(sibling(0))];
            assert_eq!(decide(NOW, weighing, &workers), Decision::Take);
        }
    }

    #[test]
    fn a_lone_worker_takes() {
        assert_eq!(decide(NOW, OneAtATime, &[me(40)]), Decision::Take);
    }

    #[test]
    fn keep_alive_share_one_at_a_time_has_no_slack() {
        // Average 1: holding 1 is within, holding 2 is over.
        assert_eq!(decide(NOW, OneAtATime, &[me(1), sibling(1)]), Decision::Take);
        assert_eq!(decide(NOW, OneAtATime, &[me(2), sibling(0)]), LEAVE);
        assert_eq!(decide(NOW, OneAtATime, &[me(2), sibling(1)]), LEAVE);
    }

    #[test]
    fn keep_alive_share_concurrent_allows_one_over_the_average() {
        assert_eq!(decide(NOW, Concurrent, &[me(2), sibling(1)]), Decision::Take);
        assert_eq!(decide(NOW, Concurrent, &[me(3), sibling(1)]), Decision::Take);
        assert_eq!(decide(NOW, Concurrent, &[me(4), sibling(1)]), LEAVE);
        // Concurrent classes never need the clock to change their mind.
        let busy = busy_for(sibling(0), 10);
        assert_eq!(decide(NOW, Concurrent, &[me(3), busy]), LEAVE);
    }

    #[test]
    fn sixty_four_keep_alive_connections_spread_over_eight_workers() {
        // Each worker takes while within its share, the one with the fewest always can.
        let mut held = [0u64; 8];
        for _ in 0..64 {
            let views = |i: usize| -> Vec<WorkerView> {
                (0..8).map(|j| WorkerView { me: i == j, ..sibling(held[j]) }).collect()
            };
            // The first worker in order that takes it (a woken worker that leaves it lets the
            // next one try).
            let taker = (0..8)
                .find(|&i| decide(NOW, OneAtATime, &views(i)) == Decision::Take)
                .expect("some worker takes the connection");
            held[taker] += 1;
        }
        assert_eq!(held, [8; 8]);
    }

    #[test]
    fn short_connections_that_are_closing_do_not_count() {
        // A sync worker serving a connection per request holds at most the one in its current
        // request; its finished connections are closing and are not in `connections`, so two
        // workers alternate with one each and both keep taking.
        assert_eq!(decide(NOW, OneAtATime, &[me(1), busy_for(sibling(1), 0)]), Decision::Take);
        assert_eq!(decide(NOW, OneAtATime, &[me(0), busy_for(sibling(1), 0)]), Decision::Take);
        // Four workers with one short connection each: everyone is within the average.
        let four = [me(1), sibling(1), busy_for(sibling(1), 1), sibling(1)];
        assert_eq!(decide(NOW, OneAtATime, &four), Decision::Take);
        assert_eq!(decide(NOW, Concurrent, &four), Decision::Take);
    }

    #[test]
    fn leaving_a_short_connection_waits_for_an_event_not_a_tick() {
        // Over the share while a sibling is in a quick request: the sibling takes it when its
        // request ends; time only matters when that request would become long.
        let decision = decide(NOW, OneAtATime, &[me(2), busy_for(sibling(0), 3)]);
        assert_eq!(decision, Decision::Leave { recheck_at_ms: Some(NOW - 3 + LONG_REQUEST_MS) });
        // An idle sibling will take it at once: nothing to re-check by time.
        assert_eq!(decide(NOW, OneAtATime, &[me(2), sibling(0)]), LEAVE);
    }

    #[test]
    fn the_recheck_deadline_flips_the_decision_when_siblings_become_long() {
        let workers = [me(2), busy_for(sibling(1), 20), busy_for(sibling(0), 45)];
        let Decision::Leave { recheck_at_ms: Some(at) } = decide(NOW, OneAtATime, &workers) else {
            panic!("a worker over its share leaves the connection while siblings are quick");
        };
        assert_eq!(at, NOW + 5, "the earliest sibling becomes long 5 ms from now");
        // At that moment one sibling is long, the other is not yet: still leave, re-check later.
        assert_eq!(
            decide(at, OneAtATime, &workers),
            Decision::Leave { recheck_at_ms: Some(NOW + 30) }
        );
        // Once every sibling is in a long request, the worker takes the connection.
        assert_eq!(decide(NOW + 30, OneAtATime, &workers), Decision::Take);
    }

    #[test]
    fn every_sibling_in_a_long_request_means_take() {
        let workers = [me(3), busy_for(sibling(0), 60), busy_for(sibling(1), 200)];
        assert_eq!(decide(NOW, OneAtATime, &workers), Decision::Take);
    }

    #[test]
    fn a_slow_worker_leaves_connections_to_quick_siblings() {
        let workers = [slow_recently(me(1)), sibling(1), sibling(2)];
        assert_eq!(decide(NOW, OneAtATime, &workers), LEAVE);
        // A quick worker takes beyond the overall share, up to twice it: 3 held of 3 in use
        // over 3 workers, cap 2 * (1 + 1) = 4.
        let workers = [me(3), slow_recently(sibling(0)), slow_recently(sibling(0))];
        assert_eq!(decide(NOW, OneAtATime, &workers), Decision::Take);
        // 4 of 4: cap 2 * (1 + 1) = 4 reached; the slow idle siblings take the next.
        let workers = [me(4), slow_recently(sibling(0)), slow_recently(sibling(0))];
        assert_eq!(decide(NOW, OneAtATime, &workers), LEAVE);
    }

    #[test]
    fn when_every_quick_worker_is_at_the_cap_the_plain_share_applies() {
        // Quick worker (me) holds 6; total 6 over 3 workers: cap 2 * (2 + 1) = 6, reached, so
        // the plain share rule decides: 6 * 3 > 6, leave; a slow idle sibling with none takes.
        let workers = [me(6), slow_recently(sibling(0)), slow_recently(sibling(0))];
        assert_eq!(decide(NOW, OneAtATime, &workers), LEAVE);
        let as_slow = [slow_recently(me(0)), sibling(6), slow_recently(sibling(0))];
        assert_eq!(decide(NOW, OneAtATime, &as_slow), Decision::Take);
    }

    #[test]
    fn a_worker_missing_from_the_view_takes() {
        assert_eq!(decide(NOW, OneAtATime, &[sibling(5), sibling(5)]), Decision::Take);
    }
}
