//! One peer's runtime record and the small types around it: its id, the set of peers a request
//! has tried, an attempt's outcome, the operator's override, the state shown to metrics, and the
//! rules that decide whether a peer may take a request now (nginx's `down`, `max_fails` /
//! `fail_timeout`, `max_conns`, plus health checks and the admin override).

use std::time::Instant;

use crate::health::{HealthState, HealthTracker};
use crate::spec::UpstreamSpec;

/// Selection weights are kept in thousandths so a slow-start ramp can go below one unit. Every
/// nginx quantity (weight, effective weight, the failure penalty, the +1 recovery) is scaled by
/// the same factor, so round-robin sequences are the same as with nginx's integers.
pub(crate) const SCALE: i64 = 1000;

/// A peer's index in the group, in the order its specs were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// The peers already tried for one request (nginx's `tried` bitmap). The caller inserts each
/// peer it was given before asking for the next one. The first 64 peers' bits are held
/// inline (one is made per request; most upstream lists are shorter), the rest on the heap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tried {
    first: u64,
    more: Vec<u64>,
}

impl Tried {
    /// Marks `peer` as tried.
    pub fn insert(&mut self, peer: PeerId) {
        let (word, bit) = (peer.0 / 64, peer.0 % 64);
        if word == 0 {
            self.first |= 1 << bit;
            return;
        }
        if self.more.len() < word {
            self.more.resize(word, 0);
        }
        self.more[word - 1] |= 1 << bit;
    }

    /// Whether `peer` was tried.
    pub fn contains(&self, peer: PeerId) -> bool {
        let (word, bit) = (peer.0 / 64, peer.0 % 64);
        let bits = if word == 0 { Some(self.first) } else { self.more.get(word - 1).copied() };
        bits.is_some_and(|w| w & (1 << bit) != 0)
    }

    /// How many peers were tried.
    pub fn len(&self) -> usize {
        let more: usize = self.more.iter().map(|w| w.count_ones() as usize).sum();
        self.first.count_ones() as usize + more
    }

    /// Whether no peer was tried.
    pub fn is_empty(&self) -> bool {
        self.first == 0 && self.more.iter().all(|w| *w == 0)
    }
}

/// How one attempt ended, in nginx's sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A usable response came back.
    Success,
    /// The attempt failed (connect error or timeout, invalid header, or a status the caller
    /// counts as a failure): it counts towards `max_fails`.
    Failure,
}

/// The operator's override of a peer (from `ferrocorn ctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admin {
    /// Normal: the balancing rules decide.
    #[default]
    Up,
    /// Takes no new requests; requests in flight finish.
    Drain,
    /// Takes no requests, like `down` in the spec.
    Down,
}

/// A peer's state as shown to metrics and `ctl`, the first that applies in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// `down` in its spec, or set down by the operator.
    Down,
    /// Drained by the operator.
    Draining,
    /// Its active health check says down (or, once checks are in use, has not said yet).
    Unhealthy,
    /// Out after `max_fails` failures or `error_limit` 5xx answers, until `fail_timeout` ends.
    Failed,
    /// Failed, but `fail_timeout` has passed: the next request it gets is a probe, or that
    /// probe is in flight.
    Probing,
    /// Up, with its weight still ramping after coming back.
    SlowStart,
    /// Up.
    Up,
}

/// A snapshot of one peer for metrics and `ctl`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView<'a> {
    /// Its id.
    pub id: PeerId,
    /// Its spec as configured.
    pub spec: &'a UpstreamSpec,
    /// Its state.
    pub state: PeerState,
    /// Its current weight (the spec's unless changed at run time).
    pub weight: u32,
    /// The weight round robin gives it now, in weight units: lowered by failures (nginx's
    /// `effective_weight`) and by a slow-start ramp.
    pub effective_weight: f64,
    /// Requests in flight to it.
    pub conns: u32,
    /// Failures counted in the current `fail_timeout` window.
    pub fails: u32,
    /// Its active health.
    pub health: HealthState,
    /// The operator's override.
    pub admin: Admin,
}

/// A peer's runtime record.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub spec: UpstreamSpec,
    /// Runtime weight, in weight units.
    pub weight: u32,
    /// nginx's `current_weight` and `effective_weight`, scaled by [`SCALE`].
    pub current_weight: i64,
    pub effective_weight: i64,
    pub conns: u32,
    pub fails: u32,
    /// nginx's `accessed` (last failure) and `checked` (start of the current window); `None`
    /// is "never", earlier than any instant.
    pub accessed: Option<Instant>,
    pub checked: Option<Instant>,
    /// Out because of `error_limit`, like `fails >= max_fails`, until a probe succeeds.
    pub tripped: bool,
    /// Consecutive error statuses seen (for `error_limit`).
    pub errors_in_a_row: u32,
    pub health: HealthTracker,
    pub admin: Admin,
    /// When the current slow-start ramp began.
    pub slow_start_from: Option<Instant>,
    /// A ramp is due but its start time is not known yet (set by `set_admin`, which has no
    /// clock); the next `select` starts it.
    pub slow_start_pending: bool,
}

impl Peer {
    pub fn new(spec: UpstreamSpec) -> Peer {
        let weight = spec.weight.max(1);
        Peer {
            spec,
            weight,
            current_weight: 0,
            effective_weight: i64::from(weight) * SCALE,
            conns: 0,
            fails: 0,
            accessed: None,
            checked: None,
            tripped: false,
            errors_in_a_row: 0,
            health: HealthTracker::new(),
            admin: Admin::Up,
            slow_start_from: None,
            slow_start_pending: false,
        }
    }

    pub fn full_weight(&self) -> i64 {
        i64::from(self.weight) * SCALE
    }

    /// Taken out by passive accounting (max_fails or error_limit), whatever the window.
    pub fn is_failed(&self) -> bool {
        self.tripped || (self.spec.max_fails != 0 && self.fails >= self.spec.max_fails)
    }

    /// Within its `fail_timeout` window since the last failure or probe.
    fn in_window(&self, now: Instant) -> bool {
        self.checked.is_some_and(|c| now.saturating_duration_since(c) <= self.spec.fail_timeout)
    }

    /// Out now because of failures (nginx's skip rule).
    pub fn failed_now(&self, now: Instant) -> bool {
        self.is_failed() && self.in_window(now)
    }

    /// Whether the peer may take a new request, before the tried set and before passive
    /// accounting (`passive` false: a lone peer, which nginx never takes out for failures).
    pub fn usable(&self, now: Instant, health_gated: bool, passive: bool) -> bool {
        self.admin == Admin::Up
            && !self.spec.down
            && (!health_gated || self.health.state() == HealthState::Up)
            && !(passive && self.failed_now(now))
            && !(self.spec.max_conns != 0 && self.conns >= self.spec.max_conns)
    }

    /// The slow-start ramp's ceiling on the weight now, scaled; `None` when no ramp applies.
    pub fn ramp(&self, now: Instant) -> Option<i64> {
        let from = self.slow_start_from?;
        let span = self.spec.slow_start;
        let elapsed = now.saturating_duration_since(from);
        if span.is_zero() || elapsed >= span {
            return None;
        }
        let full = self.full_weight() as u128;
        let part = full * elapsed.as_nanos() / span.as_nanos();
        Some((part as i64).max(1))
    }

    /// The weight smooth round robin adds this round: nginx's effective weight, capped by the
    /// slow-start ramp.
    pub fn rr_weight(&self, now: Instant) -> i64 {
        match self.ramp(now) {
            Some(r) => self.effective_weight.min(r),
            None => self.effective_weight,
        }
    }

    /// The weight least_conn and random_two divide connections by: the configured weight,
    /// capped by the slow-start ramp (nginx uses the configured weight there, not the
    /// effective one).
    pub fn ratio_weight(&self, now: Instant) -> i64 {
        self.ramp(now).unwrap_or(self.full_weight())
    }

    /// Starts a slow-start ramp at `now` if the spec asks for one.
    pub fn begin_slow_start(&mut self, now: Instant) {
        self.slow_start_pending = false;
        if !self.spec.slow_start.is_zero() {
            self.slow_start_from = Some(now);
        }
    }

    /// The bookkeeping of being picked: one more request in flight, and a new window (the
    /// probe) when the last one has ended.
    pub fn on_pick(&mut self, now: Instant, passive: bool) {
        self.conns += 1;
        if passive && !self.in_window(now) {
            self.checked = Some(now);
        }
    }

    pub fn state(&self, now: Instant, health_gated: bool, passive: bool) -> PeerState {
        if self.spec.down || self.admin == Admin::Down {
            PeerState::Down
        } else if self.admin == Admin::Drain {
            PeerState::Draining
        } else if health_gated && self.health.state() != HealthState::Up {
            PeerState::Unhealthy
        } else if passive && self.is_failed() {
            let probe_in_flight = self.accessed < self.checked && self.in_window(now);
            if self.in_window(now) && !probe_in_flight {
                PeerState::Failed
            } else {
                PeerState::Probing
            }
        } else if self.ramp(now).is_some() {
            PeerState::SlowStart
        } else {
            PeerState::Up
        }
    }
}

/// `base` plus `secs` seconds: the hand-advanced clock of the tests.
#[cfg(test)]
pub(crate) fn at(base: Instant, secs: u64) -> Instant {
    base + std::time::Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tried_is_a_set() {
        let mut t = Tried::default();
        assert!(t.is_empty() && !t.contains(PeerId(3)));
        t.insert(PeerId(3));
        t.insert(PeerId(130));
        t.insert(PeerId(3));
        assert!(t.contains(PeerId(3)) && t.contains(PeerId(130)) && !t.contains(PeerId(4)));
        assert!(!t.contains(PeerId(67)) && !t.contains(PeerId(200)));
        t.insert(PeerId(64));
        assert!(t.contains(PeerId(64)) && !t.contains(PeerId(0)));
        assert_eq!(t.len(), 3);
        assert!(!t.is_empty());
    }

    #[test]
    fn ramp_is_linear_and_ends() {
        let mut spec = UpstreamSpec::parse("a:1 weight=4 slow_start=10s").unwrap();
        spec.slow_start = Duration::from_secs(10);
        let mut p = Peer::new(spec);
        let t0 = Instant::now();
        p.begin_slow_start(t0);
        assert_eq!(p.ramp(t0), Some(1));
        assert_eq!(p.ramp(at(t0, 5)), Some(2 * SCALE));
        assert_eq!(p.rr_weight(at(t0, 5)), 2 * SCALE);
        assert_eq!(p.ramp(at(t0, 10)), None);
        assert_eq!(p.rr_weight(at(t0, 10)), 4 * SCALE);
    }
}
