//! Tests of [`parse_response_head`]: syntax, framing and reuse, limits, and heads arriving in
//! pieces.

use super::*;
use ResponseFraming::{Chunked, Length, NoBody, UntilClose};

fn parse(raw: &[u8], is_head: bool) -> Result<Option<(ResponseHead, usize)>, UpstreamHeadError> {
    parse_response_head(raw, is_head, ResponseLimits::default())
}

fn ok(raw: &str) -> ResponseHead {
    let (head, used) = parse(raw.as_bytes(), false).unwrap().expect("complete");
    assert_eq!(used, raw.len(), "consumed {raw:?}");
    head
}

fn err(raw: &[u8]) -> UpstreamHeadError {
    match parse(raw, false) {
        Err(e) => e,
        Ok(r) => panic!("expected an error for {:?}, got {r:?}", String::from_utf8_lossy(raw)),
    }
}

#[test]
fn a_simple_response() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length:  5 \r\n\r\nhello";
    let (head, used) = parse(raw, false).unwrap().unwrap();
    assert_eq!(&raw[used..], b"hello");
    assert_eq!(head.status, 200);
    assert_eq!(head.reason(), b"OK");
    assert_eq!(head.version, (1, 1));
    assert_eq!(
        head.headers().collect::<Vec<_>>(),
        [(&b"Content-Type"[..], &b"text/plain"[..]), (&b"content-length"[..], &b"5"[..])]
    );
    assert_eq!(head.framing, Length(5));
    assert!(head.keep_alive && !head.upgrade && !head.is_informational());
    assert_eq!(head.header(b"CONTENT-TYPE"), Some(&b"text/plain"[..]));
    assert_eq!(head.header(b"x-absent"), None);
}

#[test]
fn reasons_are_kept_as_sent() {
    assert_eq!(
        ok("HTTP/1.1 200 Fine and dandy\r\nContent-Length: 0\r\n\r\n").reason(),
        b"Fine and dandy"
    );
    assert_eq!(ok("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").reason(), b"");
    assert_eq!(ok("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n").reason(), b"");
    let latin1 = b"HTTP/1.1 200 Tr\xe8s bien\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(parse(latin1, false).unwrap().unwrap().0.reason(), b"Tr\xe8s bien");
}

#[test]
fn bare_lf_and_leading_empty_lines_are_accepted() {
    let head = ok("\r\n\nHTTP/1.0 404 Not Found\nContent-Length: 3\n\n");
    assert_eq!((head.status, head.reason(), head.version), (404, &b"Not Found"[..], (1, 0)));
    assert_eq!(head.framing, Length(3));
}

#[test]
fn framing_and_reuse_follow_rfc_9112() {
    // (head, request was HEAD, framing, upstream connection reusable)
    let cases: &[(&str, bool, ResponseFraming, bool)] = &[
        ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, NoBody, true),
        ("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false, NoBody, true),
        ("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", false, NoBody, true),
        ("HTTP/1.1 304 Not Modified\r\n\r\n", false, NoBody, true),
        ("HTTP/1.1 100 Continue\r\n\r\n", false, NoBody, true),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, Chunked, true),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n", false, Chunked, true),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            Chunked,
            true,
        ),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false, UntilClose, false),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n", false, UntilClose, false),
        (
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
            false,
            Chunked,
            false,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", false, UntilClose, false),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
            false,
            Length(5),
            true,
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, Length(0), true),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
            false,
            Length(u64::MAX),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
            false,
            Length(1),
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive, Close\r\n\r\n",
            false,
            Length(1),
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: x\r\nConnection: close\r\n\r\n",
            false,
            Length(1),
            false,
        ),
        ("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, Length(1), false),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: Keep-Alive\r\n\r\n",
            false,
            Length(1),
            true,
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive, close\r\n\r\n",
            false,
            Length(1),
            false,
        ),
    ];
    for &(raw, is_head, framing, keep_alive) in cases {
        let (head, _) = parse(raw.as_bytes(), is_head).unwrap().unwrap();
        assert_eq!((head.framing, head.keep_alive), (framing, keep_alive), "{raw:?}");
    }
}

#[test]
fn a_101_switches_and_is_never_reused() {
    let head =
        ok("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    assert!(head.upgrade && !head.keep_alive && !head.is_informational());
    assert_eq!(head.framing, NoBody);
}

#[test]
fn interim_responses_are_skipped_by_parsing_again() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let mut at = 0;
    let mut statuses = Vec::new();
    loop {
        let (head, used) = parse(&raw[at..], false).unwrap().unwrap();
        at += used;
        statuses.push(head.status);
        if !head.is_informational() {
            break;
        }
    }
    assert_eq!(statuses, [100, 103, 200]);
    assert_eq!(&raw[at..], b"ok");
}

#[test]
fn bad_content_lengths_are_errors() {
    let values: &[&[u8]] = &[
        b"Content-Length: 5, 6",
        b"Content-Length: 5\r\nContent-Length: 6",
        b"Content-Length: abc",
        b"Content-Length: -1",
        b"Content-Length: +5",
        b"Content-Length: 0x10",
        b"Content-Length: 5 5",
        b"Content-Length: 5,",
        b"Content-Length:",
        b"Content-Length: 18446744073709551616",
    ];
    for value in values {
        let raw = [&b"HTTP/1.1 200 OK\r\n"[..], value, b"\r\n\r\n"].concat();
        assert!(
            matches!(err(&raw), UpstreamHeadError::BadLength(_)),
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n";
    assert_eq!(err(raw), UpstreamHeadError::BadLength("5, 6".into()));
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n";
    assert!(parse(head, true).is_err(), "checked even when no body follows");
}

#[test]
fn both_framing_headers_are_an_error_in_either_order() {
    for raw in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(matches!(err(raw), UpstreamHeadError::AmbiguousFraming), "{raw:?}");
    }
}

#[test]
fn malformed_heads_are_errors() {
    let heads: &[&[u8]] = &[
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.2 200 OK\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x00K\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A : a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX(A): a\r\n\r\n",
    ];
    for raw in heads {
        assert!(
            matches!(err(raw), UpstreamHeadError::Malformed(_)),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    let message = err(b"HTTP/2.0 200 OK\r\n\r\n").to_string();
    assert_eq!(
        message,
        "upstream sent a malformed response head: \
         invalid HTTP version in \"HTTP/2.0 200 OK\\r\\n\\r\\n\""
    );
    assert_eq!(err(b"HTTP/1.1 099 Low\r\n\r\n"), UpstreamHeadError::BadStatus(99));
    assert_eq!(err(b"HTTP/1.1 600 High\r\n\r\n"), UpstreamHeadError::BadStatus(600));
    assert!(ok("HTTP/1.1 599 Edge\r\n\r\n").status == 599);
}

#[test]
fn a_head_split_anywhere_is_incomplete_until_its_blank_line() {
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\n";
    let raw = format!("{head}abc");
    for cut in 0..head.len() {
        assert_eq!(parse(&raw.as_bytes()[..cut], false), Ok(None), "cut at {cut}");
    }
    for end in head.len()..=raw.len() {
        let (parsed, used) = parse(&raw.as_bytes()[..end], false).unwrap().unwrap();
        assert_eq!((used, parsed.framing), (head.len(), Length(3)));
    }
}

#[test]
fn the_head_size_is_limited() {
    let limits = ResponseLimits { max_head_size: 40, ..ResponseLimits::default() };
    let fits = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(fits.len(), 38);
    assert!(parse_response_head(fits, false, limits).unwrap().is_some());
    let big = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: y\r\n\r\n";
    assert_eq!(
        parse_response_head(big, false, limits),
        Err(UpstreamHeadError::TooLarge { limit: 40 })
    );
    let endless = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'y'; 30]].concat();
    assert_eq!(parse_response_head(&endless[..40], false, limits), Ok(None));
    assert_eq!(
        parse_response_head(&endless, false, limits),
        Err(UpstreamHeadError::TooLarge { limit: 40 })
    );
}

#[test]
fn the_header_count_is_limited() {
    let with = |n: usize| {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..n {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        raw
    };
    assert_eq!(parse(&with(99), false).unwrap().unwrap().0.headers().len(), 100);
    assert_eq!(err(&with(100)), UpstreamHeadError::TooManyHeaders { limit: 100 });
    let few = ResponseLimits { max_headers: 2, ..ResponseLimits::default() };
    assert_eq!(parse_response_head(&with(1), false, few).unwrap().unwrap().0.headers().len(), 2);
    assert_eq!(
        parse_response_head(&with(2), false, few),
        Err(UpstreamHeadError::TooManyHeaders { limit: 2 })
    );
}
