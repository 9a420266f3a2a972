//! The instance's one cache store ([`ferrocorn_shm::cache_store`]): mapped by the master before
//! the first fork when `--cache` is on (or turned on by a HUP), inherited by every worker, and
//! kept for the master's whole life, so entries outlive worker restarts and reloads. A store
//! already mapped keeps its size across a HUP (a new size needs a restart).

use std::sync::OnceLock;

use ferrocorn_shm::cache_store::CacheStore;

use crate::logging::{info, warning};

static STORE: OnceLock<CacheStore> = OnceLock::new();

/// Unix seconds now (the clock every cache decision is given).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Map the store with a ring of `max_size` bytes, unless it is mapped already (the master
/// calls this before forking workers).
pub fn init(max_size: u64) -> std::io::Result<()> {
    if let Some(store) = STORE.get() {
        let have = store.stats().capacity;
        if have.abs_diff(max_size) > 8 {
            warning!(
                "cache_max_size changed to {max_size} bytes; the store keeps its {have} bytes \
                 until the server is restarted"
            );
        }
        return Ok(());
    }
    let store = CacheStore::new(max_size, unix_now())?;
    info!(
        "Response cache: {} MiB shared by all workers ({} MiB mapped with its index)",
        max_size >> 20,
        store.mapped_bytes() >> 20
    );
    let _ = STORE.set(store);
    Ok(())
}

/// The store, when one was mapped.
pub fn store() -> Option<&'static CacheStore> {
    STORE.get()
}
