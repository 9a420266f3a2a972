//! A balancer worker's upstream side at the worker level: its [`Balancer`] made at start
//! (with the active health check's first round done before anything is accepted), the
//! background upkeep (health-check rounds, closing idle upstream connections, publishing the
//! state it sees each upstream in), the operator's overrides applied from shared memory, and
//! the [`Observer`] that logs and counts what happens to requests on their way to the
//! upstreams.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferrocorn_balance::{Admin, Failure, PeerId, PeerState};
use ferrocorn_proxy::{Balancer, Observer, check_round, run_checks};

use super::shared::Shared;
use crate::logging::{info, warning};
use crate::options::{BalanceOptions, PoolRoute};

/// Make this worker's balancer and run the first health-check round.
pub(super) async fn start(options: &BalanceOptions) -> std::io::Result<Arc<Balancer>> {
    let seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let balancer = Balancer::new(options.proxy.clone(), seed)
        .map_err(|e| std::io::Error::other(format!("cannot set up the upstreams: {e}")))?;
    let balancer = Arc::new(balancer);
    if balancer.config().health_check.is_some() {
        check_round(&balancer, &report_health(&balancer)).await;
    }
    Ok(balancer)
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
    if balancer.config().health_check.is_some() {
        let report = Box::new(report_health(&balancer));
        shared.spawn(run_checks(balancer.clone(), report));
    }
    let slot = shared.runtime.slot;
    let overrides_seen = shared.overrides_seen.clone();
    shared.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            balancer.expire_idle();
            // Also here, not only per request: an idle worker shows the operator's override.
            apply_overrides(&balancer, &overrides_seen);
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
pub(super) fn apply_overrides(balancer: &Balancer, seen: &AtomicU64) {
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
