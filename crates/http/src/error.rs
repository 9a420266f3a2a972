//! Typed request-parsing errors. Each kind is one of Gunicorn's `gunicorn.http.errors`
//! exceptions and knows the response it gets: a status code, or a silent close.

use std::fmt;

/// What went wrong while reading a request. Names follow Gunicorn's exception classes so that
/// the conformance corpus maps one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Malformed request line (wrong number of parts, bad target form).
    InvalidRequestLine,
    /// Method is not a token, or unconventional (lowercase, `#`, length outside 3..=20).
    InvalidRequestMethod,
    /// Version is not `HTTP/d.d`, or not 1.0/1.1.
    InvalidHTTPVersion,
    /// Malformed header line or value, or a bad framing header combination.
    InvalidHeader,
    /// Header name is not a token (or a forbidden trailer, or refused by `header_map`).
    InvalidHeaderName,
    /// Obsolete line folding while `permit_obsolete_folding` is off.
    ObsoleteFolding,
    /// Request line longer than `limit_request_line`.
    LimitRequestLine,
    /// Too many header fields, a field over `limit_request_field_size`, or the head too large.
    LimitRequestHeaders,
    /// Malformed PROXY protocol v1 line.
    InvalidProxyLine,
    /// Malformed PROXY protocol v2 header.
    InvalidProxyHeader,
    /// PROXY header from a peer not in `proxy_allow_ips`.
    ForbiddenProxyRequest,
    /// Two secure-scheme headers from a trusted peer disagree.
    InvalidSchemeHeaders,
    /// `Expect` with a value other than `100-continue`.
    ExpectationFailed,
    /// A transfer coding other than chunked/gzip/deflate/compress/identity.
    UnsupportedTransferCoding,
    /// Chunk size line is not hex digits.
    InvalidChunkSize,
    /// Chunk data not followed by CRLF, or the body ended before the last chunk.
    ChunkMissingTerminator,
    /// Bare CR (or other junk) in a chunk extension.
    InvalidChunkExtension,
    /// The client closed the connection in the middle of a request.
    NoMoreData,
}

impl ErrorKind {
    /// The Gunicorn exception class this kind corresponds to.
    pub fn gunicorn_name(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequestLine => "InvalidRequestLine",
            ErrorKind::InvalidRequestMethod => "InvalidRequestMethod",
            ErrorKind::InvalidHTTPVersion => "InvalidHTTPVersion",
            ErrorKind::InvalidHeader => "InvalidHeader",
            ErrorKind::InvalidHeaderName => "InvalidHeaderName",
            ErrorKind::ObsoleteFolding => "ObsoleteFolding",
            ErrorKind::LimitRequestLine => "LimitRequestLine",
            ErrorKind::LimitRequestHeaders => "LimitRequestHeaders",
            ErrorKind::InvalidProxyLine => "InvalidProxyLine",
            ErrorKind::InvalidProxyHeader => "InvalidProxyHeader",
            ErrorKind::ForbiddenProxyRequest => "ForbiddenProxyRequest",
            ErrorKind::InvalidSchemeHeaders => "InvalidSchemeHeaders",
            ErrorKind::ExpectationFailed => "ExpectationFailed",
            ErrorKind::UnsupportedTransferCoding => "UnsupportedTransferCoding",
            ErrorKind::InvalidChunkSize => "InvalidChunkSize",
            ErrorKind::ChunkMissingTerminator => "ChunkMissingTerminator",
            ErrorKind::InvalidChunkExtension => "InvalidChunkExtension",
            ErrorKind::NoMoreData => "NoMoreData",
        }
    }

    /// The status this error is answered with, or `None` when the connection is closed without
    /// a response (the client went away). Gunicorn's WSGI workers answer the chunked-body
    /// errors by closing; ferrocorn reads the body before the app runs, so it can and does
    /// answer 400 (a documented divergence). A request line over the limit is 414 as in
    /// Gunicorn's ASGI worker (its WSGI workers say 400).
    pub fn status(self) -> Option<u16> {
        match self {
            ErrorKind::NoMoreData => None,
            ErrorKind::LimitRequestLine => Some(414),
            ErrorKind::LimitRequestHeaders => Some(431),
            ErrorKind::ForbiddenProxyRequest => Some(403),
            ErrorKind::ExpectationFailed => Some(417),
            ErrorKind::UnsupportedTransferCoding => Some(501),
            _ => Some(400),
        }
    }
}

/// A request that cannot be served, with a human-readable detail for the error log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    kind: ErrorKind,
    detail: String,
}

impl ParseError {
    /// An error of `kind` with a detail message (logged, and shown HTML-escaped to the client).
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        ParseError { kind, detail: detail.into() }
    }

    /// Which error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The detail message.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The response status, or `None` for a silent close. See [`ErrorKind::status`].
    pub fn status(&self) -> Option<u16> {
        self.kind.status()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.gunicorn_name(), self.detail)
    }
}

impl std::error::Error for ParseError {}
