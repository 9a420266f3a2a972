//! The load balancer's parsers: an `--upstream` spec, a `--method`, a `--health-check`, a
//! `--next-upstream` list and a `--pool` entry (the first byte picks which), and the upstream's
//! response head as the proxy reads it (the rest of the input, split at every place the
//! first byte names): arbitrary bytes never panic, a head parsed from the whole input parses
//! the same from the input fed in two pieces, and its client head is well formed.
#![no_main]

use ferrocorn_balance::{HealthCheckSpec, Method, NextUpstream, UpstreamSpec};
use ferrocorn_config::PoolSpec;
use ferrocorn_proxy::{
    ResponseFraming, ResponseLimits, client_framing, parse_response_head, write_client_head,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    if let Ok(text) = std::str::from_utf8(rest) {
        match selector % 5 {
            0 => drop(UpstreamSpec::parse(text)),
            1 => drop(Method::parse(text)),
            2 => drop(HealthCheckSpec::parse(text)),
            3 => drop(NextUpstream::parse(text)),
            _ => drop(PoolSpec::parse(text)),
        }
    }
    let is_head = selector & 0x80 != 0;
    let whole = parse_response_head(rest, is_head, ResponseLimits::default());
    if let Ok(Some((head, used))) = &whole {
        assert!(*used <= rest.len());
        // A prefix shorter than the head is incomplete or an error, never another head.
        let cut = usize::from(selector) % (*used).max(1);
        if let Ok(Some((early, _))) = parse_response_head(&rest[..cut], is_head, ResponseLimits::default()) {
            assert_eq!(early.status, head.status);
        }
        for version in [(1, 0), (1, 1)] {
            let framing = client_framing(head.framing, version);
            let mut out = Vec::new();
            write_client_head(head, &mut out, version, framing != ResponseFraming::UntilClose, framing);
            assert!(out.ends_with(b"\r\n\r\n"), "{out:?}");
        }
    }
});
