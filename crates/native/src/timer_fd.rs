//! A non-blocking `CLOCK_MONOTONIC` timerfd: what the gevent hub's short-timer wake-up
//! (`hub_timer_wake.rs`, one deadline at a time) and the ASGI driver's periodic tick
//! (`server/loop_driver.rs`) are made of.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An owned timerfd, readable once it has expired.
pub struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    /// A new, disarmed timer.
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: timerfd_create takes a clock id and flags and returns a new descriptor or -1.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor timerfd_create just returned, owned by nothing else.
        Ok(TimerFd { fd: unsafe { OwnedFd::from_raw_fd(raw) } })
    }

    /// Expire at `at` (CLOCK_MONOTONIC nanoseconds), once; None disarms.
    pub fn set_deadline(&self, at: Option<u64>) -> io::Result<()> {
        self.set(libc::TFD_TIMER_ABSTIME, at.map_or(timespec(0), timespec), timespec(0))
    }

    /// Expire every `period`, the first time one period from now.
    pub fn set_periodic(&self, period: Duration) -> io::Result<()> {
        let every = timespec(period.as_nanos() as u64);
        self.set(0, every, every)
    }

    /// Consume the expirations so far (the descriptor stops being readable until the next).
    pub fn clear(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live 8-byte buffer; the descriptor is
        // non-blocking, so a call with nothing expired returns EAGAIN, which is ignored.
        unsafe { libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
    }

    fn set(
        &self,
        flags: libc::c_int,
        value: libc::timespec,
        interval: libc::timespec,
    ) -> io::Result<()> {
        let setting = libc::itimerspec { it_interval: interval, it_value: value };
        // SAFETY: `setting` is a valid itimerspec for the call; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(self.fd.as_raw_fd(), flags, &setting, std::ptr::null_mut())
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn timespec(nanos: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}
