//! The scoreboard: one slot per worker in a `MAP_SHARED | MAP_ANONYMOUS` mapping created by the
//! master before the first fork, so every worker writes its own slot and the master (and later
//! metrics, `top`, autoscaling) read them all. Slots are written with atomics only: no lock a
//! SIGKILLed worker could leave held.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use ferrocorn_metrics::{N_ACCEPT_RECHECKS, N_BUCKETS, N_METHODS, N_STATUS, Totals};

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
    open_connections: AtomicU64,
    /// Open connections whose last response is written and that are only closing.
    closing_connections: AtomicU64,
    /// Moving average of this worker's request durations (µs), written by the worker only.
    recent_request_micros: AtomicU64,
    counters: Counters,
}

/// Monotonic request counters in a fixed layout (see `ferrocorn_metrics` label spaces).
#[repr(C)]
#[derive(Debug)]
pub struct Counters {
    by_method_status: [[AtomicU64; N_STATUS]; N_METHODS],
    duration_buckets: [AtomicU64; N_BUCKETS],
    duration_sum_micros: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    exceptions: AtomicU64,
    connections: AtomicU64,
    accept_rechecks: [AtomicU64; N_ACCEPT_RECHECKS],
    accept_missed: AtomicU64,
}

impl Counters {
    fn each(&self, mut f: impl FnMut(&AtomicU64)) {
        self.by_method_status.iter().flatten().for_each(&mut f);
        self.duration_buckets.iter().for_each(&mut f);
        for c in [
            &self.duration_sum_micros,
            &self.request_bytes,
            &self.response_bytes,
            &self.exceptions,
            &self.connections,
            &self.accept_missed,
        ] {
            f(c);
        }
        self.accept_rechecks.iter().for_each(&mut f);
    }

    fn reset(&self) {
        self.each(|c| c.store(0, Ordering::Relaxed));
    }

    /// Read everything into plain totals.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for (row, arow) in t.requests.iter_mut().zip(&self.by_method_status) {
            for (v, a) in row.iter_mut().zip(arow) {
                *v = a.load(Ordering::Relaxed);
            }
        }
        for (v, a) in t.duration_buckets.iter_mut().zip(&self.duration_buckets) {
            *v = a.load(Ordering::Relaxed);
        }
        t.duration_sum_micros = self.duration_sum_micros.load(Ordering::Relaxed);
        t.request_bytes = self.request_bytes.load(Ordering::Relaxed);
        t.response_bytes = self.response_bytes.load(Ordering::Relaxed);
        t.exceptions = self.exceptions.load(Ordering::Relaxed);
        t.connections = self.connections.load(Ordering::Relaxed);
        for (v, a) in t.accept_rechecks.iter_mut().zip(&self.accept_rechecks) {
            *v = a.load(Ordering::Relaxed);
        }
        t.accept_missed = self.accept_missed.load(Ordering::Relaxed);
        t
    }

    /// Add plain totals (the master folds a reaped worker's counters here).
    pub fn add(&self, t: &Totals) {
        for (row, arow) in t.requests.iter().zip(&self.by_method_status) {
            for (v, a) in row.iter().zip(arow) {
                a.fetch_add(*v, Ordering::Relaxed);
            }
        }
        for (v, a) in t.duration_buckets.iter().zip(&self.duration_buckets) {
            a.fetch_add(*v, Ordering::Relaxed);
        }
        self.duration_sum_micros.fetch_add(t.duration_sum_micros, Ordering::Relaxed);
        self.request_bytes.fetch_add(t.request_bytes, Ordering::Relaxed);
        self.response_bytes.fetch_add(t.response_bytes, Ordering::Relaxed);
        self.exceptions.fetch_add(t.exceptions, Ordering::Relaxed);
        self.connections.fetch_add(t.connections, Ordering::Relaxed);
        for (v, a) in t.accept_rechecks.iter().zip(&self.accept_rechecks) {
            a.fetch_add(*v, Ordering::Relaxed);
        }
        self.accept_missed.fetch_add(t.accept_missed, Ordering::Relaxed);
    }
}

/// What woke a worker that had left a waiting connection to its siblings, so that it looked
/// at the listener again (indexes `Totals::accept_rechecks`, labels
/// `ferrocorn_metrics::ACCEPT_RECHECK_CAUSES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptRecheck {
    /// An event of its own: a request ended, a connection started closing or closed.
    Event = 0,
    /// A busy sibling's request became long (the sync rules' deadline).
    Deadline = 1,
    /// Nothing for the fallback interval: a sibling's change sends no event across processes.
    Fallback = 2,
}

/// One finished request, as the worker records it.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord {
    /// Index into `ferrocorn_metrics::METHODS`.
    pub method: usize,
    /// Index from `ferrocorn_metrics::status_index`.
    pub status: usize,
    /// The status code itself.
    pub code: u16,
    /// Duration in microseconds.
    pub micros: u64,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
}

/// Why workers were replaced, as counted by the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// Retired after `max_requests`.
    MaxRequests = 0,
    /// Killed after a heartbeat or boot timeout.
    Timeout = 1,
    /// Recycled for memory use.
    Memory = 2,
    /// Died unexpectedly.
    Crash = 3,
    /// Replaced by a reload (HUP).
    Reload = 4,
    /// Removed by scaling down.
    Scale = 5,
}

impl RestartReason {
    /// Every reason, in label order.
    pub const ALL: [RestartReason; 6] = [
        RestartReason::MaxRequests,
        RestartReason::Timeout,
        RestartReason::Memory,
        RestartReason::Crash,
        RestartReason::Reload,
        RestartReason::Scale,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RestartReason::MaxRequests => "max_requests",
            RestartReason::Timeout => "timeout",
            RestartReason::Memory => "memory",
            RestartReason::Crash => "crash",
            RestartReason::Reload => "reload",
            RestartReason::Scale => "scale",
        }
    }
}

/// Master-owned shared counters: totals of exited workers and restarts by reason.
#[repr(C)]
#[derive(Debug)]
pub struct MasterArea {
    /// Counters folded from reaped workers, so totals never go backwards.
    pub retired: Counters,
    restarts: [AtomicU64; 6],
    /// One past the highest slot index ever claimed: slots beyond it have never held a worker.
    claimed_end: AtomicUsize,
}

impl MasterArea {
    /// Count one restart.
    pub fn count_restart(&self, reason: RestartReason) {
        self.restarts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Restarts by reason label.
    pub fn restarts(&self) -> Vec<(&'static str, u64)> {
        RestartReason::ALL
            .iter()
            .map(|r| (r.label(), self.restarts[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
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
    /// Record one finished request in the counters.
    pub fn record(&self, r: RequestRecord) {
        // Single writer (the worker), so a load and a store make the average: each request
        // weighs a quarter, enough to follow a change of load within a few requests.
        let recent = self.recent_request_micros.load(Ordering::Relaxed);
        let updated = recent - recent / 4 + r.micros / 4;
        self.recent_request_micros.store(updated, Ordering::Relaxed);
        let c = &self.counters;
        c.by_method_status[r.method.min(N_METHODS - 1)][r.status.min(N_STATUS - 1)]
            .fetch_add(1, Ordering::Relaxed);
        c.duration_buckets[ferrocorn_metrics::duration_bucket(r.micros)]
            .fetch_add(1, Ordering::Relaxed);
        c.duration_sum_micros.fetch_add(r.micros, Ordering::Relaxed);
        c.request_bytes.fetch_add(r.request_bytes, Ordering::Relaxed);
        c.response_bytes.fetch_add(r.response_bytes, Ordering::Relaxed);
    }
    /// The app raised an exception.
    pub fn record_exception(&self) {
        self.counters.exceptions.fetch_add(1, Ordering::Relaxed);
    }
    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }
    /// An open connection will carry no more requests: its last response is written and it
    /// is closing.
    pub fn connection_closing(&self) {
        self.closing_connections.fetch_add(1, Ordering::Relaxed);
    }
    /// A connection closed (`was_closing`: [`Slot::connection_closing`] was called for it).
    pub fn connection_closed(&self, was_closing: bool) {
        if was_closing {
            self.closing_connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
    /// Open connections that can still carry a request (open, not closing): what the accept
    /// policy shares out.
    pub fn connections_in_use(&self) -> u64 {
        let closing = self.closing_connections.load(Ordering::Relaxed);
        self.open_connections.load(Ordering::Relaxed).saturating_sub(closing)
    }
    /// The worker was woken by a waiting connection that a sibling took first.
    pub fn accept_missed(&self) {
        self.counters.accept_missed.fetch_add(1, Ordering::Relaxed);
    }
    /// A worker that left a waiting connection to its siblings looked at it again, woken by
    /// `cause`.
    pub fn accept_deferred(&self, cause: AcceptRecheck) {
        self.counters.accept_rechecks[cause as usize].fetch_add(1, Ordering::Relaxed);
    }
    /// Moving average of the worker's recent request durations, in microseconds.
    pub fn recent_request_micros(&self) -> u64 {
        self.recent_request_micros.load(Ordering::Relaxed)
    }
    /// Open client connections.
    pub fn open_connections(&self) -> u64 {
        self.open_connections.load(Ordering::Relaxed)
    }
    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
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
        self.open_connections.store(0, Ordering::Relaxed);
        self.closing_connections.store(0, Ordering::Relaxed);
        self.recent_request_micros.store(0, Ordering::Relaxed);
        self.counters.reset();
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

/// Map `bytes` of zero-filled memory shared with every process forked afterwards (never
/// unmapped by this function; the caller owns it). Page-aligned.
pub fn map_shared_zeroed(bytes: usize) -> std::io::Result<*mut u8> {
    // SAFETY: anonymous shared mapping with no address hint; the result is checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

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
    pub fn claim(&self, generation: u64, age: u32) -> Option<usize> {
        let index = (0..self.len)
            .find(|&i| self.slot(i).state() == SlotState::Free && self.slot(i).pid() == 0)?;
        // The pid is filled in by the master after fork; mark it taken with a placeholder.
        self.slot(index).claim(-1, generation, age);
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
    fn slots_covers_every_slot_ever_claimed_and_no_more() {
        let board = Scoreboard::new(8).unwrap();
        assert_eq!(board.slots().count(), 0);
        let a = board.claim(0, 1).unwrap();
        let b = board.claim(0, 2).unwrap();
        assert_eq!(board.slots().map(|(i, _)| i).collect::<Vec<_>>(), vec![a, b]);
        board.release(b);
        assert_eq!(board.slots().count(), 2, "a released slot may be reclaimed: still scanned");
        board.release(a);
        assert_eq!(board.claim(0, 3), Some(a));
        assert_eq!(board.slots().count(), 2);
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
