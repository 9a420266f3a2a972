//! The response head the proxy sends on to its client: [`client_framing`] picks how the
//! upstream's body is delimited towards the client, and [`write_client_head`] writes the
//! status line and the upstream's end-to-end headers with that framing and the client
//! connection's own `Connection` header.

use crate::fields::{connection_nominated, is_nominated, list_elements, put_header, put_u64};
use crate::response_head::{ResponseFraming, ResponseHead};

/// Upstream headers never copied to the client (RFC 9110 §7.6.1 hop-by-hop ones, and the
/// framing written from the outgoing framing). `Upgrade` is copied for a 101 only.
const NOT_COPIED: [&[u8]; 6] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"trailer",
    b"content-length",
];

/// How a body the upstream delimited with `upstream` is delimited towards a client speaking
/// `client_version`: a chunked body goes to an HTTP/1.0 client until close (it cannot read
/// chunks); a close-delimited body goes to an HTTP/1.1 client chunked (the proxy chunks what
/// it reads until the upstream closes, as nginx does, so the client connection survives).
/// `NoBody` and `Length` are kept.
pub fn client_framing(upstream: ResponseFraming, client_version: (u8, u8)) -> ResponseFraming {
    let http11 = client_version >= (1, 1);
    match upstream {
        ResponseFraming::Chunked if !http11 => ResponseFraming::UntilClose,
        ResponseFraming::UntilClose if http11 => ResponseFraming::Chunked,
        other => other,
    }
}

/// Append the status line and header section (through the blank line) for the client.
///
/// * The status line is `HTTP/1.1 STATUS REASON` (a proxy sends its own version, RFC 9110
///   §2.5), with the upstream's status and reason.
/// * The upstream's headers are copied in arrival order with names as sent, except the
///   hop-by-hop ones: `Connection` and every header it names, `Keep-Alive`,
///   `Proxy-Connection`, `Trailer`, `Transfer-Encoding`, and `Upgrade` (copied for a 101).
///   Its `Content-Length` is copied only when `framing_out` is `NoBody` (the length a `HEAD`
///   or 304 announces), and never for a 1xx or 204 (RFC 9110 §8.6).
/// * Framing from `framing_out` (see [`client_framing`]): `Content-Length: N`, or
///   `Transfer-Encoding: chunked` after any other transfer codings the upstream applied (those
///   alone for `UntilClose`), or nothing.
/// * Connection: for a 101, `Connection: Upgrade` (the upstream's `Upgrade` is copied); for
///   another 1xx, nothing; else `Connection: close` when the client connection closes after
///   this response (`!client_keep_alive`, or `framing_out` is `UntilClose`), and
///   `Connection: keep-alive` for an HTTP/1.0 client kept alive.
pub fn write_client_head(
    head: &ResponseHead,
    out: &mut Vec<u8>,
    client_version: (u8, u8),
    client_keep_alive: bool,
    framing_out: ResponseFraming,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(head.reason());
    out.extend_from_slice(b"\r\n");

    let nominated = connection_nominated(head.headers());
    let switching = head.status == 101;
    let keep_length =
        framing_out == ResponseFraming::NoBody && head.status >= 200 && head.status != 204;
    let mut codings: Vec<&[u8]> = Vec::new();
    for (name, value) in head.headers() {
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"transfer-encoding") {
            codings.extend(list_elements(value).filter(|c| {
                !c.eq_ignore_ascii_case(b"chunked") && !c.eq_ignore_ascii_case(b"identity")
            }));
        }
        let copied = if is(b"upgrade") {
            switching
        } else if is(b"content-length") {
            keep_length && !is_nominated(&nominated, name)
        } else {
            !NOT_COPIED.iter().any(|n| is(n)) && !is_nominated(&nominated, name)
        };
        if copied {
            put_header(out, name, value);
        }
    }

    match framing_out {
        ResponseFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => {
            codings.push(b"chunked");
            put_header(out, b"Transfer-Encoding", &codings.join(&b", "[..]));
        }
        ResponseFraming::UntilClose if !codings.is_empty() => {
            put_header(out, b"Transfer-Encoding", &codings.join(&b", "[..]));
        }
        ResponseFraming::UntilClose | ResponseFraming::NoBody => {}
    }

    if switching {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if head.status >= 200 {
        let keep = client_keep_alive && framing_out != ResponseFraming::UntilClose;
        if !keep {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if client_version < (1, 1) {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ResponseLimits, parse_response_head};
    use ResponseFraming::{Chunked, Length, NoBody, UntilClose};

    fn head(raw: &[u8], is_head: bool) -> ResponseHead {
        parse_response_head(raw, is_head, ResponseLimits::default()).unwrap().unwrap().0
    }

    fn write(
        head: &ResponseHead,
        version: (u8, u8),
        keep: bool,
        framing: ResponseFraming,
    ) -> String {
        let mut out = Vec::new();
        write_client_head(head, &mut out, version, keep, framing);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The head for a client as `client_framing` frames it.
    fn relay(raw: &[u8], version: (u8, u8), keep: bool) -> String {
        let head = head(raw, false);
        write(&head, version, keep, client_framing(head.framing, version))
    }

    #[test]
    fn client_framing_adapts_to_the_client_s_version() {
        for (upstream, v10, v11) in [
            (NoBody, NoBody, NoBody),
            (Length(7), Length(7), Length(7)),
            (Chunked, UntilClose, Chunked),
            (UntilClose, UntilClose, Chunked),
        ] {
            assert_eq!(client_framing(upstream, (1, 0)), v10, "{upstream:?} to HTTP/1.0");
            assert_eq!(client_framing(upstream, (1, 1)), v11, "{upstream:?} to HTTP/1.1");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_framing_re_emitted() {
        let raw = b"HTTP/1.0 200 OK\r\nServer: app\r\nConnection: keep-alive, X-Hop\r\n\
                    Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTrailer: X-T\r\n\
                    Upgrade: h2c\r\nX-Hop: 1\r\ncontent-length: 2\r\nset-cookie: a=1\r\n\r\n";
        assert_eq!(
            relay(raw, (1, 1), true),
            "HTTP/1.1 200 OK\r\nServer: app\r\nset-cookie: a=1\r\nContent-Length: 2\r\n\r\n"
        );
    }

    #[test]
    fn connection_header_follows_the_client_connection() {
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let closed = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        assert_eq!(relay(raw, (1, 1), false), closed);
        assert_eq!(relay(raw, (1, 0), false), closed);
        assert_eq!(
            relay(raw, (1, 0), true),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn chunked_bodies_are_chunked_for_http11_and_close_delimited_for_http10() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            relay(raw, (1, 1), true),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert_eq!(relay(raw, (1, 0), true), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let gzip = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, identity, chunked\r\n\r\n";
        assert_eq!(
            relay(gzip, (1, 1), true),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        );
        assert_eq!(
            relay(gzip, (1, 0), true),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_close_delimited_body_is_chunked_for_http11_clients() {
        let raw = b"HTTP/1.0 200 OK\r\nX-A: b\r\n\r\n";
        assert_eq!(
            relay(raw, (1, 1), true),
            "HTTP/1.1 200 OK\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let until_close = write(&head(raw, false), (1, 1), true, UntilClose);
        assert_eq!(until_close, "HTTP/1.1 200 OK\r\nX-A: b\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn bodiless_responses_keep_the_length_they_announce() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(relay_head(ok), "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n");
        let not_modified =
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(
            relay(not_modified, (1, 1), true),
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 42\r\n\r\n"
        );
        let no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(relay(no_content, (1, 1), true), "HTTP/1.1 204 No Content\r\n\r\n");
    }

    fn relay_head(raw: &[u8]) -> String {
        let head = head(raw, true);
        write(&head, (1, 1), true, client_framing(head.framing, (1, 1)))
    }

    #[test]
    fn switching_protocols_keeps_upgrade_and_interim_responses_have_no_connection() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n";
        assert_eq!(
            relay(raw, (1, 1), false),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: abc=\r\nConnection: Upgrade\r\n\r\n"
        );
        let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
        assert_eq!(
            relay(hints, (1, 1), false),
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        );
        assert_eq!(
            relay(b"HTTP/1.1 100 Continue\r\n\r\n", (1, 1), true),
            "HTTP/1.1 100 Continue\r\n\r\n"
        );
    }

    #[test]
    fn the_status_line_keeps_the_upstream_s_reason_bytes() {
        let raw = b"HTTP/1.1 200 Tr\xe8s bien\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        let head = head(raw, false);
        write_client_head(&head, &mut out, (1, 1), true, Length(0));
        assert!(out.starts_with(b"HTTP/1.1 200 Tr\xe8s bien\r\n"));
        let bare = relay(b"HTTP/1.1 599\r\nContent-Length: 0\r\n\r\n", (1, 1), true);
        assert!(bare.starts_with("HTTP/1.1 599 \r\n"), "{bare:?}");
    }
}
