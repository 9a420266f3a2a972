//! One worker woken per new connection instead of all of them. Every worker watches the
//! listener it shares with its siblings, and the runtime registers it in its epoll like any
//! socket, so each arrival woke every idle worker, and all but one went back to sleep
//! (measured: sync `-w 4` under `ab -c 100`, 2.2 context switches per request). The kernel
//! can wake just one waiter (`EPOLLEXCLUSIVE`), but only for a registration made with that
//! flag, which tokio does not offer. So this finds the runtime's registration of the listener
//! (the epoll descriptor and the token the runtime gave it, from `/proc/self/fdinfo`) and adds
//! it again with the flag and the same token: the runtime reads the event exactly as before.
//!
//! An exclusive wake-up goes to one worker blocked in that epoll at that moment; a worker that
//! is not waiting (running its app) passes it on. A woken worker that would not take the
//! connection would strand it, so a worker stays in the listener's wait queue only while the
//! accept policy says it takes work ([`ExclusiveWake::set_waiting`]).
//!
//! An epoll that is itself watched by another cannot take the wake-up for its waiter, so the
//! kernel wakes every worker there all the same. That is the ASGI class's case: its runtime's
//! epoll is watched by the asyncio loop's, where its thread waits. There the listener goes
//! into the loop's epoll instead ([`ExclusiveWake::join_loop`]), under the token of a
//! descriptor the loop watches for the worker ([`LoopListenerWake`]: an eventfd never
//! written), so the loop calls the worker when a connection is there, and the listener is not
//! in the runtime's epoll at all.
//!
//! When the registration cannot be found (no `/proc`, a runtime that does not use epoll), the
//! worker keeps the plain registration and every worker is woken, as before: slower, not wrong.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The listener's exclusive registration in the runtime's epoll.
pub(super) struct ExclusiveWake {
    epoll: RawFd,
    listener: RawFd,
    /// The runtime's token for the listener (its epoll data), kept so its events reach the
    /// same place.
    token: u64,
    /// In the listener's wait queue now.
    waiting: bool,
    /// The runtime's registration, taken over (left registered when dropped, for the runtime
    /// to remove), or this module's own in the asyncio loop's epoll (removed when dropped).
    owned_by_runtime: bool,
}

impl ExclusiveWake {
    /// Replace the runtime's registration of `listener` with an exclusive one. Call right
    /// after the runtime registered it (a `tokio::io::unix::AsyncFd`), from the thread that
    /// drives the runtime; the result must be dropped before that registration is.
    pub(super) fn take_over(listener: RawFd) -> Option<ExclusiveWake> {
        let (epoll, token) = find_registration(listener)?;
        let mut wake =
            ExclusiveWake { epoll, listener, token, waiting: true, owned_by_runtime: true };
        if epoll_ctl(epoll, libc::EPOLL_CTL_DEL, listener, 0, 0).is_err() {
            return None;
        }
        wake.waiting = false;
        if let Err(e) = wake.register() {
            // Put the runtime's plain registration back, so nothing is lost.
            let plain = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
            let _ = epoll_ctl(epoll, libc::EPOLL_CTL_ADD, listener, plain, token);
            crate::logging::debug!("exclusive accept wake-ups unavailable: {e}");
            return None;
        }
        Some(wake)
    }

    /// Register `listener` in the epoll of the asyncio loop that watches `wake`'s descriptor,
    /// under that descriptor's token, not waiting yet. None when the loop's registration of
    /// the descriptor cannot be found (a loop that does not use epoll).
    pub(super) fn join_loop(listener: RawFd, wake: &LoopListenerWake) -> Option<ExclusiveWake> {
        let (epoll, token) = find_registration(wake.fd.as_raw_fd())?;
        Some(ExclusiveWake { epoll, listener, token, waiting: false, owned_by_runtime: false })
    }

    /// Join (`true`) or leave the listener's wait queue. Joining while a connection is queued
    /// reports it at once (the kernel looks at the listener when it is added).
    pub(super) fn set_waiting(&mut self, waiting: bool) {
        if waiting == self.waiting {
            return;
        }
        if waiting {
            if self.register().is_err() {
                return;
            }
        } else if epoll_ctl(self.epoll, libc::EPOLL_CTL_DEL, self.listener, 0, 0).is_err() {
            return;
        }
        self.waiting = waiting;
    }

    fn register(&mut self) -> std::io::Result<()> {
        // Edge-triggered, as the runtime registered it (it clears readiness only when an
        // accept would block). `EPOLLRDHUP` cannot be combined with `EPOLLEXCLUSIVE`; a
        // listening socket never reports it.
        let events = (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32;
        epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, self.listener, events, self.token)?;
        self.waiting = true;
        Ok(())
    }
}

impl Drop for ExclusiveWake {
    fn drop(&mut self) {
        // The runtime's: leave it registered, so the runtime's own deregistration finds it
        // (its bookkeeping is released only when that succeeds). Ours: remove it (an epoll
        // forgets a descriptor only when every duplicate of it is closed, and the master
        // keeps one).
        self.set_waiting(self.owned_by_runtime);
    }
}

/// For the ASGI class: a descriptor the asyncio loop watches on behalf of the worker's
/// listeners. The listeners are registered in the loop's epoll under its token, so the loop
/// reports a connection as this descriptor being readable; the loop's callback calls
/// [`LoopListenerWake::report`], which wakes the accept loops. The descriptor itself (an
/// eventfd) is never written.
pub struct LoopListenerWake {
    fd: OwnedFd,
    reported: tokio::sync::Notify,
    /// The descriptor is readable (made so once, so the loop reports it as soon as the loop
    /// has registered it: see `shared_listener.rs`).
    primed: std::sync::atomic::AtomicBool,
}

impl LoopListenerWake {
    /// A new descriptor for the loop to watch.
    pub fn new() -> std::io::Result<std::sync::Arc<LoopListenerWake>> {
        // SAFETY: a plain system call, no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new, open descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        eventfd_add(&fd, 1)?;
        let primed = std::sync::atomic::AtomicBool::new(true);
        Ok(std::sync::Arc::new(LoopListenerWake {
            fd,
            reported: tokio::sync::Notify::new(),
            primed,
        }))
    }

    /// The descriptor for the loop to watch.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The loop reported the descriptor readable: a listener may have a connection.
    pub fn report(&self) {
        if self.primed.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let mut count = [0u8; 8];
            // SAFETY: `count` has room for the 8 bytes an eventfd read writes.
            let _ = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        }
        self.reported.notify_waiters();
    }

    /// Whether the loop has reported the descriptor at least once (so it has it registered).
    pub(super) fn loop_has_reported(&self) -> bool {
        !self.primed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wait for the loop's next report.
    pub(super) async fn reported(&self) {
        self.reported.notified().await;
    }
}

fn epoll_ctl(
    epoll: RawFd,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    token: u64,
) -> std::io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `event` is a valid epoll_event for the duration of the call (the kernel copies
    // it); the descriptors are plain integers the kernel checks, and this module's caller owns
    // the listener and drives the runtime that owns `epoll`, so both are open.
    let rc = unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Add `value` to eventfd `fd`'s counter.
fn eventfd_add(fd: &OwnedFd, value: u64) -> std::io::Result<()> {
    let bytes = value.to_ne_bytes();
    // SAFETY: `bytes` holds the 8 bytes an eventfd write reads.
    let written = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), 8) };
    if written == 8 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The epoll descriptor of this process that watches `listener`, and the token it carries.
fn find_registration(listener: RawFd) -> Option<(RawFd, u64)> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        if target.as_os_str() != "anon_inode:[eventpoll]" {
            continue;
        }
        let Some(epoll) = entry.file_name().to_str().and_then(|name| name.parse().ok()) else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll}")) else {
            continue;
        };
        if let Some(token) = token_of(&info, listener) {
            return Some((epoll, token));
        }
    }
    None
}

/// The token (`data:`) of the `tfd: <listener>` line of an epoll's fdinfo text.
fn token_of(fdinfo: &str, listener: RawFd) -> Option<u64> {
    fdinfo.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "tfd:" || words.next()?.parse::<RawFd>().ok()? != listener {
            return None;
        }
        let mut words = words.skip_while(|word| *word != "data:");
        words.next()?;
        u64::from_str_radix(words.next()?, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FDINFO: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n\
        tfd:        7 events: 80002019 data:     55b40be77380  pos:0 ino:2a3f sdev:8\n\
        tfd:       12 events:       19 data:                1  pos:0 ino:2a41 sdev:8\n";

    #[test]
    fn reads_the_token_of_the_listeners_line() {
        assert_eq!(token_of(FDINFO, 7), Some(0x55b4_0be7_7380));
        assert_eq!(token_of(FDINFO, 12), Some(1));
    }

    #[test]
    fn a_descriptor_the_epoll_does_not_watch_has_no_token() {
        assert_eq!(token_of(FDINFO, 1), None);
        assert_eq!(token_of("tfd: nonsense", 7), None);
    }

    /// A real epoll watching a real listener, as the runtime would: found, taken over, and
    /// a connection wakes it only while it waits.
    #[test]
    fn takes_over_a_registration_and_follows_set_waiting() {
        use std::os::fd::{AsRawFd, FromRawFd};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        // SAFETY: a plain system call, no pointers.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(raw >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a new, open descriptor that nothing else owns.
        let epoll = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let plain = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, listener.as_raw_fd(), plain, 42).unwrap();
        let mut wake = ExclusiveWake::take_over(listener.as_raw_fd()).expect("found");
        assert_eq!((wake.epoll, wake.token), (epoll.as_raw_fd(), 42));
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", epoll.as_raw_fd())).unwrap();
        let flags = exclusive_flag_of(&info, listener.as_raw_fd());
        assert_eq!(flags, Some(true), "{info}");

        let ready = |timeout_ms| {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: `events` has room for the 4 events the call may write.
            let n =
                unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), 4, timeout_ms) };
            (0..n.max(0) as usize).map(|i| events[i].u64).collect::<Vec<_>>()
        };
        wake.set_waiting(false);
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(ready(50), Vec::<u64>::new(), "out of the wait queue: not woken");
        wake.set_waiting(true);
        assert_eq!(ready(1000), vec![42], "joining reports the queued connection");
        drop(wake);
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", epoll.as_raw_fd())).unwrap();
        assert!(token_of(&info, listener.as_raw_fd()).is_some(), "left registered for its owner");
    }

    /// Whether the listener's line carries `EPOLLEXCLUSIVE`.
    fn exclusive_flag_of(fdinfo: &str, listener: RawFd) -> Option<bool> {
        fdinfo.lines().find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.first() == Some(&"tfd:") && words.get(1)?.parse::<RawFd>().ok()? == listener)
                .then(|| u32::from_str_radix(words.get(3)?, 16).ok())
                .flatten()
                .map(|events| events & libc::EPOLLEXCLUSIVE as u32 != 0)
        })
    }
}
