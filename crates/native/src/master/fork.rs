//! Forking a process that hosts a Python interpreter, the way `os.fork()` does it
//! (`PyOS_BeforeFork` → `fork` → `PyOS_AfterFork_Child`/`_Parent`), and daemonizing with it.

use pyo3::prelude::*;

/// Which side of a fork this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The original process; the child's pid.
    Parent(i32),
    /// The new process.
    Child,
}

fn flush_stdio(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                let _ = stream.call_method0("flush");
            }
        }
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

/// Fork the current process (the caller holds the GIL via `py`).
pub fn fork_interpreter(py: Python<'_>) -> std::io::Result<Forked> {
    flush_stdio(py);
    // SAFETY: the GIL is held (we have `py`); PyOS_BeforeFork takes the interpreter's
    // fork locks so the child gets them in a consistent state, exactly as os.fork() does.
    unsafe { pyo3::ffi::PyOS_BeforeFork() };
    // SAFETY: the master is single-threaded (no tokio, no helper threads), so the child gets a
    // consistent copy of the address space; Python's own state is fixed up below.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: first thing in the child, with the GIL held, as CPython requires.
        unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
        return Ok(Forked::Child);
    }
    // SAFETY: in the parent after fork (successful or not), with the GIL held.
    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
    if pid < 0 { Err(std::io::Error::last_os_error()) } else { Ok(Forked::Parent(pid)) }
}

/// Detach from the terminal: fork, `setsid`, fork again; the originals exit at once. Standard
/// streams are pointed at /dev/null unless `keep_stdio`.
pub fn daemonize(py: Python<'_>, keep_stdio: bool) -> std::io::Result<()> {
    if let Forked::Parent(_) = fork_interpreter(py)? {
        // SAFETY: the original process leaves without running any cleanup the child still needs.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Forked::Parent(_) = fork_interpreter(py)? {
        // SAFETY: as above, for the intermediate process.
        unsafe { libc::_exit(0) };
    }
    if !keep_stdio {
        let devnull = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&devnull);
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which this process owns.
            unsafe { libc::dup2(fd, target) };
        }
    }
    Ok(())
}
