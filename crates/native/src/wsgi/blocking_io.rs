//! Blocking reads and writes on a client socket that tokio owns, for the few places where the
//! app itself drives I/O from inside its call (a deferred `100-continue` body, the PEP 3333
//! `write()` callable). The socket stays non-blocking; these loops wait with `poll(2)` and give
//! up after a timeout. Tokio's edge-triggered readiness is unaffected: it re-arms on the next
//! `EAGAIN`.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

fn poll_fd(fd: RawFd, events: libc::c_short, deadline: Instant) -> std::io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client too slow"));
        }
        let mut pfd = libc::pollfd { fd, events, revents: 0 };
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Write all of `data` to the non-blocking socket `fd`, waiting (poll) up to `timeout` overall.
pub fn write_all_fd(fd: RawFd, mut data: &[u8], timeout: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + timeout;
    while !data.is_empty() {
        // SAFETY: `data` is a valid readable buffer of `data.len()` bytes; `fd` is the open
        // connection socket owned by the driver, which outlives this call.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::WouldBlock => poll_fd(fd, libc::POLLOUT, deadline)?,
            std::io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
    }
    Ok(())
}

/// Read what is available from the non-blocking socket `fd` into `buf` (waiting up to
/// `timeout`); `Ok(0)` at end of stream.
pub fn read_some(fd: RawFd, buf: &mut Vec<u8>, timeout: Duration) -> std::io::Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // SAFETY: `chunk` is a valid writable buffer of its length; `fd` is the open
        // connection socket owned by the driver, which outlives this call.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n > 0 {
            buf.extend_from_slice(&chunk[..n as usize]);
            return Ok(n as usize);
        }
        if n == 0 {
            return Ok(0);
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::WouldBlock => poll_fd(fd, libc::POLLIN, deadline)?,
            std::io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
    }
}
