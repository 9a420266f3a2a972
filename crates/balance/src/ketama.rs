//! `hash KEY consistent`: nginx's ketama ring (compatible with Cache::Memcached::Fast) and its
//! walk, plus HAProxy's bounded load (`balance_factor`).
//!
//! The ring: each primary contributes `160 * weight` points; point `j` is the CRC32 of
//! `HOST \0 PORT` followed by the previous point's value as four little-endian bytes (zero for
//! the first), where HOST and PORT come from the server's name (`unix:` names have no port).
//! Points are sorted and equal values kept once. A key's CRC32 finds the first point at or above
//! it (wrapping); the peers of that point's server share it by smooth round robin. If none can
//! take the request the walk moves to the next point, 20 times at most, then falls back to
//! round robin.
//!
//! Bounded load (HAProxy's `hash-balance-factor`, `chash_server_is_eligible`): with `S`
//! requests in flight across the primaries and factor `F`, there are `ceil((S + 1) * F / 100)`
//! slots, shared out by weight among the peers that can take requests: each gets
//! `weight * (slots / W)` plus its part of the remainder, `((cum + weight) * (slots % W)) / W -
//! (cum * (slots % W)) / W`, where `W` is their total weight and `cum` the weight of those
//! before it in spec order, and never fewer than 1. A peer at or over its share is passed over
//! and the walk goes on (over the whole ring). If every peer that can take the request is over
//! its share, the first of them on the walk takes it anyway.

use std::time::Instant;

use crate::group::Group;
use crate::peer::{Peer, PeerId, Tried};
use crate::round_robin::smooth_wrr;

const POINTS_PER_WEIGHT: u32 = 160;
const MAX_TRIES: u32 = 20;

/// The ring of points and the servers they name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ring {
    /// (hash, server index) sorted by hash, hashes unique.
    points: Vec<(u32, usize)>,
    /// The peers (indices into the group) of each server name.
    servers: Vec<Vec<usize>>,
}

/// nginx's split of a server name into host and port: `unix:` names are all host; otherwise the
/// digits after the last `:` are the port.
fn host_and_port(name: &str) -> (&str, &str) {
    if name.len() >= 5 && name[..5].eq_ignore_ascii_case("unix:") {
        return (&name[5..], "");
    }
    match name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, port),
        _ => (name, ""),
    }
}

impl Ring {
    /// Builds the ring of the `primaries` of `peers`.
    pub(crate) fn build(peers: &[Peer], primaries: &[usize]) -> Ring {
        let mut names: Vec<String> = Vec::new();
        let mut servers: Vec<Vec<usize>> = Vec::new();
        let mut points = Vec::new();
        for &i in primaries {
            let name = peers[i].spec.addr.to_string();
            let server = match names.iter().position(|n| *n == name) {
                Some(s) => s,
                None => {
                    names.push(name.clone());
                    servers.push(Vec::new());
                    names.len() - 1
                }
            };
            servers[server].push(i);
            let (host, port) = host_and_port(&name);
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(&[0]);
            base.update(port.as_bytes());
            let mut prev: u32 = 0;
            for _ in 0..peers[i].weight * POINTS_PER_WEIGHT {
                let mut h = base.clone();
                h.update(&prev.to_le_bytes());
                prev = h.finalize();
                points.push((prev, server));
            }
        }
        points.sort_by_key(|(hash, _)| *hash);
        points.dedup_by_key(|(hash, _)| *hash);
        Ring { points, servers }
    }

    /// Index of the first point at or above `hash` (may be `len`, which wraps to 0).
    fn find(&self, hash: u32) -> usize {
        self.points.partition_point(|(h, _)| *h < hash)
    }

    /// The server of the point `at` steps round the ring.
    fn server_at(&self, at: usize) -> usize {
        self.points[at % self.points.len()].1
    }
}

/// HAProxy's share of `slots` for a peer of weight `weight` with `cum` weight before it among
/// peers of total weight `total`.
pub(crate) fn bounded_share(slots: u64, total: u64, cum: u64, weight: u64) -> u64 {
    let (per_weight, rest) = (slots / total, slots % total);
    let share = weight * per_weight + ((cum + weight) * rest) / total - (cum * rest) / total;
    share.max(1)
}

impl Group {
    /// `hash KEY consistent [balance_factor=F]`.
    pub(crate) fn pick_consistent(
        &mut self,
        key: &[u8],
        balance_factor: Option<u32>,
        tried: &Tried,
        now: Instant,
    ) -> Option<usize> {
        if self.single || key.is_empty() || self.ring.points.is_empty() {
            return self.pick_round_robin(tried, now);
        }
        let start = self.ring.find(crc32fast::hash(key));
        let (gated, passive) = (self.health_gated, !self.single);
        let ok = |i: usize, p: &Peer| !tried.contains(PeerId(i)) && p.usable(now, gated, passive);
        let Some(factor) = balance_factor else {
            for step in 0..=MAX_TRIES as usize {
                let server = self.ring.server_at(start + step);
                if let Some(i) = smooth_wrr(&mut self.peers, &self.ring.servers[server], now, ok) {
                    return Some(i);
                }
            }
            return self.pick_round_robin(tried, now);
        };
        // Bounded load: shares of the peers that can take requests (tried ones included).
        let in_flight: u64 = self.primaries.iter().map(|&i| u64::from(self.peers[i].conns)).sum();
        let slots = ((in_flight + 1) * u64::from(factor)).div_ceil(100);
        let mut share = vec![0u64; self.peers.len()];
        let total: u64 = self
            .primaries
            .iter()
            .filter(|&&i| self.usable(i, now))
            .map(|&i| u64::from(self.peers[i].weight))
            .sum();
        let mut cum = 0;
        for &i in &self.primaries {
            if self.usable(i, now) {
                let weight = u64::from(self.peers[i].weight);
                share[i] = bounded_share(slots, total, cum, weight);
                cum += weight;
            }
        }
        let mut visited = vec![false; self.ring.servers.len()];
        let mut over_share: Option<usize> = None;
        for step in 0..self.ring.points.len() {
            let server = self.ring.server_at(start + step);
            if std::mem::replace(&mut visited[server], true) {
                continue;
            }
            let members = &self.ring.servers[server];
            let under = |i: usize, p: &Peer| ok(i, p) && u64::from(p.conns) < share[i];
            if let Some(i) = smooth_wrr(&mut self.peers, members, now, under) {
                return Some(i);
            }
            if over_share.is_none() && members.iter().any(|&i| ok(i, &self.peers[i])) {
                over_share = Some(server);
            }
        }
        match over_share {
            Some(server) => smooth_wrr(&mut self.peers, &self.ring.servers[server], now, ok),
            None => self.pick_round_robin(tried, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::SelectKey;
    use crate::method::Method;
    use crate::peer::{Admin, Outcome};
    use crate::spec::UpstreamSpec;

    fn group(addrs: &[&str], method: &str) -> Group {
        let specs = addrs.iter().map(|s| UpstreamSpec::parse(s).unwrap()).collect();
        Group::new(specs, Method::parse(method).unwrap(), 5).unwrap()
    }

    fn owner(g: &mut Group, key: &str, now: Instant) -> String {
        let p = g.select(SelectKey::Hash(key.as_bytes()), &Tried::default(), now).unwrap();
        g.release(p, Outcome::Success, now);
        g.spec(p).unwrap().addr.to_string()
    }

    const NODES: [&str; 4] =
        ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211", "10.0.0.4:11211"];

    #[test]
    fn ring_points_follow_the_ketama_scheme() {
        let g = group(&NODES[..2], "hash $uri consistent");
        assert_eq!(g.ring.points.len(), 320);
        assert!(g.ring.points.windows(2).all(|w| w[0].0 < w[1].0));
        // First point of 10.0.0.1:11211: crc32("10.0.0.1\0" "11211" 00 00 00 00).
        let first = crc32fast::hash(b"10.0.0.1\x0011211\x00\x00\x00\x00");
        assert!(g.ring.points.iter().any(|(h, s)| *h == first && *s == 0));
        assert_eq!(host_and_port("[::1]:80"), ("[::1]", "80"));
        assert_eq!(host_and_port("unix:/run/a.sock"), ("/run/a.sock", ""));
    }

    #[test]
    fn mapping_is_stable_and_spread() {
        let now = Instant::now();
        let mut g = group(&NODES, "hash $uri consistent");
        let mut counts = std::collections::HashMap::new();
        for k in 0..4000 {
            let key = format!("/k/{k}");
            let a = owner(&mut g, &key, now);
            assert_eq!(owner(&mut g, &key, now), a);
            *counts.entry(a).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|c| (600..1400).contains(c)), "{counts:?}");
    }

    #[test]
    fn a_node_leaving_moves_only_its_keys() {
        let now = Instant::now();
        let mut four = group(&NODES, "hash $uri consistent");
        let mut three = group(&NODES[..3], "hash $uri consistent");
        let mut marked = group(&NODES, "hash $uri consistent");
        marked.set_admin(PeerId(3), Admin::Down);
        let keys = 10_000;
        let mut moved = 0;
        for k in 0..keys {
            let key = format!("user-{k}");
            let before = owner(&mut four, &key, now);
            let after = owner(&mut three, &key, now);
            if before != NODES[3] {
                assert_eq!(after, before, "{key} moved though its node stayed");
                assert_eq!(owner(&mut marked, &key, now), before);
            } else {
                moved += 1;
                assert_eq!(owner(&mut marked, &key, now), after, "down = removed, for {key}");
            }
        }
        // Only the leaving node's keys move: about 1/4 of them, with some tolerance.
        assert!(moved <= keys / 4 + keys / 20, "{moved} of {keys} moved");
    }

    #[test]
    fn bounded_share_matches_haproxy() {
        // 4 equal peers, 10 slots: 2 each plus the remainder 2 spread by cumulative weight.
        let shares: Vec<u64> = (0..4).map(|i| bounded_share(10, 4, i, 1)).collect();
        assert_eq!(shares, [2, 3, 2, 3]);
        assert_eq!(shares.iter().sum::<u64>(), 10);
        assert_eq!(bounded_share(1, 4, 0, 1), 1, "never 0");
    }

    #[test]
    fn balance_factor_caps_a_hot_key() {
        let now = Instant::now();
        let mut g = group(&NODES, "hash $uri consistent balance_factor=150");
        let tried = Tried::default();
        let hot = SelectKey::Hash(b"/hot");
        let home = g.select(hot, &tried, now).unwrap();
        g.release(home, Outcome::Success, now);
        for n in 0..100u64 {
            let p = g.select(hot, &tried, now).unwrap();
            // After the pick, n + 1 requests are in flight; the cap for S = n in flight before.
            let slots = ((n + 1) * 150).div_ceil(100);
            let conns = g.peers(now)[p.0].conns as u64;
            assert!(conns <= bounded_share(slots, 4, p.0 as u64, 1), "pick {n}: {conns}");
        }
        let conns: Vec<u32> = g.peers(now).iter().map(|v| v.conns).collect();
        assert!(conns.iter().all(|c| *c <= 38), "{conns:?}");
        assert!(conns[home.0] >= 25, "the home peer still takes the most: {conns:?}");
        // Without the factor, the hot key stays on one peer.
        let mut plain = group(&NODES, "hash $uri consistent");
        for _ in 0..20 {
            assert_eq!(plain.select(hot, &tried, now), Some(home));
        }
    }

    #[test]
    fn weight_scales_the_share_of_keys() {
        let now = Instant::now();
        let mut g =
            group(&["10.0.0.1:80 weight=2", "10.0.0.2:80", "10.0.0.3:80"], "hash $uri consistent");
        assert_eq!(g.ring.points.len(), 640);
        let heavy =
            (0..4000).filter(|k| owner(&mut g, &format!("/{k}"), now) == "10.0.0.1:80").count();
        assert!((1600..2400).contains(&heavy), "{heavy} of 4000");
    }

    #[test]
    fn a_tried_server_passes_the_request_along_the_ring() {
        let now = Instant::now();
        let mut g = group(&NODES, "hash $uri consistent");
        let mut tried = Tried::default();
        let mut seen = Vec::new();
        while let Some(p) = g.select(SelectKey::Hash(b"/x"), &tried, now) {
            tried.insert(p);
            seen.push(p.0);
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3], "every peer once, then none");
    }
}
