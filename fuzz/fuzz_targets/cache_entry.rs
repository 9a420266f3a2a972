//! Stored response bytes as the response cache reads them back (`decode_entry`, the layout of
//! every entry in the shared store), and the 304 decision over stored header lines: arbitrary
//! bytes never panic either; whatever decodes re-encodes to bytes that decode the same.
#![no_main]

use ferrocorn_cache::{EntryMeta, Validators, answers_not_modified, decode_entry, encode_entry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(view) = decode_entry(data) {
        let mut head = view.status_line.to_vec();
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(view.header_lines);
        let meta: EntryMeta = view.meta.clone();
        let mut again = Vec::new();
        encode_entry(&meta, &head, view.body, &mut again);
        assert_eq!(decode_entry(&again).as_ref(), Some(&view));
        let validators = Validators::from_header_lines(view.header_lines);
        let _ = answers_not_modified(view.meta.status, validators, Some(view.body), None);
    }
    // The same bytes as header lines, split into a request's two conditional headers.
    let (inm, ims) = data.split_at(data.len() / 2);
    let validators = Validators::from_header_lines(data);
    let _ = answers_not_modified(200, validators, Some(inm), Some(ims));
    let _ = answers_not_modified(200, validators, None, Some(ims));
});
