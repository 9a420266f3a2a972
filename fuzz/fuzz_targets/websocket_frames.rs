//! The WebSocket frame decoder on arbitrary bytes fed in pieces: it never panics, never
//! consumes more than it was given, and stops at its first error.
#![no_main]

use ferrocorn_http::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, input)) = data.split_first() else { return };
    let mut decoder = FrameDecoder::new(64 * 1024);
    let mut pending = Vec::new();
    for part in input.chunks(usize::from(piece % 32) + 1) {
        pending.extend_from_slice(part);
        loop {
            match decoder.decode(&pending) {
                Ok((used, message)) => {
                    assert!(used <= pending.len());
                    pending.drain(..used);
                    if message.is_none() || used == 0 {
                        break;
                    }
                }
                Err(_) => return,
            }
        }
    }
});
