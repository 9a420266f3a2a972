//! A slot's request counters in `ferrocorn_metrics`' fixed label spaces, and what a worker
//! records into them: one finished request ([`RequestRecord`]), an accept re-check's cause
//! ([`AcceptRecheck`]); the response cache's share is [`CacheCounters`].

use std::sync::atomic::{AtomicU64, Ordering};

use ferrocorn_metrics::{N_ACCEPT_RECHECKS, N_BUCKETS, N_METHODS, N_STATUS, Totals};

use super::CacheCounters;

/// Monotonic request counters in a fixed layout (see `ferrocorn_metrics` label spaces).
#[repr(C)]
#[derive(Debug)]
pub struct Counters {
    pub(super) by_method_status: [[AtomicU64; N_STATUS]; N_METHODS],
    pub(super) duration_buckets: [AtomicU64; N_BUCKETS],
    pub(super) duration_sum_micros: AtomicU64,
    pub(super) request_bytes: AtomicU64,
    pub(super) response_bytes: AtomicU64,
    pub(super) exceptions: AtomicU64,
    pub(super) connections: AtomicU64,
    pub(super) accept_rechecks: [AtomicU64; N_ACCEPT_RECHECKS],
    pub(super) accept_missed: AtomicU64,
    pub(super) cache: CacheCounters,
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
        self.cache.each(&mut f);
    }

    /// The response cache's counters.
    pub fn cache(&self) -> &CacheCounters {
        &self.cache
    }

    pub(super) fn reset(&self) {
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
        t.cache = self.cache.totals();
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
        self.cache.add(&t.cache);
    }
}

/// What woke a worker that had left a waiting connection to its siblings, so that it looked
/// at the listener again (indexes `Totals::accept_rechecks`, labels
/// `ferrocorn_metrics::ACCEPT_RECHECK_CAUSES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptRecheck {
    /// An event of its own (a request ended, a connection started closing or closed), or a
    /// sibling took a connection.
    Event = 0,
    /// A busy sibling's request became long (the sync rules' deadline).
    Deadline = 1,
    /// Nothing for the fallback interval (a change no event reports, such as a sibling that
    /// exited).
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
