//! Parsing an upstream's response head: [`parse_response_head`] reads the status line and
//! headers with httparse and derives the body framing (RFC 9112 §6.3) and whether the
//! upstream connection may be reused.
//!
//! Syntax is what httparse accepts with its default configuration: lines may end in bare LF,
//! leading empty lines are skipped, the reason phrase may be absent; obs-fold continuation
//! lines, a space before a header's colon and repeated spaces in the status line are refused.

use std::mem::MaybeUninit;

use httparse::Status;

use crate::error::UpstreamHeadError;
use crate::fields::{list_elements, list_has};

/// How the upstream's response body is delimited (and, for [`crate::client_framing`], how
/// the body sent on to the client is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body follows the head: a response to `HEAD`, a 1xx, 204 or 304.
    NoBody,
    /// Exactly this many bytes follow.
    Length(u64),
    /// Chunked transfer coding, ending with the last chunk and trailer section.
    Chunked,
    /// The body runs until the connection closes.
    UntilClose,
}

/// An upstream's parsed response head.
///
/// It keeps the head's bytes as received in one buffer and the fields as ranges into it, so
/// a response costs two allocations however many headers it has (the balancer parses one per
/// request; a `Vec` per name and value was most of its allocations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code, 100..=599.
    pub status: u16,
    /// `(1, 0)` or `(1, 1)`.
    pub version: (u8, u8),
    /// How the body that follows is delimited.
    pub framing: ResponseFraming,
    /// Whether the upstream connection may carry another request once this response's body
    /// has been read.
    pub keep_alive: bool,
    /// A `101 Switching Protocols`: the connection now carries the upgraded protocol, both
    /// ways, until either side closes (never reused).
    pub upgrade: bool,
    /// The head as received, through the blank line.
    raw: Vec<u8>,
    /// Where the reason phrase is in `raw`.
    reason: Span,
    /// Where each field's name and value are in `raw`, in arrival order.
    fields: Vec<(Span, Span)>,
}

/// A byte range of [`ResponseHead::raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Where `part`, a slice of `whole`, lies in it.
    fn of(whole: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - whole.as_ptr() as usize;
        debug_assert!(start + part.len() <= whole.len(), "a span lies inside its buffer");
        // A head is at most `ResponseLimits::max_head_size`, far below 4 GiB.
        Span { start: start as u32, end: (start + part.len()) as u32 }
    }

    /// The bytes of `raw` this span covers.
    fn slice(self, raw: &[u8]) -> &[u8] {
        &raw[self.start as usize..self.end as usize]
    }
}

impl ResponseHead {
    /// An interim 1xx response other than 101 (`100 Continue`, `103 Early Hints`): a final
    /// response follows on the same connection. The caller forwards it to an HTTP/1.1 client
    /// (never to an HTTP/1.0 one, RFC 9110 §15.2), then parses again from the bytes after it,
    /// looping until a final (or 101) head arrives.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// The reason phrase as sent (may be empty; may hold obs-text bytes).
    pub fn reason(&self) -> &[u8] {
        self.reason.slice(&self.raw)
    }

    /// The header fields in arrival order: names as sent, values without surrounding
    /// whitespace.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + Clone {
        self.fields.iter().map(|(n, v)| (n.slice(&self.raw), v.slice(&self.raw)))
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header<'s>(&'s self, name: &'s [u8]) -> Option<&'s [u8]> {
        self.all(name).next()
    }

    /// The values of every header called `name` (case-insensitive), in order.
    fn all<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'s [u8]> {
        self.headers().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
}

/// Limits on an upstream's response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Max bytes of the head, blank line included (default 64 KiB).
    pub max_head_size: usize,
    /// Max number of header fields (default 100).
    pub max_headers: usize,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        ResponseLimits { max_head_size: 64 * 1024, max_headers: 100 }
    }
}

/// Header slots parsed into on the stack; a larger `max_headers` takes them from the heap.
const STACK_HEADERS: usize = 100;

/// Parse the response head at the start of `buf`, read from an upstream connection.
///
/// `Ok(None)`: the head is not complete yet (read more and call again with the whole buffer).
/// `Ok(Some((head, used)))`: the head and the number of bytes it took; the body (or the next
/// head, after a 1xx: see [`ResponseHead::is_informational`]) starts at `buf[used..]`.
/// `request_method_is_head`: the request was `HEAD`, so no body follows whatever the headers
/// say.
///
/// Framing (RFC 9112 §6.3): no body for `HEAD`, 1xx, 204 and 304; with `Transfer-Encoding`,
/// chunked when `chunked` is the final coding, else until close; else `Content-Length`; else
/// until close; both `Transfer-Encoding` and `Content-Length` is an error (as in nginx: the
/// response could be read two ways). The connection is not reusable after a body delimited by
/// close, after a response with `Transfer-Encoding` in HTTP/1.0 (faulty framing, §6.1), after
/// `Connection: close`, after an HTTP/1.0 response
/// without `Connection: keep-alive`, and after a 101.
pub fn parse_response_head(
    buf: &[u8],
    request_method_is_head: bool,
    limits: ResponseLimits,
) -> Result<Option<(ResponseHead, usize)>, UpstreamHeadError> {
    let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut on_heap = Vec::new();
    let slots = if limits.max_headers <= STACK_HEADERS {
        &mut on_stack[..limits.max_headers]
    } else {
        on_heap.resize_with(limits.max_headers, MaybeUninit::uninit);
        &mut on_heap[..]
    };
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let used = match config.parse_response_with_uninit_headers(&mut parsed, buf, slots) {
        Ok(Status::Complete(used)) if used > limits.max_head_size => None,
        Ok(Status::Complete(used)) => Some(used),
        Ok(Status::Partial) if buf.len() > limits.max_head_size => None,
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamHeadError::TooManyHeaders { limit: limits.max_headers });
        }
        Err(e) => return Err(UpstreamHeadError::Malformed(format!("{e} in {}", start(buf)))),
    };
    let Some(used) = used else {
        return Err(UpstreamHeadError::TooLarge { limit: limits.max_head_size });
    };
    // A complete parse fills all three.
    let (Some(minor), Some(status)) = (parsed.version, parsed.code) else {
        return Err(UpstreamHeadError::Malformed(format!("no status line in {}", start(buf))));
    };
    if !(100..=599).contains(&status) {
        return Err(UpstreamHeadError::BadStatus(status));
    }
    let mut head = ResponseHead {
        status,
        version: (1, minor),
        framing: ResponseFraming::UntilClose,
        keep_alive: false,
        upgrade: status == 101,
        raw: buf[..used].to_vec(),
        reason: Span::of(buf, raw_reason(buf)),
        fields: parsed
            .headers
            .iter()
            .map(|h| (Span::of(buf, h.name.as_bytes()), Span::of(buf, h.value)))
            .collect(),
    };
    let (framing, faulty) = framing(&head, request_method_is_head)?;
    head.framing = framing;
    head.keep_alive = !faulty && !head.upgrade && framing != ResponseFraming::UntilClose && {
        let connection = |token| head.all(b"connection").any(|v| list_has(v, token));
        match head.version {
            (1, 0) => connection(b"keep-alive") && !connection(b"close"),
            _ => !connection(b"close"),
        }
    };
    Ok(Some((head, used)))
}

/// The body framing of `head`, and whether its framing headers were faulty (the connection
/// must then not be reused).
fn framing(
    head: &ResponseHead,
    request_method_is_head: bool,
) -> Result<(ResponseFraming, bool), UpstreamHeadError> {
    let no_body =
        request_method_is_head || head.status < 200 || head.status == 204 || head.status == 304;
    let has_length = head.header(b"content-length").is_some();
    if head.header(b"transfer-encoding").is_some() {
        if has_length {
            return Err(UpstreamHeadError::AmbiguousFraming);
        }
        let faulty = head.version == (1, 0);
        let last = head.all(b"transfer-encoding").flat_map(list_elements).last();
        let framing = match last {
            _ if no_body => ResponseFraming::NoBody,
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => ResponseFraming::Chunked,
            _ => ResponseFraming::UntilClose,
        };
        return Ok((framing, faulty));
    }
    let length = has_length.then(|| content_length(head)).transpose()?;
    let framing = match length {
        _ if no_body => ResponseFraming::NoBody,
        Some(n) => ResponseFraming::Length(n),
        None => ResponseFraming::UntilClose,
    };
    Ok((framing, false))
}

/// The `Content-Length` of `head`: every value, and every element of a list value, must be
/// the same decimal number (RFC 9110 §8.6 allows identical duplicates).
fn content_length(head: &ResponseHead) -> Result<u64, UpstreamHeadError> {
    let bad = || {
        let values: Vec<_> = head.all(b"content-length").map(String::from_utf8_lossy).collect();
        UpstreamHeadError::BadLength(values.join(", "))
    };
    let mut length = None;
    for element in head.all(b"content-length").flat_map(|v| v.split(|&b| b == b',')) {
        let element = crate::fields::trim_ows(element);
        if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let n = element
            .iter()
            .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .ok_or_else(bad)?;
        if length.is_some_and(|l| l != n) {
            return Err(bad());
        }
        length = Some(n);
    }
    length.ok_or_else(bad)
}

/// The reason phrase as sent: httparse replaces one with obs-text by an empty string. The
/// status line is `HTTP/1.x NNN` and, when a reason follows, one space (httparse's default
/// refuses more), after any leading empty lines.
fn raw_reason(buf: &[u8]) -> &[u8] {
    let from = buf.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(buf.len());
    let line = &buf[from..];
    let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Always a slice of `buf` (empty at the line's end when there is no reason): the head
    // records where it lies.
    line.get(13..).unwrap_or(&line[line.len()..])
}

/// The start of `buf` for an error message: up to 64 bytes, lossily decoded and quoted.
fn start(buf: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(&buf[..buf.len().min(64)]))
}

#[cfg(test)]
mod tests;
