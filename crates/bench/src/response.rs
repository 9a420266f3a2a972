//! Minimal HTTP/1.x response parsing for the client: the response head
//! (status, framing, connection persistence) and an incremental chunked-body
//! decoder. Pure functions over byte slices; no I/O and no allocation.

use memchr::memmem;

/// Longest response head accepted (bytes).
pub const MAX_HEAD: usize = 64 * 1024;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Body runs until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Body framing.
    pub framing: Framing,
    /// The connection cannot be reused after this response.
    pub close: bool,
    /// Length of the head including the final blank line.
    pub len: usize,
}

/// The response is not valid HTTP/1.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(token))
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
}

/// Parses a response head at the start of `buf`. `Ok(None)` means more bytes are
/// needed. `head_request`: the request was HEAD (no body follows);
/// `want_close`: the request asked for `Connection: close`; `http10_request`:
/// the request was HTTP/1.0 (the connection closes unless the server answers
/// `Connection: keep-alive`).
pub fn parse_head(
    buf: &[u8],
    head_request: bool,
    want_close: bool,
    http10_request: bool,
) -> Result<Option<Head>, Malformed> {
    let Some(end) = memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD { Err(Malformed) } else { Ok(None) };
    };
    let len = end + 4;
    let mut lines = buf[..end].split(|&b| b == b'\n');
    let status_line = lines.next().ok_or(Malformed)?;
    // "HTTP/1.x SSS reason"
    if status_line.len() < 12 || &status_line[..7] != b"HTTP/1." || status_line[8] != b' ' {
        return Err(Malformed);
    }
    let minor = status_line[7];
    let code = &status_line[9..12];
    if !code.iter().all(u8::is_ascii_digit)
        || status_line.get(12).is_some_and(|&b| b != b' ' && b != b'\r')
    {
        return Err(Malformed);
    }
    let status = code.iter().fold(0u16, |a, &b| a * 10 + u16::from(b - b'0'));
    if status < 100 {
        return Err(Malformed);
    }
    let mut length = None;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keepalive = false;
    for line in lines {
        let Some(colon) = memchr::memchr(b':', line) else {
            if trim(line).is_empty() {
                continue;
            }
            return Err(Malformed);
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_u64(value).ok_or(Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|t| trim(t).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            conn_close |= has_token(value, b"close");
            conn_keepalive |= has_token(value, b"keep-alive");
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let http10 = minor == b'0' || http10_request;
    let close =
        want_close || conn_close || framing == Framing::UntilClose || (http10 && !conn_keepalive);
    Ok(Some(Head { status, framing, close, len }))
}

/// Incremental `Transfer-Encoding: chunked` body decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Expecting trailer lines or the final blank line.
    Trailer,
    /// The body is complete.
    Done,
}

impl Chunked {
    /// Consumes as much of `buf` as possible; returns the bytes consumed. Stops
    /// early at `Done` or when a line is incomplete (call again with more bytes).
    pub fn advance(&mut self, buf: &[u8]) -> Result<usize, Malformed> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match *self {
                Chunked::Done => return Ok(pos),
                Chunked::Data(n) => {
                    let take = (rest.len() as u64).min(n);
                    pos += take as usize;
                    *self = if take == n { Chunked::DataEnd } else { Chunked::Data(n - take) };
                    if take < n {
                        return Ok(pos);
                    }
                }
                Chunked::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        *self = Chunked::Size;
                    }
                    [b'\n', ..] => {
                        pos += 1;
                        *self = Chunked::Size;
                    }
                    [] | [b'\r'] => return Ok(pos),
                    _ => return Err(Malformed),
                },
                Chunked::Size | Chunked::Trailer => {
                    let Some(nl) = memchr::memchr(b'\n', rest) else {
                        return if rest.len() > 4096 { Err(Malformed) } else { Ok(pos) };
                    };
                    let line = trim(&rest[..nl]);
                    pos += nl + 1;
                    if *self == Chunked::Trailer {
                        if line.is_empty() {
                            *self = Chunked::Done;
                        }
                        continue;
                    }
                    let hex = line.split(|&b| b == b';').next().map(trim).unwrap_or(&[]);
                    if hex.is_empty() || hex.len() > 15 {
                        return Err(Malformed);
                    }
                    let mut n = 0u64;
                    for &b in hex {
                        let d = (b as char).to_digit(16).ok_or(Malformed)?;
                        n = n * 16 + u64::from(d);
                    }
                    *self = if n == 0 { Chunked::Trailer } else { Chunked::Data(n) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_simple_head() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let h = parse_head(r, false, false, false).unwrap().unwrap();
        assert_eq!(
            h,
            Head { status: 200, framing: Framing::Length(5), close: false, len: r.len() - 5 }
        );
        assert_eq!(parse_head(&r[..20], false, false, false), Ok(None));
    }

    #[test]
    fn connection_semantics() {
        let p = |r: &[u8], http10| parse_head(r, false, false, http10).unwrap().unwrap();
        assert!(
            p(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false).close
        );
        assert!(p(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).close);
        assert!(
            !p(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", false)
                .close
        );
        assert!(p(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true).close);
        assert!(
            !p(b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n", true)
                .close
        );
        let h = p(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
        let h = p(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!((h.framing, h.close), (Framing::Empty, false));
        let h = p(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false);
        assert_eq!((h.status, h.framing), (500, Framing::Chunked));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, true, false)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.close), (Framing::Empty, true));
    }

    #[test]
    fn rejects_garbage() {
        for r in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad line\r\n\r\n",
            b"HTTP/1.1 099 X\r\n\r\n",
            b"HTTP/1.1 2000\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(r, false, false, false),
                Err(Malformed),
                "{}",
                String::from_utf8_lossy(r)
            );
        }
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD], false, false, false), Err(Malformed));
    }

    #[test]
    fn decodes_chunked_in_pieces() {
        let body =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        // whole
        let mut c = Chunked::Size;
        assert_eq!(c.advance(body), Ok(body.len() - 4));
        assert_eq!(c, Chunked::Done);
        // byte by byte, feeding unconsumed bytes back like the client's buffer does
        let mut c = Chunked::Size;
        let mut pending: Vec<u8> = Vec::new();
        let mut total = 0;
        for &b in body.iter() {
            pending.push(b);
            let n = c.advance(&pending).unwrap();
            total += n;
            pending.drain(..n);
            if c == Chunked::Done {
                break;
            }
        }
        assert_eq!(c, Chunked::Done);
        assert_eq!(total, body.len() - 4);
        assert_eq!(Chunked::Size.advance(b"zz\r\n"), Err(Malformed));
        assert_eq!(Chunked::Data(0).advance(b"xx"), Err(Malformed));
    }
}
