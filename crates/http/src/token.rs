//! Byte classes of RFC 9110 used by the parsers: `tchar` (token characters), the field-value
//! control characters Gunicorn refuses, and small ASCII helpers. Table lookups, no allocation.

/// `tchar` lookup: `!#$%&'*+-.^_`|~`, digits and ASCII letters (RFC 9110 §5.6.2).
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// True for an RFC 9110 `tchar`.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// True when `s` is a non-empty RFC 9110 token.
#[inline]
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// True for a byte Gunicorn refuses in a field value: 0x00–0x08, 0x0A–0x1F and DEL. HTAB
/// and obs-text (0x80–0xFF) are allowed.
#[inline]
pub(crate) fn is_field_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// `s` without leading and trailing SP/HTAB.
#[inline]
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |p| p + 1);
    &s[start..end]
}

/// `s` without trailing SP/HTAB.
#[inline]
pub(crate) fn trim_ows_end(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(0, |p| p + 1);
    &s[..end]
}

/// An upper-cased `String` from ASCII bytes (callers pass validated tokens).
#[inline]
pub(crate) fn upper_ascii_string(s: &[u8]) -> String {
    let mut v = s.to_vec();
    v.make_ascii_uppercase();
    ascii_string(v)
}

/// A `String` from bytes the caller has checked to be ASCII (anything else is replaced).
#[inline]
pub(crate) fn ascii_string(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_chars() {
        assert!(is_token(b"GET"));
        assert!(is_token(b"X-Foo_Bar!#$%&'*+.^`|~09"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert!(!is_token(b"a:b"));
        assert!(!is_token(b"\xc3\xa9"));
        assert!(!is_token(b"a\"b"));
    }

    #[test]
    fn ctl_and_trim() {
        assert!(is_field_ctl(0));
        assert!(is_field_ctl(b'\r'));
        assert!(is_field_ctl(0x7f));
        assert!(!is_field_ctl(b'\t'));
        assert!(!is_field_ctl(0x80));
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows_end(b"Name \t"), b"Name");
        assert_eq!(upper_ascii_string(b"content-type"), "CONTENT-TYPE");
    }
}
