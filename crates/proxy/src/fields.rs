//! Small field helpers shared by both directions of the proxy: comma-separated list
//! elements, the names a `Connection` header nominates as hop-by-hop, the Title-Case
//! re-casing of the parser's upper-case header names, and the numbers written into heads
//! (decimal lengths and statuses, hexadecimal chunk sizes) without a heap string.

use std::io::Write as _;

/// Leading and trailing optional whitespace (SP / HTAB) removed.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The non-empty elements of a comma-separated field value (RFC 9110 §5.6.1), trimmed.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|e| !e.is_empty())
}

/// Whether the comma-separated `value` has the element `token` (ASCII case-insensitive).
pub(crate) fn list_has(value: &[u8], token: &[u8]) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token))
}

/// The header names the `Connection` headers among `headers` (name, value) nominate
/// (RFC 9110 §7.6.1), lower-cased.
pub(crate) fn connection_nominated<'h>(
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"connection") {
            names.extend(list_elements(value).map(<[u8]>::to_ascii_lowercase));
        }
    }
    names
}

/// Whether `name` is among the lower-cased `nominated` names.
pub(crate) fn is_nominated(nominated: &[Vec<u8>], name: &[u8]) -> bool {
    nominated.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Append `name` in Title-Case: the first letter of each dash-separated word upper-cased and
/// the rest lower-cased (`X-FORWARDED-FOR` → `X-Forwarded-For`, `WWW-AUTHENTICATE` →
/// `Www-Authenticate`). Field names are case-insensitive; the re-casing is for readability
/// and for the few peers that compare names case-sensitively.
pub(crate) fn put_title_case(out: &mut Vec<u8>, name: &[u8]) {
    let mut word_start = true;
    for &b in name {
        out.push(if word_start { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() });
        word_start = b == b'-';
    }
}

/// Append one `name: value` header line with CRLF.
pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append `n` in decimal.
pub(crate) fn put_u64(out: &mut Vec<u8>, n: u64) {
    // Formatted straight into `out`: a `to_string` would allocate on every response.
    let written = write!(out, "{n}");
    debug_assert!(written.is_ok(), "writing to a Vec cannot fail");
}

/// Append a chunk-size line: `len` in hexadecimal, then CRLF.
pub(crate) fn put_chunk_size(out: &mut Vec<u8>, len: usize) {
    let written = write!(out, "{len:x}\r\n");
    debug_assert!(written.is_ok(), "writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_splits_lists() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b" \t "), b"");
        let elems: Vec<&[u8]> = list_elements(b" gzip , ,chunked,").collect();
        assert_eq!(elems, [&b"gzip"[..], b"chunked"]);
        assert!(list_has(b"Keep-Alive, Upgrade", b"upgrade"));
        assert!(!list_has(b"keep-alive-x", b"keep-alive"));
    }

    #[test]
    fn collects_nominated_names_from_every_connection_header() {
        let headers = [
            (b"Connection".to_vec(), b"close, X-Foo".to_vec()),
            (b"X-Foo".to_vec(), b"1".to_vec()),
            (b"CONNECTION".to_vec(), b"x-bar".to_vec()),
        ];
        let names = connection_nominated(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        assert_eq!(names, [b"close".to_vec(), b"x-foo".to_vec(), b"x-bar".to_vec()]);
        assert!(is_nominated(&names, b"X-BAR"));
        assert!(!is_nominated(&names, b"x-baz"));
    }

    #[test]
    fn title_cases_each_word() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"CONTENT-TYPE", b"Content-Type"),
            (b"X-FORWARDED-FOR", b"X-Forwarded-For"),
            (b"WWW-AUTHENTICATE", b"Www-Authenticate"),
            (b"ACCEPT", b"Accept"),
            (b"X--A-", b"X--A-"),
        ];
        for (upper, title) in cases {
            let mut out = Vec::new();
            put_title_case(&mut out, upper);
            assert_eq!(out, title);
        }
    }

    #[test]
    fn writes_lines_and_numbers() {
        let mut out = Vec::new();
        put_header(&mut out, b"A", b"b");
        put_u64(&mut out, 0);
        put_u64(&mut out, u64::MAX);
        assert_eq!(out, b"A: b\r\n018446744073709551615");
    }
}
