//! The shared mapping itself (zeroed memory every later fork shares) and the monotonic clock
//! whose readings the master and its workers compare.

use std::sync::OnceLock;
use std::time::Instant;

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

static CLOCK_BASE: OnceLock<Instant> = OnceLock::new();

/// Milliseconds on the monotonic clock since the master started; comparable across the
/// master and its forked workers (the base is set before the first fork and inherited).
pub fn monotonic_ms() -> u64 {
    CLOCK_BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}
