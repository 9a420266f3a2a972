//! The instance's one cache store ([`ferrocorn_shm::cache_store`]), shared by the response
//! cache (`--cache`) and the app cache (`ferrocorn.cache`): mapped by the master before the
//! first fork, inherited by every worker, and kept for the master's whole life, so entries
//! outlive worker restarts and reloads. The mapping costs address space, not memory, until
//! entries fill it. A store already mapped keeps its size across a HUP (a new size needs a
//! restart). The value tags say whose a value is: below [`FIRST_APP_TAG`] the response
//! cache's, from it the app cache's. With a Redis `--cache-backend` the master records it here
//! for the workers.

use std::sync::OnceLock;

use ferrocorn_cache::Backend;
use ferrocorn_metrics::CacheStoreCounts;
use ferrocorn_shm::cache_store::CacheStore;

use crate::logging::{debug, info, warning};

/// A stored response (`ferrocorn_cache::entry`).
pub const TAG_RESPONSE: u32 = 1;
/// The `Vary` of a key's responses: they are stored per variant.
pub const TAG_VARY: u32 = 2;
/// The key's last response could not be stored (hit-for-miss).
pub const TAG_UNCACHEABLE: u32 = 3;
/// The app cache's tags start here (`crate::app_cache`); the response cache's are below.
pub const FIRST_APP_TAG: u32 = 16;

const _: () = assert!(
    crate::app_cache::TAG_PICKLED >= FIRST_APP_TAG
        && crate::app_cache::TAG_INTEGER >= FIRST_APP_TAG
);

/// Whether a value tagged `tag` is the response cache's (a response or one of its marks).
pub fn is_response_cache_tag(tag: u32) -> bool {
    tag < FIRST_APP_TAG
}

static STORE: OnceLock<CacheStore> = OnceLock::new();

/// Unix seconds now (the clock every cache decision is given).
pub fn unix_now() -> i64 {
    crate::clock::unix_seconds_now()
}

/// Map the store with a ring of `max_size` bytes, unless it is mapped already, and record a
/// Redis `backend` whose operations take at most `backend_timeout` (the master calls this before forking workers; nothing connects to Redis
/// here). `announce`: say so at info level (with `--cache`).
pub fn init(
    max_size: u64,
    announce: bool,
    backend: &Backend,
    backend_timeout: std::time::Duration,
) -> std::io::Result<()> {
    match (backend, crate::redis_cache::target()) {
        (Backend::Redis(target), None) => {
            crate::redis_cache::configure(target.clone(), backend_timeout);
            info!("Cache backend: {} (each worker connects after it starts)", target.display());
        }
        (Backend::Redis(target), Some(had)) if had != target => warning!(
            "cache_backend changed to {}; the workers keep {} until the server is restarted",
            target.display(),
            had.display()
        ),
        (Backend::Local, Some(had)) => warning!(
            "cache_backend changed to local; the workers keep {} until the server is restarted",
            had.display()
        ),
        _ => {}
    }
    if matches!(backend, Backend::Redis(_)) && STORE.get().is_none() {
        return Ok(()); // both caches are in Redis: no local store to map
    }
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
    let line = format!(
        "Cache store: {} MiB shared by all workers ({} MiB mapped with its index)",
        max_size >> 20,
        store.mapped_bytes() >> 20
    );
    if announce {
        info!("{line}");
    } else {
        debug!("{line}");
    }
    let _ = STORE.set(store);
    Ok(())
}

/// The store, when one was mapped.
pub fn store() -> Option<&'static CacheStore> {
    STORE.get()
}

/// The store's counts for a scrape (None: no store was mapped).
pub fn store_counts() -> Option<CacheStoreCounts> {
    let stats = store()?.stats();
    Some(CacheStoreCounts {
        entries: stats.entries,
        bytes: stats.bytes,
        capacity: stats.capacity,
        evictions: stats.evictions,
        repairs: stats.repairs,
    })
}
