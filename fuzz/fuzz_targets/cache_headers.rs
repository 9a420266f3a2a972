//! The response cache's storing decision on arbitrary response headers (Cache-Control,
//! Expires, X-Accel-Expires, Vary, Set-Cookie, in any order and number): it never panics, a
//! stored response is fresh until no earlier than now unless X-Accel-Expires gave an absolute
//! time, and a refusal is the same whatever the time.
#![no_main]

use ferrocorn_cache::{CacheValid, Storability, storability};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] =
    ["Cache-Control", "Expires", "X-Accel-Expires", "Vary", "Set-Cookie", "X-Other"];
const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&status_byte, rest)) = data.split_first() else { return };
    let status = 100 + u16::from(status_byte) * 2;
    // Lines: the first byte picks the header name, the rest is its value.
    let headers: Vec<(&str, &[u8])> = rest
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split_first())
        .map(|(&pick, value)| (NAMES[usize::from(pick) % NAMES.len()], value))
        .collect();
    let valid = CacheValid::parse("200=600,404=60").unwrap();
    let absolute = headers.iter().any(|(n, v)| *n == "X-Accel-Expires" && v.starts_with(b"@"));
    match storability(status, &headers, NOW, &valid) {
        Storability::Store(fresh) => assert!(absolute || fresh.valid_until >= NOW, "{fresh:?}"),
        Storability::NotStored(_) => {}
    }
});
