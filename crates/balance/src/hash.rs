//! nginx's modulo hashes, `ip_hash` and `hash KEY`: a hash value picks a peer by walking the
//! primaries' weights; a peer that cannot take the request makes the hash step on (rehash), and
//! after 20 steps the request falls back to round robin.
//!
//! - `ip_hash` hashes the client address's first three IPv4 octets (all 16 IPv6 bytes) with
//!   `h = (h * 113 + byte) % 6271` from `h = 89`; every step hashes the same bytes again.
//! - `hash KEY` adds `(crc32([STEP] KEY) >> 16) & 0x7fff` to a running sum at each step, where
//!   `STEP` (the step number in decimal) is left out of the first one (Cache::Memcached's
//!   scheme).
//!
//! nginx keeps the hash and the step count across the attempts of one request; here each
//! `select` starts again from the key, which walks the same path (tried peers are skipped) but
//! gives every attempt its own 20 steps.

use std::net::IpAddr;
use std::time::Instant;

use crate::group::{Group, SelectKey};
use crate::peer::Tried;

/// Steps of rehashing before falling back to round robin.
const MAX_TRIES: u32 = 20;

impl Group {
    /// The primary whose share of the total weight holds `value % total`.
    fn weighted_slot(&self, value: u64) -> usize {
        let total: u64 = self.primaries.iter().map(|&i| u64::from(self.peers[i].weight)).sum();
        let mut w = value % total;
        for &i in &self.primaries {
            let weight = u64::from(self.peers[i].weight);
            if w < weight {
                return i;
            }
            w -= weight;
        }
        unreachable!("w < total, the sum of the weights")
    }

    /// `ip_hash`.
    pub(crate) fn pick_ip_hash(
        &mut self,
        key: SelectKey<'_>,
        tried: &Tried,
        now: Instant,
    ) -> Option<usize> {
        if self.primaries.len() < 2 {
            return self.pick_round_robin(tried, now);
        }
        let v4;
        let v6;
        let addr: &[u8] = match key {
            SelectKey::ClientIp(IpAddr::V4(ip)) => {
                v4 = ip.octets();
                &v4[..3]
            }
            SelectKey::ClientIp(IpAddr::V6(ip)) => {
                v6 = ip.octets();
                &v6
            }
            // nginx's pseudo address for clients without an IP (unix sockets).
            SelectKey::None | SelectKey::Hash(_) => &[0, 0, 0],
        };
        let mut hash: u32 = 89;
        let mut tries = 0;
        loop {
            for &byte in addr {
                hash = (hash * 113 + u32::from(byte)) % 6271;
            }
            let i = self.weighted_slot(u64::from(hash));
            if self.candidate(i, tried, now) {
                return Some(i);
            }
            tries += 1;
            if tries > MAX_TRIES {
                return self.pick_round_robin(tried, now);
            }
        }
    }

    /// `hash KEY` without `consistent`.
    pub(crate) fn pick_hash(&mut self, key: &[u8], tried: &Tried, now: Instant) -> Option<usize> {
        if self.primaries.len() < 2 || key.is_empty() {
            return self.pick_round_robin(tried, now);
        }
        let mut sum: u32 = 0;
        let mut tries = 0;
        for step in 0u32.. {
            let mut crc = crc32fast::Hasher::new();
            if step > 0 {
                crc.update(step.to_string().as_bytes());
            }
            crc.update(key);
            sum = sum.wrapping_add((crc.finalize() >> 16) & 0x7fff);
            let i = self.weighted_slot(u64::from(sum));
            if self.candidate(i, tried, now) {
                return Some(i);
            }
            tries += 1;
            if tries > MAX_TRIES {
                break;
            }
        }
        self.pick_round_robin(tried, now)
    }
}

#[cfg(test)]
mod tests {
    use crate::group::{Group, SelectKey};
    use crate::method::Method;
    use crate::peer::{Admin, Outcome, PeerId, Tried};
    use crate::spec::UpstreamSpec;
    use std::net::IpAddr;
    use std::time::Instant;

    fn group(n: usize, method: Method) -> Group {
        let specs = (0..n).map(|i| UpstreamSpec::parse(&format!("10.0.0.{i}:80")).unwrap());
        Group::new(specs.collect(), method, 3).unwrap()
    }

    fn pick(g: &mut Group, key: SelectKey<'_>, now: Instant) -> usize {
        let p = g.select(key, &Tried::default(), now).unwrap();
        g.release(p, Outcome::Success, now);
        p.0
    }

    fn ip(s: &str) -> SelectKey<'static> {
        SelectKey::ClientIp(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn ip_hash_keeps_a_slash_24_together_and_spreads_the_rest() {
        let now = Instant::now();
        let mut g = group(4, Method::IpHash);
        let mut counts = [0usize; 4];
        for net in 0..=255u8 {
            let first = pick(&mut g, ip(&format!("192.168.{net}.1")), now);
            for host in [2u8, 77, 254] {
                assert_eq!(pick(&mut g, ip(&format!("192.168.{net}.{host}")), now), first);
            }
            counts[first] += 1;
        }
        assert!(counts.iter().all(|c| *c > 30), "{counts:?}");
        // IPv6 uses all 16 bytes: neighbours may differ, but one address is stable.
        let a = pick(&mut g, ip("2001:db8::1"), now);
        assert_eq!(pick(&mut g, ip("2001:db8::1"), now), a);
    }

    #[test]
    fn ip_hash_matches_nginx_arithmetic() {
        // 1.2.3.x: h = 89; (89*113+1)%6271 = 3787; (3787*113+2)%6271 = 1505;
        // (1505*113+3)%6271 = 751; 751 % 4 = 3.
        let now = Instant::now();
        let mut g = group(4, Method::IpHash);
        assert_eq!(pick(&mut g, ip("1.2.3.4"), now), 3);
    }

    #[test]
    fn ip_hash_rehashes_past_a_down_peer_and_keeps_the_others() {
        let now = Instant::now();
        let mut g = group(4, Method::IpHash);
        let before: Vec<usize> =
            (0..=255u8).map(|n| pick(&mut g, ip(&format!("10.{n}.0.1")), now)).collect();
        g.set_admin(PeerId(1), Admin::Down);
        for (n, old) in before.iter().enumerate() {
            let new = pick(&mut g, ip(&format!("10.{n}.0.1")), now);
            assert_ne!(new, 1);
            if *old != 1 {
                assert_eq!(new, *old, "10.{n}.0.1 moved");
            }
        }
    }

    #[test]
    fn hash_is_stable_and_rehashes() {
        let now = Instant::now();
        let method = Method::parse("hash $request_uri").unwrap();
        let mut g = group(3, method);
        let keys: Vec<String> = (0..300).map(|i| format!("/item/{i}")).collect();
        let first: Vec<usize> =
            keys.iter().map(|k| pick(&mut g, SelectKey::Hash(k.as_bytes()), now)).collect();
        let again: Vec<usize> =
            keys.iter().map(|k| pick(&mut g, SelectKey::Hash(k.as_bytes()), now)).collect();
        assert_eq!(first, again);
        let mut counts = [0; 3];
        first.iter().for_each(|p| counts[*p] += 1);
        assert!(counts.iter().all(|c| *c > 70), "{counts:?}");
        g.set_admin(PeerId(0), Admin::Drain);
        for (k, old) in keys.iter().zip(&first) {
            let new = pick(&mut g, SelectKey::Hash(k.as_bytes()), now);
            assert_ne!(new, 0);
            if *old != 0 {
                assert_eq!(new, *old, "{k} moved");
            }
        }
    }

    #[test]
    fn hash_without_key_is_round_robin() {
        let now = Instant::now();
        let mut g = group(3, Method::parse("hash $arg_id").unwrap());
        let picks: Vec<usize> = (0..6).map(|_| pick(&mut g, SelectKey::None, now)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn fallback_finds_the_last_peer_and_none_when_all_are_out() {
        let now = Instant::now();
        for method in [Method::IpHash, Method::parse("hash $uri").unwrap()] {
            let mut g = group(4, method.clone());
            for p in 0..3 {
                g.set_admin(PeerId(p), Admin::Down);
            }
            for n in 0..50u8 {
                let key = format!("10.{n}.0.1");
                let got = match method {
                    Method::IpHash => pick(&mut g, ip(&key), now),
                    _ => pick(&mut g, SelectKey::Hash(key.as_bytes()), now),
                };
                assert_eq!(got, 3, "{method} {key}");
            }
            g.set_admin(PeerId(3), Admin::Drain);
            assert_eq!(g.select(ip("10.0.0.1"), &Tried::default(), now), None, "{method}");
        }
    }

    #[test]
    fn hash_uses_the_client_address_text_when_given_one() {
        let now = Instant::now();
        let mut g = group(3, Method::parse("hash $remote_addr").unwrap());
        let by_ip = pick(&mut g, ip("192.0.2.7"), now);
        assert_eq!(pick(&mut g, SelectKey::Hash(b"192.0.2.7"), now), by_ip);
    }
}
