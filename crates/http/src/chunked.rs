//! Incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1) with
//! Gunicorn's rules (`ChunkedReader` in `gunicorn/http/body.py`): hex-only sizes, chunk
//! extensions checked against the RFC grammar, CRLF after every chunk, and a trailer section
//! parsed with the header rules. Input may arrive in pieces of any size, down to one byte.

use crate::fields::{
    BlockScan, FieldRules, field_size_limit, max_block_bytes, parse_fields, scan_block,
};
use crate::token::{is_tchar, trim_ows_end};
use crate::{ErrorKind, Limits, ParseError};
use memchr::memchr;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line (kept in `line`).
    Size,
    /// This many data bytes of the current chunk are still to come.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Reading the trailer section (kept in `line`) after the last chunk; scanning for its end
    /// may resume at the given index.
    Trailers(usize),
    /// Last chunk and trailers read.
    Done,
}

/// Decodes a chunked body fed in arbitrary pieces.
///
/// At end of input before [`Self::is_done`], report [`Self::eof_error`]: `NoMoreData` when
/// the body stopped inside a size line or chunk data, `ChunkMissingTerminator` when it stopped
/// where the CRLF after chunk data or the end of the trailer section was due (Gunicorn 26.1).
#[derive(Debug)]
pub struct ChunkedDecoder {
    limits: Limits,
    trailers: Vec<(String, Vec<u8>)>,
    state: State,
    /// The partial size line, or the trailer section being collected.
    line: Vec<u8>,
}

impl ChunkedDecoder {
    /// A decoder; trailers are parsed with the header rules of `limits`. A size line (with its
    /// extensions) may be at most `limits.field_size` bytes, the trailer section at most
    /// `fields * (field_size + 2) + 4` bytes, as in Gunicorn.
    pub fn new(limits: Limits) -> Self {
        ChunkedDecoder { limits, trailers: Vec::new(), state: State::Size, line: Vec::new() }
    }

    /// Decode as much of `input` as possible, appending body bytes to `out`. Returns how many
    /// bytes of `input` were consumed; unconsumed bytes must be fed again with more data
    /// appended. After the terminating chunk and trailers, [`Self::is_done`] is true and the
    /// bytes after the body are left unconsumed (the next pipelined request).
    ///
    /// Partial lines are buffered inside the decoder, so before the end every byte of `input`
    /// is consumed. Once an error is returned the decoder must not be used again.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ParseError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Size => pos += self.feed_size_line(&input[pos..])?,
                State::Data(remaining) => {
                    let avail = input.len() - pos;
                    let take = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data(left) };
                }
                State::DataCr | State::DataLf => {
                    let want = if self.state == State::DataCr { b'\r' } else { b'\n' };
                    if input[pos] != want {
                        return Err(ParseError::new(
                            ErrorKind::ChunkMissingTerminator,
                            "chunk data not followed by CRLF",
                        ));
                    }
                    pos += 1;
                    self.state = if want == b'\r' { State::DataLf } else { State::Size };
                }
                State::Trailers(resume) => {
                    pos += self.feed_trailers(&input[pos..], resume)?;
                }
                State::Done => break,
            }
        }
        Ok(pos)
    }

    /// True once the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The error to report when the input ends before [`Self::is_done`] (see the type docs).
    pub fn eof_error(&self) -> ParseError {
        match self.state {
            State::DataCr | State::DataLf | State::Trailers(_) => ParseError::new(
                ErrorKind::ChunkMissingTerminator,
                "chunked body ended without its final CRLF",
            ),
            _ => ParseError::new(ErrorKind::NoMoreData, "chunked body truncated"),
        }
    }

    /// Trailer fields received after the last chunk (upper-case names).
    pub fn trailers(&self) -> &[(String, Vec<u8>)] {
        &self.trailers
    }

    /// Take bytes of a size line from `input`; on its LF, validate it and move on.
    fn feed_size_line(&mut self, input: &[u8]) -> Result<usize, ParseError> {
        let limit = field_size_limit(&self.limits);
        let Some(lf) = memchr(b'\n', input) else {
            self.line.extend_from_slice(input);
            // The line may end with the CR of its terminator.
            let unterminated = self.line.len() - usize::from(self.line.last() == Some(&b'\r'));
            if unterminated > limit {
                return Err(ParseError::new(
                    ErrorKind::InvalidChunkSize,
                    format!("line over {limit} bytes with no terminator"),
                ));
            }
            return Ok(input.len());
        };
        self.line.extend_from_slice(&input[..lf]);
        let size = match self.line.pop() {
            Some(b'\r') => parse_size_line(&self.line)?,
            _ => {
                // A bare LF: Gunicorn reads on to the next CRLF and then refuses the line; the
                // LF is not a valid size or extension byte, so refuse it now.
                let in_ext = memchr(b';', &self.line).is_some();
                let kind = if in_ext {
                    ErrorKind::InvalidChunkExtension
                } else {
                    ErrorKind::InvalidChunkSize
                };
                return Err(ParseError::new(kind, "bare LF in chunk size line"));
            }
        };
        if self.line.len() > limit {
            return Err(ParseError::new(ErrorKind::InvalidChunkSize, "chunk size line too long"));
        }
        self.line.clear();
        self.state = if size == 0 { State::Trailers(0) } else { State::Data(size) };
        Ok(lf + 1)
    }

    /// Collect the trailer section; when its empty line arrives, parse it and finish. Bytes
    /// after it are not consumed.
    fn feed_trailers(&mut self, input: &[u8], resume: usize) -> Result<usize, ParseError> {
        let before = self.line.len();
        self.line.extend_from_slice(input);
        match scan_block(&self.line, resume)? {
            BlockScan::Partial(resume) => {
                if self.line.len() > max_block_bytes(&self.limits) {
                    return Err(ParseError::new(
                        ErrorKind::LimitRequestHeaders,
                        "limit request trailer section size",
                    ));
                }
                self.state = State::Trailers(resume);
                Ok(input.len())
            }
            BlockScan::Complete(end) => {
                let rules = FieldRules {
                    limits: &self.limits,
                    trailer: true,
                    trusted: false,
                    version: (1, 1),
                };
                let fields = parse_fields(&self.line[..end - 2], &rules)?;
                self.trailers = fields.headers;
                self.line = Vec::new();
                self.state = State::Done;
                Ok(end - before)
            }
        }
    }
}

/// Validate a chunk-size line (without CRLF) and return the size. Gunicorn's order: bare CR
/// in an extension, then the size digits, then the extension grammar.
fn parse_size_line(line: &[u8]) -> Result<u64, ParseError> {
    let (size, ext) = match memchr(b';', line) {
        Some(i) => {
            let ext = &line[i..];
            if memchr(b'\r', ext).is_some() {
                return Err(ParseError::new(
                    ErrorKind::InvalidChunkExtension,
                    "bare CR not allowed",
                ));
            }
            // RFC 9112 §7.1.1: BWS before a chunk extension, but only then.
            (trim_ows_end(&line[..i]), Some(ext))
        }
        None => (line, None),
    };
    if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(ParseError::new(ErrorKind::InvalidChunkSize, crate::fields::lossy(size)));
    }
    if let Some(ext) = ext
        && !valid_extensions(ext)
    {
        return Err(ParseError::new(ErrorKind::InvalidChunkExtension, crate::fields::lossy(ext)));
    }
    let digits = &size[size.iter().position(|&b| b != b'0').unwrap_or(size.len())..];
    if digits.len() > 16 {
        return Err(ParseError::new(ErrorKind::InvalidChunkSize, "chunk size too large"));
    }
    let mut n = 0u64;
    for &d in digits {
        // Hex digits were checked above.
        let v = (d as char).to_digit(16).unwrap_or(0);
        n = (n << 4) | u64::from(v);
    }
    Ok(n)
}

/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )` over all of `s`.
fn valid_extensions(s: &[u8]) -> bool {
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && matches!(s[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && is_tchar(s[*i]) {
            *i += 1;
        }
        *i > start
    };
    let mut i = 0;
    while i < s.len() {
        skip_ws(&mut i);
        if i >= s.len() || s[i] != b';' {
            return false;
        }
        i += 1;
        skip_ws(&mut i);
        if !token(&mut i) {
            return false;
        }
        let mark = i;
        skip_ws(&mut i);
        if i < s.len() && s[i] == b'=' {
            i += 1;
            skip_ws(&mut i);
            if i < s.len() && s[i] == b'"' {
                i += 1;
                loop {
                    match s.get(i) {
                        None => return false,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => match s.get(i + 1) {
                            Some(&c) if c == b'\t' || (0x20..=0x7e).contains(&c) || c >= 0x80 => {
                                i += 2;
                            }
                            _ => return false,
                        },
                        Some(&c)
                            if c == b'\t'
                                || c == b' '
                                || c == 0x21
                                || (0x23..=0x5b).contains(&c)
                                || (0x5d..=0x7e).contains(&c)
                                || c >= 0x80 =>
                        {
                            i += 1;
                        }
                        Some(_) => return false,
                    }
                }
            } else if !token(&mut i) {
                return false;
            }
        } else {
            // No value: whitespace is only allowed if another extension follows.
            i = mark;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeaderMapPolicy;

    /// Tiny deterministic RNG for chunking tests.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    /// Feed `input` in pieces whose sizes come from `sizes`, the way a connection driver does
    /// (unconsumed bytes are kept and re-fed with more). Returns (body, consumed, decoder).
    fn feed_pieces(
        input: &[u8],
        mut sizes: impl FnMut() -> usize,
    ) -> Result<(Vec<u8>, usize, ChunkedDecoder), ParseError> {
        let mut d = ChunkedDecoder::new(Limits::default());
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut consumed_total = 0;
        while !d.is_done() {
            if fed >= input.len() {
                return Err(d.eof_error());
            }
            let n = sizes().clamp(1, input.len() - fed);
            pending.extend_from_slice(&input[fed..fed + n]);
            fed += n;
            let used = d.decode(&pending, &mut out)?;
            consumed_total += used;
            pending.drain(..used);
        }
        Ok((out, consumed_total, d))
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, ChunkedDecoder), ParseError> {
        feed_pieces(input, || usize::MAX)
    }

    fn err(input: &[u8]) -> ErrorKind {
        match decode_all(input) {
            Err(e) => e.kind(),
            Ok((body, _, _)) => panic!("expected error, got body {body:?}"),
        }
    }

    const BODY: &[u8] = b"5\r\nhello\r\n6;name=value;q=\"a \\\"b\"\r\n world\r\n0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\nGET /next HTTP/1.1\r\n\r\n";

    #[test]
    fn whole_input() {
        let (body, used, d) = decode_all(BODY).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&BODY[used..], b"GET /next HTTP/1.1\r\n\r\n");
        assert_eq!(
            d.trailers(),
            &[
                ("VARY".to_string(), b"*".to_vec()),
                ("CONTENT-TYPE".to_string(), b"text/plain".to_vec())
            ]
        );
        // A done decoder consumes nothing more.
        let mut d = d;
        assert_eq!(d.decode(b"more", &mut Vec::new()).unwrap(), 0);
    }

    #[test]
    fn byte_by_byte() {
        let (body, used, d) = feed_pieces(BODY, || 1).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&BODY[used..], b"GET /next HTTP/1.1\r\n\r\n");
        assert_eq!(d.trailers().len(), 2);
    }

    #[test]
    fn random_pieces() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut big = Vec::new();
        let mut expect = Vec::new();
        for i in 0..200usize {
            let len = (i * 37) % 300 + 1;
            let data: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            big.extend_from_slice(format!("{len:x}\r\n").as_bytes());
            big.extend_from_slice(&data);
            big.extend_from_slice(b"\r\n");
            expect.extend_from_slice(&data);
        }
        big.extend_from_slice(b"0\r\n\r\nNEXT");
        for _ in 0..50 {
            let (body, used, _) = feed_pieces(&big, || (rng.next() % 64) as usize + 1).unwrap();
            assert_eq!(body, expect);
            assert_eq!(&big[used..], b"NEXT");
        }
    }

    #[test]
    fn no_trailers_stops_exactly() {
        let input = b"3\r\nabc\r\n0\r\n\r\nX";
        let (body, used, d) = decode_all(input).unwrap();
        assert_eq!(body, b"abc");
        assert_eq!(used, input.len() - 1);
        assert!(d.trailers().is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(decode_all(b"000A\r\n0123456789\r\n0\r\n\r\n").unwrap().0, b"0123456789");
        assert_eq!(decode_all(b"a \t;x\r\n0123456789\r\n0\r\n\r\n").unwrap().0, b"0123456789");
        assert_eq!(decode_all(b"00000000000000000000001\r\nz\r\n0\r\n\r\n").unwrap().0, b"z");
        for bad in [
            &b"\r\n"[..],
            b"-5\r\n",
            b"+5\r\n",
            b"0x5\r\n",
            b"5 \r\n",
            b" 5\r\n",
            b"g\r\n",
            b";ext\r\n",
            b"\xc3\r\n",
        ] {
            assert_eq!(err(bad), ErrorKind::InvalidChunkSize, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(err(b"11111111111111111\r\n"), ErrorKind::InvalidChunkSize);
        assert_eq!(err(b"5\nhello\r\n"), ErrorKind::InvalidChunkSize);
        // Endless size line.
        let mut endless = b"5;".to_vec();
        endless.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(err(&endless), ErrorKind::InvalidChunkSize);
        let mut endless = b"0000".to_vec();
        endless.extend(std::iter::repeat_n(b'0', 9000));
        assert_eq!(err(&endless), ErrorKind::InvalidChunkSize);
    }

    #[test]
    fn extensions() {
        for good in [
            &b"1;a\r\nx\r\n0\r\n\r\n"[..],
            b"1 ; a = b ; c\r\nx\r\n0\r\n\r\n",
            b"1;a=\"\"\r\nx\r\n0;z\r\n\r\n",
        ] {
            assert_eq!(decode_all(good).unwrap().0, b"x", "{:?}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"1;\r\n"[..],
            b"1;a=\r\n",
            b"1;a b\r\n",
            b"1;a=\"x\r\n",
            b"1;a;\r\n",
            b"1;a \r\n",
            b"1;a\nb\r\n",
        ] {
            assert_eq!(
                err(bad),
                ErrorKind::InvalidChunkExtension,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(err(b"1;a\rb\r\nx\r\n0\r\n\r\n"), ErrorKind::InvalidChunkExtension);
        assert_eq!(err(b"1;a=\"\r\"\r\nx\r\n"), ErrorKind::InvalidChunkExtension);
    }

    #[test]
    fn terminators() {
        assert_eq!(err(b"3\r\nabcX\r\n"), ErrorKind::ChunkMissingTerminator);
        assert_eq!(err(b"3\r\nabc\rX"), ErrorKind::ChunkMissingTerminator);
        assert_eq!(err(b"3\r\nabc\n"), ErrorKind::ChunkMissingTerminator);
        // EOF positions.
        assert_eq!(err(b"3\r\nab"), ErrorKind::NoMoreData);
        assert_eq!(err(b"3\r"), ErrorKind::NoMoreData);
        assert_eq!(err(b"3\r\nabc"), ErrorKind::ChunkMissingTerminator);
        assert_eq!(err(b"3\r\nabc\r\n0\r\n"), ErrorKind::ChunkMissingTerminator);
        assert_eq!(err(b"0\r\nVary: *\r\n"), ErrorKind::ChunkMissingTerminator);
    }

    #[test]
    fn trailer_rules() {
        assert_eq!(err(b"0\r\nHost: x\r\n\r\n"), ErrorKind::InvalidHeaderName);
        assert_eq!(err(b"0\r\nContent-Length: 1\r\n\r\n"), ErrorKind::InvalidHeaderName);
        assert_eq!(err(b"0\r\nTE: x\r\n\r\n"), ErrorKind::InvalidHeaderName);
        assert_eq!(err(b"0\r\nA: b\x01\r\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"0\r\nA: b\n\r\n"), ErrorKind::InvalidHeader);
        assert_eq!(err(b"0\r\nA: b\r\n c\r\n\r\n"), ErrorKind::ObsoleteFolding);
        assert_eq!(err(b"0\r\nNoColon\r\n\r\n"), ErrorKind::InvalidHeader);
        // Underscore trailers follow header_map.
        let (_, _, d) = decode_all(b"0\r\nX_Y: 1\r\nZ: 2\r\n\r\n").unwrap();
        assert_eq!(d.trailers(), &[("Z".to_string(), b"2".to_vec())]);
        let mut d = ChunkedDecoder::new(Limits {
            header_map: HeaderMapPolicy::Refuse,
            ..Limits::default()
        });
        let e = d.decode(b"0\r\nX_Y: 1\r\n\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidHeaderName);
        // Trailer section size cap.
        let mut d = ChunkedDecoder::new(Limits { fields: 1, field_size: 10, ..Limits::default() });
        let e = d.decode(b"0\r\nA: 0123456789012345678901234", &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitRequestHeaders);
    }

    #[test]
    fn huge_chunk_size_streams() {
        let mut d = ChunkedDecoder::new(Limits::default());
        let mut out = Vec::new();
        assert_eq!(d.decode(b"ffffffffffffffff\r\nabc", &mut out).unwrap(), 21);
        assert_eq!(out, b"abc");
        assert!(!d.is_done());
        assert_eq!(d.eof_error().kind(), ErrorKind::NoMoreData);
    }
}
