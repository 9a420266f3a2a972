//! The scoreboard: one slot per worker in a `MAP_SHARED | MAP_ANONYMOUS` mapping created by the
//! master before the first fork, so every worker writes its own slot and the master (and later
//! metrics, `top`, autoscaling) read them all. Slots are written with atomics only: no lock a
//! SIGKILLed worker could leave held.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// A worker's state as published in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SlotState {
    /// Unused.
    Free = 0,
    /// Forked, loading the app.
    Booting = 1,
    /// Serving, no request running.
    Idle = 2,
    /// Running a request.
    Busy = 3,
    /// Finishing its last requests before exiting (max_requests, reload, scale-down).
    Retiring = 4,
}

impl SlotState {
    fn from_u32(v: u32) -> SlotState {
        match v {
            1 => SlotState::Booting,
            2 => SlotState::Idle,
            3 => SlotState::Busy,
            4 => SlotState::Retiring,
            _ => SlotState::Free,
        }
    }

    /// Lower-case name (`booting`, `idle`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Free => "free",
            SlotState::Booting => "booting",
            SlotState::Idle => "idle",
            SlotState::Busy => "busy",
            SlotState::Retiring => "retiring",
        }
    }
}

/// One worker's shared counters. Field order is the wire layout between processes of one
/// server instance (never persisted), so it may change freely between builds.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct Slot {
    pid: AtomicI32,
    state: AtomicU32,
    generation: AtomicU64,
    heartbeat_ms: AtomicU64,
    started_ms: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU32,
    age: AtomicU32,
}

static CLOCK_BASE: OnceLock<Instant> = OnceLock::new();

/// Milliseconds on the monotonic clock since the master started; comparable across the
/// master and its forked workers (the base is set before the first fork and inherited).
pub fn monotonic_ms() -> u64 {
    CLOCK_BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Slot {
    /// Worker pid (0 when free).
    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::Acquire)
    }
    /// Current state.
    pub fn state(&self) -> SlotState {
        SlotState::from_u32(self.state.load(Ordering::Acquire))
    }
    /// Publish a new state and refresh the heartbeat.
    pub fn set_state(&self, state: SlotState) {
        self.state.store(state as u32, Ordering::Release);
        self.heartbeat();
    }
    /// The worker is alive and its event loop is turning.
    pub fn heartbeat(&self) {
        self.heartbeat_ms.store(monotonic_ms(), Ordering::Release);
    }
    /// Milliseconds of [`monotonic_ms`] at the last heartbeat.
    pub fn last_heartbeat_ms(&self) -> u64 {
        self.heartbeat_ms.load(Ordering::Acquire)
    }
    /// When the worker was forked ([`monotonic_ms`]).
    pub fn started_ms(&self) -> u64 {
        self.started_ms.load(Ordering::Acquire)
    }
    /// Requests completed.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// A request started.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }
    /// A request finished.
    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Requests running now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// Config generation the worker was started under (bumped by HUP).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    /// Worker age (spawn order, as Gunicorn's `worker.age`).
    pub fn age(&self) -> u32 {
        self.age.load(Ordering::Acquire)
    }

    fn claim(&self, pid: i32, generation: u64, age: u32) {
        let now = monotonic_ms();
        self.requests.store(0, Ordering::Relaxed);
        self.in_flight.store(0, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Release);
        self.age.store(age, Ordering::Release);
        self.started_ms.store(now, Ordering::Release);
        self.heartbeat_ms.store(now, Ordering::Release);
        self.state.store(SlotState::Booting as u32, Ordering::Release);
        self.pid.store(pid, Ordering::Release);
    }

    fn release(&self) {
        self.pid.store(0, Ordering::Release);
        self.state.store(SlotState::Free as u32, Ordering::Release);
    }
}

/// The shared mapping of all slots.
#[derive(Debug)]
pub struct Scoreboard {
    base: *mut Slot,
    len: usize,
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
        let bytes = len.max(1) * std::mem::size_of::<Slot>();
        // SAFETY: anonymous shared mapping with no address hint; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // Anonymous mappings are zero-filled, and all-zero is a valid `Slot` (atomics at 0 =
        // free), so the memory is initialised for `len` slots.
        Ok(Scoreboard { base: ptr.cast::<Slot>(), len: len.max(1) })
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

    /// Iterate over all slots with their index.
    pub fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> {
        (0..self.len).map(move |i| (i, self.slot(i)))
    }

    /// Claim a free slot for a new worker (the master does this just before forking).
    pub fn claim(&self, generation: u64, age: u32) -> Option<usize> {
        let index = self.slots().find(|(_, s)| s.state() == SlotState::Free && s.pid() == 0)?.0;
        // The pid is filled in by the master after fork; mark it taken with a placeholder.
        self.slot(index).claim(-1, generation, age);
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
        // SAFETY: `base`/`len` describe exactly the mapping created in `new`.
        unsafe {
            libc::munmap(self.base.cast(), self.len * std::mem::size_of::<Slot>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_writes_are_seen_by_parent() {
        let board = Scoreboard::new(4).unwrap();
        let index = board.claim(7, 1).unwrap();
        // SAFETY: the test process is single-threaded at this point of the test body only if
        // run alone; the child touches nothing but the atomics and then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let slot = board.slot(index);
            slot.set_state(SlotState::Busy);
            slot.request_started();
            slot.request_finished();
            // SAFETY: immediate exit of the forked test child without running destructors.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let slot = board.slot(index);
        assert_eq!(slot.state(), SlotState::Busy);
        assert_eq!(slot.requests(), 1);
        assert_eq!(slot.generation(), 7);
        board.release(index);
        assert_eq!(board.slot(index).state(), SlotState::Free);
    }

    #[test]
    fn claims_distinct_slots_until_full() {
        let board = Scoreboard::new(2).unwrap();
        let a = board.claim(0, 1).unwrap();
        let b = board.claim(0, 2).unwrap();
        assert_ne!(a, b);
        assert!(board.claim(0, 3).is_none());
    }
}
