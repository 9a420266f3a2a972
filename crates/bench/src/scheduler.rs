//! The run plan shared by all load threads (target, serialised request, phase
//! boundaries), the `-n` request budget, live progress counters, and the
//! open-loop (`--rate`) send schedule.
//!
//! Time boundaries are fixed before the threads start, so the threads never
//! need to talk to each other: a request is *measured* if its start (closed
//! loop) or intended send time (open loop) is at or after `warmup_end`, and
//! everything stops at `hard_end` (`-d`), abandoning requests in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Everything a connection task needs; shared read-only (plus atomics).
#[derive(Debug)]
pub struct Plan {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The request bytes, sent verbatim.
    pub request: Vec<u8>,
    /// The method is HEAD (responses have no body).
    pub head_request: bool,
    /// Close the connection after every response (`--no-keepalive`).
    pub want_close: bool,
    /// Requests are HTTP/1.0.
    pub http10: bool,
    /// Per-request timeout (connect + write + complete response).
    pub timeout: Duration,
    /// When the load started.
    pub t0: Instant,
    /// Measurement starts here (`t0 + warmup`).
    pub warmup_end: Instant,
    /// Everything stops here (`-d`), if set.
    pub hard_end: Option<Instant>,
    /// Remaining measured requests (`-n`), if set.
    pub tickets: Option<Tickets>,
    /// Open-loop rate in requests per second over all connections.
    pub rate: Option<f64>,
    /// Total connections (for spreading the open-loop schedule).
    pub connections: usize,
    /// Completed measured requests, one counter per thread (for the progress bar).
    pub progress: Vec<PaddedCounter>,
}

/// A counter on its own cache line, so threads do not false-share.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct PaddedCounter(pub AtomicU64);

/// The `-n` budget: each measured request attempt takes one ticket.
#[derive(Debug)]
pub struct Tickets(AtomicI64);

impl Tickets {
    /// A budget of `n` requests.
    pub fn new(n: u64) -> Self {
        Tickets(AtomicI64::new(i64::try_from(n).unwrap_or(i64::MAX)))
    }

    /// Takes one ticket; `false` when the budget is spent.
    #[inline]
    pub fn claim(&self) -> bool {
        self.0.fetch_sub(1, Ordering::Relaxed) > 0
    }
}

/// Intended send times of one connection in open-loop mode: connection `k` of
/// `C` sends its `i`-th request at `t0 + (k + i*C) / R`, so the connections
/// interleave evenly and together send `R` requests per second.
#[derive(Debug, Clone)]
pub struct Schedule {
    next_index: u64,
    stride: u64,
    ns_per_request: f64,
}

impl Schedule {
    /// Schedule of connection `index` out of `connections` at `rate` req/s.
    pub fn new(rate: f64, connections: usize, index: usize) -> Self {
        Schedule {
            next_index: index as u64,
            stride: connections as u64,
            ns_per_request: 1e9 / rate,
        }
    }

    /// The next intended send time.
    #[inline]
    pub fn next(&mut self, t0: Instant) -> Instant {
        let at = t0 + Duration::from_nanos((self.next_index as f64 * self.ns_per_request) as u64);
        self.next_index += self.stride;
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_run_out() {
        let t = Tickets::new(3);
        assert_eq!((0..5).filter(|_| t.claim()).count(), 3);
    }

    #[test]
    fn schedules_interleave() {
        let t0 = Instant::now();
        let mut a = Schedule::new(100.0, 2, 0);
        let mut b = Schedule::new(100.0, 2, 1);
        let ms = |t: Instant| (t - t0).as_millis();
        assert_eq!(
            [ms(a.next(t0)), ms(b.next(t0)), ms(a.next(t0)), ms(b.next(t0))],
            [0, 10, 20, 30]
        );
    }
}
