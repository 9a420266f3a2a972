//! The shared mapping itself (zeroed memory every later fork shares) and the monotonic clock
//! whose readings the master and its workers compare.

use std::sync::OnceLock;

/// Map `bytes` of zero-filled memory shared with every process forked afterwards (never
/// unmapped by this function; the caller owns it). Page-aligned.
pub fn map_shared_zeroed(bytes: usize) -> std::io::Result<*mut u8> {
    // SAFETY: anonymous shared mapping with no address hint; the result is checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

static CLOCK_BASE: OnceLock<u64> = OnceLock::new();

/// Milliseconds on the monotonic clock since the master started; comparable across the
/// master and its forked workers (the base is set before the first fork and inherited).
/// Read from `CLOCK_MONOTONIC_COARSE`: a few ms of resolution (the kernel's tick), enough
/// for heartbeats, timeouts and leases, at a fifth of a precise reading's cost — this is read
/// twice per request.
pub fn monotonic_ms() -> u64 {
    let now = coarse_monotonic_ms();
    now.saturating_sub(*CLOCK_BASE.get_or_init(|| now))
}

fn coarse_monotonic_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, owned `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}
