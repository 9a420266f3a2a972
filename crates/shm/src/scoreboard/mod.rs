//! The scoreboard: one slot per worker in a `MAP_SHARED | MAP_ANONYMOUS` mapping created by the
//! master before the first fork, so every worker writes its own slot and the master (and later
//! metrics, `top`, autoscaling) read them all. Slots are written with atomics only: no lock a
//! SIGKILLed worker could leave held. This file owns the mapping's layout (the [`MasterArea`]
//! then the [`Slot`]s) and claiming and releasing slots.

mod cache_counters;
mod counters;
mod master_area;
mod slot;

use std::sync::atomic::Ordering;

pub use cache_counters::CacheCounters;
pub use counters::{AcceptRecheck, Counters, RequestRecord};
pub use master_area::{MAX_POOLS, MasterArea, RestartReason};
pub use slot::{Slot, SlotState};

use crate::{map_shared_zeroed, monotonic_ms};

/// The shared mapping: the master's area followed by one slot per worker.
#[derive(Debug)]
pub struct Scoreboard {
    master: *mut MasterArea,
    base: *mut Slot,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is process-shared memory accessed only through atomics; the pointer is
// valid for the Scoreboard's lifetime (unmapped in Drop) and never reallocated.
unsafe impl Send for Scoreboard {}
// SAFETY: as above; all access goes through `&Slot`, whose fields are atomics.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// Map `len` zeroed slots, shared with every process forked afterwards.
    pub fn new(len: usize) -> std::io::Result<Scoreboard> {
        let _ = monotonic_ms(); // fix the clock base before any fork
        let head = std::mem::size_of::<MasterArea>().next_multiple_of(std::mem::align_of::<Slot>());
        let bytes = head + len.max(1) * std::mem::size_of::<Slot>();
        let ptr = map_shared_zeroed(bytes)?.cast::<libc::c_void>();
        // Anonymous mappings are zero-filled, and all-zero is a valid `MasterArea` and `Slot`
        // (atomics at 0 = free), so the memory is initialised. The mapping is page-aligned and
        // `head` is a multiple of Slot's alignment, so both pointers are aligned.
        let master = ptr.cast::<MasterArea>();
        // SAFETY: `head` < `bytes`, inside the mapping.
        let base = unsafe { ptr.cast::<u8>().add(head) }.cast::<Slot>();
        Ok(Scoreboard { master, base, len: len.max(1), bytes })
    }

    /// The master's shared counters.
    pub fn master(&self) -> &MasterArea {
        // SAFETY: points into the live mapping at an aligned, initialised MasterArea made of
        // atomics.
        unsafe { &*self.master }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Slot `index` (panics when out of range).
    pub fn slot(&self, index: usize) -> &Slot {
        assert!(index < self.len, "scoreboard slot {index} out of range");
        // SAFETY: index is in bounds of the mapping, which lives as long as `self`; Slot is
        // made of atomics, so shared references across processes are sound.
        unsafe { &*self.base.add(index) }
    }

    /// Iterate over the slots that ever held a worker, with their index (the others are all
    /// free, so a worker reading its siblings on its accept path scans a few slots, not all).
    pub fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> {
        let end = self.master().claimed_end.load(Ordering::Acquire).min(self.len);
        (0..end).map(move |i| (i, self.slot(i)))
    }

    /// Claim a free slot for a new worker (the master does this just before forking).
    pub fn claim(&self, generation: u64, age: u32, pool: usize) -> Option<usize> {
        let index = (0..self.len)
            .find(|&i| self.slot(i).state() == SlotState::Free && self.slot(i).pid() == 0)?;
        // The pid is filled in by the master after fork; mark it taken with a placeholder.
        self.slot(index).claim(-1, generation, age, pool);
        self.master().claimed_end.fetch_max(index + 1, Ordering::AcqRel);
        Some(index)
    }

    /// Record the forked worker's pid in its slot.
    pub fn set_pid(&self, index: usize, pid: i32) {
        self.slot(index).pid.store(pid, Ordering::Release);
    }

    /// Free a slot after its worker was reaped.
    pub fn release(&self, index: usize) {
        self.slot(index).release();
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: `master`/`bytes` describe exactly the mapping created in `new`.
        unsafe {
            libc::munmap(self.master.cast(), self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fork a child that runs `child` (atomics only: no allocation, no panic) and `_exit`s with
    /// its result; returns the child's pid.
    fn fork_child(child: impl FnOnce() -> i32) -> libc::pid_t {
        // SAFETY: the test harness may run other threads; the child touches nothing but the
        // shared atomics and then _exits without running destructors.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = child();
            // SAFETY: immediate exit of the forked test child without running destructors.
            unsafe { libc::_exit(code) };
        }
        pid
    }

    /// Wait for `pid` and return its exit status.
    fn wait_child(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(libc::WIFEXITED(status), "child did not exit: {status}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn child_writes_are_seen_by_parent() {
        let board = Scoreboard::new(4).unwrap();
        let index = board.claim(7, 1, 0).unwrap();
        let pid = fork_child(|| {
            let slot = board.slot(index);
            slot.set_state(SlotState::Busy);
            slot.request_started();
            slot.request_finished();
            0
        });
        assert_eq!(wait_child(pid), 0);
        let slot = board.slot(index);
        assert_eq!(slot.state(), SlotState::Busy);
        assert_eq!(slot.requests(), 1);
        assert_eq!(slot.generation(), 7);
        board.release(index);
        assert_eq!(board.slot(index).state(), SlotState::Free);
    }

    #[test]
    fn counters_from_two_processes_add_up() {
        const EACH: u64 = 5_000;
        let board = Scoreboard::new(4).unwrap();
        let slots = [board.claim(0, 1, 0).unwrap(), board.claim(0, 2, 0).unwrap()];
        let record = RequestRecord {
            method: 0,
            status: 1,
            code: 200,
            micros: 10,
            request_bytes: 3,
            response_bytes: 5,
        };
        let pids = slots.map(|index| {
            let board = &board;
            fork_child(move || {
                let slot = board.slot(index);
                for _ in 0..EACH {
                    slot.request_started();
                    slot.record(record);
                    slot.request_finished();
                    // Both children also add into the one shared area at once.
                    board.master().retired.connections.fetch_add(1, Ordering::Relaxed);
                }
                slot.connection_opened();
                0
            })
        });
        for pid in pids {
            assert_eq!(wait_child(pid), 0);
        }
        for index in slots {
            let slot = board.slot(index);
            assert_eq!(slot.requests(), EACH);
            assert_eq!(slot.in_flight(), 0);
            let t = slot.counters().totals();
            assert_eq!(t.requests[0][1], EACH);
            assert_eq!(t.duration_sum_micros, 10 * EACH);
            assert_eq!(t.request_bytes, 3 * EACH);
            assert_eq!(t.response_bytes, 5 * EACH);
            assert_eq!(t.connections, 1);
            assert_eq!(t.duration_buckets.iter().sum::<u64>(), EACH);
        }
        // The master folds both workers into its retired area: the sums add up.
        for index in slots {
            board.master().retired.add(&board.slot(index).counters().totals());
        }
        let retired = board.master().retired.totals();
        assert_eq!(retired.requests[0][1], 2 * EACH);
        assert_eq!(retired.response_bytes, 10 * EACH);
        assert_eq!(retired.connections, 2 * EACH + 2);
    }

    #[test]
    fn cache_counters_are_shared_folded_and_reset() {
        let board = Scoreboard::new(2).unwrap();
        let index = board.claim(0, 1, 0).unwrap();
        let pid = fork_child(|| {
            let cache = board.slot(index).counters().cache();
            cache.answered(0);
            cache.answered(0);
            cache.answered(6);
            cache.answered(99); // out of range: counted in the last status
            cache.lock_wait_started();
            cache.lock_waited(std::time::Duration::from_micros(1500));
            cache.store_outcome(true);
            cache.store_outcome(false);
            cache.purged();
            0
        });
        assert_eq!(wait_child(pid), 0);
        let t = board.slot(index).counters().totals().cache;
        assert_eq!(t.requests, [2, 0, 0, 0, 0, 0, 2]);
        assert_eq!((t.lock_waits, t.lock_wait_micros), (1, 1500));
        assert_eq!((t.stores, t.not_stored, t.purges), (1, 1, 1));
        // reaped: folded into the retired area, and the reclaimed slot starts from zero
        board.master().retired.add(&board.slot(index).counters().totals());
        board.master().retired.add(&board.slot(index).counters().totals());
        board.release(index);
        assert_eq!(board.claim(0, 2, 0), Some(index));
        assert_eq!(board.slot(index).counters().totals().cache, Default::default());
        let retired = board.master().retired.totals().cache;
        assert_eq!((retired.requests[0], retired.lock_wait_micros, retired.stores), (4, 3000, 2));
        board.master().count_cache_purge();
        assert_eq!(board.master().cache_purges(), 1);
    }

    #[test]
    fn a_claimed_slot_starts_from_zero() {
        let board = Scoreboard::new(1).unwrap();
        let index = board.claim(1, 1, 0).unwrap();
        board.set_pid(index, 42);
        let slot = board.slot(index);
        slot.request_started();
        slot.request_finished();
        slot.record_exception();
        slot.connection_opened();
        assert_eq!(slot.pid(), 42);
        board.release(index);
        assert_eq!((slot.pid(), slot.state()), (0, SlotState::Free));
        assert_eq!(board.claim(2, 2, 0), Some(index));
        assert_eq!(slot.pid(), -1, "claimed, pid not yet known");
        assert_eq!(slot.state(), SlotState::Booting);
        assert_eq!((slot.generation(), slot.age()), (2, 2));
        assert_eq!((slot.requests(), slot.open_connections()), (0, 0));
        assert_eq!(slot.counters().totals(), ferrocorn_metrics::Totals::default());
    }

    #[test]
    fn restarts_are_counted_by_reason() {
        let board = Scoreboard::new(1).unwrap();
        board.master().count_restart(RestartReason::Crash);
        board.master().count_restart(RestartReason::Crash);
        board.master().count_restart(RestartReason::Reload);
        let restarts = board.master().restarts();
        assert_eq!(restarts.len(), RestartReason::ALL.len());
        assert!(restarts.contains(&("crash", 2)) && restarts.contains(&("reload", 1)));
        assert!(restarts.contains(&("timeout", 0)));
    }

    #[test]
    fn slots_covers_every_slot_ever_claimed_and_no_more() {
        let board = Scoreboard::new(8).unwrap();
        assert_eq!(board.slots().count(), 0);
        let a = board.claim(0, 1, 0).unwrap();
        let b = board.claim(0, 2, 0).unwrap();
        assert_eq!(board.slots().map(|(i, _)| i).collect::<Vec<_>>(), vec![a, b]);
        board.release(b);
        assert_eq!(board.slots().count(), 2, "a released slot may be reclaimed: still scanned");
        board.release(a);
        assert_eq!(board.claim(0, 3, 0), Some(a));
        assert_eq!(board.slots().count(), 2);
    }

    #[test]
    fn claims_distinct_slots_until_full() {
        let board = Scoreboard::new(2).unwrap();
        let a = board.claim(0, 1, 0).unwrap();
        let b = board.claim(0, 2, 0).unwrap();
        assert_ne!(a, b);
        assert!(board.claim(0, 3, 0).is_none());
    }
}
