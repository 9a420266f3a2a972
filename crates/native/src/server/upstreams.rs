//! A balancer worker's upstream side at the worker level: its [`Balancer`] made at start
//! (with every upstream's health known before anything is accepted), the background upkeep
//! (closing idle upstream connections, publishing the state it sees each upstream in), the
//! operator's overrides and the prober's health verdicts applied from shared memory, and the
//! [`Observer`] that logs and counts what happens to requests on their way to the upstreams.
//!
//! Active health checks run in one worker of the instance at a time, the holder of the
//! prober lease in the shared table (`crates/shm/src/upstream_board.rs`): it checks every
//! upstream each interval, publishes the verdicts, and the other workers adopt them (one
//! atomic load per request and per 250 ms). A worker that starts while a live prober has
//! decided every upstream adopts its verdicts; otherwise it checks every upstream itself
//! before it accepts. Without the shared table (a worker of a list a reload replaced, or a
//! list longer than the table's rows) a worker checks for itself.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferrocorn_balance::{Admin, Failure, HealthCheckSpec, HealthState, PeerId, PeerState};
use ferrocorn_proxy::{Balancer, HealthReport, Observer, check_round};
use ferrocorn_shm::upstream_board::{HEALTH_DOWN, HEALTH_UNKNOWN, HEALTH_UP, UpstreamBoard};

use super::shared::{BoardSeen, Shared};
use crate::logging::{info, warning};
use crate::options::{BalanceOptions, PoolRoute};

/// Make this worker's balancer and learn every upstream's health before accepting.
pub(super) async fn start(options: &BalanceOptions) -> std::io::Result<Arc<Balancer>> {
    let seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let balancer = Balancer::new(options.proxy.clone(), seed)
        .map_err(|e| std::io::Error::other(format!("cannot set up the upstreams: {e}")))?;
    let balancer = Arc::new(balancer);
    if let Some(spec) = balancer.config().health_check.clone() {
        let board = checks_board(&balancer);
        let n = balancer.config().upstreams.len();
        let prober = board.and_then(|b| b.prober(ferrocorn_shm::monotonic_ms()));
        match board {
            Some(board) if prober.is_some() && all_decided(board, n) => {
                adopt_verdicts(&balancer, board);
            }
            _ => {
                let publish = board.filter(|b| take_lease(b, &spec));
                health_round(&balancer, &report_health(&balancer), publish).await;
            }
        }
    }
    Ok(balancer)
}

/// How long the prober's lease lasts past each round: two intervals and a check's timeout,
/// so a slow prober keeps it and a dead one is replaced within that time.
fn prober_lease(spec: &HealthCheckSpec) -> Duration {
    spec.interval * 2 + spec.timeout + Duration::from_secs(1)
}

/// The shared table the health checks go through: this worker's table, when it has a row for
/// every upstream (a longer list than the table holds is checked by every worker itself, as
/// are the upstreams of a list a reload replaced).
fn checks_board(balancer: &Balancer) -> Option<&'static UpstreamBoard> {
    let listed = balancer.config().upstreams.len();
    crate::upstream_board::worker_board()
        .filter(|_| listed <= ferrocorn_shm::upstream_board::MAX_UPSTREAMS)
}

/// Whether the prober has a verdict on each of the `n` upstreams.
fn all_decided(board: &UpstreamBoard, n: usize) -> bool {
    (0..n).all(|i| board.health_of(i) != HEALTH_UNKNOWN)
}

/// Take or renew the prober lease on `board` for this worker.
fn take_lease(board: &UpstreamBoard, spec: &HealthCheckSpec) -> bool {
    board.take_prober_lease(std::process::id(), ferrocorn_shm::monotonic_ms(), prober_lease(spec))
}

/// One round of checks by this worker, into its own group; the verdicts are published on
/// `board` when given (this worker holds the prober lease).
async fn health_round(balancer: &Balancer, report: &HealthReport, board: Option<&UpstreamBoard>) {
    check_round(balancer, report).await;
    let Some(board) = board else { return };
    for (i, state) in balancer.group().health_states().into_iter().enumerate() {
        let verdict = match state {
            HealthState::Up => HEALTH_UP,
            HealthState::Down => HEALTH_DOWN,
            HealthState::Unknown => continue,
        };
        board.publish_health(i, verdict);
    }
}

/// Health-check rounds, one per interval, by whichever worker holds the prober lease (or by
/// this one alone when it has no shared table); the first round was run at start. A retiring
/// worker leaves the checks to the others.
async fn run_health_rounds(
    balancer: Arc<Balancer>,
    spec: HealthCheckSpec,
    retiring: tokio::sync::watch::Receiver<bool>,
) {
    let report = report_health(&balancer);
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match checks_board(&balancer) {
            Some(_) if *retiring.borrow() => leave_probing(),
            // another worker probes: its verdicts arrive through take_from_board
            Some(board) if !take_lease(board, &spec) => {}
            board => health_round(&balancer, &report, board).await,
        }
    }
}

/// Take the prober's verdicts into this worker's group.
fn adopt_verdicts(balancer: &Balancer, board: &UpstreamBoard) {
    let now = Instant::now();
    let mut group = balancer.group();
    for i in 0..group.len() {
        let state = match board.health_of(i) {
            HEALTH_UP => HealthState::Up,
            HEALTH_DOWN => HealthState::Down,
            _ => continue,
        };
        group.health_adopted(PeerId(i), state, now);
    }
}

/// Take in what changed on the shared table since this worker last looked: the operator's
/// overrides and the prober's health verdicts (at each request and every 250 ms).
pub(super) fn take_from_board(balancer: &Balancer, seen: &BoardSeen) {
    apply_overrides(balancer, &seen.overrides);
    adopt_health(balancer, &seen.health);
}

/// Adopt the prober's verdicts when they changed since `seen` (the generation this worker
/// adopted last, updated here). Nothing without health checks or a shared table.
fn adopt_health(balancer: &Balancer, seen: &AtomicU64) {
    if balancer.config().health_check.is_none() {
        return;
    }
    let Some(board) = checks_board(balancer) else { return };
    let generation = board.health_generation();
    if seen.swap(generation, Ordering::AcqRel) != generation {
        adopt_verdicts(balancer, board);
    }
}

/// Give the prober lease up when this worker holds it (it is leaving), so another worker
/// takes the checks over at its next round instead of after the lease lapses.
pub(super) fn leave_probing() {
    if let Some(board) = crate::upstream_board::worker_board() {
        board.release_prober_lease(std::process::id());
    }
}

/// Logs an upstream's change of health.
fn report_health(balancer: &Balancer) -> impl Fn(PeerId, bool, &str) + use<> {
    let names: Vec<String> =
        balancer.config().upstreams.iter().map(|u| u.addr.to_string()).collect();
    move |peer: PeerId, healthy: bool, why: &str| {
        let name = names.get(peer.0).map(String::as_str).unwrap_or("?");
        match healthy {
            true => info!("upstream {name} passed its health check: back in service"),
            false => warning!("upstream {name} failed its health check ({why}): out of service"),
        }
    }
}

/// A `/` pool worker's way to each other worker pool: one balancer over the pool's socket.
pub(super) fn pool_balancers(routes: &[PoolRoute]) -> std::io::Result<Vec<Arc<Balancer>>> {
    routes
        .iter()
        .map(|route| {
            Balancer::new(route.proxy.clone(), 0).map(Arc::new).map_err(|e| {
                std::io::Error::other(format!("cannot set up pool {}: {e}", route.prefix))
            })
        })
        .collect()
}

/// Close idle connections to the other worker pools now and then.
pub(super) fn spawn_pool_upkeep(shared: &Shared) {
    if shared.pool_balancers.is_empty() {
        return;
    }
    let balancers = shared.pool_balancers.clone();
    shared.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            balancers.iter().for_each(|b| b.expire_idle());
        }
    });
}

/// Start the balancer's background tasks on the worker's runtime.
pub(super) fn spawn_upkeep(shared: &Shared, balancer: Arc<Balancer>) {
    if let Some(spec) = balancer.config().health_check.clone() {
        shared.spawn(run_health_rounds(balancer.clone(), spec, shared.shutdown.clone()));
    }
    let slot = shared.runtime.slot;
    let seen = shared.board_seen.clone();
    shared.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            balancer.expire_idle();
            // Also here, not only per request: an idle worker shows the operator's override
            // and the prober's verdicts.
            take_from_board(&balancer, &seen);
            publish_states(&balancer, slot);
        }
    });
}

/// Logs each failed attempt naming the upstream, and counts every attempt in the shared
/// table the master reads for the metrics.
pub(super) struct Reporting<'a> {
    /// The balancer, for the upstreams' names.
    pub balancer: &'a Balancer,
}

impl Observer for Reporting<'_> {
    fn attempt_started(&self, upstream: PeerId) {
        if let Some(board) = crate::upstream_board::worker_board() {
            board.attempt_started(upstream.0);
        }
    }

    fn attempt_failed(&self, upstream: PeerId, failure: Failure, detail: &str) {
        let name = &self.balancer.config().upstreams[upstream.0].addr;
        warning!("upstream {name} failed ({failure}): {detail}");
        if let Some(board) = crate::upstream_board::worker_board() {
            let reason = match failure {
                Failure::Error => 0,
                Failure::Timeout => 1,
                Failure::InvalidHeader => 2,
                Failure::Status(_) => 3,
            };
            board.attempt_ended(upstream.0, None, Some(reason));
        }
    }

    fn response_head(&self, upstream: PeerId, waited: Duration) {
        if let Some(board) = crate::upstream_board::worker_board() {
            board.attempt_ended(upstream.0, Some(waited), None);
        }
    }

    fn attempt_abandoned(&self, upstream: PeerId) {
        if let Some(board) = crate::upstream_board::worker_board() {
            board.attempt_ended(upstream.0, None, None);
        }
    }

    fn retried(&self, upstream: PeerId) {
        if let Some(board) = crate::upstream_board::worker_board() {
            board.retried(upstream.0);
        }
    }
}

/// The metrics' index of a state (`ferrocorn_metrics::UPSTREAM_STATES`).
fn state_index(state: PeerState) -> usize {
    match state {
        PeerState::Up => 0,
        PeerState::SlowStart => 1,
        PeerState::Probing => 2,
        PeerState::Failed => 3,
        PeerState::Unhealthy => 4,
        PeerState::Draining => 5,
        PeerState::Down => 6,
    }
}

/// Publish the state this worker sees each upstream in.
pub(super) fn publish_states(balancer: &Balancer, slot: usize) {
    let Some(board) = crate::upstream_board::worker_board() else { return };
    let group = balancer.group();
    for view in group.peers(Instant::now()) {
        board.publish_state(slot, view.id.0, state_index(view.state));
    }
}

/// Apply the operator's overrides (`ferrocorn ctl upstreams`) when they changed since
/// `seen` (the generation this worker applied last, updated here).
fn apply_overrides(balancer: &Balancer, seen: &AtomicU64) {
    let Some(board) = crate::upstream_board::worker_board() else { return };
    let generation = board.override_generation();
    if seen.swap(generation, Ordering::AcqRel) == generation {
        return;
    }
    let mut group = balancer.group();
    for i in 0..group.len() {
        let change = board.override_of(i);
        let admin = match change.admin {
            1 => Some(Admin::Up),
            2 => Some(Admin::Drain),
            3 => Some(Admin::Down),
            _ => None,
        };
        if let Some(admin) = admin {
            group.set_admin(PeerId(i), admin);
        }
        if change.weight > 0 {
            group.set_weight(PeerId(i), change.weight);
        }
    }
}
