//! Precise wake-ups for the gevent hub's short timers.
//!
//! libev's epoll backend sleeps in `epoll_wait`, whose timeout is whole milliseconds, rounded
//! up: a `gevent.sleep(0.020)` on an idle hub lasts 20.3–20.6 ms, and every timer that falls
//! due inside the same millisecond fires in one batch, which keeps a burst of concurrent
//! requests in lock-step from one sleep to the next. [`TimerWake`] is a `timerfd` the hub
//! watches: ferrocorn's loop class (`ferrocorn._gevent`) arms it with the deadline of every
//! short timer it creates, so `epoll_wait` returns when the earliest one is due (to the
//! microsecond) and libev runs the timers that are due by then.
//!
//! Only timers up to [`HORIZON_NANOS`] ahead are tracked (longer ones lose nothing measurable to
//! a millisecond) and at most [`MAX_PENDING`] at once; a timer stopped before it fires leaves
//! its deadline here, which costs one spurious wake-up at most.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::timer_fd::TimerFd;

/// Timers further ahead than this are left to libev's millisecond rounding.
const HORIZON_NANOS: u64 = 1_000_000_000;
/// Deadlines tracked at once; beyond this, new timers are left to libev's rounding.
const MAX_PENDING: usize = 4096;

/// A `timerfd` set to the earliest pending short-timer deadline (see the module doc).
#[pyclass(module = "ferrocorn._native")]
pub struct TimerWake {
    fd: TimerFd,
    deadlines: Mutex<Deadlines>,
}

/// Pending deadlines (CLOCK_MONOTONIC nanoseconds) and the one the timerfd is set to.
#[derive(Default)]
struct Deadlines {
    pending: BinaryHeap<Reverse<u64>>,
    armed: Option<u64>,
}

#[pymethods]
impl TimerWake {
    #[new]
    fn new() -> PyResult<Self> {
        let fd = TimerFd::new().map_err(os_error)?;
        Ok(Self { fd, deadlines: Mutex::new(Deadlines::default()) })
    }

    /// The descriptor the hub watches for readability.
    fn fileno(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Track a timer due `after` seconds from now; the timerfd fires at the earliest one.
    fn arm(&self, after: f64) -> PyResult<()> {
        if !(after > 0.0 && after * 1e9 <= HORIZON_NANOS as f64) {
            return Ok(());
        }
        let now = monotonic_nanos();
        let mut deadlines = self.lock();
        if deadlines.pending.len() >= MAX_PENDING {
            return Ok(());
        }
        deadlines.pending.push(Reverse(now + (after * 1e9) as u64));
        self.set_to_earliest(&mut deadlines, now)
    }

    /// Called by the hub when the descriptor is readable: clears it and sets it to the next
    /// pending deadline.
    fn fired(&self) -> PyResult<()> {
        self.fd.clear();
        let now = monotonic_nanos();
        let mut deadlines = self.lock();
        deadlines.armed = None;
        self.set_to_earliest(&mut deadlines, now)
    }
}

impl TimerWake {
    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drop the deadlines due by `due_by` and set the timerfd to the earliest one left.
    fn set_to_earliest(&self, deadlines: &mut Deadlines, due_by: u64) -> PyResult<()> {
        while deadlines.pending.peek().is_some_and(|Reverse(at)| *at <= due_by) {
            deadlines.pending.pop();
        }
        let earliest = deadlines.pending.peek().map(|Reverse(at)| *at);
        if earliest == deadlines.armed {
            return Ok(());
        }
        self.fd.set_deadline(earliest).map_err(os_error)?;
        deadlines.armed = earliest;
        Ok(())
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock libev's timers and the timerfd both use).
fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the live `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn os_error(e: io::Error) -> PyErr {
    PyOSError::new_err(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn readable_within(wake: &TimerWake, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut poll = libc::pollfd { fd: wake.fileno(), events: libc::POLLIN, revents: 0 };
        // SAFETY: polls one live pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, limit.as_millis() as i32) };
        (ready == 1).then(|| start.elapsed())
    }

    #[test]
    fn fires_at_the_earliest_deadline_then_the_next() {
        let wake = TimerWake::new().unwrap();
        wake.arm(0.030).unwrap();
        wake.arm(0.010).unwrap();
        let first = readable_within(&wake, Duration::from_millis(500)).expect("first wake-up");
        assert!(
            first >= Duration::from_millis(9) && first < Duration::from_millis(25),
            "{first:?}"
        );
        wake.fired().unwrap();
        let second = readable_within(&wake, Duration::from_millis(500)).expect("second wake-up");
        assert!(second >= Duration::from_millis(10), "{second:?}");
        wake.fired().unwrap();
        assert_eq!(readable_within(&wake, Duration::from_millis(50)), None, "nothing left");
    }

    #[test]
    fn long_and_non_positive_timers_are_not_tracked() {
        let wake = TimerWake::new().unwrap();
        wake.arm(5.0).unwrap();
        wake.arm(0.0).unwrap();
        wake.arm(-1.0).unwrap();
        wake.arm(f64::NAN).unwrap();
        assert!(wake.lock().pending.is_empty());
        assert_eq!(wake.lock().armed, None);
    }
}
