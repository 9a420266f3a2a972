//! The store's one writer lock: a process-shared, robust pthread mutex in the mapping. Robust,
//! because a worker may be SIGKILLed while it holds it: the kernel then hands the lock to the
//! next taker with `EOWNERDEAD`, and that taker repairs what the dead writer left half done
//! before it goes on. Readers never take it.

use std::cell::UnsafeCell;

/// A process-shared robust mutex, laid out in shared memory.
#[repr(C)]
pub(super) struct WriterLock {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
}

/// How the lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    /// From a live owner's release.
    Clean,
    /// From an owner that died holding it: the caller must repair, then [`WriterLock::mark_consistent`].
    OwnerDied,
}

impl WriterLock {
    /// Initialise the mutex in place (the mapping is zeroed, which is not a valid mutex).
    ///
    /// # Safety
    /// `this` points to writable memory that no process uses yet and is never moved.
    pub(super) unsafe fn init(this: *mut WriterLock) -> std::io::Result<()> {
        // SAFETY: a pthread_mutexattr_t is plain data; it is initialised before use and
        // destroyed after; `this` is valid per the caller's contract.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            check(libc::pthread_mutexattr_init(&mut attr))?;
            check(libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED))?;
            check(libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST))?;
            let result = check(libc::pthread_mutex_init((*this).mutex.get(), &attr));
            libc::pthread_mutexattr_destroy(&mut attr);
            result
        }
    }

    /// Take the lock, waiting for it.
    pub(super) fn lock(&self) -> Taken {
        // SAFETY: the mutex was initialised by `init` before any process could reach `self`.
        match unsafe { libc::pthread_mutex_lock(self.mutex.get()) } {
            0 => Taken::Clean,
            libc::EOWNERDEAD => Taken::OwnerDied,
            // ENOTRECOVERABLE cannot happen: every OwnerDied taker marks it consistent.
            other => {
                panic!("cache store lock failed: {}", std::io::Error::from_raw_os_error(other))
            }
        }
    }

    /// After a repair: the state the dead owner left is consistent again.
    pub(super) fn mark_consistent(&self) {
        // SAFETY: called by the current owner after `lock` returned OwnerDied.
        unsafe { libc::pthread_mutex_consistent(self.mutex.get()) };
    }

    /// Release the lock (held by this thread).
    pub(super) fn unlock(&self) {
        // SAFETY: called only by the owner, once per `lock`.
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}
