//! What the WSGI environ is built from, on arbitrary bytes: percent-decoding of the path and
//! the scheme read from trusted proxy headers never panic, and decoding never grows the input.
#![no_main]

use ferrocorn_http::{percent_decode, url_scheme_from_headers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = percent_decode(data);
    assert!(decoded.len() <= data.len());
    // Headers as the parser hands them over (upper-case names), split from the input.
    let mut headers = Vec::new();
    for line in data.split(|&b| b == b'\n').take(8) {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_uppercase();
            headers.push((name, line[colon + 1..].to_vec()));
        }
    }
    let secure = [
        ("X-FORWARDED-PROTOCOL".to_string(), "ssl".to_string()),
        ("X-FORWARDED-PROTO".to_string(), "https".to_string()),
        ("X-FORWARDED-SSL".to_string(), "on".to_string()),
    ];
    let _ = url_scheme_from_headers(&headers, &secure);
});
