//! nginx's smooth weighted round robin: each pick adds every eligible peer's effective weight
//! to its current weight, takes the highest, and takes the round's total off the winner; an
//! effective weight lowered by failures grows back by one unit per round it takes part in.
//! Backups are tried only when no primary can take the request. Also the fallback of the hash,
//! ip_hash and random methods.

use std::time::Instant;

use crate::group::Group;
use crate::peer::{Peer, PeerId, SCALE, Tried};

/// One smooth-WRR round over the peers of `set` that `eligible` accepts; returns the winner.
pub(crate) fn smooth_wrr(
    peers: &mut [Peer],
    set: &[usize],
    now: Instant,
    mut eligible: impl FnMut(usize, &Peer) -> bool,
) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    let mut total: i64 = 0;
    for &i in set {
        if !eligible(i, &peers[i]) {
            continue;
        }
        let p = &mut peers[i];
        let w = p.rr_weight(now);
        p.current_weight += w;
        total += w;
        if p.effective_weight < p.full_weight() {
            p.effective_weight = (p.effective_weight + SCALE).min(p.full_weight());
        }
        if best.is_none_or(|(_, current)| p.current_weight > current) {
            best = Some((i, p.current_weight));
        }
    }
    let (winner, _) = best?;
    peers[winner].current_weight -= total;
    Some(winner)
}

impl Group {
    /// Round robin over the primaries, then over the backups.
    pub(crate) fn pick_round_robin(&mut self, tried: &Tried, now: Instant) -> Option<usize> {
        if self.single {
            let i = self.primaries[0];
            return self.candidate(i, tried, now).then_some(i);
        }
        let (gated, passive) = (self.health_gated, !self.single);
        let ok = |i: usize, p: &Peer| !tried.contains(PeerId(i)) && p.usable(now, gated, passive);
        smooth_wrr(&mut self.peers, &self.primaries, now, ok)
            .or_else(|| smooth_wrr(&mut self.peers, &self.backups, now, ok))
    }
}

#[cfg(test)]
mod tests {
    use crate::group::{Group, SelectKey};
    use crate::method::Method;
    use crate::peer::{Outcome, PeerId, Tried};
    use crate::spec::UpstreamSpec;
    use std::time::Instant;

    pub(crate) fn group(specs: &[&str], method: Method) -> Group {
        let specs = specs.iter().map(|s| UpstreamSpec::parse(s).unwrap()).collect();
        Group::new(specs, method, 1).unwrap()
    }

    /// Picks `n` times, releasing each pick at once; returns the picks as letters a, b, c…
    fn sequence(g: &mut Group, n: usize, now: Instant) -> String {
        (0..n)
            .map(|_| {
                let p = g.select(SelectKey::None, &Tried::default(), now).expect("a pick");
                g.release(p, Outcome::Success, now);
                char::from(b'a' + p.0 as u8)
            })
            .collect()
    }

    #[test]
    fn nginx_sequences() {
        let now = Instant::now();
        let table: &[(&[&str], &str)] = &[
            // nginx's own example in ngx_http_upstream_round_robin.c's history: 5/1/1.
            (&["a:1 weight=5", "b:1", "c:1"], "aabacaa"),
            (&["a:1", "b:1", "c:1"], "abcabc"),
            (&["a:1 weight=2", "b:1"], "abaaba"),
            (&["a:1 weight=3", "b:1 weight=2"], "ababa"),
            (&["a:1 weight=4", "b:1 weight=2", "c:1 weight=1"], "abacaba"),
        ];
        for (specs, expected) in table {
            let mut g = group(specs, Method::RoundRobin);
            let got = sequence(&mut g, expected.len(), now);
            assert_eq!(&got, expected, "{specs:?}");
            // The cycle repeats.
            assert_eq!(&sequence(&mut g, expected.len(), now), expected, "{specs:?} again");
        }
    }

    #[test]
    fn tried_peers_are_skipped() {
        let now = Instant::now();
        let mut g = group(&["a:1", "b:1", "c:1"], Method::RoundRobin);
        let mut tried = Tried::default();
        let mut seen = Vec::new();
        while let Some(p) = g.select(SelectKey::None, &tried, now) {
            tried.insert(p);
            seen.push(p.0);
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(g.peers(now).iter().map(|v| v.conns).sum::<u32>(), 3);
        for p in 0..3 {
            g.release(PeerId(p), Outcome::Success, now);
        }
        assert!(g.peers(now).iter().all(|v| v.conns == 0));
    }
}
