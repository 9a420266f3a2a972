//! nginx's `least_conn`: the eligible peer with the fewest requests in flight relative to its
//! weight (`conns_a * weight_b < conns_b * weight_a`), ties broken by smooth weighted round
//! robin among the tied peers from the first of them on; backups when no primary can take it.

use std::time::Instant;

use crate::group::Group;
use crate::peer::{Peer, PeerId, Tried};
use crate::round_robin::smooth_wrr;

/// `a` has fewer requests in flight per unit of weight than `b` (negative), as many (zero), or
/// more (positive). The weights are those of [`Peer::ratio_weight`].
pub(crate) fn load_cmp(a: &Peer, b: &Peer, now: Instant) -> std::cmp::Ordering {
    let lhs = u128::from(a.conns) * b.ratio_weight(now) as u128;
    let rhs = u128::from(b.conns) * a.ratio_weight(now) as u128;
    lhs.cmp(&rhs)
}

fn least_conn_in(
    peers: &mut [Peer],
    set: &[usize],
    now: Instant,
    eligible: impl Fn(usize, &Peer) -> bool,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut best_pos = 0;
    let mut many = false;
    for (pos, &i) in set.iter().enumerate() {
        if !eligible(i, &peers[i]) {
            continue;
        }
        match best {
            Some(b) => match load_cmp(&peers[i], &peers[b], now) {
                std::cmp::Ordering::Less => {
                    (best, best_pos, many) = (Some(i), pos, false);
                }
                std::cmp::Ordering::Equal => many = true,
                std::cmp::Ordering::Greater => {}
            },
            None => (best, best_pos) = (Some(i), pos),
        }
    }
    let b = best?;
    if !many {
        return Some(b);
    }
    let leader = peers[b].clone();
    let tied = |i: usize, p: &Peer| {
        eligible(i, p) && load_cmp(p, &leader, now) == std::cmp::Ordering::Equal
    };
    smooth_wrr(peers, &set[best_pos..], now, tied)
}

impl Group {
    /// least_conn over the primaries, then over the backups.
    pub(crate) fn pick_least_conn(&mut self, tried: &Tried, now: Instant) -> Option<usize> {
        if self.single {
            return self.pick_round_robin(tried, now);
        }
        let (gated, passive) = (self.health_gated, !self.single);
        let ok = |i: usize, p: &Peer| !tried.contains(PeerId(i)) && p.usable(now, gated, passive);
        least_conn_in(&mut self.peers, &self.primaries, now, ok)
            .or_else(|| least_conn_in(&mut self.peers, &self.backups, now, ok))
    }
}

#[cfg(test)]
mod tests {
    use crate::group::{Group, SelectKey};
    use crate::method::Method;
    use crate::peer::{Outcome, PeerId, Tried};
    use crate::spec::UpstreamSpec;
    use std::time::Instant;

    fn group(specs: &[&str]) -> Group {
        let specs = specs.iter().map(|s| UpstreamSpec::parse(s).unwrap()).collect();
        Group::new(specs, Method::LeastConn, 7).unwrap()
    }

    fn pick(g: &mut Group, now: Instant) -> usize {
        g.select(SelectKey::None, &Tried::default(), now).unwrap().0
    }

    #[test]
    fn avoids_the_busy_peer() {
        let now = Instant::now();
        let mut g = group(&["a:1", "b:1", "c:1"]);
        // Hold 5 requests on a: the others are in the tried set of those requests.
        let mut others = Tried::default();
        others.insert(PeerId(1));
        others.insert(PeerId(2));
        for _ in 0..5 {
            assert_eq!(g.select(SelectKey::None, &others, now), Some(PeerId(0)));
        }
        for _ in 0..20 {
            let p = pick(&mut g, now);
            assert_ne!(p, 0);
            g.release(PeerId(p), Outcome::Success, now);
        }
    }

    #[test]
    fn ties_go_round_robin_by_weight() {
        let now = Instant::now();
        let mut g = group(&["a:1 weight=5", "b:1", "c:1"]);
        // With nothing in flight every peer ties: smooth WRR, nginx's 5/1/1 sequence.
        let mut seq = String::new();
        for _ in 0..7 {
            let p = pick(&mut g, now);
            g.release(PeerId(p), Outcome::Success, now);
            seq.push(char::from(b'a' + p as u8));
        }
        assert_eq!(seq, "aabacaa");
    }

    #[test]
    fn load_is_relative_to_weight() {
        let now = Instant::now();
        let mut g = group(&["a:1 weight=3", "b:1"]);
        // Without releases, a takes three requests for each one b takes.
        let picks: Vec<usize> = (0..8).map(|_| pick(&mut g, now)).collect();
        assert_eq!(picks.iter().filter(|p| **p == 0).count(), 6);
        let views = g.peers(now);
        assert_eq!((views[0].conns, views[1].conns), (6, 2));
    }

    #[test]
    fn backups_take_over_when_primaries_are_full() {
        let now = Instant::now();
        let mut g = group(&["a:1 max_conns=1", "b:1 max_conns=1", "c:1 backup"]);
        let picks: Vec<usize> = (0..4).map(|_| pick(&mut g, now)).collect();
        assert_eq!(&picks[2..], [2, 2]);
        assert_eq!(picks[..2].iter().sum::<usize>(), 1);
    }
}
