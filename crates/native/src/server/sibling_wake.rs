//! The one cross-process wake-up between sibling workers: an eventfd the master makes before
//! the first fork, and a count of the workers waiting on it in a shared page. A worker that
//! left a waiting connection to its siblings (`accept.rs`) waits on it beside its own events;
//! a worker that takes a connection posts it when someone waits, since its new count can turn
//! a sibling's "leave it" into "take it". Without it, a burst of new connections (64 opened at
//! once by a load generator or a proxy's pool) found every worker over its share in turn and
//! in no listener queue, and was accepted one per 50 ms fallback: the last client waited
//! ~0.9 s for its first answer with two sync workers.
//!
//! Posting is a no-op (no syscall) while nobody waits, so a balanced server pays one relaxed
//! load per accepted connection.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering, fence};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The shared half: the eventfd and the waiter count.
struct SiblingWake {
    eventfd: OwnedFd,
    waiters: *const AtomicU32,
}

// SAFETY: `waiters` points into a MAP_SHARED page mapped for the process's life and is only
// accessed atomically; the eventfd is a plain descriptor.
unsafe impl Send for SiblingWake {}
// SAFETY: as above.
unsafe impl Sync for SiblingWake {}

static WAKE: OnceLock<SiblingWake> = OnceLock::new();

/// Make the eventfd and the shared count (the master, before forking workers). Idempotent.
pub fn init() -> std::io::Result<()> {
    if WAKE.get().is_some() {
        return Ok(());
    }
    // SAFETY: eventfd with valid flags; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
    let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let page = ferrocorn_shm::map_shared_zeroed(64)?;
    let _ = WAKE.set(SiblingWake { eventfd, waiters: page.cast::<AtomicU32>() });
    Ok(())
}

fn wake() -> Option<&'static SiblingWake> {
    WAKE.get()
}

fn waiters(wake: &SiblingWake) -> &AtomicU32 {
    // SAFETY: the page is mapped (zeroed, so a valid AtomicU32) for the process's life.
    unsafe { &*wake.waiters }
}

/// A connection was taken: wake every sibling waiting to look again.
pub fn post() {
    let Some(wake) = wake() else { return };
    // Pairs with the fence in `Waiting::register`: either this load sees the waiter, or the
    // waiter's decision sees the connection count published before this call.
    fence(Ordering::SeqCst);
    if waiters(wake).load(Ordering::Relaxed) == 0 {
        return;
    }
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to the eventfd; a full counter (EAGAIN) means a
    // wake-up is pending anyway.
    let _ = unsafe { libc::write(wake.eventfd.as_raw_fd(), (&raw const one).cast(), 8) };
}

/// One accept loop's view of the wake-up: its own registration of the eventfd (a duplicate, so
/// every loop of every worker has its own), made on the worker's runtime.
pub struct SiblingWaker {
    fd: AsyncFd<OwnedFd>,
}

impl SiblingWaker {
    /// Register on the current runtime; None without a wake-up (a worker not forked by the
    /// master, or no descriptor left).
    pub fn register() -> Option<SiblingWaker> {
        let wake = wake()?;
        let fd = wake.eventfd.try_clone().ok()?;
        // SAFETY: `fd` is an open descriptor (this loop's duplicate of the eventfd) that the
        // AsyncFd owns from here on; `OwnedFd::as_raw_fd` always returns that same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()?;
        Some(SiblingWaker { fd })
    }

    /// Count this loop as waiting until the returned guard drops, forgetting wake-ups from
    /// before: call it before the decision the wait is for.
    pub fn register_wait(&self) -> Waiting<'_> {
        let counter = wake().map(waiters);
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        self.drain();
        Waiting { waker: self, counter }
    }

    /// Read the eventfd empty and clear the runtime's readiness for it.
    fn drain(&self) {
        if let Some(Ok(mut guard)) = poll_once(self.fd.readable()) {
            let mut count = [0u8; 8];
            let fd: RawFd = self.fd.get_ref().as_raw_fd();
            // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN is fine.
            let _ = unsafe { libc::read(fd, count.as_mut_ptr().cast(), 8) };
            guard.clear_ready();
        }
    }
}

/// A registered wait (see [`SiblingWaker::register_wait`]).
pub struct Waiting<'a> {
    waker: &'a SiblingWaker,
    counter: Option<&'static AtomicU32>,
}

impl Waiting<'_> {
    /// Until a sibling posts.
    pub async fn posted(&self) {
        if let Ok(mut guard) = self.waker.fd.readable().await {
            guard.clear_ready();
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.counter {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The future's output if it is ready at once (readiness already recorded by the runtime).
fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}
