//! Response heads from arbitrary status and header text: validation never panics, and an
//! accepted head encodes to one status line, no bare CR or LF inside a line, and a blank line
//! only at the end (no header injection).
#![no_main]

use ferrocorn_http::{ResponseFraming, ResponseHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text: String = data.iter().map(|&b| b as char).collect(); // latin-1, as PEP 3333
    let mut parts = text.split('\u{1}');
    let status = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        headers.push((name.to_owned(), value.to_owned()));
    }
    let Ok(head) = ResponseHead::new(&status, headers) else { return };
    let mut out = Vec::new();
    head.encode(&mut out, (1, 1), ResponseFraming::Chunked, true, b"D", b"s");
    assert!(out.ends_with(b"\r\n\r\n"));
    let body = &out[..out.len() - 4];
    assert!(!body.windows(4).any(|w| w == b"\r\n\r\n"), "blank line inside the head");
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && body[i - 1] == b'\r', "bare LF");
        }
        if b == b'\r' {
            assert!(body.get(i + 1) == Some(&b'\n'), "bare CR");
        }
    }
});
