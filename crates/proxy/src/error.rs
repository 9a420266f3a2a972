//! Why an upstream's response head was refused: a typed error whose message names the
//! problem for the log line, and which the proxy answers with 502 Bad Gateway.

use std::fmt;

/// An upstream response head the proxy cannot forward (nginx's "upstream sent invalid
/// header"). The upstream connection must be closed and the client answered 502; with
/// `proxy_next_upstream`'s `invalid_header` it counts as a failure of that server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHeadError {
    /// The status line or a header line is not HTTP/1.x syntax (httparse's reason, then the
    /// start of the head, lossily decoded).
    Malformed(String),
    /// The status code is outside 100..=599 (RFC 9110 §15).
    BadStatus(u16),
    /// `Content-Length` is not digits, overflows, or several values differ (the values as
    /// received, lossily decoded and joined with `, `).
    BadLength(String),
    /// Both `Content-Length` and `Transfer-Encoding`: a response that can be read two ways
    /// (refused, as nginx does, rather than trusting `Transfer-Encoding` as RFC 9112 §6.3
    /// would let a proxy do).
    AmbiguousFraming,
    /// The head is longer than the limit (bytes) before its blank line.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The head has more header fields than the limit.
    TooManyHeaders {
        /// The limit, in fields.
        limit: usize,
    },
}

impl fmt::Display for UpstreamHeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamHeadError::Malformed(what) => {
                write!(f, "upstream sent a malformed response head: {what}")
            }
            UpstreamHeadError::BadStatus(code) => {
                write!(f, "upstream sent status {code}, outside 100..=599")
            }
            UpstreamHeadError::BadLength(values) => {
                write!(f, "upstream sent an invalid Content-Length {values:?}")
            }
            UpstreamHeadError::AmbiguousFraming => {
                f.write_str("upstream sent Content-Length and Transfer-Encoding at the same time")
            }
            UpstreamHeadError::TooLarge { limit } => {
                write!(f, "upstream response head is larger than {limit} bytes")
            }
            UpstreamHeadError::TooManyHeaders { limit } => {
                write!(f, "upstream response head has more than {limit} header fields")
            }
        }
    }
}

impl std::error::Error for UpstreamHeadError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let cases = [
            (
                UpstreamHeadError::Malformed("invalid HTTP version in \"HTCPCP/1.0\"".into()),
                "upstream sent a malformed response head: invalid HTTP version in \"HTCPCP/1.0\"",
            ),
            (UpstreamHeadError::BadStatus(999), "upstream sent status 999, outside 100..=599"),
            (
                UpstreamHeadError::BadLength("5, 6".into()),
                "upstream sent an invalid Content-Length \"5, 6\"",
            ),
            (
                UpstreamHeadError::TooLarge { limit: 65536 },
                "upstream response head is larger than 65536 bytes",
            ),
            (
                UpstreamHeadError::TooManyHeaders { limit: 100 },
                "upstream response head has more than 100 header fields",
            ),
        ];
        for (err, message) in cases {
            assert_eq!(err.to_string(), message);
        }
    }
}
