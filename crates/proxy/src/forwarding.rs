//! The forwarding headers the proxy adds to a request sent upstream — `X-Forwarded-For`,
//! `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host` and (optionally) RFC 7239
//! `Forwarded` — and the [`ForwardContext`] they are computed from.
//!
//! A client's own values are believed only when the client is a trusted proxy
//! ([`ForwardContext::trusted_client`], from `forwarded_allow_ips`): then the chain headers
//! (`X-Forwarded-For`, `Forwarded`) get this hop appended and the single-valued ones are kept;
//! otherwise every value the client sent is replaced, so that an app behind the balancer never
//! sees a spoofed address.
//!
//! A client on a Unix socket has no address: `X-Forwarded-For` and `X-Real-IP` are then
//! omitted (a trusted client's values pass unchanged: a local front proxy already named the
//! real client), and `Forwarded` says `for=unknown` (RFC 7239 §6.2).

use std::io::Write as _;
use std::net::IpAddr;

use crate::fields::{put_header, trim_ows};

/// What the proxy knows about the client connection a request came in on, and how the
/// request is to be forwarded. Built by the connection driver for each request.
///
/// The forwarding headers [`crate::write_upstream_head`] writes from it, after the copied
/// ones (a client's own values are believed only when [`Self::trusted_client`]):
///
/// * `X-Forwarded-For`: a trusted client's values (several headers joined with `, `), then
///   `, client_ip`; else `client_ip` alone.
/// * `X-Real-IP`: a trusted client's (first) value, else `client_ip`.
/// * `X-Forwarded-Proto`: a trusted client's value, else `http` or `https`.
/// * `X-Forwarded-Host`: a trusted client's value, else the client's host (its `Host`, or the
///   authority of an absolute-form target); omitted when there is none.
/// * `Forwarded` (RFC 7239) when [`Self::forwarded`]: `for=IP;proto=http;host="h"` appended
///   to a trusted client's value, else alone; an IPv6 node is quoted, `for="[2001:db8::1]"`.
/// * A Unix-socket client (`client_ip` is `None`): no `X-Forwarded-For` / `X-Real-IP` of its
///   own (a trusted one's pass unchanged), and `for=unknown` in `Forwarded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardContext<'a> {
    /// The client's address; `None` for a Unix-socket client. An IPv4-mapped IPv6 address
    /// (`::ffff:192.0.2.1`, from a dual-stack listener) is sent as plain IPv4.
    pub client_ip: Option<IpAddr>,
    /// The client's port, when it has one. Not sent upstream (like nginx's default headers,
    /// and RFC 7239 `for=` without a port); kept for the driver's logging.
    pub client_port: Option<u16>,
    /// The client connection is TLS (`X-Forwarded-Proto: https`).
    pub scheme_https: bool,
    /// The client is a trusted proxy (its address is in `forwarded_allow_ips`): its forwarding
    /// headers are believed and extended instead of replaced.
    pub trusted_client: bool,
    /// The `Host` to send upstream instead of the client's (nginx's
    /// `proxy_set_header Host ...`); `None` passes the client's `Host` as received.
    pub host: Option<&'a [u8]>,
    /// The protocol of an upgrade being forwarded (e.g. `b"websocket"`): the request goes out
    /// with `Connection: Upgrade` and `Upgrade: <this>`. `None` drops any client `Upgrade`.
    pub upgrade: Option<&'a [u8]>,
    /// Also emit the RFC 7239 `Forwarded` header. When false, a trusted client's `Forwarded`
    /// passes unchanged and an untrusted client's is dropped.
    pub forwarded: bool,
    /// An inside hop (a worker pool of the same instance): the client's forwarding headers
    /// pass as they came and none are added; the client is named by [`Self::pool_client`].
    pub transparent: bool,
    /// For an inside hop: the value of the `X-Ferrocorn-Pool-Client` header (`IP PORT
    /// SCHEME`), which a pool's worker believes on its private socket only.
    pub pool_client: Option<&'a [u8]>,
}

/// The header an inside hop names the client with (upper case, as heads hold names).
pub const POOL_CLIENT_HEADER: &str = "X-FERROCORN-POOL-CLIENT";

/// The upper-case names of the headers this module owns: their received values are handed
/// to [`write_forwarding`] instead of being copied.
pub(crate) const FORWARDING_NAMES: [&str; 5] =
    ["X-FORWARDED-FOR", "X-REAL-IP", "X-FORWARDED-PROTO", "X-FORWARDED-HOST", "FORWARDED"];

/// The forwarding headers a client sent (already stripped of hop-by-hop ones).
#[derive(Debug, Default)]
pub(crate) struct Received<'h> {
    /// Every `X-Forwarded-For` value, in order.
    xff: Vec<&'h [u8]>,
    /// The first `X-Real-IP`.
    real_ip: Option<&'h [u8]>,
    /// The first `X-Forwarded-Proto`.
    proto: Option<&'h [u8]>,
    /// The first `X-Forwarded-Host`.
    host: Option<&'h [u8]>,
    /// Every `Forwarded` value, in order.
    forwarded: Vec<&'h [u8]>,
}

impl<'h> Received<'h> {
    /// Record a header named by one of [`FORWARDING_NAMES`] (upper-case).
    pub(crate) fn add(&mut self, upper_name: &str, value: &'h [u8]) {
        match upper_name {
            "X-FORWARDED-FOR" => self.xff.push(value),
            "X-REAL-IP" => {
                self.real_ip.get_or_insert(value);
            }
            "X-FORWARDED-PROTO" => {
                self.proto.get_or_insert(value);
            }
            "X-FORWARDED-HOST" => {
                self.host.get_or_insert(value);
            }
            "FORWARDED" => self.forwarded.push(value),
            _ => debug_assert!(false, "{upper_name} is not a forwarding header"),
        }
    }
}

/// Append the forwarding header lines for a request whose client-side host is
/// `request_host` (its `Host`, or the authority of an absolute-form target).
pub(crate) fn write_forwarding(
    out: &mut Vec<u8>,
    ctx: &ForwardContext<'_>,
    received: &Received<'_>,
    request_host: Option<&[u8]>,
) {
    let trusted = ctx.trusted_client;
    let mut ip_text = IpText::new();
    let ip = ctx.client_ip.map(|ip| ip_text.of(ip.to_canonical()));

    // X-Forwarded-For: the chain, then this hop.
    let chain = received.xff.iter().filter(|_| trusted).map(|v| trim_ows(v));
    let line_start = out.len();
    out.extend_from_slice(b"X-Forwarded-For: ");
    if put_joined(out, chain.chain(ip).filter(|v| !v.is_empty())) {
        out.extend_from_slice(b"\r\n");
    } else {
        out.truncate(line_start);
    }

    if let Some(real_ip) = believed(trusted, received.real_ip).or(ip) {
        put_header(out, b"X-Real-IP", real_ip);
    }
    let scheme: &[u8] = if ctx.scheme_https { b"https" } else { b"http" };
    put_header(out, b"X-Forwarded-Proto", believed(trusted, received.proto).unwrap_or(scheme));
    if let Some(host) = believed(trusted, received.host).or(request_host) {
        put_header(out, b"X-Forwarded-Host", host);
    }

    let earlier: &[&[u8]] = if trusted { &received.forwarded } else { &[] };
    if ctx.forwarded {
        out.extend_from_slice(b"Forwarded: ");
        if put_joined(out, earlier.iter().copied()) {
            out.extend_from_slice(b", ");
        }
        put_forwarded_element(out, ctx, ip, request_host);
        out.extend_from_slice(b"\r\n");
    } else {
        for v in earlier {
            put_header(out, b"Forwarded", v);
        }
    }
}

/// Append `values` separated by `, ` (a list header's values joined); whether anything was
/// appended.
fn put_joined<'v>(out: &mut Vec<u8>, values: impl Iterator<Item = &'v [u8]>) -> bool {
    let start = out.len();
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value);
    }
    out.len() > start
}

/// An address as text, formatted on the stack: the forwarding headers are written for every
/// request, and a `String` per request would be an allocation each time.
struct IpText {
    bytes: [u8; 48],
}

impl IpText {
    fn new() -> IpText {
        IpText { bytes: [0; 48] }
    }

    /// `ip` as text (an IPv6 address is at most 39 bytes as Rust writes it, so it always fits).
    fn of(&mut self, ip: IpAddr) -> &[u8] {
        let mut cursor = std::io::Cursor::new(&mut self.bytes[..]);
        let written = write!(cursor, "{ip}");
        debug_assert!(written.is_ok(), "an IP address is at most 39 bytes");
        let len = cursor.position() as usize;
        &self.bytes[..len]
    }
}

/// A client's single-valued forwarding header, when it is believed: the client is trusted
/// and the value is not empty.
fn believed(trusted: bool, value: Option<&[u8]>) -> Option<&[u8]> {
    value.filter(|v| trusted && !v.is_empty())
}

/// Append this hop's RFC 7239 element: `for=...;proto=...` and `;host="..."` when known.
/// `ip_text` is the client's canonical address as text (IPv4 dotted, or IPv6 with colons).
fn put_forwarded_element(
    out: &mut Vec<u8>,
    ctx: &ForwardContext<'_>,
    ip_text: Option<&[u8]>,
    host: Option<&[u8]>,
) {
    out.extend_from_slice(b"for=");
    match ip_text {
        // An IPv6 node is bracketed, and `:` is not a token character: quote it (§6).
        Some(text) if text.contains(&b':') => {
            out.extend_from_slice(b"\"[");
            out.extend_from_slice(text);
            out.extend_from_slice(b"]\"");
        }
        Some(text) => out.extend_from_slice(text),
        None => out.extend_from_slice(b"unknown"),
    }
    out.extend_from_slice(if ctx.scheme_https { b";proto=https" } else { b";proto=http" });
    if let Some(host) = host {
        // Always a quoted-string: a `host:port` is not a token.
        out.extend_from_slice(b";host=\"");
        for &b in host {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(ip: &str, trusted: bool) -> ForwardContext<'static> {
        ForwardContext {
            client_ip: Some(ip.parse().unwrap()),
            client_port: Some(4711),
            trusted_client: trusted,
            ..ForwardContext::default()
        }
    }

    fn write(ctx: &ForwardContext<'_>, sent: &[(&str, &str)], host: Option<&str>) -> String {
        let mut received = Received::default();
        for (name, value) in sent {
            received.add(name, value.as_bytes());
        }
        let mut out = Vec::new();
        write_forwarding(&mut out, ctx, &received, host.map(str::as_bytes));
        String::from_utf8(out).unwrap()
    }

    const SPOOF: [(&str, &str); 5] = [
        ("X-FORWARDED-FOR", "6.6.6.6"),
        ("X-REAL-IP", "6.6.6.6"),
        ("X-FORWARDED-PROTO", "https"),
        ("X-FORWARDED-HOST", "evil"),
        ("FORWARDED", "for=6.6.6.6"),
    ];

    #[test]
    fn an_untrusted_client_s_values_are_replaced() {
        let out = write(&ctx("192.0.2.1", false), &SPOOF, Some("example.com"));
        assert_eq!(
            out,
            "X-Forwarded-For: 192.0.2.1\r\nX-Real-IP: 192.0.2.1\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: example.com\r\n"
        );
    }

    #[test]
    fn a_trusted_client_s_chain_is_extended_and_its_values_kept() {
        let mut sent = SPOOF.to_vec();
        sent.push(("X-FORWARDED-FOR", "10.0.0.1, 10.0.0.2"));
        sent.push(("X-REAL-IP", "second is ignored"));
        let out = write(&ctx("192.0.2.1", true), &sent, Some("example.com"));
        assert_eq!(
            out,
            "X-Forwarded-For: 6.6.6.6, 10.0.0.1, 10.0.0.2, 192.0.2.1\r\nX-Real-IP: 6.6.6.6\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nForwarded: for=6.6.6.6\r\n"
        );
    }

    #[test]
    fn a_trusted_client_without_values_gets_ours() {
        let https = ForwardContext { scheme_https: true, ..ctx("192.0.2.1", true) };
        let out = write(&https, &[("X-REAL-IP", ""), ("X-FORWARDED-FOR", " ")], None);
        assert_eq!(
            out,
            "X-Forwarded-For: 192.0.2.1\r\nX-Real-IP: 192.0.2.1\r\nX-Forwarded-Proto: https\r\n"
        );
    }

    #[test]
    fn forwarded_is_appended_for_trusted_clients_and_replaced_otherwise() {
        let sent = [("FORWARDED", "for=10.0.0.1;proto=https")];
        let only = |out: String| {
            out.lines().find(|l| l.starts_with("Forwarded:")).map(str::to_owned).unwrap()
        };
        let trusted = ForwardContext { forwarded: true, ..ctx("192.0.2.1", true) };
        assert_eq!(
            only(write(&trusted, &sent, Some("h:8000"))),
            "Forwarded: for=10.0.0.1;proto=https, for=192.0.2.1;proto=http;host=\"h:8000\""
        );
        let untrusted = ForwardContext { forwarded: true, ..ctx("192.0.2.1", false) };
        assert_eq!(
            only(write(&untrusted, &sent, Some("a\"b\\"))),
            "Forwarded: for=192.0.2.1;proto=http;host=\"a\\\"b\\\\\""
        );
        // Two earlier hops are joined; an empty value from a trusted client adds nothing.
        let two = [("FORWARDED", "for=10.0.0.1"), ("FORWARDED", "for=10.0.0.2")];
        assert_eq!(
            only(write(&trusted, &two, None)),
            "Forwarded: for=10.0.0.1, for=10.0.0.2, for=192.0.2.1;proto=http"
        );
        assert_eq!(
            only(write(&trusted, &[("FORWARDED", "")], None)),
            "Forwarded: for=192.0.2.1;proto=http"
        );
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded_and_mapped_ipv4_is_plain() {
        let v6 = ForwardContext { forwarded: true, ..ctx("2001:db8::1", false) };
        let out = write(&v6, &[], None);
        assert!(out.starts_with("X-Forwarded-For: 2001:db8::1\r\nX-Real-IP: 2001:db8::1\r\n"));
        assert!(out.ends_with("Forwarded: for=\"[2001:db8::1]\";proto=http\r\n"), "{out}");
        let mapped = ForwardContext { forwarded: true, ..ctx("::ffff:192.0.2.7", false) };
        let out = write(&mapped, &[], None);
        assert!(out.starts_with("X-Forwarded-For: 192.0.2.7\r\n"), "{out}");
        assert!(out.ends_with("Forwarded: for=192.0.2.7;proto=http\r\n"), "{out}");
    }

    #[test]
    fn unix_socket_clients_send_no_address() {
        let untrusted = ForwardContext { forwarded: true, ..ForwardContext::default() };
        assert_eq!(
            write(&untrusted, &SPOOF, Some("h")),
            "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\
             Forwarded: for=unknown;proto=http;host=\"h\"\r\n"
        );
        let trusted = ForwardContext { trusted_client: true, ..ForwardContext::default() };
        let out = write(&trusted, &SPOOF, Some("h"));
        assert!(out.starts_with("X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n"), "{out}");
    }
}
