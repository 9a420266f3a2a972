//! Worker pools by URL, on a connection: which pool a request's path belongs to (the longest
//! matching prefix of the pools other than `/`), the client a `/` pool worker names when it
//! forwards a request to another pool (`X-Ferrocorn-Pool-Client: IP PORT SCHEME`), and a
//! pool worker taking that client as its own for the request — so the app sees the same
//! `REMOTE_ADDR`, `REMOTE_PORT` and scheme as without pools. Only a pool worker believes the
//! header, and only on its private socket; the `/` pool strips any a client sent.

use std::net::IpAddr;
use std::sync::Arc;

use ferrocorn_http::RequestHead;
use ferrocorn_proxy::POOL_CLIENT_HEADER;

use super::{Conn, Peer};
use crate::options::PoolRoute;
use ferrocorn_net::client_stream::ClientStream;

/// The pool (index into `routes`) that serves `path`, if not the `/` pool.
pub(super) fn pool_for(routes: &[PoolRoute], path: &[u8]) -> Option<usize> {
    // Longest prefix first (the master sorts them).
    routes.iter().position(|r| path.starts_with(r.prefix.as_bytes()))
}

/// The header value naming a client: `IP PORT SCHEME` (`-` for what it does not have).
pub(super) fn pool_client_value(ip: Option<IpAddr>, port: Option<u16>, https: bool) -> Vec<u8> {
    let ip = ip.map_or("-".to_owned(), |ip| ip.to_string());
    let port = port.map_or("-".to_owned(), |p| p.to_string());
    let scheme = if https { "https" } else { "http" };
    format!("{ip} {port} {scheme}").into_bytes()
}

/// Parse a [`pool_client_value`].
fn parse_pool_client(value: &[u8]) -> Option<(Peer, bool)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut words = text.split_ascii_whitespace();
    let ip = match words.next()? {
        "-" => None,
        ip => Some(ip.parse::<IpAddr>().ok()?),
    };
    let port = match words.next()? {
        "-" => None,
        port => Some(port.parse::<u16>().ok()?),
    };
    let https = match words.next()? {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    Some((Peer { ip, port }, https))
}

impl<S: ClientStream> Conn<S> {
    /// A pool worker: take the client the `/` pool named for this request (dropping the
    /// header); returns its scheme (`Some(true)`: https). None when no client was named.
    pub(super) fn adopt_pool_client(&mut self, head: &mut RequestHead) -> Option<bool> {
        let named = head.header(POOL_CLIENT_HEADER).and_then(parse_pool_client);
        head.headers.retain(|(name, _)| name != POOL_CLIENT_HEADER);
        let (peer, https) = named?;
        if peer.ip != self.peer.ip || peer.port != self.peer.port {
            self.peer = peer;
            self.remote = Arc::default(); // REMOTE_ADDR/PORT strings are made again
        }
        self.trusted = self.shared.opts.forwarded_allow.allows(peer.ip);
        Some(https)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_survives_the_hop() {
        let value = pool_client_value(Some("192.0.2.9".parse().unwrap()), Some(4242), true);
        let (peer, https) = parse_pool_client(&value).unwrap();
        assert_eq!(
            (peer.ip, peer.port, https),
            (Some("192.0.2.9".parse().unwrap()), Some(4242), true)
        );
        let unix = pool_client_value(None, None, false);
        let (peer, https) = parse_pool_client(&unix).unwrap();
        assert_eq!((peer.ip, peer.port, https), (None, None, false));
        for bad in [&b"x 1 http"[..], b"1.2.3.4 99999 http", b"1.2.3.4 1 ftp", b"1.2.3.4"] {
            assert!(parse_pool_client(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_longest_prefix_wins() {
        let route = |prefix: &str| PoolRoute {
            prefix: prefix.into(),
            proxy: ferrocorn_proxy::ProxyConfig {
                upstreams: vec![],
                method: ferrocorn_balance::Method::RoundRobin,
                keepalive: 0,
                keepalive_timeout: std::time::Duration::ZERO,
                connect_timeout: std::time::Duration::ZERO,
                timeout: std::time::Duration::ZERO,
                client_timeout: std::time::Duration::ZERO,
                next_upstream: ferrocorn_balance::NextUpstream::default(),
                next_upstream_tries: 0,
                next_upstream_timeout: std::time::Duration::ZERO,
                health_check: None,
            },
        };
        let routes = [route("/reports/daily/"), route("/reports/")];
        assert_eq!(pool_for(&routes, b"/reports/daily/x"), Some(0));
        assert_eq!(pool_for(&routes, b"/reports/x"), Some(1));
        assert_eq!(pool_for(&routes, b"/reports"), None);
        assert_eq!(pool_for(&routes, b"/"), None);
    }
}
