//! The request head the proxy sends upstream: [`write_upstream_head`] turns a client's parsed
//! [`RequestHead`] into an HTTP/1.1 request line and header section for a kept-alive upstream
//! connection — hop-by-hop headers removed, body framing re-emitted, forwarding headers added.

use ferrocorn_http::{BodyFraming, RequestHead};

use crate::fields::{
    connection_nominated, is_nominated, list_elements, put_header, put_title_case, put_u64,
};
use crate::forwarding::{
    FORWARDING_NAMES, ForwardContext, POOL_CLIENT_HEADER, Received, write_forwarding,
};

/// Hop-by-hop headers never copied upstream (RFC 9110 §7.6.1), plus the framing and `Host`
/// headers this module writes itself. `Proxy-Authorization` is *not* here: in front of an
/// app, the balancer is not the proxy those credentials are for, and nginx passes it too.
const NOT_COPIED: [&str; 9] = [
    "CONNECTION",
    "KEEP-ALIVE",
    "PROXY-CONNECTION",
    "TE",
    "TRAILER",
    "TRANSFER-ENCODING",
    "UPGRADE",
    "CONTENT-LENGTH",
    "HOST",
];

/// Methods whose empty body is announced with `Content-Length: 0` (RFC 9110 §8.6: they give
/// content a meaning), as nginx does.
const BODY_METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

/// Append the request line and header section (through the blank line) to send upstream for
/// `head`, a request the client sent.
///
/// * The request line is always `METHOD TARGET HTTP/1.1`, and the request asks for keep-alive
///   by HTTP/1.1's default (no `Connection: close`, whatever the client asked). An
///   origin-form target goes out byte for byte as received (the app's `RAW_URI`); an
///   absolute-form target (`http://h/p?q`) goes out as origin-form `/p?q` (its fragment
///   dropped), and its authority is the request's host, replacing any `Host` header
///   (RFC 9112 §3.2.2); `*` and authority-form go out as received. A transparent pool hop
///   sends every target form, and `Host`, as received.
/// * `Host` comes first: [`ForwardContext::host`] when set, else the client's host as
///   received (as HAProxy does; nginx would send the upstream's `$proxy_host`), else empty
///   (an HTTP/1.0 client without `Host`; RFC 9112 §3.2 wants the field present).
/// * The other headers are copied in arrival order with Title-Case names, except the
///   hop-by-hop ones: `Connection` and every header it names, `Keep-Alive`,
///   `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
///   `Proxy-Authorization` is copied. A `Connection` header cannot remove `Host` or the
///   forwarding headers this proxy writes; naming a forwarding header only drops the client's
///   value of it.
/// * Framing from `head.framing`: `Content-Length: N`; or `Transfer-Encoding: chunked` (after
///   any other transfer codings the client applied, e.g. `gzip, chunked`), the body then being
///   forwarded as the client's chunked decoder produced it, re-chunked, and ending with an
///   empty trailer section; nothing for no body, except `Content-Length: 0` for
///   `POST`/`PUT`/`PATCH`.
/// * The forwarding headers listed at [`ForwardContext`]; the client's values of them are
///   never copied as such, and an untrusted client's other `X-Forwarded-*` headers
///   (`X-Forwarded-Ssl`, `X-Forwarded-Port`, ...) are dropped.
/// * With [`ForwardContext::upgrade`], `Connection: Upgrade` and `Upgrade: <value>`.
pub fn write_upstream_head(head: &RequestHead, ctx: &ForwardContext<'_>, out: &mut Vec<u8>) {
    // A pool hop passes the target as received: the pool's app sees what it would unpooled.
    let absolute = if ctx.transparent { None } else { absolute_form(head) };
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    match absolute {
        Some(_) if head.path.is_empty() => out.push(b'/'),
        Some(_) => out.extend_from_slice(&head.path),
        None => out.extend_from_slice(&head.target),
    }
    if absolute.is_some() && !head.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(&head.query);
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let client_host = absolute.or_else(|| head.header("HOST"));
    put_header(out, b"Host", ctx.host.or(client_host).unwrap_or_default());

    let nominated = connection_nominated(head.headers.iter().map(|(n, v)| (n.as_bytes(), &v[..])));
    let mut received = Received::default();
    let mut codings: Vec<&[u8]> = Vec::new();
    for (name, value) in &head.headers {
        let name = name.as_str();
        if name == "TRANSFER-ENCODING" {
            let applied = list_elements(value);
            codings.extend(applied.filter(|c| !c.eq_ignore_ascii_case(b"chunked")));
        } else if NOT_COPIED.contains(&name)
            || is_nominated(&nominated, name.as_bytes())
            || name == POOL_CLIENT_HEADER
        {
            continue;
        } else if ctx.transparent {
            put_title_case(out, name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        } else if FORWARDING_NAMES.contains(&name) {
            received.add(name, value);
        } else if !ctx.trusted_client && name.starts_with("X-FORWARDED-") {
            // `X-Forwarded-Ssl`, `-Protocol`, `-Port`, `-Prefix`...: read by Gunicorn's
            // `secure_scheme_headers` or Werkzeug's `ProxyFix`; not believable from here.
            continue;
        } else {
            put_title_case(out, name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }

    match head.framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => {
            codings.retain(|c| !c.eq_ignore_ascii_case(b"identity"));
            codings.push(b"chunked");
            put_header(out, b"Transfer-Encoding", &codings.join(&b", "[..]));
        }
        BodyFraming::Empty if BODY_METHODS.contains(&head.method.as_str()) => {
            out.extend_from_slice(b"Content-Length: 0\r\n");
        }
        BodyFraming::Empty => {}
    }

    if ctx.transparent {
        if let Some(client) = ctx.pool_client {
            put_header(out, b"X-Ferrocorn-Pool-Client", client);
        }
    } else {
        write_forwarding(out, ctx, &received, client_host);
    }
    if let Some(protocol) = ctx.upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
        put_header(out, b"Upgrade", protocol);
    }
    out.extend_from_slice(b"\r\n");
}

/// For an absolute-form target (`scheme://authority/...`), its authority without userinfo.
fn absolute_form(head: &RequestHead) -> Option<&[u8]> {
    let target = head.target.as_slice();
    if target.first() == Some(&b'/') {
        return None;
    }
    let start = memchr::memmem::find(target, b"://")? + 3;
    let rest = &target[start..];
    let end = rest.iter().position(|b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let authority = &rest[..end];
    Some(memchr::memrchr(b'@', authority).map_or(authority, |at| &authority[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocorn_http::{Limits, parse_request_head};

    fn head(raw: &str) -> RequestHead {
        parse_request_head(raw.as_bytes(), &Limits::default(), false).unwrap().unwrap().0
    }

    fn ctx() -> ForwardContext<'static> {
        ForwardContext { client_ip: Some([192, 0, 2, 1].into()), ..ForwardContext::default() }
    }

    fn out_with(raw: &str, ctx: &ForwardContext<'_>) -> String {
        let mut out = Vec::new();
        write_upstream_head(&head(raw), ctx, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn out(raw: &str) -> String {
        out_with(raw, &ctx())
    }

    /// The header lines other than the forwarding ones this proxy always adds.
    fn lines(out: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines.split_off(lines.len() - 2), ["", ""], "ends with a blank line");
        let ours = ["X-Forwarded-For:", "X-Forwarded-Proto:", "X-Forwarded-Host:", "X-Real-IP:"];
        lines.retain(|l| !ours.iter().any(|p| l.starts_with(p)));
        lines
    }

    #[test]
    fn an_inside_hop_passes_the_forwarding_headers_and_names_the_client() {
        let raw = "GET /r/x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n\
                   X-Forwarded-Ssl: on\r\nX-Ferrocorn-Pool-Client: 1.1.1.1 1 https\r\n\r\n";
        let inside = ForwardContext {
            transparent: true,
            pool_client: Some(b"192.0.2.1 4000 http"),
            ..ctx()
        };
        assert_eq!(
            out_with(raw, &inside),
            "GET /r/x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n\
             X-Forwarded-Ssl: on\r\nX-Ferrocorn-Pool-Client: 192.0.2.1 4000 http\r\n\r\n"
        );
        // A client's own X-Ferrocorn-Pool-Client never goes on.
        assert!(!out(raw).contains("Pool-Client"));
    }

    #[test]
    fn a_simple_get_goes_out_as_http11_with_forwarding_headers() {
        let raw = "GET /a%20b?x=1 HTTP/1.0\r\nHost: example.com\r\nACCEPT: */*\r\n\r\n";
        assert_eq!(
            out(raw),
            "GET /a%20b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\
             X-Forwarded-For: 192.0.2.1\r\nX-Real-IP: 192.0.2.1\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: example.com\r\n\r\n"
        );
    }

    #[test]
    fn names_are_title_cased_and_values_kept() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\ncontent-type: text/plain; a=B\r\n\
                   www-authenticate: x\r\nx-custom-thing: V \r\n\r\n";
        assert_eq!(
            lines(&out(raw)),
            [
                "GET / HTTP/1.1",
                "Host: h",
                "Content-Type: text/plain; a=B",
                "Www-Authenticate: x",
                "X-Custom-Thing: V"
            ]
        );
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_the_connection_kept_alive() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Hop, Host\r\n\
                   Connection: x-other\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\n\
                   TE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Hop: 1\r\nX-Other: 2\r\n\
                   Proxy-Authorization: Basic eA==\r\nX-End: 3\r\n\r\n";
        assert_eq!(
            lines(&out(raw)),
            ["GET / HTTP/1.1", "Host: h", "Proxy-Authorization: Basic eA==", "X-End: 3"]
        );
    }

    #[test]
    fn naming_a_forwarding_header_in_connection_drops_only_the_client_s_value() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Forwarded-For\r\n\
                   X-Forwarded-For: 10.0.0.9\r\n\r\n";
        let trusted = ForwardContext { trusted_client: true, ..ctx() };
        assert!(out_with(raw, &trusted).contains("\r\nX-Forwarded-For: 192.0.2.1\r\n"));
    }

    #[test]
    fn an_untrusted_client_s_other_x_forwarded_headers_are_dropped() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Port: 443\r\n\
                   X-Forwardedness: kept\r\n\r\n";
        assert_eq!(lines(&out(raw)), ["GET / HTTP/1.1", "Host: h", "X-Forwardedness: kept"]);
        let trusted = ForwardContext { trusted_client: true, ..ctx() };
        assert_eq!(
            lines(&out_with(raw, &trusted)),
            [
                "GET / HTTP/1.1",
                "Host: h",
                "X-Forwarded-Ssl: on",
                "X-Forwarded-Port: 443",
                "X-Forwardedness: kept"
            ]
        );
    }

    #[test]
    fn framing_is_re_emitted_from_the_parsed_framing() {
        let cl = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(lines(&out(cl)), ["POST / HTTP/1.1", "Host: h", "Content-Length: 12"]);
        let te = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(lines(&out(te)), ["POST / HTTP/1.1", "Host: h", "Transfer-Encoding: chunked"]);
        let gz = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, identity\r\n\
                  Transfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            lines(&out(gz)),
            ["POST / HTTP/1.1", "Host: h", "Transfer-Encoding: gzip, chunked"]
        );
    }

    #[test]
    fn an_empty_body_is_announced_only_for_methods_with_content() {
        for method in ["POST", "PUT", "PATCH"] {
            let raw = format!("{method} / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(lines(&out(&raw))[2..], ["Content-Length: 0"], "{method}");
        }
        for method in ["GET", "HEAD", "DELETE", "OPTIONS"] {
            let raw = format!("{method} / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(lines(&out(&raw)).len(), 2, "{method}");
        }
    }

    #[test]
    fn absolute_form_goes_out_as_origin_form_with_its_authority_as_host() {
        let raw = "GET http://user@example.com:8080/p/q?x=1#frag HTTP/1.1\r\nHost: other\r\n\r\n";
        let sent = out(raw);
        assert_eq!(lines(&sent)[..2], ["GET /p/q?x=1 HTTP/1.1", "Host: example.com:8080"]);
        assert!(sent.contains("X-Forwarded-Host: example.com:8080\r\n"));
        let bare = out("GET https://example.com HTTP/1.1\r\n\r\n");
        assert_eq!(lines(&bare), ["GET / HTTP/1.1", "Host: example.com"]);
        let query = out("GET http://h?a HTTP/1.1\r\n\r\n");
        assert_eq!(lines(&query)[0], "GET /?a HTTP/1.1");
    }

    #[test]
    fn a_pool_hop_passes_an_absolute_form_target_and_its_host_as_received() {
        let raw = "GET http://inner/p?q HTTP/1.1\r\nHost: outer\r\n\r\n";
        let inside = ForwardContext { transparent: true, ..ctx() };
        assert_eq!(out_with(raw, &inside), "GET http://inner/p?q HTTP/1.1\r\nHost: outer\r\n\r\n");
    }

    #[test]
    fn other_target_forms_go_out_as_received() {
        assert_eq!(lines(&out("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"))[0], "OPTIONS * HTTP/1.1");
        assert_eq!(lines(&out("GET /a#f HTTP/1.1\r\nHost: h\r\n\r\n"))[0], "GET /a#f HTTP/1.1");
    }

    #[test]
    fn host_is_the_override_or_the_client_s_or_empty() {
        let over = ForwardContext { host: Some(b"backend:8000"), ..ctx() };
        let sent = out_with("GET / HTTP/1.1\r\nHost: front\r\n\r\n", &over);
        assert_eq!(lines(&sent)[1], "Host: backend:8000");
        assert!(sent.contains("X-Forwarded-Host: front\r\n"), "the client's host");
        let none = out("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(lines(&none)[1], "Host: ");
        assert!(!none.contains("X-Forwarded-Host"));
    }

    #[test]
    fn upgrades_are_forwarded_only_when_asked() {
        let raw = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let ws = ForwardContext { upgrade: Some(b"websocket"), ..ctx() };
        assert_eq!(
            lines(&out_with(raw, &ws)),
            [
                "GET /ws HTTP/1.1",
                "Host: h",
                "Sec-Websocket-Key: k",
                "Sec-Websocket-Version: 13",
                "Connection: Upgrade",
                "Upgrade: websocket"
            ]
        );
        assert!(!out(raw).contains("Upgrade"));
    }

    #[test]
    fn expect_and_underscore_policy_follow_the_parser() {
        let raw = "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nX_Drop: 1\r\n\
                   Content-Length: 1\r\n\r\n";
        assert_eq!(
            lines(&out(raw)),
            ["PUT / HTTP/1.1", "Host: h", "Expect: 100-continue", "Content-Length: 1"]
        );
    }
}
