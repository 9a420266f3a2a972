//! Property tests of the request parser and the chunked decoder (proptest): how a valid
//! request arrives — in one piece or split anywhere, in any number of pieces — never changes
//! what is parsed, and a parsed head written out again parses to the same head.

use ferrocorn_http::{BodyFraming, ChunkedDecoder, Limits, RequestHead, parse_request_head};
use proptest::prelude::*;

/// A request line and header block the parser must accept (token names, visible-ASCII values,
/// an origin-form target, HTTP/1.0 or 1.1, a Host header).
fn valid_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);
    let target = "/[a-zA-Z0-9._~%!$&'()*+,;=:@/-]{0,40}(\\?[a-zA-Z0-9=&%._-]{0,20})?";
    let version = prop::sample::select(vec!["HTTP/1.0", "HTTP/1.1"]);
    let name = "[A-Za-z][A-Za-z0-9!#$%&'*+.^`|~-]{0,15}";
    let value = "[!-~]([ \\t!-~]{0,30}[!-~])?";
    let headers = prop::collection::vec((name, value), 0..8);
    (method, target, version, "[a-z0-9.-]{1,20}", headers).prop_map(
        |(method, target, version, host, headers)| {
            let mut out = format!("{method} {target} {version}\r\nHost: {host}\r\n");
            for (name, value) in headers {
                // Names the parser gives meaning to are left out: they have rules of their own.
                let upper = name.to_ascii_uppercase();
                if [
                    "HOST",
                    "CONTENT-LENGTH",
                    "TRANSFER-ENCODING",
                    "EXPECT",
                    "CONNECTION",
                    "UPGRADE",
                    "SCRIPT_NAME",
                ]
                .contains(&upper.as_str())
                {
                    continue;
                }
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            out.push_str("\r\n");
            out.into_bytes()
        },
    )
}

fn parse_whole(buf: &[u8]) -> (RequestHead, usize) {
    parse_request_head(buf, &Limits::default(), false)
        .expect("valid request")
        .expect("complete request")
}

/// Write a parsed head out again: request line, headers by their (upper-cased) names.
fn serialise(head: &RequestHead) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&head.target);
    out.extend_from_slice(format!(" HTTP/{}.{}\r\n", head.version.0, head.version.1).as_bytes());
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Cut points for splitting `len` bytes into pieces (sorted, deduplicated, inside 1..len).
fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..len.max(2), 0..12).prop_map(move |mut v| {
        v.retain(|&c| c < len);
        v.sort_unstable();
        v.dedup();
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_prefix_of_a_valid_head_asks_for_more(raw in valid_head(), frac in 0.0f64..1.0) {
        let (whole, consumed) = parse_whole(&raw);
        prop_assert_eq!(consumed, raw.len());
        let cut = ((raw.len() - 1) as f64 * frac) as usize;
        let partial = parse_request_head(&raw[..cut], &Limits::default(), false);
        prop_assert!(matches!(partial, Ok(None)), "prefix of {} bytes: {:?}", cut, partial);
        prop_assert_eq!(whole.framing, BodyFraming::Empty);
    }

    #[test]
    fn a_head_arriving_in_pieces_parses_as_when_whole(
        (raw, cut_points) in valid_head().prop_flat_map(|r| { let n = r.len(); (Just(r), cuts(n)) })
    ) {
        let (whole, _) = parse_whole(&raw);
        // The server re-parses its growing buffer after every read.
        let mut buf = Vec::new();
        let mut start = 0;
        let mut parsed = None;
        for end in cut_points.iter().copied().chain([raw.len()]) {
            buf.extend_from_slice(&raw[start..end]);
            start = end;
            match parse_request_head(&buf, &Limits::default(), false) {
                Ok(None) => prop_assert!(end < raw.len()),
                Ok(Some((head, consumed))) => {
                    prop_assert_eq!(end, raw.len());
                    prop_assert_eq!(consumed, raw.len());
                    parsed = Some(head);
                }
                Err(e) => prop_assert!(false, "piece ending at {} failed: {}", end, e),
            }
        }
        prop_assert_eq!(parsed, Some(whole));
    }

    #[test]
    fn a_parsed_head_written_out_parses_to_the_same_head(raw in valid_head()) {
        let (first, _) = parse_whole(&raw);
        let again = serialise(&first);
        let (second, consumed) = parse_whole(&again);
        prop_assert_eq!(consumed, again.len());
        prop_assert_eq!(&second, &first);
        prop_assert_eq!(serialise(&second), again);
    }

    #[test]
    fn a_chunked_body_split_anywhere_decodes_the_same(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..6),
        ext in prop::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"),
        seed in any::<u64>(),
    ) {
        let mut wire = Vec::new();
        for chunk in &chunks {
            wire.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
            if let Some(ext) = &ext {
                wire.extend_from_slice(format!(";{ext}").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\nNEXT");
        let expected: Vec<u8> = chunks.concat();

        // Pieces of pseudo-random sizes from `seed` (1..=17 bytes).
        let mut decoder = ChunkedDecoder::new(Limits::default());
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut state = seed | 1;
        let mut pos = 0;
        while pos < wire.len() && !decoder.is_done() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = 1 + (state % 17) as usize;
            let end = (pos + n).min(wire.len());
            pending.extend_from_slice(&wire[pos..end]);
            pos = end;
            let used = decoder.decode(&pending, &mut out).expect("valid chunked body");
            pending.drain(..used);
        }
        prop_assert!(decoder.is_done());
        prop_assert_eq!(out, expected);
        // What follows the body is left for the next request.
        pending.extend_from_slice(&wire[pos..]);
        prop_assert_eq!(pending, b"NEXT".to_vec());
    }
}
