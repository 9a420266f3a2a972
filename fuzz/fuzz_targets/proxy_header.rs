//! The PROXY protocol v1/v2 parser on arbitrary bytes, in each mode: it never panics and never
//! claims more bytes than it was given.
#![no_main]

use ferrocorn_http::{ProxyMode, ProxyParse, parse_proxy_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mode in [ProxyMode::V1, ProxyMode::V2, ProxyMode::Auto] {
        if let Ok(ProxyParse::Done(_, consumed)) = parse_proxy_header(data, mode) {
            assert!(consumed <= data.len());
        }
    }
});
