//! The active health check (`--health-check`): one request per upstream on a connection of
//! its own (`Connection: close`), bounded by the check's timeout, its status compared with
//! `expect`, and a round of them over every upstream recorded in the balancer's group. When
//! and by which worker rounds run (one prober per instance) is the worker's business
//! (`server/upstreams.rs` in the native crate).

use std::time::Instant;

use ferrocorn_balance::{HealthCheckSpec, HealthState, PeerId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::balancer::Balancer;
use crate::connection::UpstreamConn;
use crate::response_head::{ResponseLimits, parse_response_head};

/// Why a check failed, for the log.
#[derive(Debug)]
pub enum CheckFailure {
    /// No connection.
    Connect(String),
    /// No complete answer in time, or the connection broke.
    NoAnswer(String),
    /// An answer with a status outside `expect`.
    Status(u16),
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckFailure::Connect(e) => write!(f, "{e}"),
            CheckFailure::NoAnswer(e) => write!(f, "no answer: {e}"),
            CheckFailure::Status(s) => write!(f, "answered {s}"),
        }
    }
}

/// Hears each change of an upstream's health: the upstream, whether it is healthy now, and
/// why it failed (empty when it passed).
pub type HealthReport = dyn Fn(PeerId, bool, &str) + Send + Sync;

/// The request a check sends.
fn check_request(spec: &HealthCheckSpec, host: &str) -> Vec<u8> {
    let host = spec.host.as_deref().unwrap_or(host);
    format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ferrocorn-health-check\r\n\
         Connection: close\r\n\r\n",
        spec.method, spec.path
    )
    .into_bytes()
}

/// Check one upstream once.
pub async fn check_once(balancer: &Balancer, peer: PeerId) -> Result<(), CheckFailure> {
    let Some(spec) = &balancer.config().health_check else { return Ok(()) };
    let addr = &balancer.config().upstreams[peer.0].addr;
    let host = addr.to_string();
    let checking = async {
        let mut conn = UpstreamConn::open(addr, spec.timeout)
            .await
            .map_err(|e| CheckFailure::Connect(e.to_string()))?;
        conn.write_all(&check_request(spec, &host))
            .await
            .map_err(|e| CheckFailure::NoAnswer(e.to_string()))?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            let parsed =
                parse_response_head(&buf, spec.method == "HEAD", ResponseLimits::default())
                    .map_err(|e| CheckFailure::NoAnswer(e.to_string()))?;
            if let Some((head, _)) = parsed
                && head.status >= 200
            {
                let (low, high) = spec.expect;
                return match (low..=high).contains(&head.status) {
                    true => Ok(()),
                    false => Err(CheckFailure::Status(head.status)),
                };
            }
            if buf.len() > 64 * 1024 {
                return Err(CheckFailure::NoAnswer("response head too large".into()));
            }
            buf.reserve(4096);
            match conn.read_buf(&mut buf).await {
                Ok(0) => return Err(CheckFailure::NoAnswer("connection closed".into())),
                Ok(_) => {}
                Err(e) => return Err(CheckFailure::NoAnswer(e.to_string())),
            }
        }
    };
    match tokio::time::timeout(spec.timeout, checking).await {
        Ok(result) => result,
        Err(_) => Err(CheckFailure::NoAnswer(format!("timed out after {:?}", spec.timeout))),
    }
}

/// Check every upstream once, at the same time, and record the results. `report` hears each
/// change of an upstream's health (to log it).
pub async fn check_round(balancer: &Balancer, report: &HealthReport) {
    let peers: Vec<PeerId> = (0..balancer.config().upstreams.len()).map(PeerId).collect();
    let checks = peers.iter().map(|&peer| async move { (peer, check_once(balancer, peer).await) });
    let results = futures_util::future::join_all(checks).await;
    let now = Instant::now();
    for (peer, result) in results {
        let mut group = balancer.group();
        let healthy = |group: &ferrocorn_balance::Group| {
            group.peers(now).get(peer.0).is_some_and(|p| p.health == HealthState::Up)
        };
        let before = healthy(&group);
        group.health_observed(peer, result.is_ok(), now);
        let after = healthy(&group);
        drop(group);
        if before != after {
            let why = match &result {
                Ok(()) => String::new(),
                Err(e) => e.to_string(),
            };
            report(peer, after, &why);
        }
    }
}
