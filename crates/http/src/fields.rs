//! Header-field blocks, shared by the request-head parser and the chunked trailer section:
//! finding the end of a CRLF-delimited block (rejecting bare LF), and turning its lines into
//! `(UPPER-NAME, value)` pairs with Gunicorn's per-field rules and header policy
//! (`parse_headers` + `_apply_header_policy` in `gunicorn/http/message.py`).

use crate::token::{is_field_ctl, is_token, trim_ows, trim_ows_end, upper_ascii_string};
use crate::{ErrorKind, HeaderMapPolicy, Limits, ParseError};
use memchr::memchr;

/// Gunicorn's cap on `limit_request_fields` (also used when the limit is 0).
const MAX_HEADERS: usize = 32768;
/// Gunicorn's default (and fallback for 0) `limit_request_field_size`.
const DEFAULT_FIELD_SIZE: usize = 8190;

/// Names refused in a trailer section (RFC 9110 §6.5.1, Gunicorn 26.0).
const FORBIDDEN_TRAILERS: [&str; 6] =
    ["HOST", "CONTENT-LENGTH", "TRANSFER-ENCODING", "TRAILER", "AUTHORIZATION", "TE"];

/// Max number of fields in a block, as Gunicorn clamps it.
#[inline]
pub(crate) fn field_count_limit(limits: &Limits) -> usize {
    if limits.fields == 0 || limits.fields > MAX_HEADERS { MAX_HEADERS } else { limits.fields }
}

/// Max bytes of one field line (0 means Gunicorn's default 8190).
#[inline]
pub(crate) fn field_size_limit(limits: &Limits) -> usize {
    if limits.field_size == 0 { DEFAULT_FIELD_SIZE } else { limits.field_size }
}

/// Gunicorn's `max_buffer_headers`: `fields * (field_size + 2) + 4`.
#[inline]
pub(crate) fn max_block_bytes(limits: &Limits) -> usize {
    field_count_limit(limits)
        .saturating_mul(field_size_limit(limits).saturating_add(2))
        .saturating_add(4)
}

/// Outcome of looking for the empty line that ends a field block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockScan {
    /// The block ends here: the index just past the empty line's CRLF. The field lines are
    /// `buf[..end - 2]`, each terminated by CRLF.
    Complete(usize),
    /// No empty line yet; scanning may resume at this index (the start of the last,
    /// unterminated line).
    Partial(usize),
}

/// Scan `buf` (which starts at a line start) from `from` (a line start) for the empty line.
/// Every LF must be preceded by CR (RFC 9112 §2.2): a bare LF is `InvalidHeader` at once,
/// as Gunicorn does, rather than waiting for a terminator that will never come.
pub(crate) fn scan_block(buf: &[u8], from: usize) -> Result<BlockScan, ParseError> {
    let mut pos = from;
    loop {
        let Some(off) = memchr(b'\n', &buf[pos..]) else {
            return Ok(BlockScan::Partial(pos));
        };
        let lf = pos + off;
        if lf == 0 || buf[lf - 1] != b'\r' || lf == pos {
            return Err(ParseError::new(ErrorKind::InvalidHeader, "bare LF as line terminator"));
        }
        if lf == pos + 1 {
            return Ok(BlockScan::Complete(lf + 1));
        }
        pos = lf + 1;
    }
}

/// Which section a block is and what the peer may send in it.
pub(crate) struct FieldRules<'a> {
    pub(crate) limits: &'a Limits,
    /// Parsing a trailer section (forbidden names refused, `Expect` not interpreted).
    pub(crate) trailer: bool,
    /// The peer may send the underscore names in `limits.forwarder_headers`.
    pub(crate) trusted: bool,
    /// Request version, for `Expect: 100-continue`.
    pub(crate) version: (u8, u8),
}

/// Parsed fields of one block.
pub(crate) struct Fields {
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) expect_continue: bool,
}

/// Split `block` (CRLF-terminated lines, no bare LF, as validated by [`scan_block`]) into
/// fields with Gunicorn's rules.
pub(crate) fn parse_fields(block: &[u8], rules: &FieldRules<'_>) -> Result<Fields, ParseError> {
    let limits = rules.limits;
    let max_fields = field_count_limit(limits);
    let max_size = field_size_limit(limits);
    let mut headers = Vec::with_capacity(8);
    let mut expect_continue = false;
    let mut count = 0usize;
    let mut seen_host = false;
    let mut seen_content_type = false;
    let mut pos = 0usize;

    while pos < block.len() {
        if count >= max_fields {
            return Err(ParseError::new(
                ErrorKind::LimitRequestHeaders,
                "limit request headers fields",
            ));
        }
        let (line, next) = next_line(block, pos);
        pos = next;
        let mut field_len = line.len() + 2;

        let colon = match memchr(b':', line) {
            Some(c) if c > 0 => c,
            _ => return Err(invalid_header(line)),
        };
        let mut raw_name = &line[..colon];
        if limits.strip_header_spaces {
            raw_name = trim_ows_end(raw_name);
        }
        if !is_token(raw_name) {
            return Err(ParseError::new(ErrorKind::InvalidHeaderName, lossy(raw_name)));
        }
        let name = upper_ascii_string(raw_name);
        if rules.trailer && FORBIDDEN_TRAILERS.contains(&name.as_str()) {
            return Err(ParseError::new(ErrorKind::InvalidHeaderName, name));
        }

        let first = trim_ows(&line[colon + 1..]);
        let mut value: Vec<u8>;
        if pos < block.len() && matches!(block[pos], b' ' | b'\t') {
            value = first.to_vec();
            while pos < block.len() && matches!(block[pos], b' ' | b'\t') {
                if !limits.permit_obsolete_folding {
                    return Err(ParseError::new(ErrorKind::ObsoleteFolding, name));
                }
                let (cont, next) = next_line(block, pos);
                pos = next;
                field_len += cont.len() + 2;
                if field_len > max_size {
                    return Err(field_too_large());
                }
                value.push(b' ');
                value.extend_from_slice(trim_ows(cont));
            }
        } else {
            value = first.to_vec();
        }

        if value.iter().any(|&b| is_field_ctl(b)) {
            return Err(ParseError::new(ErrorKind::InvalidHeader, name));
        }
        if field_len > max_size {
            return Err(field_too_large());
        }
        count += 1;

        // Header policy (shared by every parser path in Gunicorn).
        if name == "HOST" || name == "CONTENT-TYPE" {
            let seen = if name == "HOST" { &mut seen_host } else { &mut seen_content_type };
            if *seen {
                return Err(ParseError::new(ErrorKind::InvalidHeader, format!("duplicate {name}")));
            }
            *seen = true;
        }
        if !rules.trailer && name == "EXPECT" {
            if value.eq_ignore_ascii_case(b"100-continue") {
                // RFC 9110 §10.1.1: an HTTP/1.0 100-continue expectation is ignored.
                if rules.version >= (1, 1) {
                    expect_continue = true;
                }
            } else {
                return Err(ParseError::new(ErrorKind::ExpectationFailed, lossy(&value)));
            }
        }
        if name.contains('_') {
            let forwarded = rules.trusted
                && !rules.trailer
                && limits.forwarder_headers.iter().any(|f| f == &name || f == "*");
            if !forwarded {
                match limits.header_map {
                    HeaderMapPolicy::Dangerous => {}
                    HeaderMapPolicy::Drop => continue,
                    HeaderMapPolicy::Refuse => {
                        return Err(ParseError::new(ErrorKind::InvalidHeaderName, name));
                    }
                }
            }
        }
        headers.push((name, value));
    }
    Ok(Fields { headers, expect_continue })
}

/// The line starting at `pos` (without its CRLF) and the index of the next line.
#[inline]
fn next_line(block: &[u8], pos: usize) -> (&[u8], usize) {
    match memchr(b'\n', &block[pos..]) {
        // scan_block guarantees every LF follows a CR.
        Some(off) => (&block[pos..pos + off - 1], pos + off + 1),
        None => (&block[pos..], block.len()),
    }
}

fn field_too_large() -> ParseError {
    ParseError::new(ErrorKind::LimitRequestHeaders, "limit request headers fields size")
}

fn invalid_header(line: &[u8]) -> ParseError {
    ParseError::new(ErrorKind::InvalidHeader, lossy(line))
}

/// Bytes as text for an error detail (latin-1, as Gunicorn decodes them), shortened.
pub(crate) fn lossy(b: &[u8]) -> String {
    b.iter().take(256).map(|&c| char::from(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(limits: &Limits) -> FieldRules<'_> {
        FieldRules { limits, trailer: false, trusted: false, version: (1, 1) }
    }

    #[test]
    fn scan_finds_end_and_rejects_bare_lf() {
        assert_eq!(scan_block(b"\r\n", 0).unwrap(), BlockScan::Complete(2));
        assert_eq!(scan_block(b"A: b\r\n\r\nrest", 0).unwrap(), BlockScan::Complete(8));
        assert_eq!(scan_block(b"A: b\r\nB", 0).unwrap(), BlockScan::Partial(6));
        assert_eq!(scan_block(b"A: b\r", 0).unwrap(), BlockScan::Partial(0));
        let e = scan_block(b"A: b\nB: c\r\n\r\n", 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidHeader);
        let e = scan_block(b"A: b\r\n\n", 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidHeader);
        let e = scan_block(b"\n", 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidHeader);
    }

    #[test]
    fn limits_clamped() {
        let l = Limits { fields: 0, field_size: 0, ..Limits::default() };
        assert_eq!(field_count_limit(&l), 32768);
        assert_eq!(field_size_limit(&l), 8190);
        assert_eq!(max_block_bytes(&Limits::default()), 100 * 8192 + 4);
    }

    #[test]
    fn trailer_rules() {
        let l = Limits::default();
        let r = FieldRules { limits: &l, trailer: true, trusted: true, version: (1, 1) };
        let f = parse_fields(b"Vary: *\r\nExpect: whatever\r\n", &r).unwrap();
        assert_eq!(f.headers.len(), 2);
        assert!(!f.expect_continue);
        for bad in ["Host", "content-length", "Transfer-Encoding", "Trailer", "Authorization", "TE"]
        {
            let block = format!("{bad}: x\r\n");
            let e = parse_fields(block.as_bytes(), &r).map(|_| ()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidHeaderName, "{bad}");
        }
        // Forwarder headers are never honoured from trailers.
        let f = parse_fields(b"SCRIPT_NAME: /x\r\n", &r).unwrap();
        assert!(f.headers.is_empty());
    }

    #[test]
    fn folding_joins_with_one_space() {
        let l = Limits { permit_obsolete_folding: true, ..Limits::default() };
        let f = parse_fields(b"A: one \r\n \t two\r\n\tthree \r\n", &rules(&l)).unwrap();
        assert_eq!(f.headers, vec![("A".to_string(), b"one two three".to_vec())]);
    }
}
