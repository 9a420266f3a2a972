//! The request-head parser on arbitrary bytes: it never panics, a complete head is never
//! longer than the input, and parsing just the bytes it consumed gives the same head (what
//! follows a head never changes it). The first byte picks the limits' switches.
#![no_main]

use ferrocorn_http::{HeaderMapPolicy, Limits, parse_request_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&switches, input)) = data.split_first() else { return };
    let limits = Limits {
        header_map: match switches % 3 {
            0 => HeaderMapPolicy::Drop,
            1 => HeaderMapPolicy::Refuse,
            _ => HeaderMapPolicy::Dangerous,
        },
        permit_obsolete_folding: switches & 0x04 != 0,
        strip_header_spaces: switches & 0x08 != 0,
        permit_unconventional_http_method: switches & 0x10 != 0,
        permit_unconventional_http_version: switches & 0x20 != 0,
        casefold_http_method: switches & 0x40 != 0,
        ..Limits::default()
    };
    let trusted = switches & 0x80 != 0;
    if let Ok(Some((head, consumed))) = parse_request_head(input, &limits, trusted) {
        assert!(consumed <= input.len());
        let again = parse_request_head(&input[..consumed], &limits, trusted);
        assert_eq!(again.ok().flatten().map(|(h, c)| (h, c)), Some((head.clone(), consumed)));
        let _ = head.require_host();
    }
});
