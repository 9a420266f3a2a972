//! IP allow-lists for `forwarded_allow_ips` and `proxy_allow_ips`: exact addresses, CIDR
//! networks, or `*`. Unix-socket peers are always trusted, as in Gunicorn.

use std::net::IpAddr;

/// A parsed allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    any: bool,
    networks: Vec<(IpAddr, u8)>,
}

fn prefix_matches(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let ip = match (net, ip) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        _ => ip,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask =
                if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl AllowList {
    /// Parse entries such as `127.0.0.1`, `::1`, `10.0.0.0/8`, `*`; `setting` names the
    /// setting in the error message.
    pub fn parse(entries: &[String], setting: &str) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if entry == "*" {
                list.any = true;
                continue;
            }
            let (addr, prefix) = match entry.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (entry, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| {
                format!("invalid value for `{setting}`: {entry:?} is not an IP address, a CIDR network or '*'")
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    format!("invalid value for `{setting}`: {entry:?} has a bad prefix length")
                })?,
            };
            list.networks.push((ip, prefix));
        }
        Ok(list)
    }

    /// Whether `peer` is allowed; `None` (a unix-socket peer) always is.
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        match peer {
            None => true,
            Some(ip) => self.any || self.networks.iter().any(|(n, p)| prefix_matches(*n, *p, ip)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "x").unwrap()
    }

    #[test]
    fn matches_addresses_networks_and_star() {
        let l = list(&["127.0.0.1", "::1", "10.0.0.0/8"]);
        assert!(l.allows(Some("127.0.0.1".parse().unwrap())));
        assert!(l.allows(Some("::1".parse().unwrap())));
        assert!(l.allows(Some("10.200.3.4".parse().unwrap())));
        assert!(l.allows(Some("::ffff:10.1.1.1".parse().unwrap())));
        assert!(!l.allows(Some("11.0.0.1".parse().unwrap())));
        assert!(l.allows(None));
        assert!(list(&["*"]).allows(Some("8.8.8.8".parse().unwrap())));
    }

    #[test]
    fn rejects_garbage() {
        assert!(AllowList::parse(&["nope".to_string()], "forwarded_allow_ips").is_err());
        assert!(AllowList::parse(&["10.0.0.0/33".to_string()], "x").is_err());
    }
}
