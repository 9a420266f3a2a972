//! `random_two`, nginx's `random two least_conn` (the power of two choices): two distinct peers
//! drawn at random in proportion to their weights, the one with fewer requests in flight per
//! unit of weight wins (the second on a tie). A draw that is ineligible is drawn again; after 20
//! redraws the request falls back to round robin. The randomness is a seeded xorshift held by
//! the group, so a seed replays the same picks.

use std::time::Instant;

use crate::group::Group;
use crate::least_conn::load_cmp;
use crate::peer::Tried;

const MAX_TRIES: u32 = 20;

/// Marsaglia's xorshift64 generator.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator from `seed`; seeds are mixed (splitmix64) so that nearby seeds diverge, and
    /// the all-zero state is avoided.
    pub(crate) fn new(seed: u64) -> XorShift {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z })
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

impl Group {
    /// One primary drawn in proportion to its configured weight.
    fn draw(&mut self) -> usize {
        let total: u64 = self.primaries.iter().map(|&i| u64::from(self.peers[i].weight)).sum();
        let mut x = self.rng.below(total);
        for &i in &self.primaries {
            let weight = u64::from(self.peers[i].weight);
            if x < weight {
                return i;
            }
            x -= weight;
        }
        unreachable!("x < total, the sum of the weights")
    }

    /// `random_two`.
    pub(crate) fn pick_random_two(&mut self, tried: &Tried, now: Instant) -> Option<usize> {
        if self.primaries.len() < 2 {
            return self.pick_round_robin(tried, now);
        }
        let mut first: Option<usize> = None;
        for _ in 0..=MAX_TRIES {
            let i = self.draw();
            if first == Some(i) || !self.candidate(i, tried, now) {
                continue;
            }
            let Some(prev) = first else {
                first = Some(i);
                continue;
            };
            let prev_is_lighter =
                load_cmp(&self.peers[prev], &self.peers[i], now) == std::cmp::Ordering::Less;
            return Some(if prev_is_lighter { prev } else { i });
        }
        self.pick_round_robin(tried, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::SelectKey;
    use crate::method::Method;
    use crate::peer::{Outcome, PeerId};
    use crate::spec::UpstreamSpec;

    fn group(specs: &[&str], seed: u64) -> Group {
        let specs = specs.iter().map(|s| UpstreamSpec::parse(s).unwrap()).collect();
        Group::new(specs, Method::RandomTwo, seed).unwrap()
    }

    fn picks(g: &mut Group, n: usize, now: Instant) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let p = g.select(SelectKey::None, &Tried::default(), now).unwrap();
                g.release(p, Outcome::Success, now);
                p.0
            })
            .collect()
    }

    #[test]
    fn a_seed_replays_the_same_picks() {
        let now = Instant::now();
        let specs = ["a:1", "b:1", "c:1", "d:1"];
        let a = picks(&mut group(&specs, 42), 50, now);
        assert_eq!(a, picks(&mut group(&specs, 42), 50, now));
        assert_ne!(a, picks(&mut group(&specs, 43), 50, now));
        for p in 0..4 {
            assert!(a.contains(&p), "{p} never picked in {a:?}");
        }
    }

    #[test]
    fn the_lighter_of_two_wins() {
        let now = Instant::now();
        let mut g = group(&["a:1", "b:1"], 9);
        // Two peers: every pick compares both, so held requests alternate.
        let held: Vec<PeerId> =
            (0..10).map(|_| g.select(SelectKey::None, &Tried::default(), now).unwrap()).collect();
        let views = g.peers(now);
        assert_eq!((views[0].conns, views[1].conns), (5, 5), "{held:?}");
    }

    #[test]
    fn load_is_relative_to_weight() {
        let now = Instant::now();
        let mut g = group(&["a:1 weight=9", "b:1", "c:1"], 1);
        for _ in 0..1100 {
            g.select(SelectKey::None, &Tried::default(), now).unwrap();
        }
        let conns: Vec<u32> = g.peers(now).iter().map(|v| v.conns).collect();
        assert!(conns[0] > 800 && conns[1] > 50 && conns[2] > 50, "{conns:?}");
    }

    #[test]
    fn xorshift_is_deterministic_and_not_stuck() {
        let mut a = XorShift::new(0);
        let mut b = XorShift::new(0);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert!(xs.iter().all(|x| *x != 0));
        assert!((0..100).all(|_| a.below(7) < 7));
    }
}
