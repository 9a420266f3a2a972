//! Response heads: validating what the app passed to `start_response`, dropping hop-by-hop
//! headers the server owns, and serialising the status line and headers with the framing the
//! connection driver chose. Also the small HTML error responses sent for bad requests.
//!
//! The status and header values are latin-1 text (PEP 3333's native strings; an ASGI app's
//! bytes decoded as latin-1): each character is one byte on the wire, so `é` goes out as
//! `0xE9`, and a character above U+00FF is refused.

use std::fmt;

/// Headers the app may not set: the server decides connection management, framing, `Date`
/// and `Server` (Gunicorn drops the same set).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "server",
    "date",
];

/// Why an app's status or headers were rejected (answered 500, logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The status is not `NNN reason`.
    InvalidStatus(String),
    /// A header name is not an RFC 9110 token.
    InvalidHeaderName(String),
    /// A header value has a control character (CR, LF, NUL, ...).
    InvalidHeaderValue(String),
    /// A header value has a character latin-1 cannot encode (above U+00FF).
    NotLatin1HeaderValue(String),
    /// Content-Length is not a number.
    InvalidContentLength(String),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::InvalidStatus(s) => write!(f, "invalid response status {s:?}"),
            ResponseError::InvalidHeaderName(n) => write!(f, "invalid response header name {n:?}"),
            ResponseError::InvalidHeaderValue(n) => {
                write!(f, "invalid value for response header {n:?}")
            }
            ResponseError::NotLatin1HeaderValue(n) => write!(
                f,
                "value of response header {n:?} is not latin-1 (PEP 3333 header values are \
                 latin-1 strings; encode other text, e.g. as RFC 8187 or percent-encoding)"
            ),
            ResponseError::InvalidContentLength(v) => {
                write!(f, "invalid Content-Length response header {v:?}")
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// `Content-Length: n` (the app's own header, or added by the server when it is known).
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 streaming).
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 streaming).
    CloseDelimited,
    /// No body may be sent (HEAD, 1xx, 204, 304): headers only.
    NoBody,
}

/// A validated response status and header list, ready to serialise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    content_length: Option<u64>,
}

fn is_token_byte(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`'
        | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Why latin-1 text cannot be a field value.
enum FieldTextError {
    /// A control character.
    Control,
    /// A character above U+00FF.
    NotLatin1,
}

/// Check `text` as a field value in latin-1: every character one byte, none a control.
fn check_field_text(text: &str) -> Result<(), FieldTextError> {
    if text.is_ascii() {
        return match text.bytes().all(is_field_value_byte) {
            true => Ok(()),
            false => Err(FieldTextError::Control),
        };
    }
    for c in text.chars() {
        let byte = u8::try_from(u32::from(c)).map_err(|_| FieldTextError::NotLatin1)?;
        if !is_field_value_byte(byte) {
            return Err(FieldTextError::Control);
        }
    }
    Ok(())
}

/// Append `text` (checked by [`check_field_text`]) as latin-1: one byte per character.
fn put_latin1(out: &mut Vec<u8>, text: &str) {
    if text.is_ascii() {
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend(text.chars().map(|c| u32::from(c) as u8));
    }
}

impl ResponseHead {
    /// Validate the status and headers from `start_response`. Hop-by-hop headers are removed;
    /// a Content-Length header is parsed and kept.
    pub fn new(status: &str, headers: Vec<(String, String)>) -> Result<Self, ResponseError> {
        let status = status.trim();
        let code = status
            .get(..3)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| *c >= 100)
            .ok_or_else(|| ResponseError::InvalidStatus(status.to_owned()))?;
        if status.len() > 3 && status.as_bytes()[3] != b' ' || check_field_text(status).is_err() {
            return Err(ResponseError::InvalidStatus(status.to_owned()));
        }
        let status_line = if status.len() > 3 {
            status.to_owned()
        } else {
            format!("{code} {}", reason_phrase(code))
        };
        let mut kept = Vec::with_capacity(headers.len());
        let mut content_length = None;
        for (name, value) in headers {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(ResponseError::InvalidHeaderName(name));
            }
            let value = value.trim_matches([' ', '\t']);
            match check_field_text(value) {
                Ok(()) => {}
                Err(FieldTextError::Control) => {
                    return Err(ResponseError::InvalidHeaderValue(name));
                }
                Err(FieldTextError::NotLatin1) => {
                    return Err(ResponseError::NotLatin1HeaderValue(name));
                }
            }
            if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                continue;
            }
            if name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| ResponseError::InvalidContentLength(value.to_owned()))?;
                content_length = Some(n);
            }
            let value = value.to_owned();
            kept.push((name, value));
        }
        Ok(ResponseHead { status: code, status_line, headers: kept, content_length })
    }

    /// The numeric status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The status as the app gave it, e.g. `200 OK`.
    pub fn status_line(&self) -> &str {
        &self.status_line
    }

    /// The headers that will be sent (hop-by-hop headers removed).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The app's Content-Length, if it set one.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// First header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// This head with one more header, set by the server (its name and value are plain
    /// ASCII the server chose, not the app's).
    pub fn with_server_header(&self, name: &str, value: &str) -> ResponseHead {
        debug_assert!(name.bytes().all(is_token_byte) && check_field_text(value).is_ok());
        let mut head = self.clone();
        head.headers.push((name.to_owned(), value.to_owned()));
        head
    }

    /// Append the status line's text, CRLF, and the header lines `keep` accepts, as they go on
    /// the wire (latin-1): what a cache stores to send again.
    pub fn encode_kept(&self, out: &mut Vec<u8>, keep: impl Fn(&str) -> bool) {
        put_latin1(out, &self.status_line);
        out.extend_from_slice(b"\r\n");
        for (name, value) in self.headers.iter().filter(|(n, _)| keep(n)) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            put_latin1(out, value);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Whether a body may follow this status for this request method.
    pub fn body_allowed(&self, is_head_request: bool) -> bool {
        !(is_head_request || self.status < 200 || self.status == 204 || self.status == 304)
    }

    /// How to frame a body whose length is not known before it is sent (streamed, or written
    /// piece by piece): none for HEAD and the statuses without a body, the app's
    /// `Content-Length` when it set one, chunked on HTTP/1.1, and on HTTP/1.0 the connection's
    /// close (the caller must then not keep the connection alive).
    pub fn streamed_framing(&self, is_head_request: bool, version: (u8, u8)) -> ResponseFraming {
        if !self.body_allowed(is_head_request) {
            ResponseFraming::NoBody
        } else if let Some(cl) = self.content_length {
            ResponseFraming::Length(cl)
        } else if version == (1, 1) {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::CloseDelimited
        }
    }

    /// Serialise the status line and headers. `version` is the request's version (Gunicorn
    /// answers in the request's version), `date` a preformatted IMF-fixdate, `server` the
    /// `Server` header value. Adds Content-Length (when `framing` is `Length` and the app did
    /// not set one), `Transfer-Encoding: chunked`, and the `Connection` header.
    pub fn encode(
        &self,
        out: &mut Vec<u8>,
        version: (u8, u8),
        framing: ResponseFraming,
        keep_alive: bool,
        date: &[u8],
        server: &[u8],
    ) {
        out.extend_from_slice(if version == (1, 0) { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        put_latin1(out, &self.status_line);
        out.extend_from_slice(b"\r\nServer: ");
        out.extend_from_slice(server);
        out.extend_from_slice(b"\r\nDate: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
        let strip_length = self.status < 200 || self.status == 204;
        for (name, value) in &self.headers {
            if strip_length && name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            put_latin1(out, value);
            out.extend_from_slice(b"\r\n");
        }
        match framing {
            ResponseFraming::Length(n) if self.content_length.is_none() && !strip_length => {
                out.extend_from_slice(b"Content-Length: ");
                let mut digits = [0u8; 20];
                out.extend_from_slice(format_u64(n, &mut digits));
                out.extend_from_slice(b"\r\n");
            }
            ResponseFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            _ => {}
        }
        out.extend_from_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
    }
}

/// Writes `n` in decimal into `buf` and returns the used tail.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The standard reason phrase for a status code ("Unknown" when there is none).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Append a complete, self-contained error response (small HTML page, `Connection: close`).
/// `detail` is HTML-escaped; pass "" to send only the reason phrase.
pub fn write_error_response(
    out: &mut Vec<u8>,
    status: u16,
    detail: &str,
    date: &[u8],
    server: &[u8],
) {
    write_error_response_with(out, status, detail, b"", date, server);
}

/// [`write_error_response`] with `extra` header lines (each ending in CRLF) after `Date`.
pub fn write_error_response_with(
    out: &mut Vec<u8>,
    status: u16,
    detail: &str,
    extra: &[u8],
    date: &[u8],
    server: &[u8],
) {
    let reason = reason_phrase(status);
    let mut body =
        format!("<html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1>");
    if !detail.is_empty() {
        body.push_str("<p>");
        for c in detail.chars() {
            match c {
                '<' => body.push_str("&lt;"),
                '>' => body.push_str("&gt;"),
                '&' => body.push_str("&amp;"),
                '"' => body.push_str("&quot;"),
                '\'' => body.push_str("&#x27;"),
                c => body.push(c),
            }
        }
        body.push_str("</p>");
    }
    body.push_str("</body></html>\n");
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\nServer: ").as_bytes());
    out.extend_from_slice(server);
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra);
    out.extend_from_slice(
        format!(
            "Connection: close\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: &str, headers: &[(&str, &str)]) -> Result<ResponseHead, ResponseError> {
        ResponseHead::new(
            status,
            headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        )
    }

    #[test]
    fn drops_hop_by_hop_and_keeps_case() {
        let h =
            head("200 OK", &[("X-Thing", "1"), ("Connection", "close"), ("Server", "x")]).unwrap();
        assert_eq!(h.headers(), &[("X-Thing".to_string(), "1".to_string())]);
        let mut out = Vec::new();
        h.encode(&mut out, (1, 1), ResponseFraming::Length(5), true, b"D", b"ferrocorn");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nServer: ferrocorn\r\nDate: D\r\nX-Thing: 1\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn rejects_bad_status_and_headers() {
        assert!(matches!(head("OK", &[]), Err(ResponseError::InvalidStatus(_))));
        assert!(matches!(head("20 OK", &[]), Err(ResponseError::InvalidStatus(_))));
        assert!(matches!(head("200OK", &[]), Err(ResponseError::InvalidStatus(_))));
        assert!(matches!(
            head("200 OK", &[("Bad Name", "v")]),
            Err(ResponseError::InvalidHeaderName(_))
        ));
        assert!(matches!(
            head("200 OK", &[("X", "a\r\nb")]),
            Err(ResponseError::InvalidHeaderValue(_))
        ));
        assert!(matches!(
            head("200 OK", &[("Content-Length", "x")]),
            Err(ResponseError::InvalidContentLength(_))
        ));
    }

    #[test]
    fn header_values_and_the_reason_go_out_as_latin1_bytes() {
        let h = head("200 Tr\u{e8}s bien", &[("X-Word", "caf\u{e9} \u{ff}\u{a0}end")]).unwrap();
        let mut out = Vec::new();
        h.encode(&mut out, (1, 1), ResponseFraming::Length(0), true, b"D", b"s");
        assert!(out.starts_with(b"HTTP/1.1 200 Tr\xe8s bien\r\n"), "{out:?}");
        let line = b"X-Word: caf\xe9 \xff\xa0end\r\n";
        assert!(out.windows(line.len()).any(|w| w == line), "{out:?}");
    }

    #[test]
    fn a_header_value_beyond_latin1_is_refused() {
        assert!(matches!(
            head("200 OK", &[("X-Price", "5 \u{20ac}")]),
            Err(ResponseError::NotLatin1HeaderValue(n)) if n == "X-Price"
        ));
        assert!(matches!(head("200 \u{20ac}", &[]), Err(ResponseError::InvalidStatus(_))));
        // a control character is still a control character when the value is not ASCII
        assert!(matches!(
            head("200 OK", &[("X", "\u{e9}\r\n")]),
            Err(ResponseError::InvalidHeaderValue(_))
        ));
    }

    #[test]
    fn app_content_length_is_not_duplicated_and_bare_code_gets_reason() {
        let h = head("404", &[("Content-Length", "3")]).unwrap();
        assert_eq!(h.status_line(), "404 Not Found");
        assert_eq!(h.content_length(), Some(3));
        let mut out = Vec::new();
        h.encode(&mut out, (1, 0), ResponseFraming::Length(3), false, b"D", b"s");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.0 404 Not Found\r\n"));
        assert_eq!(text.matches("Content-Length").count(), 1);
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn a_streamed_body_is_framed_by_length_chunks_or_the_close() {
        let plain = head("200 OK", &[]).unwrap();
        assert_eq!(plain.streamed_framing(false, (1, 1)), ResponseFraming::Chunked);
        assert_eq!(plain.streamed_framing(false, (1, 0)), ResponseFraming::CloseDelimited);
        assert_eq!(plain.streamed_framing(true, (1, 1)), ResponseFraming::NoBody);
        let sized = head("200 OK", &[("Content-Length", "7")]).unwrap();
        assert_eq!(sized.streamed_framing(false, (1, 0)), ResponseFraming::Length(7));
        let empty = head("304 Not Modified", &[]).unwrap();
        assert_eq!(empty.streamed_framing(false, (1, 1)), ResponseFraming::NoBody);
    }

    #[test]
    fn no_length_on_204_and_chunked_header() {
        let h = head("204 No Content", &[("Content-Length", "0")]).unwrap();
        assert!(!h.body_allowed(false));
        let mut out = Vec::new();
        h.encode(&mut out, (1, 1), ResponseFraming::NoBody, true, b"D", b"s");
        assert!(!String::from_utf8(out).unwrap().contains("Content-Length"));
        let h = head("200 OK", &[]).unwrap();
        let mut out = Vec::new();
        h.encode(&mut out, (1, 1), ResponseFraming::Chunked, true, b"D", b"s");
        assert!(String::from_utf8(out).unwrap().contains("Transfer-Encoding: chunked\r\n"));
    }

    #[test]
    fn error_response_escapes_detail() {
        let mut out = Vec::new();
        write_error_response(&mut out, 400, "<bad>", b"D", b"s");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.contains("&lt;bad&gt;"));
        assert!(text.contains("Connection: close"));
        let body_len = text.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(text.contains(&format!("Content-Length: {body_len}\r\n")));
    }
}
