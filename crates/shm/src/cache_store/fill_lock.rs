//! Fill locks, with the writer lock held: a request that is producing a key's value marks the
//! key's slot with its pid, a token and a deadline, so that every other worker finds it
//! [`Filling::Alive`](super::Filling) and waits or answers stale; a lock whose process died or
//! whose deadline passed is taken over at once.

use std::sync::atomic::Ordering;

use super::slot::SlotView;
use super::{CacheStore, FillAttempt, FillToken, filler_alive, key_hash, monotonic_secs, own_pid};

impl CacheStore {
    /// Take the fill lock of `key` (in `group`) at `now` for at most `lock_secs` seconds.
    pub fn begin_fill(&self, key: &[u8], group: u64, now: i64, lock_secs: u32) -> FillAttempt {
        let hash = key_hash(key);
        let _locked = self.lock();
        let (index, old) = match self.find(hash) {
            Some((_, v)) if filler_alive(v.fill_pid, v.fill_deadline) => {
                return FillAttempt::Busy;
            }
            Some(found) => found,
            None => match self.victim(hash, now) {
                Some((index, old)) => {
                    let fresh = SlotView { key_hash: hash, group_hash: group, ..SlotView::FREE };
                    self.set_slot(index, &old, &fresh);
                    (index, fresh)
                }
                None => return FillAttempt::NoRoom,
            },
        };
        let token = self.header().next_token.fetch_add(1, Ordering::Relaxed).max(1);
        let locked = SlotView {
            fill_pid: own_pid(),
            fill_token: token,
            fill_deadline: monotonic_secs().saturating_add(lock_secs.max(1)),
            ..old
        };
        self.set_slot(index, &old, &locked);
        FillAttempt::Acquired(FillToken { slot: index as u32, key_hash: hash, token })
    }

    /// Release a fill lock without storing a value.
    pub fn end_fill(&self, fill: FillToken) {
        let _locked = self.lock();
        let index = fill.slot as usize;
        let old = self.slot(index).load();
        if old.key_hash != fill.key_hash
            || old.fill_token != fill.token
            || old.fill_pid != own_pid()
        {
            return; // taken over meanwhile
        }
        let new = if old.tag == 0 {
            SlotView::FREE
        } else {
            SlotView { fill_pid: 0, fill_token: 0, fill_deadline: 0, ..old }
        };
        self.set_slot(index, &old, &new);
    }
}
