//! A balancer worker's upstream side at the worker level: its [`Balancer`] made at start
//! (with the active health check's first round done before anything is accepted), the
//! background upkeep (health-check rounds, closing idle upstream connections), and the
//! [`Observer`] that logs what happens to requests on their way to the upstreams.

use std::sync::Arc;
use std::time::Duration;

use ferrocorn_balance::{Failure, PeerId};
use ferrocorn_proxy::{Balancer, Observer, check_round, run_checks};

use super::shared::Shared;
use crate::logging::{info, warning};
use crate::options::BalanceOptions;

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

/// Start the balancer's background tasks on the worker's runtime.
pub(super) fn spawn_upkeep(shared: &Shared, balancer: Arc<Balancer>) {
    if balancer.config().health_check.is_some() {
        let report = Box::new(report_health(&balancer));
        shared.spawn(run_checks(balancer.clone(), report));
    }
    shared.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            balancer.expire_idle();
        }
    });
}

/// Logs each failed attempt, naming the upstream.
pub(super) struct LogFailures<'a> {
    /// The balancer, for the upstreams' names.
    pub balancer: &'a Balancer,
}

impl Observer for LogFailures<'_> {
    fn attempt_failed(&self, upstream: PeerId, failure: Failure, detail: &str) {
        let name = &self.balancer.config().upstreams[upstream.0].addr;
        warning!("upstream {name} failed ({failure}): {detail}");
    }
}
