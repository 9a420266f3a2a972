//! The access log: Gunicorn's `access_log_format` compiled once into atoms and rendered per
//! request. Every Gunicorn atom is supported (`h l u t r s m U q H B b f a T M D L p`,
//! `{header}i`, `{header}o`, `{var}e`); unknown atoms render as `-` like Gunicorn's SafeAtoms,
//! and `"` inside values is escaped as `\"`.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::logging::Sink;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Literal(String),
    RemoteAddr,
    Dash,
    User,
    Time,
    RequestLine,
    Status,
    Method,
    PathInfo,
    Query,
    Protocol,
    BodyBytes,
    BodyBytesClf,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    RequestHeader(String),
    ResponseHeader(String),
    Environ(String),
    Unknown,
}

/// What one finished request contributes to its access-log line.
pub struct AccessRecord<'a> {
    /// Peer address (`REMOTE_ADDR`).
    pub remote_addr: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Raw request target (`RAW_URI`).
    pub raw_uri: &'a [u8],
    /// Decoded path (`PATH_INFO`).
    pub path_info: &'a str,
    /// Query string.
    pub query: &'a [u8],
    /// `HTTP/1.1` etc.
    pub protocol: &'a str,
    /// Response status code.
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// Request headers (upper-case names).
    pub request_headers: &'a [(String, Vec<u8>)],
    /// Response headers as sent by the app.
    pub response_headers: &'a [(String, String)],
    /// Time from request head parsed to response done.
    pub duration: Duration,
    /// Looks up an environ variable for `{var}e` atoms (None when not available).
    pub environ: &'a dyn Fn(&str) -> Option<String>,
}

/// A compiled access-log format plus its sink.
pub struct AccessLog {
    atoms: Vec<Atom>,
    sink: Mutex<Sink>,
    json: bool,
}

/// The JSON key for an atom (`None` for literals, which JSON lines drop).
fn json_key(atom: &Atom) -> Option<String> {
    Some(match atom {
        Atom::Literal(_) => return None,
        Atom::RemoteAddr => "remote_addr".into(),
        Atom::Dash => "ident".into(),
        Atom::User => "user".into(),
        Atom::Time => "time".into(),
        Atom::RequestLine => "request".into(),
        Atom::Status => "status".into(),
        Atom::Method => "method".into(),
        Atom::PathInfo => "path".into(),
        Atom::Query => "query".into(),
        Atom::Protocol => "protocol".into(),
        Atom::BodyBytes => "response_bytes".into(),
        Atom::BodyBytesClf => "bytes".into(),
        Atom::Referer => "referer".into(),
        Atom::UserAgent => "user_agent".into(),
        Atom::Seconds => "duration_s".into(),
        Atom::Millis => "duration_ms".into(),
        Atom::Micros => "duration_us".into(),
        Atom::DecimalSeconds => "duration".into(),
        Atom::Pid => "pid".into(),
        Atom::RequestHeader(h) => {
            format!("request_header_{}", h.to_ascii_lowercase().replace('-', "_"))
        }
        Atom::ResponseHeader(h) => format!("response_header_{}", h.replace('-', "_")),
        Atom::Environ(v) => format!("environ_{v}"),
        Atom::Unknown => return None,
    })
}

fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn atom_for(name: &str) -> Atom {
    if let Some(inner) = name.strip_prefix('{') {
        if let Some(header) = inner.strip_suffix("}i") {
            return Atom::RequestHeader(header.to_ascii_uppercase());
        }
        if let Some(header) = inner.strip_suffix("}o") {
            return Atom::ResponseHeader(header.to_ascii_lowercase());
        }
        if let Some(var) = inner.strip_suffix("}e") {
            return Atom::Environ(var.to_owned());
        }
        return Atom::Unknown;
    }
    match name {
        "h" => Atom::RemoteAddr,
        "l" => Atom::Dash,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "s" => Atom::Status,
        "m" => Atom::Method,
        "U" => Atom::PathInfo,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "B" => Atom::BodyBytes,
        "b" => Atom::BodyBytesClf,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        _ => Atom::Unknown,
    }
}

/// Split a `%(name)s`-style format into atoms.
fn compile(format: &str) -> Vec<Atom> {
    let mut atoms = Vec::new();
    let mut literal = String::new();
    let mut rest = format;
    while let Some(pos) = rest.find('%') {
        literal.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            literal.push('%');
            rest = tail;
        } else if let Some(named) = after.strip_prefix('(') {
            match named.find(')') {
                Some(close) if named.len() > close + 1 => {
                    if !literal.is_empty() {
                        atoms.push(Atom::Literal(std::mem::take(&mut literal)));
                    }
                    atoms.push(atom_for(&named[..close]));
                    // skip the conversion character (s, d, ...)
                    let conv_len = named[close + 1..].chars().next().map_or(0, char::len_utf8);
                    rest = &named[close + 1 + conv_len..];
                }
                _ => {
                    literal.push('%');
                    rest = after;
                }
            }
        } else {
            literal.push('%');
            rest = after;
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        atoms.push(Atom::Literal(literal));
    }
    atoms
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        if c == '"' {
            out.push_str("\\\"");
        } else {
            out.push(c);
        }
    }
}

fn decode_base64(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in input.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The user name from `Authorization: Basic ...`, if any.
fn basic_auth_user(headers: &[(String, Vec<u8>)]) -> Option<String> {
    let value = headers.iter().find(|(n, _)| n == "AUTHORIZATION")?.1.as_slice();
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = decode_base64(credentials.trim())?;
    let text = String::from_utf8_lossy(&decoded);
    Some(text.split(':').next().unwrap_or_default().to_owned())
}

impl AccessLog {
    /// Compile `format` and write to `sink`.
    pub fn new(format: &str, sink: Sink) -> Self {
        AccessLog { atoms: compile(format), sink: Mutex::new(sink), json: false }
    }

    /// Write one JSON object per line instead (keys named after the atoms).
    pub fn json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }

    /// Whether the format needs `{var}e` environ lookups (the caller then keeps the environ).
    pub fn needs_environ(&self) -> bool {
        self.atoms.iter().any(|a| matches!(a, Atom::Environ(_)))
    }

    /// Render one line (without the newline).
    pub fn render(&self, record: &AccessRecord<'_>) -> String {
        if self.json {
            let mut out = String::from("{");
            for atom in &self.atoms {
                let Some(key) = json_key(atom) else { continue };
                if out.len() > 1 {
                    out.push(',');
                }
                push_json_string(&mut out, &key);
                out.push(':');
                let value = self.atom_value(atom, record);
                match atom {
                    Atom::Status
                    | Atom::BodyBytes
                    | Atom::Seconds
                    | Atom::Millis
                    | Atom::Micros => out.push_str(&value),
                    _ => push_json_string(&mut out, &value),
                }
            }
            out.push('}');
            return out;
        }
        let mut out = String::with_capacity(128);
        for atom in &self.atoms {
            if let Atom::Literal(text) = atom {
                out.push_str(text);
            } else {
                push_escaped(&mut out, &self.atom_value(atom, record));
            }
        }
        out
    }

    fn atom_value(&self, atom: &Atom, record: &AccessRecord<'_>) -> String {
        let header = |name: &str| {
            record.request_headers.iter().find(|(n, _)| n == name).map(|(_, v)| latin1(v))
        };
        match atom {
            Atom::Literal(text) => text.clone(),
            Atom::RemoteAddr => record.remote_addr.to_owned(),
            Atom::Dash | Atom::Unknown => "-".to_owned(),
            Atom::User => basic_auth_user(record.request_headers).unwrap_or_else(|| "-".into()),
            Atom::Time => crate::clock::access_log_stamp(SystemTime::now()),
            Atom::RequestLine => {
                format!("{} {} {}", record.method, latin1(record.raw_uri), record.protocol)
            }
            Atom::Status => record.status.to_string(),
            Atom::Method => record.method.to_owned(),
            Atom::PathInfo => record.path_info.to_owned(),
            Atom::Query => latin1(record.query),
            Atom::Protocol => record.protocol.to_owned(),
            Atom::BodyBytes => record.body_bytes.to_string(),
            Atom::BodyBytesClf => {
                if record.body_bytes == 0 {
                    "-".into()
                } else {
                    record.body_bytes.to_string()
                }
            }
            Atom::Referer => header("REFERER").unwrap_or_else(|| "-".into()),
            Atom::UserAgent => header("USER-AGENT").unwrap_or_else(|| "-".into()),
            Atom::Seconds => record.duration.as_secs().to_string(),
            Atom::Millis => record.duration.as_millis().to_string(),
            Atom::Micros => record.duration.as_micros().to_string(),
            Atom::DecimalSeconds => {
                format!("{}.{:06}", record.duration.as_secs(), record.duration.subsec_micros())
            }
            Atom::Pid => format!("<{}>", std::process::id()),
            Atom::RequestHeader(name) => header(name).unwrap_or_else(|| "-".into()),
            Atom::ResponseHeader(name) => record
                .response_headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "-".into()),
            Atom::Environ(var) => (record.environ)(var).unwrap_or_else(|| "-".into()),
        }
    }

    /// Render and write one line.
    pub fn write(&self, record: &AccessRecord<'_>) {
        let mut line = self.render(record);
        line.push('\n');
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).write_line(line.as_bytes());
    }

    /// Reopen the log file (USR1).
    pub fn reopen(&self) -> std::io::Result<()> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).reopen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(
        headers: &'a [(String, Vec<u8>)],
        response_headers: &'a [(String, String)],
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> AccessRecord<'a> {
        AccessRecord {
            remote_addr: "127.0.0.1",
            method: "GET",
            raw_uri: b"/a%20b?x=1",
            path_info: "/a b",
            query: b"x=1",
            protocol: "HTTP/1.1",
            status: 200,
            body_bytes: 0,
            request_headers: headers,
            response_headers,
            duration: Duration::from_micros(1_500_250),
            environ: env,
        }
    }

    #[test]
    fn renders_gunicorn_default_format() {
        let log = AccessLog::new(
            r#"%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#,
            Sink::Stderr,
        );
        let headers = vec![
            ("USER-AGENT".to_string(), b"curl \"x\"".to_vec()),
            ("AUTHORIZATION".to_string(), b"Basic dXNlcjpwYXNz".to_vec()),
        ];
        let env = |_: &str| None;
        let line = log.render(&record(&headers, &[], &env));
        assert_eq!(line, r#"127.0.0.1 - user "GET /a%20b?x=1 HTTP/1.1" 200 - "-" "curl \"x\"""#);
    }

    #[test]
    fn renders_json_lines() {
        let log =
            AccessLog::new(r#"%(h)s "%(r)s" %(s)s %(B)s %({x-req}i)s"#, Sink::Stderr).json(true);
        let headers = vec![("X-REQ".to_string(), b"a\"b".to_vec())];
        let env = |_: &str| None;
        let line = log.render(&record(&headers, &[], &env));
        assert_eq!(
            line,
            r#"{"remote_addr":"127.0.0.1","request":"GET /a%20b?x=1 HTTP/1.1","status":200,"response_bytes":0,"request_header_x_req":"a\"b"}"#
        );
    }

    #[test]
    fn renders_times_headers_and_environ() {
        let log = AccessLog::new(
            "%(T)s %(M)s %(D)s %(L)s %({x-req}i)s %({Content-Type}o)s %({REMOTE_USER}e)s %(U)s %(q)s %(m)s %(H)s %(B)s %(zz)s 100%%",
            Sink::Stderr,
        );
        let headers = vec![("X-REQ".to_string(), b"r1".to_vec())];
        let response = vec![("Content-Type".to_string(), "text/plain".to_string())];
        let env = |k: &str| (k == "REMOTE_USER").then(|| "bob".to_string());
        let line = log.render(&record(&headers, &response, &env));
        assert_eq!(
            line,
            "1 1500 1500250 1.500250 r1 text/plain bob /a b x=1 GET HTTP/1.1 0 - 100%"
        );
        assert!(log.needs_environ());
    }
}
