//! `--cache-key`: the template of nginx variables a cached response is filed under, default
//! `$scheme$host$request_uri` (the client's Host is in the key, as Varnish and Django do;
//! nginx's own default uses the upstream's name instead). A template is parsed once at start,
//! where an unknown variable is an error that names it, and rendered per request from what
//! the request already carries.
//!
//! Variables, with nginx's meaning:
//! `$scheme`, `$host` (the host from an absolute-form target, else the `Host` header, lower
//! case, without its port), `$request_uri` (the target as sent), `$uri` (the decoded path),
//! `$args` (the query string), `$request_method`, `$remote_addr` (the client's address),
//! `$arg_NAME` (the first query argument NAME,
//! case-insensitive, undecoded), `$http_NAME` (request header NAME with `_` for `-`,
//! case-insensitive; several joined with `, `, `Cookie` lines with `; `), `$cookie_NAME`
//! (cookie NAME from the `Cookie` headers). `$uri` is the decoded path without nginx's
//! normalisation of `//` and `/./`. A variable may be written `${name}` to end it before a letter. A missing value
//! renders empty.

use std::fmt;

/// One variable of a key template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Scheme,
    Host,
    RequestUri,
    Uri,
    Args,
    RequestMethod,
    /// `$remote_addr`: the client's address (for the balancer's `hash $remote_addr`).
    RemoteAddr,
    /// `$arg_NAME`.
    Arg(String),
    /// `$http_NAME`, the header name with dashes.
    Header(String),
    /// `$cookie_NAME`.
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed `--cache-key` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

/// Why a `--cache-key` template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplateError {
    /// What was wrong, naming the variable or the spot.
    pub problem: String,
}

impl fmt::Display for KeyTemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; use nginx variables such as $scheme$host$request_uri, $uri, $args, \
             $request_method, $arg_NAME, $http_NAME, $cookie_NAME",
            self.problem
        )
    }
}

impl std::error::Error for KeyTemplateError {}

/// What a key is rendered from: the parts of a request the variables read.
#[derive(Debug, Clone, Copy)]
pub struct KeyRequest<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The method.
    pub method: &'a str,
    /// The request target as sent.
    pub target: &'a [u8],
    /// The path, percent-decoded.
    pub decoded_path: &'a [u8],
    /// The query string, without `?`.
    pub query: &'a [u8],
    /// Headers with upper-case names (as `ferrocorn_http::RequestHead` holds them).
    pub headers: &'a [(String, Vec<u8>)],
    /// The client's address as text (empty for a Unix-socket client).
    pub remote_addr: &'a [u8],
}

impl KeyTemplate {
    /// Parse a template such as `$scheme$host$request_uri` or `${host}-v2$uri`.
    pub fn parse(template: &str) -> Result<KeyTemplate, KeyTemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(dollar) = rest.find('$') {
            text.push_str(&rest[..dollar]);
            rest = &rest[dollar + 1..];
            let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
                let end = braced.find('}').ok_or_else(|| KeyTemplateError {
                    problem: format!("`${{` without a closing `}}` in {template:?}"),
                })?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Var(variable(name)?));
            rest = after;
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if parts.is_empty() {
            return Err(KeyTemplateError { problem: "the cache key template is empty".into() });
        }
        Ok(KeyTemplate { parts })
    }

    /// The key of `request`.
    pub fn render(&self, request: &KeyRequest<'_>) -> Vec<u8> {
        let mut key = Vec::with_capacity(64);
        self.render_into(request, &mut key);
        key
    }

    /// Append the key of `request` to `key` (a buffer kept across requests).
    pub fn render_into(&self, request: &KeyRequest<'_>, key: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(text) => key.extend_from_slice(text.as_bytes()),
                Part::Var(var) => append(key, var, request),
            }
        }
    }

    /// Whether rendering reads the decoded path (`$uri`), which costs a decoding per request.
    pub fn reads_decoded_path(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var(Var::Uri)))
    }

    /// Whether rendering reads the client's address (`$remote_addr`), formatted per request.
    pub fn reads_remote_addr(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var(Var::RemoteAddr)))
    }
}

fn variable(name: &str) -> Result<Var, KeyTemplateError> {
    let named = |prefix: &str| {
        name.strip_prefix(prefix).filter(|n| !n.is_empty()).map(|n| n.to_ascii_lowercase())
    };
    Ok(match name {
        "scheme" => Var::Scheme,
        "host" => Var::Host,
        "request_uri" => Var::RequestUri,
        "uri" | "document_uri" => Var::Uri,
        "args" | "query_string" => Var::Args,
        "request_method" => Var::RequestMethod,
        "remote_addr" => Var::RemoteAddr,
        _ => {
            if let Some(arg) = named("arg_") {
                Var::Arg(arg)
            } else if let Some(header) = named("http_") {
                Var::Header(header.replace('_', "-"))
            } else if let Some(cookie) = named("cookie_") {
                Var::Cookie(cookie)
            } else if name.is_empty() {
                return Err(KeyTemplateError { problem: "a `$` without a variable name".into() });
            } else {
                return Err(KeyTemplateError {
                    problem: format!("unknown variable ${name} in the cache key"),
                });
            }
        }
    })
}

fn append(key: &mut Vec<u8>, var: &Var, request: &KeyRequest<'_>) {
    match var {
        Var::Scheme => key.extend_from_slice(request.scheme.as_bytes()),
        Var::Host => key.extend(host(request).iter().map(u8::to_ascii_lowercase)),
        Var::RequestUri => key.extend_from_slice(request.target),
        Var::Uri => key.extend_from_slice(request.decoded_path),
        Var::Args => key.extend_from_slice(request.query),
        Var::RequestMethod => key.extend_from_slice(request.method.as_bytes()),
        Var::RemoteAddr => key.extend_from_slice(request.remote_addr),
        Var::Arg(name) => {
            let found = request.query.split(|&b| b == b'&').find_map(|pair| {
                let (n, v) = split_once(pair, b'=').unwrap_or((pair, b""));
                n.eq_ignore_ascii_case(name.as_bytes()).then_some(v)
            });
            key.extend_from_slice(found.unwrap_or_default());
        }
        Var::Header(name) => {
            // nginx joins repeated headers with `, `, and `Cookie` lines with `; `
            let joiner: &[u8] = if name == "cookie" { b"; " } else { b", " };
            let mut first = true;
            for (_, value) in headers_named(request, name) {
                if !first {
                    key.extend_from_slice(joiner);
                }
                first = false;
                key.extend_from_slice(value);
            }
        }
        Var::Cookie(name) => {
            let found = headers_named(request, "cookie")
                .flat_map(|(_, value)| value.split(|&b| b == b';'))
                .find_map(|pair| {
                    let pair = trim(pair);
                    let (n, v) = split_once(pair, b'=')?;
                    trim(n).eq_ignore_ascii_case(name.as_bytes()).then_some(v)
                });
            key.extend_from_slice(found.unwrap_or_default());
        }
    }
}

/// nginx's `$host`: from an absolute-form target, else the Host header, without the port.
fn host<'a>(request: &KeyRequest<'a>) -> &'a [u8] {
    let from_target = request
        .target
        .windows(3)
        .position(|w| w == b"://")
        .filter(|_| !request.target.starts_with(b"/"))
        .map(|at| {
            let rest = &request.target[at + 3..];
            let end =
                rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
            &rest[..end]
        });
    let authority = from_target
        .or_else(|| headers_named(request, "host").next().map(|(_, v)| v.as_slice()))
        .unwrap_or_default();
    let authority = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    if authority.starts_with(b"[") {
        // [v6]:port keeps its brackets, loses its port
        let end = authority.iter().position(|&b| b == b']').map_or(authority.len(), |e| e + 1);
        return &authority[..end];
    }
    match authority.iter().position(|&b| b == b':') {
        Some(colon) => &authority[..colon],
        None => authority,
    }
}

fn headers_named<'r, 'a: 'r>(
    request: &'r KeyRequest<'a>,
    lower_name: &'r str,
) -> impl Iterator<Item = &'a (String, Vec<u8>)> + 'r {
    request.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(lower_name))
}

fn split_once(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == sep)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(n, v)| (n.to_ascii_uppercase(), v.as_bytes().to_vec())).collect()
    }

    fn render(template: &str, target: &str, hdrs: &[(&str, &str)]) -> String {
        let headers = headers(hdrs);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = path.find("://").map_or(path, |at| {
            let rest = &path[at + 3..];
            rest.find('/').map_or("/", |slash| &rest[slash..])
        });
        let request = KeyRequest {
            scheme: "https",
            method: "GET",
            target: target.as_bytes(),
            decoded_path: path.as_bytes(),
            query: query.as_bytes(),
            headers: &headers,
            remote_addr: b"192.0.2.7",
        };
        let key = KeyTemplate::parse(template).unwrap().render(&request);
        String::from_utf8(key).unwrap()
    }

    #[test]
    fn the_default_key_has_the_clients_host() {
        let t = "$scheme$host$request_uri";
        assert_eq!(
            render(t, "/a/b?x=1", &[("Host", "Example.COM:8080")]),
            "httpsexample.com/a/b?x=1"
        );
        assert_eq!(render(t, "/", &[("Host", "[::1]:80")]), "https[::1]/");
        let absolute = render(t, "http://Other.test:81/p?q", &[("Host", "ignored")]);
        assert_eq!(absolute, "httpsother.testhttp://Other.test:81/p?q");
        assert_eq!(render(t, "/", &[]), "https/");
    }

    #[test]
    fn arguments_headers_and_cookies() {
        let hdrs = [
            ("Host", "h"),
            ("Accept-Language", "fr"),
            ("X-Multi", "a"),
            ("X-Multi", "b"),
            ("Cookie", "theme=dark; session=s1"),
            ("Cookie", "lang=de"),
        ];
        let t = "$uri|$args|$arg_page|$arg_missing|$http_accept_language|$http_x_multi|$cookie_session|$cookie_lang|$request_method|$http_cookie";
        assert_eq!(
            render(t, "/list?Page=3&page=4&x", &hdrs),
            "/list|Page=3&page=4&x|3||fr|a, b|s1|de|GET|theme=dark; session=s1; lang=de"
        );
    }

    #[test]
    fn the_clients_address_is_a_variable() {
        assert_eq!(render("$remote_addr|$uri", "/p", &[]), "192.0.2.7|/p");
        assert!(KeyTemplate::parse("x$remote_addr").unwrap().reads_remote_addr());
        assert!(!KeyTemplate::parse("$uri").unwrap().reads_remote_addr());
    }

    #[test]
    fn braces_end_a_name_and_text_is_kept() {
        assert_eq!(render("v2:${host}x$uri", "/p", &[("Host", "h")]), "v2:hx/p");
    }

    #[test]
    fn bad_templates_name_what_is_wrong() {
        for (template, says) in [
            ("$scheme$hots$request_uri", "$hots"),
            ("$", "without a variable"),
            ("${host", "closing"),
            ("$arg_", "$arg_"),
            ("", "empty"),
        ] {
            let err = KeyTemplate::parse(template).unwrap_err();
            assert!(err.to_string().contains(says), "{template:?}: {err}");
        }
    }
}
