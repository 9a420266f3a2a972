//! A parsed request head: what the parser hands to the connection driver.

use crate::error::{ErrorKind, ParseError};

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no Content-Length and no Transfer-Encoding).
    Empty,
    /// Exactly this many bytes follow.
    Length(u64),
    /// `Transfer-Encoding: chunked`; decode with [`crate::ChunkedDecoder`].
    Chunked,
}

/// One request line plus headers, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method as sent (upper-cased only when `casefold_http_method`).
    pub method: String,
    /// The raw request target exactly as sent, fragment included (`RAW_URI`).
    pub target: Vec<u8>,
    /// Raw (still percent-encoded) path; for absolute-form targets the path part only.
    /// `*` for `OPTIONS *`; the authority for `CONNECT host:port`.
    pub path: Vec<u8>,
    /// Raw query string without `?` (empty when absent).
    pub query: Vec<u8>,
    /// Fragment without `#` (empty when absent).
    pub fragment: Vec<u8>,
    /// `(major, minor)`, e.g. `(1, 1)`.
    pub version: (u8, u8),
    /// Headers in arrival order: names upper-cased with dashes kept (`CONTENT-TYPE`), values
    /// with leading/trailing SP/HTAB removed. Underscore names dropped by `header_map` are
    /// absent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body framing derived from Content-Length / Transfer-Encoding.
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this one (Connection header
    /// and version; false when a compressing transfer coding precedes chunked).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
}

impl RequestHead {
    /// First value of a header, by upper-case name.
    pub fn header(&self, upper_name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == upper_name).map(|(_, v)| v.as_slice())
    }

    /// True for `HEAD` requests (no response body is sent).
    pub fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request must carry a `Host` header, and a server answers
    /// 400 to one without (as nginx and h11 do; Gunicorn serves it). Checked by the server
    /// apart from [`crate::parse_request_head`], which keeps Gunicorn's rules.
    pub fn require_host(&self) -> Result<(), ParseError> {
        if self.version >= (1, 1) && self.header("HOST").is_none() {
            return Err(ParseError::new(
                ErrorKind::InvalidHeader,
                "HOST: an HTTP/1.1 request must carry a Host header",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Limits, parse_request_head};

    fn head(raw: &[u8]) -> super::RequestHead {
        parse_request_head(raw, &Limits::default(), false).unwrap().unwrap().0
    }

    #[test]
    fn http11_needs_a_host_and_http10_does_not() {
        let without = head(b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n");
        let err = without.require_host().unwrap_err();
        assert_eq!(err.status(), Some(400));
        assert!(head(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").require_host().is_ok());
        assert!(
            head(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").require_host().is_ok(),
            "empty is allowed"
        );
        assert!(head(b"GET / HTTP/1.0\r\n\r\n").require_host().is_ok());
    }
}
