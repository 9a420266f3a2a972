//! The cache store shared by every worker of an instance: one `MAP_SHARED` mapping made by the
//! master before the first fork (so entries outlive worker recycles, SIGKILLs and HUP
//! reloads), holding a set-associative index of [`Slot`]s and a ring of records (key then
//! value). It knows nothing of HTTP: a value is bytes with a caller's tag, an expiry and a
//! group (purged together); the response cache and the app cache lay their meaning over it.
//!
//! - Reads take no lock and write no shared line but two hints: a lookup copies the value out
//!   under the slot's sequence counter and retries when a writer moved it (`slot.rs`).
//! - Writes (insert, fill locks, removal) take one process-shared robust mutex
//!   (`writer_lock.rs`). A writer SIGKILLed inside leaves the mutex to the next taker with
//!   `EOWNERDEAD`, which frees the slots it left half written; a record it half wrote is never
//!   pointed at, so no reader can see a partial value.
//! - Space: the ring (`ring.rs`) is exactly the configured size; records are appended at the
//!   head and freed at the tail, where a record looked up since its last pass is moved to the
//!   head once instead of dropped (second chance, an approximation of least-recently-used).
//!   The index is 64 bytes per KiB of ring, eight slots per set: a new key takes a free slot
//!   of its set, else an expired one, else the least recently used.
//! - Fill locks: a request that is producing a key's value holds the key's slot with its pid;
//!   another request finds it [`Filling::Alive`] and waits or answers stale. A lock whose
//!   process died, or whose deadline passed, is [`Filling::Dead`] and is taken over at once.

mod fill_lock;
mod removal;
mod ring;
mod slot;
mod space;
mod writer_lock;

#[cfg(test)]
mod tests;

use std::hash::Hasher;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use ring::{HEADER, RecordHeader, record_span};
use slot::{Slot, SlotView};
use writer_lock::{Taken, WriterLock};

use crate::{map_shared_zeroed, monotonic_ms};

/// Slots per set of the index.
const WAYS: usize = 8;
/// Tries of a slot's read before a reader gives up on it (a writer died inside it).
const READ_SPINS: u32 = 10_000;
/// The smallest index.
const MIN_SLOTS: usize = 1024;

/// The store's header, at the start of the mapping.
#[repr(C, align(64))]
struct Header {
    lock: WriterLock,
    /// Unix seconds the store was made; slots keep access times relative to it.
    epoch: AtomicI64,
    head: AtomicU64,
    tail: AtomicU64,
    next_token: AtomicU32,
    entries: AtomicU64,
    evictions: AtomicU64,
    repairs: AtomicU64,
}

/// Someone filling a key, as a lookup finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filling {
    /// Nobody.
    No,
    /// A live process, within its deadline.
    Alive,
    /// A process that died, or outlived its deadline: the lock is void.
    Dead,
}

/// What a lookup found for a key (its value, when `tag != 0`, was copied out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The value's tag; 0: no value (only a fill lock).
    pub tag: u32,
    /// Unix seconds the value expires (meaningless without a value).
    pub expires: i64,
    /// Unix seconds of the lookup before this one that found the key.
    pub last_access: i64,
    /// Whether someone is filling the key.
    pub filling: Filling,
}

/// A fill lock held by this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillToken {
    slot: u32,
    key_hash: u64,
    token: u32,
}

/// What [`CacheStore::begin_fill`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillAttempt {
    /// This request fills the key; others wait for it.
    Acquired(FillToken),
    /// A live request fills it already.
    Busy,
    /// Every slot of the key's set is being filled: go ahead without a lock.
    NoRoom,
}

/// A value to store.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    /// Its key.
    pub key: &'a [u8],
    /// The group it is purged with ([`key_hash`] of the group's name).
    pub group: u64,
    /// The caller's tag (not 0).
    pub tag: u32,
    /// Unix seconds after which it is gone.
    pub expires: i64,
    /// Its bytes.
    pub value: &'a [u8],
}

/// A key's live value, as [`CacheStore::update`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current<'a> {
    /// Its tag.
    pub tag: u32,
    /// Unix seconds it expires.
    pub expires: i64,
    /// Its bytes.
    pub value: &'a [u8],
}

/// What [`CacheStore::update`] does with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Leave it as it is.
    Keep,
    /// Store this value under it.
    Put {
        /// The group it is purged with.
        group: u64,
        /// Its tag (not 0).
        tag: u32,
        /// Unix seconds after which it is gone.
        expires: i64,
        /// Its bytes.
        value: Vec<u8>,
    },
    /// Remove its value.
    Remove,
}

/// Why a value was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The record would take more than half the ring.
    TooLarge,
}

/// The store's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Keys with a value.
    pub entries: u64,
    /// Ring bytes in use (records, including those no key points at any more).
    pub bytes: u64,
    /// The ring's size.
    pub capacity: u64,
    /// Index slots.
    pub slots: u64,
    /// Values dropped to make room.
    pub evictions: u64,
    /// Slots freed after a writer died inside them.
    pub repairs: u64,
}

/// The shared store (see the module docs). Cheap to share by reference across threads; every
/// process forked after [`CacheStore::new`] uses the same entries.
pub struct CacheStore {
    header: *mut Header,
    slots: *mut Slot,
    slot_count: usize,
    ring: *mut u8,
    ring_size: u64,
    mapped: usize,
}

// SAFETY: the mapping is process-shared memory; slots are atomics read under their sequence
// counters, ring bytes are copied out and validated by those counters, and every change goes
// through the process-shared writer lock. The pointers live as long as the store.
unsafe impl Send for CacheStore {}
// SAFETY: as above.
unsafe impl Sync for CacheStore {}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore")
            .field("ring_size", &self.ring_size)
            .field("slots", &self.slot_count)
            .finish_non_exhaustive()
    }
}

/// The hash a key is filed under (never 0, which marks a free slot).
pub fn key_hash(key: &[u8]) -> u64 {
    // DefaultHasher::new() has fixed keys: every process of one build hashes alike.
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(key);
    hasher.finish().max(1)
}

/// The process's pid as the store records it.
fn own_pid() -> u32 {
    std::process::id()
}

/// Monotonic seconds, comparable across the master and its workers.
fn monotonic_secs() -> u32 {
    (monotonic_ms() / 1000) as u32
}

/// Whether a fill lock held by `pid` until `deadline` still stands.
fn filler_alive(pid: u32, deadline: u32) -> bool {
    if pid == 0 || monotonic_secs() > deadline {
        return false;
    }
    if pid == own_pid() {
        return true; // another thread of this process, which releases it on every path
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The index size for a ring of `ring_bytes`: 64 bytes per KiB, a power of two of sets.
fn slots_for(ring_bytes: u64) -> usize {
    ((ring_bytes / 1024) as usize).next_power_of_two().clamp(MIN_SLOTS, 1 << 24)
}

impl CacheStore {
    /// Map a store whose ring holds `ring_bytes` (rounded up to 8), with an index sized for it.
    pub fn new(ring_bytes: u64, now: i64) -> std::io::Result<CacheStore> {
        CacheStore::with_slots(ring_bytes, slots_for(ring_bytes), now)
    }

    /// Map a store with `slots` index slots (rounded up to whole sets of a power of two).
    pub fn with_slots(ring_bytes: u64, slots: usize, now: i64) -> std::io::Result<CacheStore> {
        let _ = monotonic_ms(); // fix the clock base before any fork
        let ring_size = ring_bytes.max(4096).next_multiple_of(8);
        let slot_count = slots.max(WAYS).next_power_of_two();
        let header_bytes = std::mem::size_of::<Header>().next_multiple_of(64);
        let slot_bytes = slot_count * std::mem::size_of::<Slot>();
        let mapped = header_bytes + slot_bytes + ring_size as usize;
        let base = map_shared_zeroed(mapped)?;
        let header = base.cast::<Header>();
        // SAFETY: the mapping is fresh, page-aligned, large enough for the header, and used by
        // no other process yet; the lock is initialised in place before any use.
        unsafe { WriterLock::init(std::ptr::addr_of_mut!((*header).lock))? };
        // SAFETY: both offsets are inside the mapping; the header is 64-aligned and sized to a
        // multiple of 64, so the slots (align 64) are aligned. All-zero is a valid Slot.
        let (slots, ring) =
            unsafe { (base.add(header_bytes).cast::<Slot>(), base.add(header_bytes + slot_bytes)) };
        let store = CacheStore { header, slots, slot_count, ring, ring_size, mapped };
        store.header().epoch.store(now, Ordering::Relaxed);
        Ok(store)
    }

    fn header(&self) -> &Header {
        // SAFETY: the header lies at the mapping's start, initialised (zeroed atomics and the
        // lock made in `with_slots`), for the store's lifetime.
        unsafe { &*self.header }
    }

    fn slot(&self, index: usize) -> &Slot {
        assert!(index < self.slot_count);
        // SAFETY: `index` is in range of the slot array inside the live mapping.
        unsafe { &*self.slots.add(index) }
    }

    /// The slot indexes of the set `hash` belongs to.
    fn set_of(&self, hash: u64) -> std::ops::Range<usize> {
        let sets = self.slot_count / WAYS;
        let first = (hash as usize & (sets - 1)) * WAYS;
        first..first + WAYS
    }

    fn relative(&self, now: i64) -> u32 {
        (now - self.header().epoch.load(Ordering::Relaxed)).clamp(0, i64::from(u32::MAX)) as u32
    }

    /// Copy `out.len()` ring bytes from position `pos` (which lies in one lap).
    fn ring_read(&self, pos: u64, out: &mut [u8]) {
        let offset = (pos % self.ring_size) as usize;
        assert!(offset + out.len() <= self.ring_size as usize);
        // SAFETY: the range is inside the ring (checked above). Another process may be
        // writing these bytes; the caller validates the copy with the slot's sequence counter
        // before using it, and the bytes are plain data with no invalid values.
        unsafe { std::ptr::copy_nonoverlapping(self.ring.add(offset), out.as_mut_ptr(), out.len()) }
    }

    /// Write `bytes` at ring position `pos` (writer lock held, range freed beforehand).
    fn ring_write(&self, pos: u64, bytes: &[u8]) {
        let offset = (pos % self.ring_size) as usize;
        assert!(offset + bytes.len() <= self.ring_size as usize);
        // SAFETY: inside the ring; the writer lock is held and no slot points into this range
        // (it was freed by moving the tail past it), so no reader trusts these bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ring.add(offset), bytes.len()) }
    }

    fn record_header(&self, pos: u64) -> RecordHeader {
        let mut bytes = [0u8; HEADER as usize];
        self.ring_read(pos, &mut bytes);
        RecordHeader::decode(&bytes)
    }

    /// Whether the `len` bytes at `pos` equal `key` (compared a chunk at a time).
    fn ring_equals(&self, pos: u64, key: &[u8]) -> bool {
        let mut chunk = [0u8; 64];
        let mut at = pos;
        for part in key.chunks(chunk.len()) {
            let buf = &mut chunk[..part.len()];
            self.ring_read(at, buf);
            if buf != part {
                return false;
            }
            at += part.len() as u64;
        }
        true
    }

    /// Look `key` up at `now` (Unix seconds). With a live value its bytes are copied into
    /// `value` (replacing what it held). None: the key is not in the index.
    pub fn lookup(&self, key: &[u8], now: i64, value: &mut Vec<u8>) -> Option<Found> {
        let hash = key_hash(key);
        for index in self.set_of(hash) {
            let slot = self.slot(index);
            let mut spins = 0;
            let found = loop {
                spins += 1;
                if spins > READ_SPINS {
                    break None; // a writer died inside it; the next writer frees it
                }
                let Some(start) = slot.read_begin() else {
                    std::hint::spin_loop();
                    continue;
                };
                let view = slot.load();
                if view.key_hash != hash {
                    if slot.read_valid(start) {
                        break None;
                    }
                    continue;
                }
                let live = view.tag != 0 && view.expires >= now;
                let matched = !live || self.copy_value(&view, key, value);
                if !slot.read_valid(start) {
                    continue;
                }
                if !matched {
                    break None; // another key with the same hash
                }
                break Some((view, live));
            };
            let Some((view, live)) = found else { continue };
            let filling = match view.fill_pid {
                0 => Filling::No,
                pid if filler_alive(pid, view.fill_deadline) => Filling::Alive,
                _ => Filling::Dead,
            };
            if live {
                let rel = self.relative(now);
                if view.last_access != rel {
                    slot.last_access.store(rel, Ordering::Relaxed);
                }
                if slot.referenced.load(Ordering::Relaxed) == 0 {
                    slot.referenced.store(1, Ordering::Relaxed);
                }
            }
            let epoch = self.header().epoch.load(Ordering::Relaxed);
            return Some(Found {
                tag: if live { view.tag } else { 0 },
                expires: view.expires,
                last_access: epoch + i64::from(view.last_access),
                filling,
            });
        }
        None
    }

    /// Copy the value of the record `view` points at into `value`, if its key is `key`.
    /// False for another key (or bytes changed under the read: the caller re-checks).
    fn copy_value(&self, view: &SlotView, key: &[u8], value: &mut Vec<u8>) -> bool {
        let offset = view.data_pos % self.ring_size;
        if offset + HEADER > self.ring_size {
            return false;
        }
        let header = self.record_header(view.data_pos);
        let payload = u64::from(header.payload);
        if header.key_hash != view.key_hash
            || header.key_len as usize != key.len()
            || u64::from(header.key_len) > payload
            || offset + HEADER + payload > self.ring_size
        {
            return false;
        }
        if !self.ring_equals(view.data_pos + HEADER, key) {
            return false;
        }
        let value_len = (payload - u64::from(header.key_len)) as usize;
        value.clear();
        value.resize(value_len, 0);
        self.ring_read(view.data_pos + HEADER + u64::from(header.key_len), value);
        true
    }

    /// Take the writer lock, repairing what a dead holder left.
    fn lock(&self) -> Locked<'_> {
        let header = self.header();
        if header.lock.lock() == Taken::OwnerDied {
            let mut repaired = 0;
            for index in 0..self.slot_count {
                let slot = self.slot(index);
                let was_valued = slot.tag.load(Ordering::Relaxed) != 0;
                if slot.repair() {
                    repaired += 1;
                    if was_valued {
                        header.entries.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            header.repairs.fetch_add(repaired, Ordering::Relaxed);
            header.lock.mark_consistent();
        }
        Locked { store: self }
    }

    /// The slot holding `hash` in its set (value or fill lock), and its fields.
    fn find(&self, hash: u64) -> Option<(usize, SlotView)> {
        self.set_of(hash)
            .map(|i| (i, self.slot(i).load()))
            .find(|(_, v)| v.key_hash == hash && !v.is_free())
    }

    /// A slot of `hash`'s set to (re)use for a new key at `now`: a free one, else one whose
    /// value expired, else the least recently used; never one a live request fills. None when
    /// every slot is being filled.
    fn victim(&self, hash: u64, now: i64) -> Option<(usize, SlotView)> {
        let candidates = self.set_of(hash).map(|i| (i, self.slot(i).load()));
        let unlocked = candidates.filter(|(_, v)| !filler_alive(v.fill_pid, v.fill_deadline));
        unlocked.min_by_key(|(_, v)| {
            let rank = if v.is_free() || v.tag == 0 {
                0
            } else if v.expires < now {
                1
            } else {
                2
            };
            (rank, v.last_access)
        })
    }

    /// Replace slot `index`'s fields, keeping the entry count.
    fn set_slot(&self, index: usize, old: &SlotView, new: &SlotView) {
        let entries = &self.header().entries;
        match (old.tag != 0, new.tag != 0) {
            (false, true) => {
                entries.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                entries.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.slot(index).store(new);
    }

    /// Store `entry` at `now`. `fill`: the lock this request holds on the key, released by
    /// the store.
    pub fn insert(
        &self,
        entry: NewEntry<'_>,
        now: i64,
        fill: Option<FillToken>,
    ) -> Result<(), InsertError> {
        debug_assert!(entry.tag != 0, "tag 0 means no value");
        let hash = key_hash(entry.key);
        let payload = (entry.key.len() + entry.value.len()) as u64;
        let span = record_span(payload);
        if span > self.ring_size / 2 || payload > u64::from(u32::MAX) {
            if let Some(fill) = fill {
                self.end_fill(fill);
            }
            return Err(InsertError::TooLarge);
        }
        let _locked = self.lock();
        self.insert_locked(entry, hash, span, now, fill);
        Ok(())
    }

    /// [`CacheStore::insert`] with the writer lock held and the record's size checked.
    fn insert_locked(
        &self,
        entry: NewEntry<'_>,
        hash: u64,
        span: u64,
        now: i64,
        fill: Option<FillToken>,
    ) {
        let NewEntry { key, group, tag, expires, value } = entry;
        let payload = (key.len() + value.len()) as u64;
        let Some((index, _)) = self.find(hash).or_else(|| self.victim(hash, now)) else {
            return; // every slot of the set is being filled: not stored, no harm
        };
        let pos = self.allocate(span);
        let header = RecordHeader {
            payload: payload as u32,
            slot: index as u32,
            key_hash: hash,
            key_len: key.len() as u32,
        };
        // The record is complete before the head passes it and before a slot points at it:
        // a writer killed in between leaves bytes nobody reads.
        self.ring_write(pos, &header.encode());
        self.ring_write(pos + HEADER, key);
        self.ring_write(pos + HEADER + key.len() as u64, value);
        self.header().head.store(pos + span, Ordering::Relaxed);
        // Read the slot again: making room may have evicted or moved what it held.
        let old = self.slot(index).load();
        let keeps_other_fill = old.key_hash == hash
            && old.fill_pid != 0
            && fill.is_none_or(|f| f.token != old.fill_token)
            && filler_alive(old.fill_pid, old.fill_deadline);
        let fill_fields = if keeps_other_fill { old } else { SlotView::FREE };
        let new = SlotView {
            tag,
            key_hash: hash,
            group_hash: group,
            data_pos: pos,
            data_len: span as u32,
            last_access: self.relative(now),
            expires,
            ..fill_fields
        };
        self.set_slot(index, &old, &new);
    }

    /// Change `key`'s value atomically with respect to every other writer: `decide` is given
    /// the live value (None when there is none at `now`) and says what becomes of it, and
    /// what to return. The app cache's `add`, `incr` and `touch` are made of this.
    pub fn update<R>(
        &self,
        key: &[u8],
        now: i64,
        decide: impl FnOnce(Option<Current<'_>>) -> (Update, R),
    ) -> Result<R, InsertError> {
        let hash = key_hash(key);
        let _locked = self.lock();
        let mut bytes = Vec::new();
        let current = self.find(hash).filter(|(_, v)| v.tag != 0 && v.expires >= now).and_then(
            |(_, view)| {
                // The lock keeps every writer out, so the copy needs no sequence check.
                self.copy_value(&view, key, &mut bytes).then_some((view.tag, view.expires))
            },
        );
        let current =
            current.map(|(tag, expires)| Current { tag, expires, value: bytes.as_slice() });
        let (update, result) = decide(current);
        match update {
            Update::Keep => {}
            Update::Remove => {
                self.remove_locked(|view, _| view.key_hash == hash);
            }
            Update::Put { group, tag, expires, value } => {
                debug_assert!(tag != 0, "tag 0 means no value");
                let payload = (key.len() + value.len()) as u64;
                let span = record_span(payload);
                if span > self.ring_size / 2 || payload > u64::from(u32::MAX) {
                    return Err(InsertError::TooLarge);
                }
                let entry = NewEntry { key, group, tag, expires, value: &value };
                self.insert_locked(entry, hash, span, now, None);
            }
        }
        Ok(result)
    }

    /// The store's counts now.
    pub fn stats(&self) -> StoreStats {
        let header = self.header();
        StoreStats {
            entries: header.entries.load(Ordering::Relaxed),
            bytes: self.ring_size - self.free(),
            capacity: self.ring_size,
            slots: self.slot_count as u64,
            evictions: header.evictions.load(Ordering::Relaxed),
            repairs: header.repairs.load(Ordering::Relaxed),
        }
    }

    /// Whether a value of `value_len` bytes under a key of `key_len` bytes could be stored at
    /// all (a record takes at most half the ring).
    pub fn fits(&self, key_len: usize, value_len: usize) -> bool {
        let payload = (key_len + value_len) as u64;
        payload <= u64::from(u32::MAX) && record_span(payload) <= self.ring_size / 2
    }

    /// Bytes mapped in all (ring, index and header).
    pub fn mapped_bytes(&self) -> usize {
        self.mapped
    }
}

#[cfg(test)]
impl CacheStore {
    /// Take the writer lock and never release it (a test's child then exits holding it).
    fn lock_forever(&self) {
        std::mem::forget(self.lock());
    }
}

/// The writer lock, held until dropped.
struct Locked<'a> {
    store: &'a CacheStore,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.store.header().lock.unlock();
    }
}
