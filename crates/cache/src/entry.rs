//! A stored response as bytes, and the key of a `Vary` variant. The store keeps opaque bytes;
//! this is their layout: a fixed head of numbers (status, freshness, when stored), the status
//! line and header lines ready to write, then the body. The header lines are the ones a HIT
//! sends again; the server adds its own `Date`, `Server`, `Content-Length`, `Connection` and
//! `X-Cache-Status` around them.

use crate::storability::Freshness;

const VERSION: u8 = 1;
const FIXED: usize = 31;
const NONE: u32 = u32::MAX;

/// What the fixed head of a stored response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// The response status.
    pub status: u16,
    /// Fresh until, and the stale windows it grants itself (`vary` is not kept here).
    pub freshness: Freshness,
    /// Unix seconds it was stored.
    pub stored_at: i64,
}

/// A stored response, read in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// Its numbers.
    pub meta: EntryMeta,
    /// The status line's text after the version, e.g. `200 OK`.
    pub status_line: &'a [u8],
    /// Header lines, each `Name: value\r\n`.
    pub header_lines: &'a [u8],
    /// The body.
    pub body: &'a [u8],
}

fn window(w: Option<u64>) -> u32 {
    w.map_or(NONE, |w| w.min(u64::from(NONE - 1)) as u32)
}

fn unwindow(w: u32) -> Option<u64> {
    (w != NONE).then_some(u64::from(w))
}

/// Lay out a response into `out`: `head` is its status line text, CRLF, then its header lines.
pub fn encode_entry(meta: &EntryMeta, head: &[u8], body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(FIXED + head.len() + body.len());
    out.push(VERSION);
    out.extend_from_slice(&meta.status.to_le_bytes());
    out.extend_from_slice(&meta.freshness.valid_until.to_le_bytes());
    out.extend_from_slice(&window(meta.freshness.updating_sec).to_le_bytes());
    out.extend_from_slice(&window(meta.freshness.error_sec).to_le_bytes());
    out.extend_from_slice(&meta.stored_at.to_le_bytes());
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(body);
}

/// Read a response laid out by [`encode_entry`]; None when the bytes are not one.
pub fn decode_entry(bytes: &[u8]) -> Option<EntryView<'_>> {
    if bytes.len() < FIXED || bytes[0] != VERSION {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let i64_at = |i: usize| i64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let head_len = u32_at(27) as usize;
    let head = bytes.get(FIXED..FIXED + head_len)?;
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    Some(EntryView {
        meta: EntryMeta {
            status: u16::from_le_bytes([bytes[1], bytes[2]]),
            freshness: Freshness {
                valid_until: i64_at(3),
                updating_sec: unwindow(u32_at(11)),
                error_sec: unwindow(u32_at(15)),
                vary: None,
            },
            stored_at: i64_at(19),
        },
        status_line: &head[..line_end],
        header_lines: &head[line_end + 2..],
        body: &bytes[FIXED + head_len..],
    })
}

/// Whether a response header is kept in a stored entry: not the ones the server writes itself
/// on every answer, and not nginx's `X-Accel-*` controls, which it never passes on.
pub fn header_is_stored(name: &str) -> bool {
    const SERVER_WRITES: [&str; 5] =
        ["content-length", "date", "server", "x-cache-status", "transfer-encoding"];
    !(SERVER_WRITES.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name.len() > 8 && name[..8].eq_ignore_ascii_case("x-accel-"))
}

/// Append to `out` (which holds the primary key) what tells this request's variant apart:
/// for each header `vary` names, in order, its name and the request's values of it.
/// `headers` have upper-case names.
pub fn append_variant(out: &mut Vec<u8>, vary: &str, headers: &[(String, Vec<u8>)]) {
    out.extend_from_slice(b"\nvary");
    for name in vary.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        out.push(b'\n');
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        out.push(b':');
        let mut first = true;
        for (_, value) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
            if !first {
                out.extend_from_slice(b", ");
            }
            first = false;
            out.extend_from_slice(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips() {
        let meta = EntryMeta {
            status: 200,
            freshness: Freshness {
                valid_until: 1_700_000_060,
                updating_sec: Some(30),
                error_sec: None,
                vary: None,
            },
            stored_at: 1_700_000_000,
        };
        let mut out = Vec::new();
        encode_entry(&meta, b"200 OK\r\nContent-Type: text/plain\r\n", b"hello", &mut out);
        let view = decode_entry(&out).unwrap();
        assert_eq!(view.meta, meta);
        assert_eq!(view.status_line, b"200 OK");
        assert_eq!(view.header_lines, b"Content-Type: text/plain\r\n");
        assert_eq!(view.body, b"hello");
    }

    #[test]
    fn bytes_that_are_not_an_entry_are_refused() {
        assert!(decode_entry(b"").is_none());
        assert!(decode_entry(&[9u8; 40]).is_none());
        let mut out = Vec::new();
        let meta = EntryMeta {
            status: 200,
            freshness: Freshness {
                valid_until: 0,
                updating_sec: None,
                error_sec: None,
                vary: None,
            },
            stored_at: 0,
        };
        encode_entry(&meta, b"200 OK\r\n", b"", &mut out);
        assert!(decode_entry(&out[..out.len() - 1]).is_none()); // head cut short
    }

    #[test]
    fn the_server_and_accel_headers_are_not_stored() {
        for name in ["Date", "content-length", "Server", "X-Accel-Expires", "X-Cache-Status"] {
            assert!(!header_is_stored(name), "{name}");
        }
        for name in ["Content-Type", "Cache-Control", "ETag", "Vary", "X-Accel"] {
            assert!(header_is_stored(name), "{name}");
        }
    }

    #[test]
    fn variants_differ_by_the_named_headers_only() {
        let en = [("ACCEPT-LANGUAGE".to_owned(), b"en".to_vec()), ("X".to_owned(), b"1".to_vec())];
        let fr = [("ACCEPT-LANGUAGE".to_owned(), b"fr".to_vec()), ("X".to_owned(), b"1".to_vec())];
        let en_other_x =
            [("ACCEPT-LANGUAGE".to_owned(), b"en".to_vec()), ("X".to_owned(), b"2".to_vec())];
        let variant = |headers: &[(String, Vec<u8>)]| {
            let mut key = b"http://a/".to_vec();
            append_variant(&mut key, "Accept-Language", headers);
            key
        };
        assert_ne!(variant(&en), variant(&fr));
        assert_eq!(variant(&en), variant(&en_other_x));
        assert!(variant(&en).starts_with(b"http://a/\nvary"));
    }
}
