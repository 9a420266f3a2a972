//! The master's signals: a self-pipe written by an async-signal-safe handler and read by the
//! master's loop, with an exhaustive [`Signal`] enum instead of dispatch by name. Workers call
//! [`SignalPipe::reset_in_child`] right after fork, so no master handler survives into them.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

/// The signals the master acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Reload: re-read config, replace workers gracefully.
    Hup,
    /// Graceful stop.
    Term,
    /// Quick stop.
    Int,
    /// Quick stop.
    Quit,
    /// One more worker.
    Ttin,
    /// One fewer worker.
    Ttou,
    /// Reopen log files.
    Usr1,
    /// Re-exec a new master (binary upgrade).
    Usr2,
    /// Stop workers, keep the master (daemon mode only).
    Winch,
    /// A child changed state.
    Chld,
}

const HANDLED: [(libc::c_int, Signal); 10] = [
    (libc::SIGHUP, Signal::Hup),
    (libc::SIGTERM, Signal::Term),
    (libc::SIGINT, Signal::Int),
    (libc::SIGQUIT, Signal::Quit),
    (libc::SIGTTIN, Signal::Ttin),
    (libc::SIGTTOU, Signal::Ttou),
    (libc::SIGUSR1, Signal::Usr1),
    (libc::SIGUSR2, Signal::Usr2),
    (libc::SIGWINCH, Signal::Winch),
    (libc::SIGCHLD, Signal::Chld),
];

impl Signal {
    fn from_raw(raw: libc::c_int) -> Option<Signal> {
        HANDLED.iter().find(|(n, _)| *n == raw).map(|(_, s)| *s)
    }

    /// Lower-case name as Gunicorn logs it (`Handling signal: term`).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "hup",
            Signal::Term => "term",
            Signal::Int => "int",
            Signal::Quit => "quit",
            Signal::Ttin => "ttin",
            Signal::Ttou => "ttou",
            Signal::Usr1 => "usr1",
            Signal::Usr2 => "usr2",
            Signal::Winch => "winch",
            Signal::Chld => "chld",
        }
    }
}

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(raw: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = raw as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a full pipe just
        // drops the byte (the loop still wakes for the bytes already queued). errno is saved
        // and restored around it so the interrupted code sees no change.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

/// The signals a worker handles itself once its runtime runs (graceful and quick stop, log
/// reopening). Between fork and then they are remembered, not acted on: a TERM that arrives
/// while the app is still loading stops the worker gracefully once it is up (with its
/// `worker_exit` hook), as Gunicorn's workers do, instead of killing it.
const WORKER_HANDLED: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGUSR1];

/// [`WORKER_HANDLED`] signals received before the worker's own handlers, one bit per signal.
static EARLY_SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn remember_early(raw: libc::c_int) {
    // Async-signal-safe: one atomic operation.
    EARLY_SIGNALS.fetch_or(1 << raw, Ordering::AcqRel);
}

/// In a worker whose own handlers for TERM, INT, QUIT and USR1 are now installed: raise again
/// the ones that arrived since fork, so those handlers act on them.
pub fn replay_early_signals() {
    let pending = EARLY_SIGNALS.swap(0, Ordering::AcqRel);
    for raw in WORKER_HANDLED {
        if pending & (1 << raw) != 0 {
            // SAFETY: raise sends a plain signal number to the calling thread.
            unsafe { libc::raise(raw) };
        }
    }
}

/// The self-pipe and the installed handlers.
#[derive(Debug)]
pub struct SignalPipe {
    read_fd: RawFd,
    write_fd: RawFd,
}

fn set_handler(raw: libc::c_int, handler: libc::sighandler_t) -> std::io::Result<()> {
    // SAFETY: `action` is fully initialised (zeroed, then fields set); sigaction copies it.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(raw, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl SignalPipe {
    /// Create the pipe and install handlers for every [`Signal`].
    pub fn install() -> std::io::Result<SignalPipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        WRITE_FD.store(fds[1], Ordering::Relaxed);
        for (raw, _) in HANDLED {
            set_handler(raw, on_signal as *const () as libc::sighandler_t)?;
        }
        Ok(SignalPipe { read_fd: fds[0], write_fd: fds[1] })
    }

    /// Wait up to `timeout` for signals or for any of `extra` to become readable. Returns the
    /// signals received, in order (SIGCHLD coalesced), and the readable extra descriptors.
    pub fn wait(&self, timeout: Duration, extra: &[RawFd]) -> (Vec<Signal>, Vec<RawFd>) {
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.read_fd)
            .chain(extra.iter().copied())
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let mut signals = Vec::new();
        if ready <= 0 {
            return (signals, Vec::new());
        }
        let readable: Vec<RawFd> =
            fds[1..].iter().filter(|p| p.revents != 0).map(|p| p.fd).collect();
        if fds[0].revents == 0 {
            return (signals, readable);
        }
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: `buf` is a valid writable buffer of its length.
            let n = unsafe { libc::read(self.read_fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            for &b in &buf[..n as usize] {
                if let Some(signal) = Signal::from_raw(libc::c_int::from(b))
                    && !(signal == Signal::Chld && signals.contains(&Signal::Chld))
                {
                    signals.push(signal);
                }
            }
        }
        (signals, readable)
    }

    /// In a freshly forked worker: restore default dispositions (TTIN and TTOU ignored; the
    /// worker's own signals remembered until [`replay_early_signals`]) and close the pipe.
    pub fn reset_in_child(&self) {
        WRITE_FD.store(-1, Ordering::Relaxed);
        for (raw, _) in HANDLED {
            let disposition = if raw == libc::SIGTTIN || raw == libc::SIGTTOU {
                libc::SIG_IGN
            } else if WORKER_HANDLED.contains(&raw) {
                remember_early as *const () as libc::sighandler_t
            } else {
                libc::SIG_DFL
            };
            let _ = set_handler(raw, disposition);
        }
        // SAFETY: closing our own pipe descriptors, which nothing else in the child uses.
        unsafe {
            libc::close(self.read_fd);
            libc::close(self.write_fd);
        }
    }

    /// In a forked helper that is not a worker (it does one job and exits): every signal the
    /// master handles gets its default disposition back, so a stop signal ends the helper and
    /// nothing it receives reaches the master's pipe.
    pub fn default_in_helper() {
        WRITE_FD.store(-1, Ordering::Relaxed);
        for (raw, _) in HANDLED {
            let _ = set_handler(raw, libc::SIG_DFL);
        }
    }

    /// Queue a signal as if it had been delivered (used for TTIN/TTOU from the control socket).
    pub fn raise(&self, raw: libc::c_int) {
        on_signal(raw);
    }
}

/// Block every signal in this thread; returns the previous mask for [`restore`].
pub fn block_all() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask write only into the given sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    }
}

/// Restore a mask saved by [`block_all`]; pending signals are delivered now.
pub fn restore(mask: libc::sigset_t) {
    // SAFETY: `mask` is a valid signal set obtained from pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
    }
}

/// Send `signal` to `pid`; `Ok(false)` when the process no longer exists.
pub fn kill(pid: i32, signal: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: kill(2) with a positive pid targets exactly that process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) { Ok(false) } else { Err(err) }
}
