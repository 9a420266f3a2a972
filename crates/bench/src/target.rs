//! The target: parsing `http://host[:port]/path?query` URLs, resolving the
//! host, and serialising the request bytes once (they are reused verbatim for
//! every request on every connection).

use std::net::{SocketAddr, ToSocketAddrs};

use crate::error::BenchError;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port (80 when absent).
    pub port: u16,
    /// Request target: path plus optional `?query`, never empty.
    pub path_and_query: String,
    /// Value for the `Host` header (`host` or `host:port`, brackets kept for IPv6).
    pub host_header: String,
}

/// Parses an absolute `http://` URL. `https://` gives [`BenchError::Unsupported`].
pub fn parse_url(url: &str) -> Result<ParsedUrl, BenchError> {
    let bad = |why: &str| BenchError::BadUrl(format!("{why}: {url:?}"));
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("contains whitespace or control characters"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("expected http://host[:port]/path"));
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err(BenchError::Unsupported("https is not supported yet".into()));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(bad("only http:// URLs are supported"));
    }
    let rest = rest.split('#').next().unwrap_or("");
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    if authority.contains('@') {
        return Err(bad("user info in URLs is not supported"));
    }
    let (host, port_str) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(bad("unterminated IPv6 literal"));
        };
        match after {
            "" => (h, None),
            p if p.starts_with(':') => (h, Some(&p[1..])),
            _ => return Err(bad("garbage after IPv6 literal")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = match port_str {
        None | Some("") => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("bad port")),
            Ok(p) => p,
        },
    };
    let path_and_query = if tail.is_empty() {
        "/".to_string()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_string()
    };
    let host_literal = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    let host_header = if port == 80 { host_literal } else { format!("{host_literal}:{port}") };
    Ok(ParsedUrl { host: host.to_string(), port, path_and_query, host_header })
}

/// Resolves the URL's host with the system resolver; returns the first address.
pub fn resolve(url: &ParsedUrl) -> Result<SocketAddr, BenchError> {
    let host = format!("{}:{}", url.host, url.port);
    let err = |source| BenchError::Resolve { host: host.clone(), source };
    let mut addrs = (url.host.as_str(), url.port).to_socket_addrs().map_err(err)?;
    addrs
        .next()
        .ok_or_else(|| err(std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses found")))
}

/// What goes into the serialised request.
#[derive(Debug, Clone)]
pub struct RequestSpec<'a> {
    /// Method token, e.g. `GET`.
    pub method: &'a str,
    /// The parsed URL.
    pub url: &'a ParsedUrl,
    /// Extra headers, in order.
    pub headers: &'a [(String, String)],
    /// Request body (a `Content-Length` is added unless given in `headers`).
    pub body: Option<&'a [u8]>,
    /// Keep the connection open between requests.
    pub keepalive: bool,
    /// Send `HTTP/1.0` instead of `HTTP/1.1`.
    pub http10: bool,
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a method token.
pub fn validate_method(m: &str) -> Result<(), BenchError> {
    if is_token(m) { Ok(()) } else { Err(BenchError::Usage(format!("bad method {m:?}"))) }
}

/// Parses a `Name: value` header argument.
pub fn parse_header(h: &str) -> Result<(String, String), BenchError> {
    let bad = || BenchError::Usage(format!("bad header {h:?}, expected \"Name: value\""));
    let (name, value) = h.split_once(':').ok_or_else(bad)?;
    let value = value.trim_matches([' ', '\t']);
    if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(bad());
    }
    Ok((name.to_string(), value.to_string()))
}

/// Serialises the request once: request line, `Host`, user headers,
/// `Content-Length` for a body, `Connection` as needed, blank line, body.
pub fn build_request(spec: &RequestSpec<'_>) -> Vec<u8> {
    let has = |n: &str| spec.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let version = if spec.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    let mut out = format!("{} {} {}\r\n", spec.method, spec.url.path_and_query, version);
    if !has("host") {
        out.push_str(&format!("Host: {}\r\n", spec.url.host_header));
    }
    for (k, v) in spec.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = spec.body
        && !has("content-length")
        && !has("transfer-encoding")
    {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !has("connection") {
        if !spec.keepalive {
            out.push_str("Connection: close\r\n");
        } else if spec.http10 {
            out.push_str("Connection: keep-alive\r\n");
        }
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if let Some(body) = spec.body {
        bytes.extend_from_slice(body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = parse_url("http://127.0.0.1:8080/a/b?x=1#frag").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.path_and_query, "/a/b?x=1");
        assert_eq!(u.host_header, "127.0.0.1:8080");
        let u = parse_url("http://example.com").unwrap();
        assert_eq!(
            (u.port, u.path_and_query.as_str(), u.host_header.as_str()),
            (80, "/", "example.com")
        );
        let u = parse_url("HTTP://[::1]:9000?q").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path_and_query.as_str()), ("::1", 9000, "/?q"));
        assert_eq!(u.host_header, "[::1]:9000");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "",
            "localhost:80",
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:x/",
            "http://a b/",
            "http://u@h/",
            "http://[::1/",
        ] {
            assert!(matches!(parse_url(bad), Err(BenchError::BadUrl(_))), "{bad}");
        }
        let e = parse_url("https://h/").unwrap_err();
        assert_eq!(e.to_string(), "https is not supported yet");
    }

    #[test]
    fn builds_requests() {
        let url = parse_url("http://h:81/p").unwrap();
        let headers = vec![("X-A".to_string(), "1".to_string())];
        let spec = RequestSpec {
            method: "POST",
            url: &url,
            headers: &headers,
            body: Some(b"abc"),
            keepalive: true,
            http10: false,
        };
        assert_eq!(
            build_request(&spec),
            b"POST /p HTTP/1.1\r\nHost: h:81\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nabc".to_vec()
        );
        let spec =
            RequestSpec { method: "GET", body: None, keepalive: false, http10: true, ..spec };
        assert_eq!(
            build_request(&spec),
            b"GET /p HTTP/1.0\r\nHost: h:81\r\nX-A: 1\r\nConnection: close\r\n\r\n".to_vec()
        );
        let spec = RequestSpec { keepalive: true, ..spec };
        assert!(
            String::from_utf8(build_request(&spec)).unwrap().contains("Connection: keep-alive\r\n")
        );
    }

    #[test]
    fn parses_headers() {
        assert_eq!(parse_header("X-Y:  v v ").unwrap(), ("X-Y".into(), "v v".into()));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("bad name: v").is_err());
        assert!(validate_method("GET").is_ok());
        assert!(validate_method("G T").is_err());
    }
}
