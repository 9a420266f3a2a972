//! Blocking reads and writes on a client socket that tokio owns, for the few places where the
//! app itself drives I/O from inside its call (a deferred `100-continue` body, the PEP 3333
//! `write()` callable). The socket stays non-blocking; when it is not ready these loops wait —
//! a thread in `poll(2)`, a gevent greenlet in the hub (so the worker's other greenlets run) —
//! and give up after a timeout. Tokio's edge-triggered readiness is unaffected: it re-arms on
//! the next `EAGAIN`.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;

/// How code on the app's side waits for the server (a client socket, a full response
/// channel): a thread parks, a gevent greenlet yields to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppWait {
    /// Park the thread (`poll(2)`, a blocking send) without the GIL: sync and gthread.
    Thread,
    /// Yield to the gevent hub, keeping the GIL: gevent, where parking the hub's thread would
    /// stop every greenlet of the worker.
    Greenlet,
}

impl AppWait {
    /// Run `io` (socket operations that may wait) as this kind of wait needs: a thread lets the
    /// GIL go for the whole operation, a greenlet keeps it (the hub needs it to switch).
    pub fn run<T: Send>(self, py: Python<'_>, io: impl FnOnce() -> T + Send) -> T {
        match self {
            AppWait::Thread => py.detach(io),
            AppWait::Greenlet => io(),
        }
    }

    fn wait(self, fd: RawFd, events: libc::c_short, deadline: Instant) -> std::io::Result<()> {
        match self {
            AppWait::Thread => poll_fd(fd, events, deadline),
            AppWait::Greenlet => Python::attach(|py| wait_in_hub(py, fd, events, deadline)),
        }
    }
}

/// The client's socket as the app side uses it: owned by the connection driver (open while
/// the app runs), non-blocking, with the longest wait for the client and how to wait.
#[derive(Debug, Clone, Copy)]
pub struct ClientSocket {
    /// The socket descriptor.
    pub fd: RawFd,
    /// Longest wait for a slow client.
    pub timeout: Duration,
    /// How to wait for it.
    pub wait: AppWait,
}

/// `gevent.socket.wait_read`/`wait_write`: the current greenlet sleeps until `fd` is ready
/// while the hub runs the others.
fn wait_in_hub(
    py: Python<'_>,
    fd: RawFd,
    events: libc::c_short,
    deadline: Instant,
) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client too slow"));
    }
    let wait = if events == libc::POLLIN { "wait_read" } else { "wait_write" };
    py.import("gevent.socket")
        .and_then(|m| m.call_method1(wait, (fd, left.as_secs_f64())))
        .map(|_| ())
        .map_err(|e| {
            if e.is_instance_of::<PyTimeoutError>(py) {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "client too slow")
            } else {
                std::io::Error::other(e.to_string())
            }
        })
}

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

impl ClientSocket {
    /// Run `op` (one `read`/`write` on the socket) until it does not fail with `EAGAIN` or
    /// `EINTR`, waiting for `events` meanwhile, until `deadline`.
    fn retry(
        &self,
        events: libc::c_short,
        deadline: Instant,
        mut op: impl FnMut() -> isize,
    ) -> std::io::Result<usize> {
        loop {
            let n = op();
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::WouldBlock => self.wait.wait(self.fd, events, deadline)?,
                std::io::ErrorKind::Interrupted => {}
                _ => return Err(err),
            }
        }
    }

    /// Write all of `data`, waiting up to the timeout overall.
    pub fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        let deadline = Instant::now() + self.timeout;
        while !data.is_empty() {
            // SAFETY: `data` is a valid readable buffer of `data.len()` bytes; `fd` is the open
            // connection socket owned by the driver, which outlives this call.
            let n = self.retry(libc::POLLOUT, deadline, || unsafe {
                libc::write(self.fd, data.as_ptr().cast(), data.len())
            })?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Read what is available into `buf` (waiting up to the timeout); `Ok(0)` at end of stream.
    pub fn read_some(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        let deadline = Instant::now() + self.timeout;
        let mut chunk = [0u8; 16 * 1024];
        // SAFETY: `chunk` is a valid writable buffer of its length; `fd` is the open
        // connection socket owned by the driver, which outlives this call.
        let n = self.retry(libc::POLLIN, deadline, || unsafe {
            libc::read(self.fd, chunk.as_mut_ptr().cast(), chunk.len())
        })?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}
