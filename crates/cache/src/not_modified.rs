//! Whether a cached 200 answers a conditional request with `304 Not Modified`, as nginx's
//! not_modified filter does for responses it serves from its cache (`if_modified_since exact`,
//! its default): `If-None-Match` compared weakly with the stored `ETag` (`*` matches any), and
//! `If-Modified-Since` equal to the stored `Last-Modified`; when both are sent, both must
//! hold. `If-Match` and `If-Unmodified-Since` are left to the full response (nginx answers 412
//! there; a cache that sends the stored 200 is still correct).

/// The validators a stored response carries, read from its header lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Validators<'a> {
    /// The `ETag` value, as sent.
    pub etag: Option<&'a [u8]>,
    /// The `Last-Modified` value, as sent.
    pub last_modified: Option<&'a [u8]>,
}

impl<'a> Validators<'a> {
    /// Read them from header lines (`Name: value\r\n` each).
    pub fn from_header_lines(lines: &'a [u8]) -> Validators<'a> {
        let mut found = Validators::default();
        for line in lines.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"etag") {
                found.etag = Some(value);
            } else if name.eq_ignore_ascii_case(b"last-modified") {
                found.last_modified = Some(value);
            }
        }
        found
    }
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &value[start..end]
}

/// Whether a stored response of `status` with `stored` validators answers a request carrying
/// `if_none_match` / `if_modified_since` (None: header absent) with 304.
pub fn answers_not_modified(
    status: u16,
    stored: Validators<'_>,
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
) -> bool {
    if status != 200 || (if_none_match.is_none() && if_modified_since.is_none()) {
        return false;
    }
    if let Some(since) = if_modified_since {
        let same = stored.last_modified.is_some_and(|lm| same_date(lm, since));
        if !same {
            return false;
        }
    }
    match if_none_match {
        None => true,
        Some(list) if trim(list) == b"*" => true,
        Some(list) => stored.etag.is_some_and(|etag| etag_listed(etag, list)),
    }
}

fn same_date(a: &[u8], b: &[u8]) -> bool {
    let parse = |v: &[u8]| {
        std::str::from_utf8(v).ok().and_then(|t| httpdate::parse_http_date(t.trim()).ok())
    };
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if x == y)
}

/// Weak comparison (RFC 9110 §8.8.3.2): `W/` prefixes ignored, the opaque tags equal.
fn etag_listed(etag: &[u8], list: &[u8]) -> bool {
    let weak = |t: &[u8]| -> Vec<u8> {
        let t = trim(t);
        t.strip_prefix(b"W/").unwrap_or(t).to_vec()
    };
    let mine = weak(etag);
    list.split(|&b| b == b',').any(|candidate| weak(candidate) == mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &[u8] = b"Content-Type: text/plain\r\nETag: \"v1\"\r\n\
        Last-Modified: Tue, 15 Nov 1994 12:45:26 GMT\r\nCache-Control: max-age=60\r\n";

    fn stored() -> Validators<'static> {
        Validators::from_header_lines(LINES)
    }

    #[test]
    fn validators_are_read_from_header_lines() {
        let v = stored();
        assert_eq!(v.etag, Some(&b"\"v1\""[..]));
        assert_eq!(v.last_modified, Some(&b"Tue, 15 Nov 1994 12:45:26 GMT"[..]));
        assert_eq!(Validators::from_header_lines(b"A: b\r\n"), Validators::default());
    }

    /// Stored status, If-None-Match, If-Modified-Since, whether the answer is a 304.
    type Case = (u16, Option<&'static [u8]>, Option<&'static [u8]>, bool);

    #[test]
    fn the_table_of_conditional_requests() {
        let lm = Some(&b"Tue, 15 Nov 1994 12:45:26 GMT"[..]);
        let cases: &[Case] = &[
            (200, None, None, false),                   // not conditional
            (200, Some(b"\"v1\""), None, true),         // matching tag
            (200, Some(b"W/\"v1\""), None, true),       // weak comparison
            (200, Some(b"\"v0\", \"v1\""), None, true), // in a list
            (200, Some(b"\"v2\""), None, false),        // another tag
            (200, Some(b"*"), None, true),              // any
            (200, None, lm, true),                      // same date
            (200, None, Some(b"Tue, 15 Nov 1994 12:45:27 GMT"), false), // exact, not later
            (200, None, Some(b"garbage"), false),       // unparsable
            (200, Some(b"\"v1\""), Some(b"Mon, 14 Nov 1994 00:00:00 GMT"), false), // both must hold
            (404, Some(b"\"v1\""), None, false),        // only a 200
        ];
        for &(status, inm, ims, want) in cases {
            assert_eq!(answers_not_modified(status, stored(), inm, ims), want, "{inm:?} {ims:?}");
        }
    }

    #[test]
    fn without_stored_validators_nothing_is_not_modified() {
        let none = Validators::default();
        assert!(!answers_not_modified(200, none, Some(b"\"v1\""), None));
        assert!(answers_not_modified(200, none, Some(b"*"), None));
    }
}
