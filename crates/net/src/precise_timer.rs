//! A microsecond timer for a current-thread tokio runtime: tasks wait for an instant on one
//! `timerfd` armed for the earliest of them ([`PreciseTimer`]).
//!
//! Why: tokio's timer wheel has millisecond granularity and rounds a deadline up, so a task
//! woke up to ~1 ms late. `ferrocorn bench --rate` measures latency from each request's
//! intended send time (no coordinated omission), so that lateness was reported as the
//! server's (a 10 µs cache hit measured ~1.3 ms at p50). The `timerfd` wakes the runtime's own
//! epoll at the time (within the kernel's timer slack, tens of microseconds), with no extra
//! thread and no cross-thread wake-up. No crate offers this for tokio; the three calls tokio
//! and std lack (`timerfd_create`, `timerfd_settime`, registering the descriptor) are the
//! `unsafe` blocks below.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

/// A runtime's microsecond timer (see the module docs). Clone it into each task that waits;
/// [`PreciseTimer::drive`] must run as a task of the same runtime.
#[derive(Clone)]
pub struct PreciseTimer(Rc<Shared>);

struct Shared {
    fd: AsyncFd<std::fs::File>,
    /// Connections waiting, earliest first; a connection polled again while waiting adds
    /// another entry (a stale one only wakes it once more, and it waits again).
    waiting: RefCell<BinaryHeap<Reverse<Waiting>>>,
    /// The time the timer is armed for, if it is.
    armed: Cell<Option<Instant>>,
}

struct Waiting {
    at: Instant,
    waker: Waker,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl PreciseTimer {
    /// A timer for the current thread's runtime (call inside it).
    pub fn new() -> std::io::Result<PreciseTimer> {
        // SAFETY: timerfd_create takes no pointers; a negative result is checked below.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just made here and owned by nothing else.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        // SAFETY: the descriptor is owned by `file`, which the AsyncFd owns from now on: it
        // stays open for as long as it is registered and is deregistered before it closes.
        let fd = unsafe { AsyncFd::register(file) }.map_err(std::io::Error::from)?;
        Ok(PreciseTimer(Rc::new(Shared {
            fd,
            waiting: RefCell::new(BinaryHeap::new()),
            armed: Cell::new(None),
        })))
    }

    /// Resolve at `at` (at once if it has passed).
    pub async fn sleep_until(&self, at: Instant) {
        poll_fn(|cx| {
            if Instant::now() >= at {
                return Poll::Ready(());
            }
            self.0.waiting.borrow_mut().push(Reverse(Waiting { at, waker: cx.waker().clone() }));
            if self.0.armed.get().is_none_or(|armed| at < armed) {
                self.arm(at);
            }
            Poll::Pending
        })
        .await
    }

    /// Wake the connections whose time has come, each time the timer fires; runs until the
    /// runtime drops it.
    pub async fn drive(self) {
        loop {
            let Ok(mut ready) = self.0.fd.readable().await else { return };
            let mut expirations = [0u8; 8];
            let _ = (&mut self.0.fd.get_ref()).read(&mut expirations);
            ready.clear_ready();
            self.0.armed.set(None);
            let now = Instant::now();
            let mut waiting = self.0.waiting.borrow_mut();
            while waiting.peek().is_some_and(|w| w.0.at <= now) {
                if let Some(Reverse(due)) = waiting.pop() {
                    due.waker.wake();
                }
            }
            if let Some(next) = waiting.peek().map(|w| w.0.at) {
                drop(waiting);
                self.arm(next);
            }
        }
    }

    fn arm(&self, at: Instant) {
        // A zero it_value would disarm: a time already passed fires in a nanosecond.
        let after = at.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
        let value = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        let fd = self.0.fd.get_ref().as_raw_fd();
        // SAFETY: `fd` is the live timerfd this timer owns; `value` is a valid itimerspec and
        // the old value is not asked for (null).
        if unsafe { libc::timerfd_settime(fd, 0, &value, std::ptr::null_mut()) } == 0 {
            self.0.armed.set(Some(at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleepers_wake_in_order_never_early_and_soon_after_their_time() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let local = tokio::task::LocalSet::new();
        let late = local.block_on(&rt, async {
            let pacer = PreciseTimer::new().unwrap();
            tokio::task::spawn_local(pacer.clone().drive());
            let t0 = Instant::now() + Duration::from_millis(2);
            let sleepers: Vec<_> = (0..40u64)
                .map(|i| {
                    let pacer = pacer.clone();
                    // out of order on purpose: 0, 39, 1, 38, ...
                    let k = if i % 2 == 0 { i / 2 } else { 39 - i / 2 };
                    let at = t0 + Duration::from_micros(250 * k);
                    tokio::task::spawn_local(async move {
                        pacer.sleep_until(at).await;
                        (at, Instant::now())
                    })
                })
                .collect();
            let mut late = Vec::new();
            for s in sleepers {
                let (at, woke) = s.await.unwrap();
                assert!(woke >= at, "woke before its time");
                late.push(woke - at);
            }
            late
        });
        let mut late = late;
        late.sort();
        // tokio's timer is about a millisecond late; this, tens of microseconds (a generous
        // bound for a busy machine)
        let median = late[late.len() / 2];
        assert!(median < Duration::from_micros(500), "median lateness {median:?}");
    }
}
