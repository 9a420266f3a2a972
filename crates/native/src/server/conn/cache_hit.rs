//! Writing a stored response to a client: the status line and stored headers ready to send,
//! the server's own `Date`, `Server`, `Content-Length`, `Connection` and `X-Cache-Status`
//! around them, and `304 Not Modified` in place of the stored 200 when the request's
//! conditional headers match its validators (nginx's not_modified filter). No Python, no lock:
//! the bytes come from a copy of the entry.

use std::io::Write;

use ferrocorn_cache::{CacheStatus, Validators, answers_not_modified, decode_entry};
use ferrocorn_http::RequestHead;

use super::SERVER;

/// A request's conditional headers (`If-None-Match`, `If-Modified-Since`), for
/// [`answers_not_modified`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Conditional<'a> {
    pub(super) if_none_match: Option<&'a [u8]>,
    pub(super) if_modified_since: Option<&'a [u8]>,
}

impl<'a> Conditional<'a> {
    pub(super) fn of(head: &'a RequestHead) -> Conditional<'a> {
        Conditional {
            if_none_match: head.header("IF-NONE-MATCH"),
            if_modified_since: head.header("IF-MODIFIED-SINCE"),
        }
    }
}

/// Headers a `304 Not Modified` leaves out of the stored ones (as nginx's not_modified filter).
fn left_out_of_304(line: &[u8]) -> bool {
    let name = line.split(|&b| b == b':').next().unwrap_or(line);
    name.eq_ignore_ascii_case(b"content-type") || name.eq_ignore_ascii_case(b"content-encoding")
}

/// Write a stored response (`entry`, laid out by `ferrocorn_cache::entry`) to `out`, for a
/// request of `version` (a HEAD gets no body), tagged `status`; a `304 Not Modified` instead
/// when the request's `conditional` headers match the stored validators.
#[allow(clippy::too_many_arguments)]
pub(super) fn encode_stored(
    out: &mut Vec<u8>,
    entry: &[u8],
    version: (u8, u8),
    is_head: bool,
    conditional: Conditional<'_>,
    status: CacheStatus,
    keep_alive: bool,
    date: &[u8],
) -> Option<(u16, u64)> {
    let view = decode_entry(entry)?;
    let conditional_request =
        conditional.if_none_match.is_some() || conditional.if_modified_since.is_some();
    let not_modified = conditional_request
        && answers_not_modified(
            view.meta.status,
            Validators::from_header_lines(view.header_lines),
            conditional.if_none_match,
            conditional.if_modified_since,
        );
    let code = if not_modified { 304 } else { view.meta.status };
    let bodiless = code < 200 || code == 204 || code == 304;
    out.extend_from_slice(if version == (1, 0) { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(if not_modified { b"304 Not Modified" } else { view.status_line });
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(SERVER);
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if not_modified {
        for line in view.header_lines.split_inclusive(|&b| b == b'\n') {
            if !left_out_of_304(line) {
                out.extend_from_slice(line);
            }
        }
    } else {
        out.extend_from_slice(view.header_lines);
    }
    if !bodiless {
        let _ = write!(out, "Content-Length: {}\r\n", view.body.len());
    }
    out.extend_from_slice(b"X-Cache-Status: ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nConnection: close\r\n\r\n"
    });
    let body: &[u8] = if is_head || bodiless { b"" } else { view.body };
    out.extend_from_slice(body);
    Some((code, body.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocorn_cache::{EntryMeta, Freshness, encode_entry};

    fn entry(status: u16, head: &[u8], body: &[u8]) -> Vec<u8> {
        let meta = EntryMeta {
            status,
            freshness: Freshness {
                valid_until: 0,
                updating_sec: None,
                error_sec: None,
                vary: None,
            },
            stored_at: 0,
        };
        let mut out = Vec::new();
        encode_entry(&meta, head, body, &mut out);
        out
    }

    #[test]
    fn a_stored_response_is_written_with_the_server_s_own_headers() {
        let e = entry(200, b"200 OK\r\nContent-Type: text/plain\r\n", b"hello");
        let mut out = Vec::new();
        let sent =
            encode_stored(&mut out, &e, (1, 1), false, PLAIN, CacheStatus::Hit, true, b"DATE")
                .unwrap();
        assert_eq!(sent, (200, 5));
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: ferrocorn\r\nDate: DATE\r\nContent-Type: text/plain\r\n\
              Content-Length: 5\r\nX-Cache-Status: HIT\r\nConnection: keep-alive\r\n\r\nhello"
        );
    }

    #[test]
    fn a_head_or_a_bodiless_status_gets_no_body() {
        let e = entry(200, b"200 OK\r\n", b"hello");
        let mut out = Vec::new();
        let sent =
            encode_stored(&mut out, &e, (1, 0), true, PLAIN, CacheStatus::Stale, false, b"D")
                .unwrap();
        assert_eq!(sent, (200, 0));
        assert!(out.starts_with(b"HTTP/1.0 200 OK\r\n"));
        assert!(
            out.ends_with(
                b"Content-Length: 5\r\nX-Cache-Status: STALE\r\nConnection: close\r\n\r\n"
            )
        );
        let e = entry(304, b"304 Not Modified\r\n", b"");
        out.clear();
        encode_stored(&mut out, &e, (1, 1), false, PLAIN, CacheStatus::Hit, true, b"D").unwrap();
        assert!(!out.windows(14).any(|w| w == b"Content-Length"));
    }

    const PLAIN: Conditional<'static> =
        Conditional { if_none_match: None, if_modified_since: None };

    #[test]
    fn a_matching_conditional_request_gets_a_304_without_body_or_content_type() {
        let e = entry(200, b"200 OK\r\nContent-Type: text/plain\r\nETag: \"v1\"\r\n", b"hello");
        let mut out = Vec::new();
        let matching = Conditional { if_none_match: Some(b"\"v1\""), if_modified_since: None };
        let sent =
            encode_stored(&mut out, &e, (1, 1), false, matching, CacheStatus::Hit, true, b"D");
        assert_eq!(sent, Some((304, 0)));
        assert_eq!(
            out,
            b"HTTP/1.1 304 Not Modified\r\nServer: ferrocorn\r\nDate: D\r\nETag: \"v1\"\r\n\
              X-Cache-Status: HIT\r\nConnection: keep-alive\r\n\r\n"
        );
        out.clear();
        let other = Conditional { if_none_match: Some(b"\"v2\""), if_modified_since: None };
        let sent = encode_stored(&mut out, &e, (1, 1), false, other, CacheStatus::Hit, true, b"D");
        assert_eq!(sent, Some((200, 5)));
    }

    #[test]
    fn bytes_that_are_not_an_entry_are_not_written() {
        let mut out = Vec::new();
        assert!(
            encode_stored(&mut out, b"junk", (1, 1), false, PLAIN, CacheStatus::Hit, true, b"D")
                .is_none()
        );
    }
}
