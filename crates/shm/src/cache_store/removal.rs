//! Removing values, with the writer lock held: one key, a group (a key with its `Vary`
//! variants), a key prefix, what a predicate on tag and group picks, or everything. A slot that
//! also holds a fill lock keeps the lock and loses only its value.

use super::CacheStore;
use super::key_hash;
use super::ring::HEADER;
use super::slot::{NO_DATA, SlotView};

impl CacheStore {
    /// Remove `key`'s value (a fill lock on it stays). Returns the removed values' tags.
    pub fn remove(&self, key: &[u8]) -> Vec<u32> {
        let hash = key_hash(key);
        self.remove_where(|view, _| view.key_hash == hash)
    }

    /// Remove every value of `group`; their tags.
    pub fn remove_group(&self, group: u64) -> Vec<u32> {
        self.remove_where(|view, _| view.group_hash == group)
    }

    /// Remove every value whose key starts with `prefix`; their tags.
    pub fn remove_prefix(&self, prefix: &[u8]) -> Vec<u32> {
        self.remove_where(|view, store| {
            let header = store.record_header(view.data_pos);
            header.key_len as usize >= prefix.len()
                && store.ring_equals(view.data_pos + HEADER, prefix)
        })
    }

    /// Remove every value; their tags.
    pub fn clear(&self) -> Vec<u32> {
        self.remove_where(|_, _| true)
    }

    /// Remove every value whose tag and group `matches`; their tags.
    pub fn remove_matching(&self, matches: impl Fn(u32, u64) -> bool) -> Vec<u32> {
        self.remove_where(|view, _| matches(view.tag, view.group_hash))
    }

    fn remove_where(&self, matches: impl Fn(&SlotView, &CacheStore) -> bool) -> Vec<u32> {
        let _locked = self.lock();
        self.remove_locked(matches)
    }

    /// [`CacheStore::remove_where`] with the writer lock held.
    pub(super) fn remove_locked(
        &self,
        matches: impl Fn(&SlotView, &CacheStore) -> bool,
    ) -> Vec<u32> {
        let mut removed = Vec::new();
        for index in 0..self.slot_count {
            let view = self.slot(index).load();
            if view.tag == 0 || !matches(&view, self) {
                continue;
            }
            let new = match view.fill_pid {
                0 => SlotView::FREE,
                _ => SlotView { tag: 0, data_pos: NO_DATA, data_len: 0, ..view },
            };
            self.set_slot(index, &view, &new);
            removed.push(view.tag);
        }
        removed
    }
}
