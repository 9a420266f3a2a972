//! An upstream group: its peers, its method and the state selection keeps between requests.
//! This file owns the public API (building, picking, the end of an attempt, passive and active
//! health reports, operator overrides, snapshots); each method's picking rule lives in its own
//! file (`round_robin`, `least_conn`, `hash`, `ketama`, `random`).
//!
//! A peer can take a request when all of these hold (checked by every method):
//!
//! - it is not `down` in its spec and the operator has it [`Admin::Up`];
//! - active health checks are not in use, or its check says [`HealthState::Up`] (once checks
//!   are in use, `Unknown` counts as not up: run a round of checks before serving);
//! - it is not failed: nginx skips a peer while `max_fails != 0 && fails >= max_fails` (or
//!   `error_limit` tripped) and `now - checked <= fail_timeout`; the pick after that window
//!   sets `checked = now`, so it gets exactly one probe per window. A group with a single
//!   primary and no backup never takes it out for failures, as nginx does;
//! - it has fewer than `max_conns` requests in flight (when set);
//! - the request has not tried it yet.
//!
//! Backups (round robin and least_conn only) are considered only when no primary can take the
//! request.
//!
//! Slow start: when a peer comes back (a successful probe after it was failed, a health check
//! going from `Down` to `Up`, the operator setting it `Up` again; not at start-up) its weight
//! ramps linearly over `slow_start`, from a thousandth of a unit to its full weight. Round robin
//! uses `min(effective_weight, ramp)`, so nginx's own failure penalty (lowered by `weight /
//! max_fails` per failure, +1 per round) and the ramp both hold it back, the lower one winning;
//! least_conn and random_two divide in-flight requests by `min(weight, ramp)`. The hash
//! methods keep their mapping and ignore the ramp (except for round robin among the peers of
//! one consistent-hash server).

use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

use crate::health::{HealthCheckSpec, HealthState};
use crate::ketama::Ring;
use crate::method::Method;
use crate::peer::{Admin, Outcome, Peer, PeerId, PeerView, SCALE, Tried};
use crate::random::XorShift;
use crate::spec::{MAX_WEIGHT, UpstreamAddr, UpstreamSpec};

/// What a request offers the method to pick by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectKey<'a> {
    /// Nothing: hash methods fall back to round robin, `ip_hash` maps every such request to one
    /// peer (nginx's pseudo address for non-IP clients). Other methods ignore the key.
    None,
    /// The client's address, for `ip_hash` (a hash method uses its text as the key).
    ClientIp(IpAddr),
    /// The rendered hash key, for `hash KEY [consistent]`; empty falls back to round robin.
    /// `ip_hash` treats it like `None`.
    Hash(&'a [u8]),
}

/// A group that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    /// No specs were given.
    Empty,
    /// Every spec is `backup`: there is no primary to start from.
    NoPrimary,
    /// A weight of 0 or above [`MAX_WEIGHT`].
    Weight {
        /// The peer's address.
        addr: UpstreamAddr,
        /// The weight given.
        weight: u32,
    },
    /// A `backup` peer with a method that cannot use backups.
    BackupNotAllowed {
        /// The peer's address.
        addr: UpstreamAddr,
        /// The method.
        method: String,
    },
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::Empty => {
                write!(f, "upstream group has no servers: expected at least one upstream spec")
            }
            GroupError::NoPrimary => write!(
                f,
                "upstream group has only backup servers: expected at least one server without backup"
            ),
            GroupError::Weight { addr, weight } => write!(
                f,
                "upstream {addr} has weight={weight}: expected an integer from 1 to {MAX_WEIGHT}"
            ),
            GroupError::BackupNotAllowed { addr, method } => write!(
                f,
                "upstream {addr} is backup, which method {method} cannot use: expected backup only with round_robin or least_conn"
            ),
        }
    }
}

impl std::error::Error for GroupError {}

/// An upstream group and its selection state.
#[derive(Debug, Clone)]
pub struct Group {
    pub(crate) peers: Vec<Peer>,
    pub(crate) primaries: Vec<usize>,
    pub(crate) backups: Vec<usize>,
    pub(crate) method: Method,
    pub(crate) ring: Ring,
    pub(crate) rng: XorShift,
    /// One primary and no backup: nginx never takes such a peer out for failures.
    pub(crate) single: bool,
    /// Once health checks are in use, only peers whose check says `Up` are picked.
    pub(crate) health_gated: bool,
    health_check: Option<HealthCheckSpec>,
}

impl Group {
    /// Builds a group. Refuses an empty list, a group of only backups, weights outside 1 to
    /// [`MAX_WEIGHT`], and `backup` with a method other than round robin or least_conn.
    pub fn new(specs: Vec<UpstreamSpec>, method: Method, seed: u64) -> Result<Group, GroupError> {
        if specs.is_empty() {
            return Err(GroupError::Empty);
        }
        for spec in &specs {
            if spec.weight == 0 || spec.weight > MAX_WEIGHT {
                return Err(GroupError::Weight { addr: spec.addr.clone(), weight: spec.weight });
            }
            if spec.backup && !method.allows_backup() {
                return Err(GroupError::BackupNotAllowed {
                    addr: spec.addr.clone(),
                    method: method.to_string(),
                });
            }
        }
        let (backups, primaries): (Vec<usize>, Vec<usize>) =
            (0..specs.len()).partition(|i| specs[*i].backup);
        if primaries.is_empty() {
            return Err(GroupError::NoPrimary);
        }
        let peers: Vec<Peer> = specs.into_iter().map(Peer::new).collect();
        let single = primaries.len() == 1 && backups.is_empty();
        let mut group = Group {
            peers,
            primaries,
            backups,
            method,
            ring: Ring::default(),
            rng: XorShift::new(seed),
            single,
            health_gated: false,
            health_check: None,
        };
        group.rebuild_ring();
        Ok(group)
    }

    fn rebuild_ring(&mut self) {
        if matches!(self.method, Method::Hash { consistent: true, .. }) {
            self.ring = Ring::build(&self.peers, &self.primaries);
        }
    }

    /// Picks a peer for one attempt of a request, skipping those in `tried`; `None` when no
    /// peer can take it (the caller answers 502). The chosen peer's in-flight count goes up by
    /// one; the caller must [`release`](Group::release) it when the attempt ends.
    pub fn select(&mut self, key: SelectKey<'_>, tried: &Tried, now: Instant) -> Option<PeerId> {
        for peer in &mut self.peers {
            if peer.slow_start_pending {
                peer.begin_slow_start(now);
            }
        }
        let picked = match &self.method {
            Method::RoundRobin => self.pick_round_robin(tried, now),
            Method::LeastConn => self.pick_least_conn(tried, now),
            Method::IpHash => self.pick_ip_hash(key, tried, now),
            Method::RandomTwo => self.pick_random_two(tried, now),
            Method::Hash { consistent, balance_factor, .. } => {
                let (consistent, balance_factor) = (*consistent, *balance_factor);
                let text;
                let bytes: &[u8] = match key {
                    SelectKey::None => &[],
                    SelectKey::Hash(bytes) => bytes,
                    SelectKey::ClientIp(ip) => {
                        text = ip.to_string();
                        text.as_bytes()
                    }
                };
                if consistent {
                    self.pick_consistent(bytes, balance_factor, tried, now)
                } else {
                    self.pick_hash(bytes, tried, now)
                }
            }
        }?;
        let passive = !self.single;
        self.peers[picked].on_pick(now, passive);
        Some(PeerId(picked))
    }

    /// Ends one attempt on `peer`: one request fewer in flight, and nginx's accounting. A
    /// `Failure` counts towards `max_fails`, restarts the window, and lowers the effective
    /// weight by `weight / max_fails`; a `Success` of the probe after a window clears the
    /// failures (and starts slow start if the peer had been out).
    pub fn release(&mut self, peer: PeerId, outcome: Outcome, now: Instant) {
        let single = self.single;
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        p.conns = p.conns.saturating_sub(1);
        if single {
            p.fails = 0;
            return;
        }
        match outcome {
            Outcome::Failure => {
                p.fails = p.fails.saturating_add(1);
                p.accessed = Some(now);
                p.checked = Some(now);
                if let Some(units) = p.weight.checked_div(p.spec.max_fails) {
                    let penalty = i64::from(units) * SCALE;
                    p.effective_weight = (p.effective_weight - penalty).max(0);
                }
            }
            Outcome::Success => {
                if p.accessed < p.checked {
                    let was_out = p.is_failed();
                    p.fails = 0;
                    p.tripped = false;
                    if was_out {
                        p.begin_slow_start(now);
                    }
                }
            }
        }
    }

    /// Reports the status of a response from `peer`, for `error_limit`: HAProxy's `observe
    /// layer7` counts 5xx statuses except 501 and 505 as errors; `error_limit` of them in a row
    /// take the peer out as `max_fails` failures would (out for `fail_timeout`, then one probe).
    /// Any other status resets the run. A lone peer is never taken out, as with `max_fails`.
    pub fn observe_status(&mut self, peer: PeerId, status: u16, now: Instant) {
        let single = self.single;
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        if p.spec.error_limit == 0 {
            return;
        }
        if !is_layer7_error(status) {
            p.errors_in_a_row = 0;
            return;
        }
        p.errors_in_a_row += 1;
        if p.errors_in_a_row >= p.spec.error_limit && !single {
            p.errors_in_a_row = 0;
            p.tripped = true;
            p.accessed = Some(now);
            p.checked = Some(now);
            p.effective_weight = 0;
        }
    }

    /// Uses `check`'s `rise` and `fall` for [`health_observed`](Group::health_observed), and
    /// from now on picks only peers whose check says `Up` (so the caller must run one round of
    /// checks before serving).
    pub fn set_health_check(&mut self, check: HealthCheckSpec) {
        self.health_check = Some(check);
        self.health_gated = true;
    }

    /// The health check set by [`set_health_check`](Group::set_health_check).
    pub fn health_check(&self) -> Option<&HealthCheckSpec> {
        self.health_check.as_ref()
    }

    /// Whether active health checks decide eligibility (after `set_health_check` or the first
    /// `health_observed`).
    pub fn has_health_checks(&self) -> bool {
        self.health_gated
    }

    /// Records an active check result for `peer`. From the first report on, only peers whose
    /// check says `Up` are picked; a peer coming back from `Down` starts slow start. `rise` and
    /// `fall` come from [`set_health_check`](Group::set_health_check), else HAProxy's 2 and 3.
    pub fn health_observed(&mut self, peer: PeerId, passed: bool, now: Instant) {
        self.health_gated = true;
        let (rise, fall) = self.health_check.as_ref().map_or((2, 3), |c| (c.rise, c.fall));
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        let before = p.health.state();
        if p.health.observe(passed, rise, fall) == Some(HealthState::Up)
            && before == HealthState::Down
        {
            p.begin_slow_start(now);
        }
    }

    /// Takes `peer`'s health as decided by another checker (the instance's one prober, whose
    /// verdict the other workers adopt instead of checking themselves); gates selection on
    /// health from now on, and a peer coming back from `Down` starts slow start, as after its
    /// own checks.
    pub fn health_adopted(&mut self, peer: PeerId, state: HealthState, now: Instant) {
        if state == HealthState::Unknown {
            return;
        }
        self.health_gated = true;
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        let before = p.health.state();
        if p.health.adopt(state) == Some(HealthState::Up) && before == HealthState::Down {
            p.begin_slow_start(now);
        }
    }

    /// Each peer's health as its checks decided (`Unknown` before the first result).
    pub fn health_states(&self) -> Vec<HealthState> {
        self.peers.iter().map(|p| p.health.state()).collect()
    }

    /// Sets the operator's override. Back to `Up` from `Drain` or `Down` starts slow start at
    /// the next `select`.
    pub fn set_admin(&mut self, peer: PeerId, admin: Admin) {
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        if admin == Admin::Up && p.admin != Admin::Up {
            p.slow_start_pending = true;
        }
        p.admin = admin;
    }

    /// Changes `peer`'s weight at run time (clamped to 1..=[`MAX_WEIGHT`]); its effective
    /// weight is reset to the new weight and the consistent-hash ring is rebuilt.
    pub fn set_weight(&mut self, peer: PeerId, weight: u32) {
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        p.weight = weight.clamp(1, MAX_WEIGHT);
        p.effective_weight = p.full_weight();
        self.rebuild_ring();
    }

    /// A snapshot of every peer, in spec order.
    pub fn peers(&self, now: Instant) -> Vec<PeerView<'_>> {
        let passive = !self.single;
        let gated = self.health_gated;
        self.peers
            .iter()
            .enumerate()
            .map(|(i, p)| PeerView {
                id: PeerId(i),
                spec: &p.spec,
                state: p.state(now, gated, passive),
                weight: p.weight,
                effective_weight: p.rr_weight(now) as f64 / SCALE as f64,
                conns: p.conns,
                fails: p.fails,
                health: p.health.state(),
                admin: p.admin,
            })
            .collect()
    }

    /// The spec of `peer`.
    pub fn spec(&self, peer: PeerId) -> Option<&UpstreamSpec> {
        self.peers.get(peer.0).map(|p| &p.spec)
    }

    /// The group's method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Number of peers, backups included.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Always false: a group has at least one peer.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether peer `i` may take a new request now, tried set aside.
    pub(crate) fn usable(&self, i: usize, now: Instant) -> bool {
        self.peers[i].usable(now, self.health_gated, !self.single)
    }

    /// Whether peer `i` may take this request now.
    pub(crate) fn candidate(&self, i: usize, tried: &Tried, now: Instant) -> bool {
        !tried.contains(PeerId(i)) && self.usable(i, now)
    }
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;

/// HAProxy's `observe layer7` error statuses: 5xx except 501 and 505.
fn is_layer7_error(status: u16) -> bool {
    (500..=599).contains(&status) && status != 501 && status != 505
}
