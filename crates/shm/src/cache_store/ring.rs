//! The ring the records live in: positions only ever grow (a record at position `p` lies at
//! byte `p % size`), the writer appends at `head` and frees at `tail`, so the bytes in use are
//! `head - tail` and never more than the ring. A record never wraps: when it would not fit
//! before the end, the rest of the ring is skipped (with a padding record when there is room
//! for its header). This file owns that arithmetic and the record header's layout; the store
//! decides what to evict.

/// Bytes of a record's header: payload length, slot index, key hash, key length.
pub(super) const HEADER: u64 = 24;
/// The slot index of a padding record.
pub(super) const PAD_SLOT: u32 = u32::MAX;

/// A record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordHeader {
    /// Bytes after the header: key then value.
    pub payload: u32,
    /// The index slot that points at this record ([`PAD_SLOT`] for padding).
    pub slot: u32,
    /// Hash of the key.
    pub key_hash: u64,
    /// Bytes of the key at the start of the payload.
    pub key_len: u32,
}

impl RecordHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER as usize] {
        let mut out = [0u8; HEADER as usize];
        out[0..4].copy_from_slice(&self.payload.to_le_bytes());
        out[4..8].copy_from_slice(&self.slot.to_le_bytes());
        out[8..16].copy_from_slice(&self.key_hash.to_le_bytes());
        out[16..20].copy_from_slice(&self.key_len.to_le_bytes());
        out
    }

    /// Read a header from its bytes.
    pub fn decode(bytes: &[u8; HEADER as usize]) -> RecordHeader {
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        RecordHeader {
            payload: u32_at(0),
            slot: u32_at(4),
            key_hash: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            key_len: u32_at(16),
        }
    }

    /// The record's whole length in the ring (header and payload, rounded up to 8).
    pub fn span(&self) -> u64 {
        record_span(u64::from(self.payload))
    }
}

/// The ring length a record with `payload` bytes takes.
pub(super) fn record_span(payload: u64) -> u64 {
    (HEADER + payload).next_multiple_of(8)
}

/// Where the next record of `span` bytes goes when the head is at `head`: `(skip, at)`, the
/// bytes skipped to the ring's start (0 when it fits before the end) and its position.
pub(super) fn placement(head: u64, span: u64, size: u64) -> (u64, u64) {
    let offset = head % size;
    if offset + span <= size { (0, head) } else { (size - offset, head + size - offset) }
}

/// Bytes to step over at `tail` when no record header fits before the ring's end (the
/// remainder was skipped without a padding record); 0 when a header is there to read.
pub(super) fn unreadable_remainder(tail: u64, size: u64) -> u64 {
    let offset = tail % size;
    if size - offset < HEADER { size - offset } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_spans_whole_words() {
        let h = RecordHeader { payload: 13, slot: 7, key_hash: 0xdead_beef_0011, key_len: 5 };
        assert_eq!(RecordHeader::decode(&h.encode()), h);
        assert_eq!(h.span(), 40); // 24 + 13 → 40
        assert_eq!(record_span(0), 24);
        assert_eq!(record_span(8), 32);
    }

    #[test]
    fn a_record_that_would_cross_the_end_starts_the_next_lap() {
        assert_eq!(placement(0, 64, 1024), (0, 0));
        assert_eq!(placement(960, 64, 1024), (0, 960)); // exactly fits
        assert_eq!(placement(968, 64, 1024), (56, 1024));
        assert_eq!(placement(1024 * 3 + 1000, 64, 1024), (24, 1024 * 4));
    }

    #[test]
    fn a_remainder_too_short_for_a_header_is_stepped_over() {
        assert_eq!(unreadable_remainder(1000, 1024), 0);
        assert_eq!(unreadable_remainder(1008, 1024), 16);
        assert_eq!(unreadable_remainder(2048, 1024), 0);
    }
}
