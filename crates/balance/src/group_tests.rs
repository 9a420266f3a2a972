//! The group's accounting replayed against a hand-advanced clock: nginx's `max_fails` /
//! `fail_timeout` windows and the single probe, the lone peer, backups, `error_limit`, active
//! health checks, operator overrides and slow start.

use std::time::{Duration, Instant};

use crate::group::{Group, GroupError, SelectKey};
use crate::health::{HealthCheckSpec, HealthState};
use crate::method::Method;
use crate::peer::{Admin, Outcome, PeerId, PeerState, Tried, at};
use crate::spec::UpstreamSpec;

fn group(specs: &[&str], method: Method) -> Group {
    let specs = specs.iter().map(|s| UpstreamSpec::parse(s).unwrap()).collect();
    Group::new(specs, method, 11).unwrap()
}

fn pick(g: &mut Group, now: Instant) -> Option<usize> {
    g.select(SelectKey::None, &Tried::default(), now).map(|p| p.0)
}

/// Picks and releases with `Success` `n` times; returns the picks.
fn run(g: &mut Group, n: usize, now: Instant) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let p = pick(g, now).expect("a pick");
            g.release(PeerId(p), Outcome::Success, now);
            p
        })
        .collect()
}

/// Picks (releasing other peers at once) until `peer` is picked, which it must be within 20.
fn pick_until(g: &mut Group, peer: usize, now: Instant) {
    for _ in 0..20 {
        match pick(g, now) {
            Some(p) if p == peer => return,
            Some(p) => g.release(PeerId(p), Outcome::Success, now),
            None => break,
        }
    }
    panic!("peer {peer} not picked");
}

fn fail(g: &mut Group, peer: usize, now: Instant) {
    g.release(PeerId(peer), Outcome::Failure, now);
}

fn state(g: &Group, peer: usize, now: Instant) -> PeerState {
    g.peers(now)[peer].state
}

#[test]
fn build_errors_name_the_cause() {
    let spec = |s: &str| UpstreamSpec::parse(s).unwrap();
    let table: Vec<(Vec<UpstreamSpec>, Method, &str)> = vec![
        (vec![], Method::RoundRobin, "no servers"),
        (vec![spec("a:1 backup")], Method::RoundRobin, "only backup"),
        (vec![spec("a:1"), spec("b:1 backup")], Method::IpHash, "b:1 is backup"),
        (vec![spec("a:1"), spec("b:1 backup")], Method::RandomTwo, "random_two"),
        (
            vec![spec("a:1"), spec("b:1 backup")],
            Method::parse("hash $uri consistent").unwrap(),
            "hash $uri consistent",
        ),
        (
            vec![{
                let mut s = spec("a:1");
                s.weight = 0;
                s
            }],
            Method::RoundRobin,
            "weight=0",
        ),
    ];
    for (specs, method, needle) in table {
        let e: GroupError = Group::new(specs, method, 0).unwrap_err();
        assert!(e.to_string().contains(needle) && e.to_string().contains("expected"), "{e}");
    }
    assert!(Group::new(vec![spec("a:1"), spec("b:1 backup")], Method::LeastConn, 0).is_ok());
}

#[test]
fn max_fails_window_and_single_probe() {
    let t0 = Instant::now();
    let mut g = group(&["a:1 max_fails=2 fail_timeout=10s", "b:1"], Method::RoundRobin);
    // First failure: a stays in (1 < max_fails).
    assert_eq!(pick(&mut g, t0), Some(0));
    fail(&mut g, 0, t0);
    assert_eq!(state(&g, 0, t0), PeerState::Up);
    assert!(run(&mut g, 4, t0).contains(&0));
    // Second failure within the window: out.
    pick_until(&mut g, 0, at(t0, 1));
    fail(&mut g, 0, at(t0, 1));
    assert_eq!(g.peers(at(t0, 1))[0].fails, 2);
    assert_eq!(state(&g, 0, at(t0, 1)), PeerState::Failed);
    // Skipped until fail_timeout has passed since the last failure (t0+1 .. t0+11 inclusive).
    for s in [1, 5, 11] {
        assert!(!run(&mut g, 6, at(t0, s)).contains(&0), "picked at t0+{s}");
    }
    // After it: a is due a probe, and exactly one request gets it.
    let t12 = at(t0, 12);
    assert_eq!(state(&g, 0, t12), PeerState::Probing);
    let picks: Vec<usize> = (0..6).map(|_| pick(&mut g, t12).unwrap()).collect();
    assert_eq!(picks.iter().filter(|p| **p == 0).count(), 1, "{picks:?}");
    assert_eq!(state(&g, 0, t12), PeerState::Probing, "probe in flight");
    for p in picks.iter().filter(|p| **p == 1) {
        g.release(PeerId(*p), Outcome::Success, t12);
    }
    // The probe fails: out again for a whole new window.
    fail(&mut g, 0, at(t0, 13));
    assert_eq!(state(&g, 0, at(t0, 13)), PeerState::Failed);
    assert!(!run(&mut g, 6, at(t0, 23)).contains(&0));
    // Next probe at t0+24 succeeds: failures cleared, a back in rotation.
    let t24 = at(t0, 24);
    pick_until(&mut g, 0, t24);
    g.release(PeerId(0), Outcome::Success, at(t0, 25));
    assert_eq!(g.peers(at(t0, 25))[0].fails, 0);
    assert_eq!(state(&g, 0, at(t0, 25)), PeerState::Up);
    assert_eq!(run(&mut g, 4, at(t0, 25)).iter().filter(|p| **p == 0).count(), 2);
}

#[test]
fn failures_lower_the_effective_weight_then_it_recovers() {
    let t0 = Instant::now();
    let mut g = group(&["a:1 weight=4 max_fails=2", "b:1 weight=4"], Method::RoundRobin);
    pick(&mut g, t0);
    fail(&mut g, 0, t0);
    // weight / max_fails = 2 taken off; +1 per round it takes part in.
    assert_eq!(g.peers(t0)[0].effective_weight, 2.0);
    run(&mut g, 1, t0);
    assert_eq!(g.peers(t0)[0].effective_weight, 3.0);
    run(&mut g, 4, t0);
    assert_eq!(g.peers(t0)[0].effective_weight, 4.0);
}

#[test]
fn a_success_within_the_window_does_not_clear_failures() {
    let t0 = Instant::now();
    let mut g = group(&["a:1 max_fails=3 fail_timeout=10s", "b:1"], Method::RoundRobin);
    pick(&mut g, t0);
    fail(&mut g, 0, t0);
    pick(&mut g, at(t0, 2)); // b
    pick(&mut g, at(t0, 2)); // a, same window: no probe
    g.release(PeerId(0), Outcome::Success, at(t0, 3));
    assert_eq!(g.peers(at(t0, 3))[0].fails, 1, "nginx clears only after a probe");
}

#[test]
fn a_lone_peer_is_never_taken_out() {
    let t0 = Instant::now();
    let mut g = group(&["a:1 max_fails=1 error_limit=1"], Method::RoundRobin);
    for s in 0..5 {
        assert_eq!(pick(&mut g, at(t0, s)), Some(0));
        g.observe_status(PeerId(0), 502, at(t0, s));
        fail(&mut g, 0, at(t0, s));
        assert_eq!(state(&g, 0, at(t0, s)), PeerState::Up);
    }
    // It is still subject to max_conns, down and the tried set.
    let mut tried = Tried::default();
    tried.insert(PeerId(0));
    assert_eq!(g.select(SelectKey::None, &tried, t0), None);
    g.set_admin(PeerId(0), Admin::Down);
    assert_eq!(pick(&mut g, t0), None);
}

#[test]
fn backups_only_when_every_primary_is_out() {
    let t0 = Instant::now();
    let mut g = group(&["a:1", "b:1", "c:1 backup", "d:1 backup weight=2"], Method::RoundRobin);
    assert!(run(&mut g, 10, t0).iter().all(|p| *p < 2));
    pick(&mut g, t0);
    fail(&mut g, 0, t0);
    assert!(run(&mut g, 10, t0).iter().all(|p| *p == 1));
    g.set_admin(PeerId(1), Admin::Drain);
    // Backups share by smooth WRR: d (weight 2) twice as often as c.
    let picks = run(&mut g, 6, t0);
    assert_eq!(picks, [3, 2, 3, 3, 2, 3]);
    // Every primary tried for this request also sends it to the backups.
    g.set_admin(PeerId(1), Admin::Up);
    let mut tried = Tried::default();
    tried.insert(PeerId(1));
    let p = g.select(SelectKey::None, &tried, t0).unwrap();
    assert!(p.0 >= 2);
    // Everything out: nothing to pick.
    g.set_admin(PeerId(2), Admin::Down);
    g.set_admin(PeerId(3), Admin::Down);
    g.set_admin(PeerId(1), Admin::Down);
    assert_eq!(pick(&mut g, t0), None);
}

#[test]
fn down_and_max_conns_are_skipped() {
    let t0 = Instant::now();
    let mut g = group(&["a:1 down", "b:1 max_conns=2", "c:1"], Method::RoundRobin);
    assert_eq!(state(&g, 0, t0), PeerState::Down);
    // No release: b fills up at 2 and only c is left.
    let picks: Vec<usize> = (0..6).map(|_| pick(&mut g, t0).unwrap()).collect();
    assert_eq!(picks.iter().filter(|p| **p == 1).count(), 2, "{picks:?}");
    assert!(!picks.contains(&0));
}

#[test]
fn error_limit_takes_the_peer_out_like_max_fails() {
    let t0 = Instant::now();
    let mut g = group(&["a:1 error_limit=3 fail_timeout=10s", "b:1"], Method::RoundRobin);
    for status in [500, 503, 200, 502, 501, 504] {
        g.observe_status(PeerId(0), status, t0);
    }
    assert_eq!(state(&g, 0, t0), PeerState::Up, "a 200 and a 501 break the run");
    for status in [500, 502, 503] {
        g.observe_status(PeerId(0), status, t0);
    }
    assert_eq!(state(&g, 0, t0), PeerState::Failed);
    assert!(!run(&mut g, 4, at(t0, 10)).contains(&0));
    // One probe after the window; its success brings a back.
    pick_until(&mut g, 0, at(t0, 11));
    assert_ne!(pick(&mut g, at(t0, 11)), Some(0));
    g.release(PeerId(0), Outcome::Success, at(t0, 11));
    assert_eq!(state(&g, 0, at(t0, 11)), PeerState::Up);
}

#[test]
fn health_checks_gate_selection() {
    let t0 = Instant::now();
    let mut g = group(&["a:1", "b:1"], Method::RoundRobin);
    assert!(!g.has_health_checks());
    g.set_health_check(HealthCheckSpec::parse("GET /healthz fall=2 rise=2").unwrap());
    // Checks in use, no result yet: nobody is picked.
    assert_eq!(pick(&mut g, t0), None);
    assert_eq!(state(&g, 0, t0), PeerState::Unhealthy);
    // First round: a passes, b fails; each is decided at once.
    g.health_observed(PeerId(0), true, t0);
    g.health_observed(PeerId(1), false, t0);
    assert!(run(&mut g, 4, t0).iter().all(|p| *p == 0));
    // b needs two passes in a row; a needs two failures.
    g.health_observed(PeerId(1), true, t0);
    assert_eq!(g.peers(t0)[1].health, HealthState::Down);
    g.health_observed(PeerId(1), true, t0);
    g.health_observed(PeerId(0), false, t0);
    assert_eq!(run(&mut g, 4, t0).iter().filter(|p| **p == 1).count(), 2);
    g.health_observed(PeerId(0), false, t0);
    assert!(run(&mut g, 4, t0).iter().all(|p| *p == 1));
}

#[test]
fn adopted_verdicts_gate_selection_and_a_return_starts_slow_start() {
    let t0 = Instant::now();
    let mut g = group(&["a:1 slow_start=10s", "b:1"], Method::RoundRobin);
    g.health_adopted(PeerId(0), HealthState::Unknown, t0);
    assert!(!g.has_health_checks(), "an undecided verdict says nothing");
    g.health_adopted(PeerId(0), HealthState::Down, t0);
    g.health_adopted(PeerId(1), HealthState::Up, t0);
    assert!(run(&mut g, 4, t0).iter().all(|p| *p == 1));
    assert_eq!(g.health_states(), [HealthState::Down, HealthState::Up]);
    g.health_adopted(PeerId(0), HealthState::Up, t0);
    assert_eq!(state(&g, 0, t0), PeerState::SlowStart);
    assert_eq!(state(&g, 0, at(t0, 11)), PeerState::Up);
}

#[test]
fn admin_overrides() {
    let t0 = Instant::now();
    let mut g = group(&["a:1", "b:1"], Method::RoundRobin);
    g.set_admin(PeerId(0), Admin::Drain);
    assert_eq!(state(&g, 0, t0), PeerState::Draining);
    assert!(run(&mut g, 4, t0).iter().all(|p| *p == 1));
    g.set_admin(PeerId(0), Admin::Down);
    assert_eq!(state(&g, 0, t0), PeerState::Down);
    g.set_admin(PeerId(0), Admin::Up);
    assert_eq!(run(&mut g, 4, t0).iter().filter(|p| **p == 0).count(), 2);
}

#[test]
fn set_weight_changes_the_share() {
    let t0 = Instant::now();
    let mut g = group(&["a:1", "b:1", "c:1"], Method::RoundRobin);
    g.set_weight(PeerId(0), 5);
    assert_eq!(g.peers(t0)[0].weight, 5);
    let picks = run(&mut g, 7, t0);
    assert_eq!(picks.iter().filter(|p| **p == 0).count(), 5, "{picks:?}");
}

#[test]
fn slow_start_ramps_the_share() {
    let t0 = Instant::now();
    let specs = ["a:1 slow_start=100s max_fails=1 fail_timeout=10s", "b:1"];
    let mut g = group(&specs, Method::RoundRobin);
    // Not at start: a takes its half at once.
    assert_eq!(state(&g, 0, t0), PeerState::Up);
    assert_eq!(run(&mut g, 10, t0).iter().filter(|p| **p == 0).count(), 5);
    // A failure and a successful probe 11 s later start the ramp.
    pick_until(&mut g, 0, t0);
    fail(&mut g, 0, t0);
    let t11 = at(t0, 11);
    pick_until(&mut g, 0, t11);
    g.release(PeerId(0), Outcome::Success, t11);
    assert_eq!(state(&g, 0, t11), PeerState::SlowStart);
    // (seconds into the ramp, a's effective weight, a's share of 1000 picks ± 3 %)
    let table: &[(u64, f64, usize)] = &[(10, 0.1, 91), (50, 0.5, 333), (90, 0.9, 474)];
    for (secs, weight, share) in table {
        let now = t11 + Duration::from_secs(*secs);
        assert!((g.peers(now)[0].effective_weight - weight).abs() < 1e-9, "{secs}s");
        let got = run(&mut g, 1000, now).iter().filter(|p| **p == 0).count();
        assert!(got.abs_diff(*share) <= 30, "{secs}s: {got} of 1000, expected ~{share}");
    }
    let done = t11 + Duration::from_secs(100);
    assert_eq!(state(&g, 0, done), PeerState::Up);
    assert_eq!(g.peers(done)[0].effective_weight, 1.0);
}

#[test]
fn slow_start_after_admin_up_and_health_rise() {
    let t0 = Instant::now();
    let mut g = group(&["a:1 slow_start=10s", "b:1"], Method::RoundRobin);
    g.set_admin(PeerId(0), Admin::Down);
    g.set_admin(PeerId(0), Admin::Up);
    // The ramp starts at the next select.
    pick(&mut g, t0);
    assert_eq!(state(&g, 0, at(t0, 5)), PeerState::SlowStart);
    assert_eq!(g.peers(at(t0, 5))[0].effective_weight, 0.5);
    assert_eq!(state(&g, 0, at(t0, 10)), PeerState::Up);
    // Health: Unknown -> Up does not ramp; Down -> Up does.
    let mut h = group(&["a:1 slow_start=10s", "b:1"], Method::RoundRobin);
    h.health_observed(PeerId(0), true, t0);
    assert_eq!(state(&h, 0, t0), PeerState::Up);
    for _ in 0..3 {
        h.health_observed(PeerId(0), false, t0);
    }
    h.health_observed(PeerId(0), true, at(t0, 1));
    h.health_observed(PeerId(0), true, at(t0, 2));
    assert_eq!(state(&h, 0, at(t0, 3)), PeerState::SlowStart);
    assert_eq!(h.peers(at(t0, 7))[0].effective_weight, 0.5);
}
