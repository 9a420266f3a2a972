//! One worker's slot: its pid, [`SlotState`], heartbeat, connection and request counts, and the
//! [`Counters`] it records finished requests in. Only the worker writes its slot after the
//! master has claimed it for the fork.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use ferrocorn_metrics::{N_METHODS, N_STATUS};

use super::{AcceptRecheck, Counters, RequestRecord};
use crate::monotonic_ms;

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
    pub(super) pid: AtomicI32,
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
    /// The worker pool the worker belongs to (0: the one serving `/`).
    pool: AtomicU32,
    counters: Counters,
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

    /// The worker pool of the slot's worker (0: the one serving `/`).
    pub fn pool(&self) -> usize {
        self.pool.load(Ordering::Acquire) as usize
    }

    pub(super) fn claim(&self, pid: i32, generation: u64, age: u32, pool: usize) {
        let now = monotonic_ms();
        self.pool.store(pool as u32, Ordering::Release);
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

    pub(super) fn release(&self) {
        self.pid.store(0, Ordering::Release);
        self.state.store(SlotState::Free as u32, Ordering::Release);
    }
}
