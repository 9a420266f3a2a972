//! What the response cache's fill locks and the app cache's `cached(lock=True)` locks share in
//! Redis: the holder value a lock is taken with (`<host>:<pid>:<token>`), whether a seen holder
//! is a dead process of this host (its lock is taken over at once), and the two scripts that
//! release or take over a lock only if it is still the one seen. The commands around them stay
//! with each cache (async for responses, blocking for the app cache).

use std::sync::atomic::{AtomicU64, Ordering};

use ferrocorn_cache::remote::LockHolder;
use ferrocorn_shm::cache_store::Filling;

use super::{own_host, process_alive};

/// Delete a lock only if it is still the caller's. KEYS: lock; ARGV: holder.
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Replace a lock's holder only if it is still the one seen. KEYS: lock; ARGV: seen, new, ms.
pub(super) const TAKE_OVER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A new holder value for a lock this process takes.
pub(super) fn new_holder() -> String {
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    LockHolder { host: own_host().to_owned(), pid: std::process::id(), token }.encode()
}

/// Who fills a key, from its lock's value as seen (None: no lock).
pub(super) fn filling_of(lock: Option<&[u8]>) -> Filling {
    let Some(value) = lock else { return Filling::No };
    match LockHolder::decode(value) {
        Some(h) if h.host == own_host() && !process_alive(h.pid) => Filling::Dead,
        _ => Filling::Alive,
    }
}
