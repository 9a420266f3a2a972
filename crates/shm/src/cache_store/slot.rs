//! One index slot: where a key's record lies in the ring, its tag and expiry, and the fill lock
//! a request holds while it produces the key's value. Written only under the writer lock, inside
//! a sequence-counter bump (odd while changing); read by anyone without a lock, retrying when
//! the counter moved (a seqlock), so a reader never writes a shared line except the two
//! best-effort hints (`last_access`, `referenced`).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering, fence};

/// No record: the slot holds at most a fill lock.
pub(super) const NO_DATA: u64 = u64::MAX;

/// An index slot (one cache line).
#[repr(C, align(64))]
pub(super) struct Slot {
    /// Odd while a writer changes the slot.
    pub seq: AtomicU32,
    /// The caller's tag of the stored value; 0: no value (and `data_pos` means nothing).
    pub tag: AtomicU32,
    /// Hash of the key; 0 with no fill lock: the slot is free.
    pub key_hash: AtomicU64,
    /// Hash of the group the key belongs to (purged together).
    pub group_hash: AtomicU64,
    /// Ring position of the record, or [`NO_DATA`].
    pub data_pos: AtomicU64,
    /// Record length in the ring.
    pub data_len: AtomicU32,
    /// Seconds since the store's epoch of the last lookup that found it.
    pub last_access: AtomicU32,
    /// Unix seconds after which the value is gone.
    pub expires: AtomicI64,
    /// Pid of the process filling the key; 0: none.
    pub fill_pid: AtomicU32,
    /// Which fill of that process (a token of the store's counter).
    pub fill_token: AtomicU32,
    /// Monotonic seconds after which the fill lock is void even if its process lives.
    pub fill_deadline: AtomicU32,
    /// Set by a lookup since the ring last passed the record (second chance on eviction).
    pub referenced: AtomicU32,
}

/// A consistent copy of a slot's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotView {
    pub tag: u32,
    pub key_hash: u64,
    pub group_hash: u64,
    pub data_pos: u64,
    pub data_len: u32,
    pub last_access: u32,
    pub expires: i64,
    pub fill_pid: u32,
    pub fill_token: u32,
    pub fill_deadline: u32,
}

impl SlotView {
    /// A free slot's fields.
    pub const FREE: SlotView = SlotView {
        tag: 0,
        key_hash: 0,
        group_hash: 0,
        data_pos: NO_DATA,
        data_len: 0,
        last_access: 0,
        expires: 0,
        fill_pid: 0,
        fill_token: 0,
        fill_deadline: 0,
    };

    /// Nothing stored and nobody filling.
    pub fn is_free(&self) -> bool {
        self.fill_pid == 0 && self.tag == 0
    }
}

impl Slot {
    /// The sequence counter at the start of a read: None while a writer is inside.
    pub fn read_begin(&self) -> Option<u32> {
        let s = self.seq.load(Ordering::Acquire);
        (s & 1 == 0).then_some(s)
    }

    /// Whether nothing changed since `read_begin` returned `start` (the read is valid).
    pub fn read_valid(&self, start: u32) -> bool {
        fence(Ordering::Acquire);
        self.seq.load(Ordering::Relaxed) == start
    }

    /// The fields, as read now (valid only if `read_valid` agrees afterwards).
    pub fn load(&self) -> SlotView {
        SlotView {
            tag: self.tag.load(Ordering::Relaxed),
            key_hash: self.key_hash.load(Ordering::Relaxed),
            group_hash: self.group_hash.load(Ordering::Relaxed),
            data_pos: self.data_pos.load(Ordering::Relaxed),
            data_len: self.data_len.load(Ordering::Relaxed),
            last_access: self.last_access.load(Ordering::Relaxed),
            expires: self.expires.load(Ordering::Relaxed),
            fill_pid: self.fill_pid.load(Ordering::Relaxed),
            fill_token: self.fill_token.load(Ordering::Relaxed),
            fill_deadline: self.fill_deadline.load(Ordering::Relaxed),
        }
    }

    /// Replace the fields (writer lock held): readers see either the old or the new view.
    pub fn store(&self, view: &SlotView) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.tag.store(view.tag, Ordering::Relaxed);
        self.key_hash.store(view.key_hash, Ordering::Relaxed);
        self.group_hash.store(view.group_hash, Ordering::Relaxed);
        self.data_pos.store(view.data_pos, Ordering::Relaxed);
        self.data_len.store(view.data_len, Ordering::Relaxed);
        self.last_access.store(view.last_access, Ordering::Relaxed);
        self.expires.store(view.expires, Ordering::Relaxed);
        self.fill_pid.store(view.fill_pid, Ordering::Relaxed);
        self.fill_token.store(view.fill_token, Ordering::Relaxed);
        self.fill_deadline.store(view.fill_deadline, Ordering::Relaxed);
        self.referenced.store(0, Ordering::Relaxed);
        self.seq.store((s | 1).wrapping_add(1), Ordering::Release);
    }

    /// Begin changing the slot's record in place (writer lock held): readers retry until
    /// [`Slot::end_write`].
    pub fn begin_write(&self) -> u32 {
        let s = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(s, Ordering::Relaxed);
        fence(Ordering::Release);
        s
    }

    /// End a change begun with [`Slot::begin_write`].
    pub fn end_write(&self, odd: u32) {
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// After a writer died inside `store`: make the slot free and its counter even.
    pub fn repair(&self) -> bool {
        if self.seq.load(Ordering::Relaxed) & 1 == 0 {
            return false;
        }
        let odd = self.seq.load(Ordering::Relaxed);
        self.tag.store(0, Ordering::Relaxed);
        self.key_hash.store(0, Ordering::Relaxed);
        self.data_pos.store(NO_DATA, Ordering::Relaxed);
        self.fill_pid.store(0, Ordering::Relaxed);
        self.end_write(odd);
        true
    }
}
