//! Request facts derived from a parsed head for the WSGI/ASGI environ: `wsgi.url_scheme` from
//! Gunicorn's `secure_scheme_headers` (trusted peers only), and percent-decoding for
//! `PATH_INFO` (`urllib.parse.unquote_to_bytes` semantics).

use crate::{ErrorKind, ParseError};

/// The scheme a trusted peer asserts through `secure_scheme_headers`.
///
/// Call only for a peer in `forwarded_allow_ips` (untrusted peers' scheme headers are ignored;
/// trailers never count). Every header whose name is a key of `secure_scheme_headers`
/// (names compared case-insensitively; Gunicorn's keys are upper case) votes https when its
/// value equals the mapped value exactly (case-sensitive, after the parser's SP/HTAB trim),
/// http otherwise. Two votes that disagree (different headers, or repeats of one header) are
/// [`ErrorKind::InvalidSchemeHeaders`].
///
/// Returns `Ok(Some(true))` for https, `Ok(Some(false))` for http, `Ok(None)` when no such
/// header is present (keep the listener's scheme).
pub fn url_scheme_from_headers(
    headers: &[(String, Vec<u8>)],
    secure_scheme_headers: &[(String, String)],
) -> Result<Option<bool>, ParseError> {
    let mut decided: Option<bool> = None;
    if secure_scheme_headers.is_empty() {
        return Ok(None);
    }
    for (name, value) in headers {
        let Some((_, secure_value)) =
            secure_scheme_headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        let https = value.as_slice() == secure_value.as_bytes();
        match decided {
            None => decided = Some(https),
            Some(prev) if prev != https => {
                return Err(ParseError::new(
                    ErrorKind::InvalidSchemeHeaders,
                    "Contradictory scheme headers",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(decided)
}

/// Decode `%XX` escapes (either hex case) for `PATH_INFO`. A `%` not followed by two hex
/// digits is kept as is, and `+` is not a space (this is a path, not a form).
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let Some(first) = memchr::memchr(b'%', raw) else {
        return raw.to_vec();
    };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut i = first;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%'
            && let (Some(h), Some(l)) =
                (raw.get(i + 1).and_then(|&c| hex(c)), raw.get(i + 2).and_then(|&c| hex(c)))
        {
            out.push((h << 4) | l);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

#[inline]
fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<(String, String)> {
        vec![
            ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
            ("X-FORWARDED-PROTO".into(), "https".into()),
            ("X-FORWARDED-SSL".into(), "on".into()),
        ]
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn scheme_votes() {
        let map = defaults();
        assert_eq!(url_scheme_from_headers(&h(&[("HOST", "a")]), &map).unwrap(), None);
        assert_eq!(
            url_scheme_from_headers(&h(&[("X-FORWARDED-PROTO", "https")]), &map).unwrap(),
            Some(true)
        );
        assert_eq!(
            url_scheme_from_headers(&h(&[("X-FORWARDED-PROTO", "http")]), &map).unwrap(),
            Some(false)
        );
        // Values compare exactly.
        assert_eq!(
            url_scheme_from_headers(&h(&[("X-FORWARDED-PROTO", "HTTPS")]), &map).unwrap(),
            Some(false)
        );
        assert_eq!(
            url_scheme_from_headers(
                &h(&[("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-SSL", "on")]),
                &map
            )
            .unwrap(),
            Some(true)
        );
        let e = url_scheme_from_headers(
            &h(&[("X-FORWARDED-PROTO", "http"), ("X-FORWARDED-SSL", "on")]),
            &map,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSchemeHeaders);
        let e = url_scheme_from_headers(
            &h(&[("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-PROTO", "http")]),
            &map,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSchemeHeaders);
        let lower = vec![("x-forwarded-proto".to_string(), "https".to_string())];
        assert_eq!(
            url_scheme_from_headers(&h(&[("X-FORWARDED-PROTO", "https")]), &lower).unwrap(),
            Some(true)
        );
        assert_eq!(
            url_scheme_from_headers(&h(&[("X-FORWARDED-PROTO", "https")]), &[]).unwrap(),
            None
        );
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode(b"/plain"), b"/plain");
        assert_eq!(percent_decode(b"/a%20b%2Fc%2f"), b"/a b/c/");
        assert_eq!(percent_decode(b"/caf%C3%A9"), "/café".as_bytes());
        assert_eq!(percent_decode(b"/%zz%4%%41+"), b"/%zz%4%A+");
        assert_eq!(percent_decode(b"%"), b"%");
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%00"), b"\0");
    }
}
