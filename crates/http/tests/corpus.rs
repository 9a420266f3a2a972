//! Gunicorn conformance corpus check: when `FERROCORN_CORPUS_DIR` points at Gunicorn's
//! `tests/requests` directory, every `.http` file is decoded (Gunicorn's `treq.py` rules) and
//! run through the PROXY parser, the head parser, and the body readers like a connection
//! would be: `invalid/` files must fail, `valid/` files must parse into as many requests as
//! their `.py` expects, with the same method and raw target. Each file is run with the whole
//! input at once and fed one byte at a time. Prints a summary and every divergence; passes
//! (with a note) when the variable is not set.
//!
//! `FERROCORN_CORPUS_DUMP=<file>` additionally writes one JSON line per parsed valid request
//! (for a field-by-field comparison with the `.py` expectations by an external script).

use ferrocorn_http::{
    BodyFraming, ChunkedDecoder, ErrorKind, HeaderMapPolicy, Limits, ParseError, ProxyMode,
    ProxyParse, RequestHead, parse_proxy_header, parse_request_head, url_scheme_from_headers,
};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Decode a `.http` file: drop literal newlines, then `\r\n`, `\0`, `\n`, `\t`, `\xHH`.
fn decode_http(raw: &[u8]) -> Vec<u8> {
    let s: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\n').collect();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 1 < s.len() {
            match s[i + 1] {
                b'r' if s.get(i + 2..i + 4) == Some(b"\\n") => {
                    out.extend_from_slice(b"\r\n");
                    i += 4;
                    continue;
                }
                b'0' => {
                    out.push(0);
                    i += 2;
                    continue;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                b't' => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                b'x' if i + 3 < s.len() => {
                    if let Ok(v) = u8::from_str_radix(
                        std::str::from_utf8(&s[i + 2..i + 4]).unwrap_or("zz"),
                        16,
                    ) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Settings a corpus `.py` file sets, mapped onto the parser's inputs the way
/// `ferrocorn-native` would clamp them.
fn config_from_py(py: &str) -> (Limits, ProxyMode) {
    let mut limits = Limits::default();
    let mut proxy = ProxyMode::Off;
    for line in py.lines() {
        let Some(args) = line.trim().strip_prefix("cfg.set(").and_then(|r| r.strip_suffix(')'))
        else {
            continue;
        };
        let Some((name, value)) = args.split_once(',') else { continue };
        let name = name.trim().trim_matches(|c| c == '"' || c == '\'');
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        let num = || value.parse::<i64>().unwrap_or(0);
        let flag = value == "True";
        match name {
            "limit_request_line" => {
                let n = num();
                limits.request_line = if (0..8190).contains(&n) { n as usize } else { 8190 };
            }
            "limit_request_fields" => {
                let n = num();
                limits.fields = if n <= 0 || n > 32768 { 32768 } else { n as usize };
            }
            "limit_request_field_size" => {
                let n = num();
                limits.field_size = if n <= 0 { 8190 } else { n as usize };
            }
            "header_map" => {
                limits.header_map = match value {
                    "refuse" => HeaderMapPolicy::Refuse,
                    "dangerous" => HeaderMapPolicy::Dangerous,
                    _ => HeaderMapPolicy::Drop,
                }
            }
            "permit_obsolete_folding" => limits.permit_obsolete_folding = flag,
            "strip_header_spaces" => limits.strip_header_spaces = flag,
            "permit_unconventional_http_method" => limits.permit_unconventional_http_method = flag,
            "permit_unconventional_http_version" => {
                limits.permit_unconventional_http_version = flag
            }
            "casefold_http_method" => limits.casefold_http_method = flag,
            "proxy_protocol" => {
                proxy = match value {
                    "True" | "auto" => ProxyMode::Auto,
                    "v1" => ProxyMode::V1,
                    "v2" => ProxyMode::V2,
                    _ => ProxyMode::Off,
                }
            }
            // The harness's peer is None (trusted); nothing to map.
            "forwarded_allow_ips" => {}
            other => panic!("corpus sets an unmapped setting {other}"),
        }
    }
    (limits, proxy)
}

/// One request read off the simulated connection.
struct Parsed {
    head: RequestHead,
    body: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
}

/// Gunicorn's default `secure_scheme_headers`.
fn scheme_map() -> Vec<(String, String)> {
    vec![
        ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
        ("X-FORWARDED-PROTO".into(), "https".into()),
        ("X-FORWARDED-SSL".into(), "on".into()),
    ]
}

/// Parse one head, either from the whole remaining input or by growing the buffer a byte
/// at a time (checking that every shorter prefix is incomplete, not an error).
fn next_head(
    data: &[u8],
    limits: &Limits,
    bytewise: bool,
) -> Result<(RequestHead, usize), ParseError> {
    if !bytewise {
        return parse_request_head(data, limits, true)?
            .ok_or_else(|| ParseError::new(ErrorKind::NoMoreData, "eof in head"));
    }
    for end in 1..=data.len() {
        if let Some(r) = parse_request_head(&data[..end], limits, true)? {
            return Ok(r);
        }
    }
    Err(ParseError::new(ErrorKind::NoMoreData, "eof in head"))
}

/// Run a whole connection's bytes; `Ok` with every request, or the first error.
fn run(
    data: &[u8],
    limits: &Limits,
    proxy: ProxyMode,
    bytewise: bool,
) -> Result<Vec<Parsed>, ParseError> {
    let mut pos = 0;
    if proxy != ProxyMode::Off {
        match parse_proxy_header(data, proxy)? {
            ProxyParse::NotProxy => {}
            ProxyParse::Incomplete => {
                return Err(ParseError::new(ErrorKind::NoMoreData, "eof in PROXY header"));
            }
            ProxyParse::Done(_, n) => pos = n,
        }
    }
    let mut out = Vec::new();
    while pos < data.len() {
        let (head, n) = next_head(&data[pos..], limits, bytewise)?;
        pos += n;
        url_scheme_from_headers(&head.headers, &scheme_map())?;
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        match head.framing {
            BodyFraming::Empty => {}
            BodyFraming::Length(len) => {
                // Like Gunicorn's harness, a short body is read to EOF.
                let take = usize::try_from(len).unwrap_or(usize::MAX).min(data.len() - pos);
                body.extend_from_slice(&data[pos..pos + take]);
                pos += take;
            }
            BodyFraming::Chunked => {
                let mut dec = ChunkedDecoder::new(limits.clone());
                if bytewise {
                    let mut pending = Vec::new();
                    while !dec.is_done() {
                        if pos >= data.len() {
                            return Err(dec.eof_error());
                        }
                        pending.push(data[pos]);
                        pos += 1;
                        let used = dec.decode(&pending, &mut body)?;
                        pending.drain(..used);
                    }
                    // Hand back what the decoder did not take.
                    pos -= pending.len();
                } else {
                    pos += dec.decode(&data[pos..], &mut body)?;
                    if !dec.is_done() {
                        return Err(dec.eof_error());
                    }
                }
                trailers = dec.trailers().to_vec();
            }
        }
        let keep_alive = head.keep_alive;
        out.push(Parsed { head, body, trailers });
        if !keep_alive {
            break;
        }
    }
    Ok(out)
}

/// `"method": "X"` and `uri("...")` values of a valid `.py`, in order.
fn expectations(py: &str) -> Vec<(String, String)> {
    let mut methods = Vec::new();
    let mut uris = Vec::new();
    for line in py.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("\"method\":") {
            methods.push(rest.trim().trim_end_matches(',').trim_matches('"').to_string());
        }
        if let Some(i) = t.find("uri(") {
            let rest = &t[i + 4..];
            let q = rest.chars().next().unwrap_or('"');
            let inner = rest[1..].split(q).next().unwrap_or("").to_string();
            uris.push(inner);
        }
    }
    methods.into_iter().zip(uris).collect()
}

fn json_bytes(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(c)),
            _ => {
                let _ = write!(s, "\\u{:04x}", c);
            }
        }
    }
    s.push('"');
    s
}

fn json_fields(f: &[(String, Vec<u8>)]) -> String {
    let items: Vec<String> = f
        .iter()
        .map(|(n, v)| format!("[{},{}]", json_bytes(n.as_bytes()), json_bytes(v)))
        .collect();
    format!("[{}]", items.join(","))
}

fn dump_line(file: &str, i: usize, p: &Parsed) -> String {
    let h = &p.head;
    format!(
        "{{\"file\":{},\"index\":{},\"method\":{},\"raw\":{},\"path\":{},\"query\":{},\"fragment\":{},\"version\":[{},{}],\"headers\":{},\"body\":{},\"trailers\":{}}}\n",
        json_bytes(file.as_bytes()),
        i,
        json_bytes(h.method.as_bytes()),
        json_bytes(&h.target),
        json_bytes(&h.path),
        json_bytes(&h.query),
        json_bytes(&h.fragment),
        h.version.0,
        h.version.1,
        json_fields(&h.headers),
        json_bytes(&p.body),
        json_fields(&p.trailers),
    )
}

fn sorted_http_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .collect();
    files.sort();
    files
}

#[test]
fn gunicorn_request_corpus() {
    let Ok(dir) = std::env::var("FERROCORN_CORPUS_DIR") else {
        println!("note: FERROCORN_CORPUS_DIR not set; skipping the Gunicorn corpus check");
        return;
    };
    let dir = PathBuf::from(dir);
    let mut dump = String::new();
    let mut divergences = Vec::new();

    // valid/
    let valid = sorted_http_files(&dir.join("valid"));
    let mut valid_ok = 0;
    for path in &valid {
        let name = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
        let data = decode_http(&std::fs::read(path).expect("read .http"));
        let py = std::fs::read_to_string(path.with_extension("py")).expect("read .py");
        let (limits, proxy) = config_from_py(&py);
        let expect = expectations(&py);
        let mut problem = None;
        for bytewise in [false, true] {
            match run(&data, &limits, proxy, bytewise) {
                Err(e) => problem = Some(format!("fails with {e} (bytewise={bytewise})")),
                Ok(reqs) => {
                    if reqs.len() != expect.len() {
                        problem =
                            Some(format!("{} requests, expected {}", reqs.len(), expect.len()));
                    }
                    for (i, (p, (m, u))) in reqs.iter().zip(&expect).enumerate() {
                        if &p.head.method != m || p.head.target != u.as_bytes() {
                            problem = Some(format!(
                                "request {i}: {} {} expected {m} {u}",
                                p.head.method,
                                String::from_utf8_lossy(&p.head.target)
                            ));
                        }
                        if !bytewise {
                            dump.push_str(&dump_line(&name, i, p));
                        }
                    }
                }
            }
            if problem.is_some() {
                break;
            }
        }
        match problem {
            None => valid_ok += 1,
            Some(p) => divergences.push(format!("valid/{name}: {p}")),
        }
    }

    // invalid/
    let invalid = sorted_http_files(&dir.join("invalid"));
    let (mut invalid_ok, mut kind_ok) = (0, 0);
    for path in &invalid {
        let name = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
        let data = decode_http(&std::fs::read(path).expect("read .http"));
        let py = std::fs::read_to_string(path.with_extension("py")).expect("read .py");
        let (limits, proxy) = config_from_py(&py);
        let expected = py
            .lines()
            .find_map(|l| l.trim().strip_prefix("request = ").map(|s| s.trim().to_string()))
            .unwrap_or_default();
        let whole = run(&data, &limits, proxy, false);
        let bytewise = run(&data, &limits, proxy, true);
        match (&whole, &bytewise) {
            (Err(a), Err(b)) => {
                invalid_ok += 1;
                let (ka, kb) = (a.kind().gunicorn_name(), b.kind().gunicorn_name());
                if ka == expected && kb == expected {
                    kind_ok += 1;
                } else {
                    divergences.push(format!(
                        "invalid/{name}: fails with {ka} (bytewise {kb}), Gunicorn says {expected}"
                    ));
                }
            }
            _ => divergences.push(format!(
                "invalid/{name}: parses (whole ok={}, bytewise ok={}), Gunicorn says {expected}",
                whole.is_ok(),
                bytewise.is_ok()
            )),
        }
    }

    println!(
        "Gunicorn corpus: valid {valid_ok}/{}, invalid {invalid_ok}/{} rejected ({kind_ok} with the same error class)",
        valid.len(),
        invalid.len()
    );
    for d in &divergences {
        println!("  divergence: {d}");
    }
    if let Ok(out) = std::env::var("FERROCORN_CORPUS_DUMP") {
        std::fs::write(&out, dump).expect("write dump");
    }
    assert!(valid_ok * 100 >= valid.len() * 95, "valid agreement below 95%");
    assert!(invalid_ok * 100 >= invalid.len() * 95, "invalid agreement below 95%");
}

#[test]
fn decoding_rules() {
    assert_eq!(
        decode_http(b"GET / HTTP/1.1\\r\\n\nA: \\t\\x41\\0\\n\n\\r\\n"),
        b"GET / HTTP/1.1\r\nA: \tA\0\n\r\n"
    );
}
