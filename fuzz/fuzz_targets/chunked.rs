//! The chunked decoder on arbitrary bytes, fed whole and in pieces: it never panics, and the
//! pieces give the same body, the same end and the same error as the whole (the first byte
//! sets the piece size).
#![no_main]

use ferrocorn_http::{ChunkedDecoder, Limits};
use libfuzzer_sys::fuzz_target;

/// Decode `input` in pieces of `piece` bytes: the body, whether it ended, and the error.
fn decode(input: &[u8], piece: usize) -> (Vec<u8>, bool, Option<String>, usize) {
    let mut decoder = ChunkedDecoder::new(Limits::default());
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut fed = 0;
    for part in input.chunks(piece.max(1)) {
        pending.extend_from_slice(part);
        fed += part.len();
        match decoder.decode(&pending, &mut out) {
            Ok(used) => {
                pending.drain(..used);
            }
            Err(e) => return (out, false, Some(e.to_string()), 0),
        }
        if decoder.is_done() {
            break;
        }
    }
    let left = pending.len() + (input.len() - fed);
    (out, decoder.is_done(), None, left)
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, input)) = data.split_first() else { return };
    let whole = decode(input, input.len());
    let pieces = decode(input, usize::from(piece % 16) + 1);
    assert_eq!(whole.1, pieces.1, "done differs");
    assert_eq!(whole.2.is_some(), pieces.2.is_some(), "error differs: {whole:?} / {pieces:?}");
    if whole.2.is_none() {
        assert_eq!(whole.0, pieces.0, "body differs");
        if whole.1 {
            assert_eq!(whole.3, pieces.3, "bytes after the body differ");
        }
    }
});
