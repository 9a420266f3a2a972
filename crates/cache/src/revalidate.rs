//! `--cache-revalidate`, nginx's `proxy_cache_revalidate`: an expired entry that carries a
//! validator is refreshed with a conditional request, and a `304 Not Modified` from the app
//! renews the stored copy instead of replacing it (`X-Cache-Status: REVALIDATED`; the stored
//! body is answered, the app sent none). Two decisions live here, I/O-free:
//!
//! - [`conditional_headers`]: the request headers a refresh carries — `If-None-Match` from the
//!   stored `ETag`, `If-Modified-Since` from the stored `Last-Modified` — in place of any the
//!   client sent (a refresh asks about the stored copy, not the client's).
//! - [`renewed_freshness`]: how long a revalidated entry is fresh again, as nginx decides in
//!   `ngx_http_upstream_test_next`: the 304's own freshness headers (`X-Accel-Expires`,
//!   `Cache-Control`, `Expires`) if it has any; else the stored response's headers read again
//!   at `now`; else `--cache-valid` for 304. None: the 304 gives no new lifetime, so the entry
//!   stays as it was (expired: the next request revalidates again, still cheaply).

use crate::not_modified::Validators;
use crate::storability::{Freshness, Storability, storability};
use crate::valid::CacheValid;

/// Request header names (upper case, as parsed heads keep them) a refresh replaces.
pub const CONDITIONAL_REQUEST_HEADERS: [&str; 4] =
    ["IF-NONE-MATCH", "IF-MODIFIED-SINCE", "IF-MATCH", "IF-UNMODIFIED-SINCE"];

/// The conditional headers (upper-case name, value) a refresh of a stored response with
/// these header lines sends; empty when it has no validator (a plain refresh).
pub fn conditional_headers(stored_header_lines: &[u8]) -> Vec<(String, Vec<u8>)> {
    let validators = Validators::from_header_lines(stored_header_lines);
    let mut headers = Vec::new();
    if let Some(etag) = validators.etag {
        headers.push(("IF-NONE-MATCH".to_owned(), etag.to_vec()));
    }
    if let Some(date) = validators.last_modified {
        headers.push(("IF-MODIFIED-SINCE".to_owned(), date.to_vec()));
    }
    headers
}

/// The header lines of a stored response as (name, value) pairs, for [`storability`].
fn header_pairs(lines: &[u8]) -> Vec<(&str, &[u8])> {
    lines
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            let value = &line[colon + 1..];
            let start = value.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(value.len());
            Some((name, &value[start..]))
        })
        .collect()
}

/// How long an entry revalidated by a 304 with `response_headers` at `now` is fresh again
/// (see the module doc); the stored response's `Vary` is kept.
pub fn renewed_freshness(
    stored_header_lines: &[u8],
    stored_vary: Option<&str>,
    response_headers: &[(&str, &[u8])],
    now: i64,
    valid: &CacheValid,
) -> Option<Freshness> {
    let no_fallback = CacheValid::default();
    let keep_vary = |mut fresh: Freshness| {
        fresh.vary = stored_vary.map(str::to_owned);
        Some(fresh)
    };
    if let Storability::Store(fresh) = storability(304, response_headers, now, &no_fallback) {
        return keep_vary(fresh);
    }
    let stored = header_pairs(stored_header_lines);
    if let Storability::Store(fresh) = storability(200, &stored, now, &no_fallback) {
        return keep_vary(fresh);
    }
    match storability(304, &[], now, valid) {
        Storability::Store(fresh) => keep_vary(fresh),
        Storability::NotStored(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const STORED: &[u8] = b"Content-Type: text/plain\r\nCache-Control: max-age=60\r\n\
        ETag: \"v1\"\r\nLast-Modified: Tue, 15 Nov 1994 12:45:26 GMT\r\n";

    #[test]
    fn a_refresh_asks_about_the_stored_validators() {
        assert_eq!(
            conditional_headers(STORED),
            vec![
                ("IF-NONE-MATCH".to_owned(), b"\"v1\"".to_vec()),
                ("IF-MODIFIED-SINCE".to_owned(), b"Tue, 15 Nov 1994 12:45:26 GMT".to_vec()),
            ]
        );
        assert!(conditional_headers(b"Cache-Control: max-age=60\r\n").is_empty());
    }

    #[test]
    fn the_304s_own_freshness_comes_first() {
        let valid = CacheValid::parse("304=5").unwrap();
        let headers: &[(&str, &[u8])] = &[("Cache-Control", b"max-age=300")];
        let fresh = renewed_freshness(STORED, None, headers, NOW, &valid).unwrap();
        assert_eq!(fresh.valid_until, NOW + 300);
    }

    #[test]
    fn else_the_stored_headers_read_again_now() {
        let valid = CacheValid::parse("304=5").unwrap();
        let fresh = renewed_freshness(STORED, Some("Accept"), &[], NOW, &valid).unwrap();
        assert_eq!(fresh.valid_until, NOW + 60);
        assert_eq!(fresh.vary.as_deref(), Some("Accept"));
    }

    #[test]
    fn else_cache_valid_for_304_or_nothing() {
        let bare = b"ETag: \"v1\"\r\n";
        let valid = CacheValid::parse("304=5").unwrap();
        assert_eq!(renewed_freshness(bare, None, &[], NOW, &valid).unwrap().valid_until, NOW + 5);
        assert_eq!(renewed_freshness(bare, None, &[], NOW, &CacheValid::default()), None);
    }

    #[test]
    fn a_304_that_refuses_falls_back_to_the_stored_headers() {
        // `no-store` on the 304 itself is not a lifetime: nginx reads the stored copy's.
        let headers: &[(&str, &[u8])] = &[("Cache-Control", b"no-store")];
        let fresh = renewed_freshness(STORED, None, headers, NOW, &CacheValid::default());
        assert_eq!(fresh.unwrap().valid_until, NOW + 60);
    }
}
