//! Measurement state: one [`Stats`] per load thread (an HDR histogram of
//! latencies in microseconds, status-code counts, error counts, bytes), merged
//! into one at the end of the run.

use std::time::Instant;

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks exactly (1 hour, in microseconds);
/// larger values are clamped to it.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Errors by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// The TCP connect failed (refused, unreachable, or timed out).
    pub connect: u64,
    /// Reading the response failed: reset, EOF before the response was complete,
    /// or a malformed response.
    pub read: u64,
    /// Writing the request failed.
    pub write: u64,
    /// No complete response within `--timeout`.
    pub timeout: u64,
}

impl ErrorCounts {
    /// Sum of all kinds.
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }

    fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
    }
}

/// Counters of one thread (or of the whole run after [`Stats::merge`]).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of every completed measured request, in microseconds.
    pub hist: Histogram<u64>,
    /// Counts by status code, indexed by the code (100..=999).
    pub status: Vec<u64>,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Completed measured requests (any status).
    pub requests: u64,
    /// Bytes read from the sockets for measured requests.
    pub bytes: u64,
    /// When the last measured request completed.
    pub last_done: Option<Instant>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty counters.
    pub fn new() -> Self {
        Stats {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            status: vec![0; 1000],
            errors: ErrorCounts::default(),
            requests: 0,
            bytes: 0,
            last_done: None,
        }
    }

    /// Records one completed request.
    #[inline]
    pub fn record(&mut self, status: u16, latency_us: u64, bytes: u64, done: Instant) {
        self.hist.saturating_record(latency_us.clamp(1, MAX_LATENCY_US));
        if let Some(slot) = self.status.get_mut(usize::from(status)) {
            *slot += 1;
        }
        self.requests += 1;
        self.bytes += bytes;
        self.last_done = Some(done);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.hist.add(&other.hist).expect("histograms with equal bounds merge");
        for (a, b) in self.status.iter_mut().zip(&other.status) {
            *a += b;
        }
        self.errors.add(&other.errors);
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.last_done = match (self.last_done, other.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Non-zero status counts, ascending by code.
    pub fn status_counts(&self) -> Vec<(u16, u64)> {
        self.status
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code as u16, *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_merges() {
        let now = Instant::now();
        let mut a = Stats::new();
        let mut b = Stats::new();
        a.record(200, 100, 10, now);
        a.record(500, 0, 10, now);
        b.record(200, 300, 5, now);
        b.errors.read = 2;
        a.merge(&b);
        assert_eq!(a.requests, 3);
        assert_eq!(a.bytes, 25);
        assert_eq!(a.status_counts(), vec![(200, 2), (500, 1)]);
        assert_eq!(a.errors.total(), 2);
        assert_eq!(a.hist.len(), 3);
        assert_eq!(a.hist.min(), 1);
        assert!(a.hist.max() >= 300);
    }
}
