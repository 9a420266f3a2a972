//! Room in the store's ring, with the writer lock held: where a new record goes, which
//! records at the tail make way for it (dropped, or moved to the head once when looked up since
//! they were written: the second chance), and the padding that skips a lap's unusable end. A
//! slot stops pointing at a record before the tail passes it, so a writer killed here never
//! leaves a slot pointing at bytes that may be reused.

use std::sync::atomic::Ordering;

use super::CacheStore;
use super::ring::{HEADER, PAD_SLOT, RecordHeader, placement, unreadable_remainder};
use super::slot::{NO_DATA, SlotView};

impl CacheStore {
    /// Free ring space for a record of `span` bytes and return its position (writer lock
    /// held); the caller writes the record, then moves the head past it. Records at the tail
    /// are dropped, or moved to the head once when looked up since they were written.
    pub(super) fn allocate(&self, span: u64) -> u64 {
        let header = self.header();
        // Moving records changes the head: after a few rounds, make room by dropping only.
        for round in 0.. {
            let head = header.head.load(Ordering::Relaxed);
            let (skip, _) = placement(head, span, self.ring_size);
            self.make_room(skip + span, round < 4);
            let head = header.head.load(Ordering::Relaxed);
            let (skip, at) = placement(head, span, self.ring_size);
            if skip + span > self.free() {
                continue;
            }
            if skip > 0 {
                self.write_padding(head, skip);
                header.head.store(at, Ordering::Relaxed);
            }
            return at;
        }
        unreachable!("the rounds only end by returning")
    }

    pub(super) fn free(&self) -> u64 {
        let header = self.header();
        self.ring_size - (header.head.load(Ordering::Relaxed) - header.tail.load(Ordering::Relaxed))
    }

    /// Mark `len` bytes at `pos`, up to the ring's end, as skipped.
    fn write_padding(&self, pos: u64, len: u64) {
        if len >= HEADER {
            let pad = RecordHeader {
                payload: (len - HEADER) as u32,
                slot: PAD_SLOT,
                key_hash: 0,
                key_len: 0,
            };
            self.ring_write(pos, &pad.encode());
        }
    }

    /// Move the tail until `need` bytes are free. With `second_chance`, a record looked up
    /// since it was written moves to the head once instead of being dropped. A slot stops
    /// pointing at a record before the tail passes it, so a killed writer never leaves a slot
    /// pointing at bytes that may be reused.
    fn make_room(&self, need: u64, second_chance: bool) {
        let header = self.header();
        let mut budget = if second_chance { self.ring_size } else { 0 };
        while self.free() < need {
            let tail = header.tail.load(Ordering::Relaxed);
            let skip = unreadable_remainder(tail, self.ring_size);
            if skip > 0 {
                header.tail.store(tail + skip, Ordering::Relaxed);
                continue;
            }
            let record = self.record_header(tail);
            let span = record.span().min(self.ring_size - tail % self.ring_size);
            let index = record.slot as usize;
            let owner = (record.slot != PAD_SLOT && index < self.slot_count)
                .then(|| self.slot(index).load())
                .filter(|v| v.tag != 0 && v.data_pos == tail && v.key_hash == record.key_hash);
            if let Some(view) = owner {
                let referenced = self.slot(index).referenced.load(Ordering::Relaxed) != 0;
                if referenced && budget >= span && self.move_to_head(index, tail, span) {
                    budget -= span;
                } else {
                    let evicted = SlotView { tag: 0, data_pos: NO_DATA, data_len: 0, ..view };
                    self.set_slot(index, &view, &evicted);
                    header.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
            header.tail.store(tail + span, Ordering::Relaxed);
        }
    }

    /// Copy the record of slot `index` (`span` bytes at the tail, `from`) to the head, before
    /// the tail passes it. False when the head has no room for it (the caller drops it).
    fn move_to_head(&self, index: usize, from: u64, span: u64) -> bool {
        let header = self.header();
        let head = header.head.load(Ordering::Relaxed);
        let (skip, at) = placement(head, span, self.ring_size);
        // Freeing the record leaves room for its copy, which may land on the record's own
        // bytes (the ring is that full): it is read out first, and readers retry while the
        // slot's counter is odd. Skipping to the next lap needs room of its own.
        if skip > self.free() {
            return false;
        }
        if skip > 0 {
            self.write_padding(head, skip);
        }
        let mut bytes = vec![0u8; span as usize];
        self.ring_read(from, &mut bytes);
        let slot = self.slot(index);
        let odd = slot.begin_write();
        self.ring_write(at, &bytes);
        slot.data_pos.store(at, Ordering::Relaxed);
        slot.referenced.store(0, Ordering::Relaxed);
        slot.end_write(odd);
        header.head.store(at + span, Ordering::Relaxed);
        true
    }
}
