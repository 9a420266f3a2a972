//! Request-head parser: request line + header block + body framing, with Gunicorn's rules
//! (`Request.parse_request_line`, `Message.parse_headers`, `Message.set_body_reader` and
//! `should_close` in `gunicorn/http/message.py`, 27.x). Pure function over a byte buffer; the
//! caller re-invokes it with more bytes while it answers `Ok(None)`.
//!
//! Deliberate choices where the brief or RFCs differ from Gunicorn's Python code:
//! * only HTTP/1.0 and 1.1 are accepted (Gunicorn accepts 1.0–1.9) unless
//!   `permit_unconventional_http_version`;
//! * `Connection` is read as a token list (`close` anywhere wins, then `keep-alive`), where
//!   Gunicorn compares the whole value of the first `Connection` header;
//! * every header line counts toward `limit_request_fields`, also underscore names dropped by
//!   `header_map` (Gunicorn counts only the kept ones);
//! * a request line limit of 0 ("unlimited") is capped at 1 MiB, like Gunicorn's C parser;
//! * for an authority-form `CONNECT` target, `path` is the authority (urlsplit would mangle it).

use crate::fields::{BlockScan, FieldRules, lossy, max_block_bytes, parse_fields, scan_block};
use crate::{BodyFraming, ErrorKind, Limits, ParseError, RequestHead};
use memchr::{memchr, memmem};

/// Cap for the request line when `limits.request_line` is 0.
const UNLIMITED_REQUEST_LINE: usize = 1024 * 1024;

/// Parse one request head from the start of `buf`.
///
/// * `Ok(Some((head, consumed)))`: a complete head; `consumed` bytes (through the blank line)
///   belong to it, the body (if any) starts at `buf[consumed..]`.
/// * `Ok(None)`: more bytes are needed. Limits are enforced on incomplete input too: a request
///   line longer than the limit without a CRLF yet fails at once, and so does a head that
///   already exceeds `fields * (field_size + 2) + 4` bytes.
/// * `Err(e)`: the request is invalid; answer `e.status()` and close.
///
/// One empty line (CRLF) before the request line is skipped (RFC 9112 §2.2, as Gunicorn);
/// it counts in `consumed`. If the client closes the connection while this returns
/// `Ok(None)` on a non-empty buffer, that is [`ErrorKind::NoMoreData`].
///
/// `peer_trusted` says whether the peer is in `forwarded_allow_ips` (it may then send the
/// underscore headers listed in `limits.forwarder_headers`).
pub fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
    peer_trusted: bool,
) -> Result<Option<(RequestHead, usize)>, ParseError> {
    // RFC 9112 §2.2: ignore one leading CRLF (only one, and only CRLF).
    let start = match buf {
        [] | [b'\r'] => return Ok(None),
        [b'\r', b'\n', ..] => 2,
        _ => 0,
    };
    let rest = &buf[start..];

    let line_limit =
        if limits.request_line == 0 { UNLIMITED_REQUEST_LINE } else { limits.request_line };
    let line_len = match memchr(b'\n', rest) {
        Some(lf) => {
            if lf == 0 || rest[lf - 1] != b'\r' {
                return Err(ParseError::new(
                    ErrorKind::InvalidRequestLine,
                    "bare LF as line terminator",
                ));
            }
            let len = lf - 1;
            if len > line_limit {
                return Err(line_too_long(len, line_limit));
            }
            len
        }
        None => {
            if rest.len() > line_limit + 2 {
                return Err(line_too_long(rest.len(), line_limit));
            }
            return Ok(None);
        }
    };
    let line = parse_request_line(&rest[..line_len], limits)?;

    let head_start = start + line_len + 2;
    let h = &buf[head_start..];
    let end = match scan_block(h, 0)? {
        BlockScan::Complete(end) => end,
        BlockScan::Partial(_) => {
            if h.len() > max_block_bytes(limits) {
                return Err(ParseError::new(ErrorKind::LimitRequestHeaders, "max buffer headers"));
            }
            return Ok(None);
        }
    };
    let rules = FieldRules { limits, trailer: false, trusted: peer_trusted, version: line.version };
    let fields = parse_fields(&h[..end - 2], &rules)?;
    let (framing, force_close) = body_framing(&fields.headers, line.version)?;
    let keep_alive = !force_close && keep_alive(&line.method, &fields.headers, line.version);

    let head = RequestHead {
        method: line.method,
        target: line.target.to_vec(),
        path: line.path.to_vec(),
        query: line.query.to_vec(),
        fragment: line.fragment.to_vec(),
        version: line.version,
        headers: fields.headers,
        framing,
        keep_alive,
        expect_continue: fields.expect_continue,
    };
    Ok(Some((head, head_start + end)))
}

fn line_too_long(len: usize, limit: usize) -> ParseError {
    ParseError::new(ErrorKind::LimitRequestLine, format!("{len} bytes > {limit}"))
}

/// A validated request line, borrowing the target from the input.
struct RequestLine<'a> {
    method: String,
    target: &'a [u8],
    path: &'a [u8],
    query: &'a [u8],
    fragment: &'a [u8],
    version: (u8, u8),
}

/// Validate `method SP target SP version` (split on the first two single spaces; the version
/// part is whatever follows, so extra spaces end up failing the version check).
fn parse_request_line<'a>(line: &'a [u8], limits: &Limits) -> Result<RequestLine<'a>, ParseError> {
    let bad_line = || ParseError::new(ErrorKind::InvalidRequestLine, lossy(line));
    let sp1 = memchr(b' ', line).ok_or_else(bad_line)?;
    let sp2 = sp1 + 1 + memchr(b' ', &line[sp1 + 1..]).ok_or_else(bad_line)?;
    let method = &line[..sp1];
    let target = &line[sp1 + 1..sp2];
    let version = &line[sp2 + 1..];

    // Method: Gunicorn's conventional-method restriction, then the RFC 9110 token rule.
    let bad_method = || ParseError::new(ErrorKind::InvalidRequestMethod, lossy(method));
    if !limits.permit_unconventional_http_method
        && (!(3..=20).contains(&method.len())
            || method.iter().any(|&b| b.is_ascii_lowercase() || b == b'#'))
    {
        return Err(bad_method());
    }
    if !crate::token::is_token(method) {
        return Err(bad_method());
    }
    let method = if limits.casefold_http_method {
        crate::token::upper_ascii_string(method)
    } else {
        // A token is ASCII.
        crate::token::ascii_string(method.to_vec())
    };

    // Target: printable ASCII only (RFC 9112 §3.2, RFC 3986 §2), never empty, and the form
    // must fit the method.
    if target.is_empty() || target.iter().any(|&b| !(0x21..=0x7e).contains(&b)) {
        return Err(bad_line());
    }
    let is_asterisk = target == b"*";
    if is_asterisk && method != "OPTIONS" {
        return Err(bad_line());
    }
    let origin_or_absolute = target[0] == b'/' || has_scheme(target);
    let (path, query, fragment): (&[u8], &[u8], &[u8]) = if is_asterisk {
        (target, b"", b"")
    } else if !origin_or_absolute {
        if method != "CONNECT" {
            return Err(bad_line());
        }
        // authority-form: the path is the authority itself.
        (target, b"", b"")
    } else {
        split_target(target).ok_or_else(bad_line)?
    };

    // Version: exactly HTTP/d.d.
    let version = match version {
        [b'H', b'T', b'T', b'P', b'/', maj, b'.', min]
            if maj.is_ascii_digit() && min.is_ascii_digit() =>
        {
            (maj - b'0', min - b'0')
        }
        _ => return Err(ParseError::new(ErrorKind::InvalidHTTPVersion, lossy(version))),
    };
    if !limits.permit_unconventional_http_version && version != (1, 0) && version != (1, 1) {
        return Err(ParseError::new(
            ErrorKind::InvalidHTTPVersion,
            format!("HTTP/{}.{}", version.0, version.1),
        ));
    }
    Ok(RequestLine { method, target, path, query, fragment, version })
}

/// Whether `target` is absolute-form: a valid scheme (RFC 3986: a letter, then letters,
/// digits, `+`, `-`, `.`) followed by `://`. `1http://x` and `ht/tp://x` are not.
fn has_scheme(target: &[u8]) -> bool {
    memmem::find(target, b"://").is_some_and(|end| {
        end > 0
            && target[0].is_ascii_alphabetic()
            && target[..end]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    })
}

/// Split a target into `(path, query, fragment)` the way Gunicorn's `split_request_uri`
/// (`urllib.parse.urlsplit`, with a leading `//` kept as path) does. `None` where urlsplit
/// raises (unbalanced or invalid bracketed host).
fn split_target(target: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut rest = target;
    if !target.starts_with(b"//") {
        // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"
        if let Some(i) = memchr(b':', rest)
            && i > 0
            && rest[0].is_ascii_alphabetic()
            && rest[..i]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            rest = &rest[i + 1..];
            if let Some(after) = rest.strip_prefix(b"//") {
                let end = after
                    .iter()
                    .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                    .unwrap_or(after.len());
                check_netloc(&after[..end])?;
                rest = &after[end..];
            }
        }
    }
    let (rest, fragment) = match memchr(b'#', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let (path, query) = match memchr(b'?', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    Some((path, query, fragment))
}

/// urlsplit's netloc checks: brackets balanced, and a bracketed host is an IPv6 address
/// (optionally with a zone) or an IPvFuture literal.
fn check_netloc(netloc: &[u8]) -> Option<()> {
    let open = memchr(b'[', netloc);
    let close = memchr(b']', netloc);
    match (open, close) {
        (None, None) => Some(()),
        (Some(o), Some(_)) => {
            let inner = &netloc[o + 1..];
            let inner = &inner[..memchr(b']', inner)?];
            if let Some(fut) = inner.strip_prefix(b"v") {
                let dot = memchr(b'.', fut)?;
                let ok =
                    dot > 0 && dot + 1 < fut.len() && fut[..dot].iter().all(u8::is_ascii_hexdigit);
                return ok.then_some(());
            }
            let addr = inner.split(|&b| b == b'%').next()?;
            let addr = std::str::from_utf8(addr).ok()?;
            addr.parse::<std::net::Ipv6Addr>().ok().map(|_| ())
        }
        _ => None,
    }
}

/// Body framing from Content-Length / Transfer-Encoding (Gunicorn's `set_body_reader`).
/// Returns the framing and whether the connection must close afterwards (a compressing
/// coding before `chunked`).
fn body_framing(
    headers: &[(String, Vec<u8>)],
    version: (u8, u8),
) -> Result<(BodyFraming, bool), ParseError> {
    let mut content_length: Option<&[u8]> = None;
    let mut has_te = false;
    let mut chunked = false;
    let mut force_close = false;
    let bad_te = || ParseError::new(ErrorKind::InvalidHeader, "TRANSFER-ENCODING");
    let bad_cl = || ParseError::new(ErrorKind::InvalidHeader, "CONTENT-LENGTH");

    for (name, value) in headers {
        if name == "CONTENT-LENGTH" {
            if content_length.is_some() {
                return Err(bad_cl());
            }
            content_length = Some(value);
        } else if name == "TRANSFER-ENCODING" {
            has_te = true;
            for coding in value.split(|&b| b == b',') {
                let coding = crate::token::trim_ows(coding);
                if coding.eq_ignore_ascii_case(b"chunked") {
                    // Stacked chunking is never intended.
                    if chunked {
                        return Err(bad_te());
                    }
                    chunked = true;
                } else if coding.eq_ignore_ascii_case(b"identity") {
                    if chunked {
                        return Err(bad_te());
                    }
                } else if coding.eq_ignore_ascii_case(b"gzip")
                    || coding.eq_ignore_ascii_case(b"deflate")
                    || coding.eq_ignore_ascii_case(b"compress")
                {
                    // chunked must be the last coding.
                    if chunked {
                        return Err(bad_te());
                    }
                    force_close = true;
                } else {
                    return Err(ParseError::new(
                        ErrorKind::UnsupportedTransferCoding,
                        lossy(value),
                    ));
                }
            }
        }
    }

    // RFC 9112 §6.3: a request whose Transfer-Encoding does not end in chunked has no
    // determinable length (Gunicorn 27: 400 InvalidHeader).
    if has_te && !chunked {
        return Err(bad_te());
    }
    if chunked {
        if version < (1, 1) {
            return Err(bad_te());
        }
        if content_length.is_some() {
            return Err(bad_cl());
        }
        return Ok((BodyFraming::Chunked, force_close));
    }
    match content_length {
        None => Ok((BodyFraming::Empty, force_close)),
        Some(v) => {
            // 1*DIGIT without a leading zero: `007` is read as octal or ignored by some
            // front ends, so it is refused rather than guessed (Gunicorn takes it as 7).
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || (v.len() > 1 && v[0] == b'0') {
                return Err(bad_cl());
            }
            let mut n: u64 = 0;
            for &d in v {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d - b'0')))
                    .ok_or_else(bad_cl)?;
            }
            Ok((BodyFraming::Length(n), force_close))
        }
    }
}

/// Connection persistence when nothing forces a close: never after CONNECT (the bytes that
/// follow are tunnel data); else the first `Connection` header's tokens (`close` wins over
/// `keep-alive`); else the version default.
fn keep_alive(method: &str, headers: &[(String, Vec<u8>)], version: (u8, u8)) -> bool {
    if method == "CONNECT" {
        return false;
    }
    if let Some((_, v)) = headers.iter().find(|(n, _)| n == "CONNECTION") {
        let mut keep = false;
        for token in v.split(|&b| b == b',') {
            let token = crate::token::trim_ows(token);
            if token.eq_ignore_ascii_case(b"close") {
                return false;
            }
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
        if keep {
            return true;
        }
    }
    version > (1, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeaderMapPolicy;

    fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ParseError> {
        parse_request_head(buf, &Limits::default(), false)
    }

    fn ok(buf: &[u8]) -> RequestHead {
        let (head, used) = parse(buf).unwrap().expect("complete head");
        assert_eq!(used, buf.len(), "consumed");
        head
    }

    fn ok_with(buf: &[u8], limits: &Limits, trusted: bool) -> RequestHead {
        parse_request_head(buf, limits, trusted).unwrap().expect("complete head").0
    }

    fn err(buf: &[u8]) -> ErrorKind {
        err_with(buf, &Limits::default())
    }

    fn err_with(buf: &[u8], limits: &Limits) -> ErrorKind {
        match parse_request_head(buf, limits, false) {
            Err(e) => e.kind(),
            Ok(r) => {
                panic!("expected an error for {:?}, got {:?}", String::from_utf8_lossy(buf), r)
            }
        }
    }

    #[test]
    fn hello_world() {
        let h = ok(b"GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n");
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, b"/hello?x=1");
        assert_eq!(h.path, b"/hello");
        assert_eq!(h.query, b"x=1");
        assert_eq!(h.fragment, b"");
        assert_eq!(h.version, (1, 1));
        assert_eq!(
            h.headers,
            vec![("HOST".into(), b"example.com".to_vec()), ("USER-AGENT".into(), b"t".to_vec())]
        );
        assert_eq!(h.framing, BodyFraming::Empty);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
    }

    #[test]
    fn incomplete_every_prefix() {
        let req = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let head_len = req.len() - 3;
        for i in 0..head_len {
            assert_eq!(parse(&req[..i]).unwrap(), None, "prefix {i}");
        }
        let (h, used) = parse(req).unwrap().unwrap();
        assert_eq!(used, head_len);
        assert_eq!(h.framing, BodyFraming::Length(3));
    }

    #[test]
    fn pipelined_heads() {
        let buf = b"GET /first HTTP/1.1\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n";
        let (a, n) = parse(buf).unwrap().unwrap();
        assert_eq!(a.path, b"/first");
        let (b, m) = parse(&buf[n..]).unwrap().unwrap();
        assert_eq!(b.path, b"/second");
        assert_eq!(n + m, buf.len());
    }

    #[test]
    fn leading_crlf() {
        let h = ok(b"\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, b"/");
        assert_eq!(parse(b"\r").unwrap(), None);
        assert_eq!(err(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);
    }

    #[test]
    fn request_line_errors() {
        assert_eq!(err(b"GET /\r\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET\r\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET / HTTP/1.1\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET / HTTP/1.1\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET  / HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET / HTTP/1.1 \r\n\r\n"), ErrorKind::InvalidHTTPVersion);
        assert_eq!(err(b"GET / extra HTTP/1.1\r\n\r\n"), ErrorKind::InvalidHTTPVersion);
    }

    #[test]
    fn request_line_limit() {
        let limits = Limits { request_line: 20, ..Limits::default() };
        // 20 bytes exactly is fine.
        let line = b"GET /123456 HTTP/1.1\r\n\r\n";
        assert_eq!(line.len() - 4, 20);
        assert!(parse_request_head(line, &limits, false).unwrap().is_some());
        assert_eq!(
            err_with(b"GET /1234567 HTTP/1.1\r\n\r\n", &limits),
            ErrorKind::LimitRequestLine
        );
        // Detected before the CRLF arrives.
        assert_eq!(err_with(&[b'A'; 23], &limits), ErrorKind::LimitRequestLine);
        assert_eq!(parse_request_head(&[b'A'; 22], &limits, false).unwrap(), None);
        // Default limit 4094.
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 4090));
        long.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert_eq!(err(&long), ErrorKind::LimitRequestLine);
    }

    #[test]
    fn methods() {
        for bad in
            [&b"get / HTTP/1.1\r\n\r\n"[..], b"GE / HTTP/1.1\r\n\r\n", b"G#T / HTTP/1.1\r\n\r\n"]
        {
            assert_eq!(err(bad), ErrorKind::InvalidRequestMethod);
        }
        assert_eq!(
            err(b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\n\r\n"),
            ErrorKind::InvalidRequestMethod
        );
        assert_eq!(err(b"GE(T / HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestMethod);
        assert_eq!(err(b"G\xc3\x89T / HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestMethod);
        assert_eq!(ok(b"MKCALENDAR / HTTP/1.1\r\n\r\n").method, "MKCALENDAR");
        assert_eq!(ok(b"X-CUSTOM_1 / HTTP/1.1\r\n\r\n").method, "X-CUSTOM_1");

        let permissive = Limits { permit_unconventional_http_method: true, ..Limits::default() };
        assert_eq!(ok_with(b"get / HTTP/1.1\r\n\r\n", &permissive, false).method, "get");
        assert_eq!(ok_with(b"GE / HTTP/1.1\r\n\r\n", &permissive, false).method, "GE");
        assert_eq!(
            err_with(b"GE(T / HTTP/1.1\r\n\r\n", &permissive),
            ErrorKind::InvalidRequestMethod
        );
        let casefold = Limits { casefold_http_method: true, ..permissive };
        assert_eq!(ok_with(b"get / HTTP/1.1\r\n\r\n", &casefold, false).method, "GET");
    }

    #[test]
    fn targets() {
        assert_eq!(ok(b"OPTIONS * HTTP/1.1\r\n\r\n").path, b"*");
        assert_eq!(err(b"GET * HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);
        let c = ok(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
        assert_eq!(c.path, b"example.com:443");
        assert!(!c.keep_alive);
        assert_eq!(ok(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n").path, b"[::1]:443");
        assert_eq!(err(b"GET example.com:443 HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET foo HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET /\x00 HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET /\x7f HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);

        let h = ok(b"GET /a/b?c=d&e#frag HTTP/1.1\r\n\r\n");
        assert_eq!(
            (h.path.as_slice(), h.query.as_slice(), h.fragment.as_slice()),
            (&b"/a/b"[..], &b"c=d&e"[..], &b"frag"[..])
        );
        assert_eq!(h.target, b"/a/b?c=d&e#frag");
        let h = ok(b"GET /a#f?notquery HTTP/1.1\r\n\r\n");
        assert_eq!(
            (h.path.as_slice(), h.query.as_slice(), h.fragment.as_slice()),
            (&b"/a"[..], &b""[..], &b"f?notquery"[..])
        );
        let h = ok(b"GET //double/slash?q HTTP/1.1\r\n\r\n");
        assert_eq!((h.path.as_slice(), h.query.as_slice()), (&b"//double/slash"[..], &b"q"[..]));
        let h = ok(b"GET http://user:pw@host:8080/p/q?x#y HTTP/1.1\r\n\r\n");
        assert_eq!(
            (h.path.as_slice(), h.query.as_slice(), h.fragment.as_slice()),
            (&b"/p/q"[..], &b"x"[..], &b"y"[..])
        );
        for bad in [
            &b"GET 1http://127.0.0.1/p HTTP/1.1\r\n\r\n"[..],
            b"GET ht/tp://h/ HTTP/1.1\r\n\r\n",
            b"GET ://h/ HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                err(bad),
                ErrorKind::InvalidRequestLine,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(ok(b"GET svn+ssh://h/p HTTP/1.1\r\n\r\n").path, b"/p");
        let h = ok(b"GET https://host?x HTTP/1.1\r\n\r\n");
        assert_eq!((h.path.as_slice(), h.query.as_slice()), (&b""[..], &b"x"[..]));
        let h = ok(b"GET http://[::1]:80/v6 HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, b"/v6");
        assert_eq!(err(b"GET http://[::1/x HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(err(b"GET http://[nothex]/x HTTP/1.1\r\n\r\n"), ErrorKind::InvalidRequestLine);
        assert_eq!(ok(b"GET /p:x HTTP/1.1\r\n\r\n").path, b"/p:x");
    }

    #[test]
    fn versions() {
        assert_eq!(ok(b"GET / HTTP/1.0\r\n\r\n").version, (1, 0));
        for bad in [
            &b"HTTP/1.2"[..],
            b"HTTP/2.0",
            b"HTTP/0.9",
            b"HTTP/1",
            b"HTTP/11.1",
            b"http/1.1",
            b"FTP/1.1",
            b"HTTP/1.10",
        ] {
            let mut req = b"GET / ".to_vec();
            req.extend_from_slice(bad);
            req.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                err(&req),
                ErrorKind::InvalidHTTPVersion,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let permissive = Limits { permit_unconventional_http_version: true, ..Limits::default() };
        assert_eq!(ok_with(b"GET / HTTP/2.0\r\n\r\n", &permissive, false).version, (2, 0));
        assert_eq!(
            err_with(b"GET / HTTP/1.10\r\n\r\n", &permissive),
            ErrorKind::InvalidHTTPVersion
        );
    }

    #[test]
    fn header_values() {
        let h = ok(b"GET / HTTP/1.1\r\nName: \t value \t \r\nEmpty:\r\nObs: caf\xe9\r\n\r\n");
        assert_eq!(h.header("NAME"), Some(&b"value"[..]));
        assert_eq!(h.header("EMPTY"), Some(&b""[..]));
        assert_eq!(h.header("OBS"), Some(&b"caf\xe9"[..]));
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\x07c\r\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\x7fc\r\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\nc\r\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(ok(b"GET / HTTP/1.1\r\nA: b\tc\r\n\r\n").header("A"), Some(&b"b\tc"[..]));
    }

    #[test]
    fn header_names() {
        assert_eq!(err(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\n: value\r\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), ErrorKind::InvalidHeaderName);
        assert_eq!(err(b"GET / HTTP/1.1\r\nName : x\r\n\r\n"), ErrorKind::InvalidHeaderName);
        assert_eq!(err(b"GET / HTTP/1.1\r\nN\xc3\xa4me: x\r\n\r\n"), ErrorKind::InvalidHeaderName);
        assert_eq!(err(b"GET / HTTP/1.1\r\n Leading: x\r\n\r\n"), ErrorKind::InvalidHeaderName);
        let strip = Limits { strip_header_spaces: true, ..Limits::default() };
        assert_eq!(
            ok_with(b"GET / HTTP/1.1\r\nName \t: x\r\n\r\n", &strip, false).header("NAME"),
            Some(&b"x"[..])
        );
        let h = ok(b"GET / HTTP/1.1\r\nx-Mixed-case!: v\r\n\r\n");
        assert_eq!(h.headers[0].0, "X-MIXED-CASE!");
    }

    #[test]
    fn obsolete_folding() {
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), ErrorKind::ObsoleteFolding);
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n"), ErrorKind::ObsoleteFolding);
        let fold = Limits { permit_obsolete_folding: true, ..Limits::default() };
        let h = ok_with(b"GET / HTTP/1.1\r\nA: b \r\n  c\r\nD: e\r\n\r\n", &fold, false);
        assert_eq!(h.headers, vec![("A".into(), b"b c".to_vec()), ("D".into(), b"e".to_vec())]);
        // The continuation counts toward the field size.
        let small = Limits { field_size: 14, ..fold };
        assert_eq!(
            err_with(b"GET / HTTP/1.1\r\nA: bcd\r\n efghij\r\n\r\n", &small),
            ErrorKind::LimitRequestHeaders
        );
    }

    #[test]
    fn header_limits() {
        let two = Limits { fields: 2, ..Limits::default() };
        assert!(
            parse_request_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", &two, false)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            err_with(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &two),
            ErrorKind::LimitRequestHeaders
        );
        // Dropped underscore headers still count.
        assert_eq!(
            err_with(b"GET / HTTP/1.1\r\nA_1: 1\r\nB: 2\r\nC: 3\r\n\r\n", &two),
            ErrorKind::LimitRequestHeaders
        );

        let size = Limits { field_size: 10, ..Limits::default() };
        // "Abc: 12345" + CRLF = 12 > 10; "Ab: 12" + CRLF = 8.
        assert!(
            parse_request_head(b"GET / HTTP/1.1\r\nAb: 12\r\n\r\n", &size, false)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            err_with(b"GET / HTTP/1.1\r\nAbc: 12345\r\n\r\n", &size),
            ErrorKind::LimitRequestHeaders
        );

        // Head buffer cap on incomplete input: fields * (field_size + 2) + 4 = 2 * 12 + 4 = 28.
        let tiny = Limits { fields: 2, field_size: 10, ..Limits::default() };
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        buf.extend_from_slice(&[b'a'; 28]);
        assert_eq!(parse_request_head(&buf, &tiny, false).unwrap(), None);
        buf.push(b'a');
        assert_eq!(err_with(&buf, &tiny), ErrorKind::LimitRequestHeaders);

        // field_size 0 falls back to 8190.
        let zero = Limits { field_size: 0, ..Limits::default() };
        let mut big = b"GET / HTTP/1.1\r\nA: ".to_vec();
        big.extend(std::iter::repeat_n(b'x', 8190));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(err_with(&big, &zero), ErrorKind::LimitRequestHeaders);
    }

    #[test]
    fn underscore_policy() {
        let req = b"GET / HTTP/1.1\r\nX_Thing: 1\r\nSCRIPT_NAME: /app\r\nA: b\r\n\r\n";
        let h = ok_with(req, &Limits::default(), false);
        assert_eq!(h.headers, vec![("A".into(), b"b".to_vec())]);
        let h = ok_with(req, &Limits::default(), true);
        assert_eq!(
            h.headers,
            vec![("SCRIPT_NAME".into(), b"/app".to_vec()), ("A".into(), b"b".to_vec())]
        );
        let refuse = Limits { header_map: HeaderMapPolicy::Refuse, ..Limits::default() };
        assert_eq!(err_with(req, &refuse), ErrorKind::InvalidHeaderName);
        // Trusted forwarder names are allowed even under refuse; others are not.
        let trusted_ok =
            parse_request_head(b"GET / HTTP/1.1\r\nSCRIPT_NAME: /a\r\n\r\n", &refuse, true);
        assert!(trusted_ok.unwrap().is_some());
        let dangerous = Limits { header_map: HeaderMapPolicy::Dangerous, ..Limits::default() };
        assert_eq!(ok_with(req, &dangerous, false).headers.len(), 3);
        let star = Limits { forwarder_headers: vec!["*".into()], ..refuse };
        assert_eq!(ok_with(req, &star, true).headers.len(), 3);
    }

    #[test]
    fn singleton_and_expect() {
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nContent-Type: a\r\nContent-Type: a\r\n\r\n"),
            ErrorKind::InvalidHeader
        );
        assert!(ok(b"GET / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
        assert!(!ok(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert_eq!(err(b"GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n"), ErrorKind::ExpectationFailed);
        assert_eq!(err(b"GET / HTTP/1.0\r\nExpect: x\r\n\r\n"), ErrorKind::ExpectationFailed);
    }

    #[test]
    fn content_length() {
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").framing,
            BodyFraming::Length(0)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\n").framing,
            BodyFraming::Length(5)
        );
        for bad in [
            "+1",
            "-1",
            "1, 1",
            "1 1",
            "0x10",
            "",
            "\u{b2}",
            "99999999999999999999999",
            "007",
            "00",
        ] {
            let req = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(err(req.as_bytes()), ErrorKind::InvalidHeader, "{bad:?}");
        }
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            ErrorKind::InvalidHeader
        );
    }

    #[test]
    fn transfer_encoding() {
        let te =
            |v: &str| format!("POST / HTTP/1.1\r\nTransfer-Encoding: {v}\r\n\r\n").into_bytes();
        let h = ok(&te("chunked"));
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(h.keep_alive);
        assert_eq!(ok(&te("CHUNKED")).framing, BodyFraming::Chunked);
        assert_eq!(ok(&te("\tchunked ")).framing, BodyFraming::Chunked);
        assert_eq!(ok(&te("identity, chunked")).framing, BodyFraming::Chunked);
        let h = ok(&te("gzip, chunked"));
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(!h.keep_alive);
        let h = ok(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(!h.keep_alive);
        for bad in [
            "chunked, chunked",
            "chunked, identity",
            "chunked, gzip",
            "gzip",
            "identity",
            "compress",
        ] {
            assert_eq!(err(&te(bad)), ErrorKind::InvalidHeader, "{bad}");
        }
        assert_eq!(err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), ErrorKind::InvalidHeader);
        for bad in ["br, chunked", "x-gzip, chunked", "chunked, ", "foo"] {
            assert_eq!(err(&te(bad)), ErrorKind::UnsupportedTransferCoding, "{bad}");
        }
        assert_eq!(
            err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ErrorKind::InvalidHeader
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            ErrorKind::InvalidHeader
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: identity\r\n\r\n"),
            ErrorKind::InvalidHeader
        );
    }

    #[test]
    fn connection_persistence() {
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.0\r\nConnection: upgrade\r\n\r\n").keep_alive);
        // Only the first Connection header counts.
        assert!(
            ok(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n").keep_alive
        );
    }

    #[test]
    fn bare_lf_in_headers() {
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nA: b\r\n\n"), ErrorKind::InvalidHeader);
        // A bare LF in the body after the head is not our business.
        let (_, n) = parse(b"GET / HTTP/1.1\r\n\r\n\nxyz").unwrap().unwrap();
        assert_eq!(n, 18);
    }

    #[test]
    fn request_line_errors_win_over_incomplete_headers() {
        assert_eq!(err(b"get / HTTP/1.1\r\nHost: a"), ErrorKind::InvalidRequestMethod);
    }
}
