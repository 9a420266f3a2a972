//! Where the response cache keeps its entries, behind one small interface the connection's
//! cache code (`server/conn/cache.rs`) uses: the instance's shared-memory store
//! ([`crate::shared_cache`]) or Redis ([`crate::redis_cache`]), per `--cache-backend`. A plain
//! enum: the local arm is a direct call (no allocation or boxing per hit); Redis's operations
//! are awaited, and those the request does not wait for (storing a response, releasing a lock
//! from a destructor) are spawned on the worker's runtime.
//!
//! A key is filed in a group, named by the key without its `Vary` variant (the primary key):
//! a PURGE of a key removes its whole group.

use ferrocorn_shm::cache_store::{CacheStore, FillAttempt, FillToken, Found, NewEntry, key_hash};

use crate::redis_cache::{self, RedisResponses, RemoteAttempt, RemoteError, RemoteFill};

/// The response cache's store (see the module docs).
#[derive(Clone, Copy)]
pub enum ResponseStore {
    /// The instance's shared-memory store.
    Local(&'static CacheStore),
    /// Redis.
    Redis(&'static RedisResponses),
}

/// A fill lock this request holds.
#[derive(Debug)]
pub enum StoreFill {
    /// On the local store.
    Local(FillToken),
    /// In Redis.
    Redis(RemoteFill),
}

/// What taking a fill lock came to.
pub enum Attempt {
    /// This request fills the key; others wait for it.
    Acquired(StoreFill),
    /// A live request fills it already.
    Busy,
    /// No lock could be had (no room, or Redis could not say): go ahead without one.
    NoLock,
}

/// A value to store.
pub struct Put<'a> {
    /// Its key.
    pub key: &'a [u8],
    /// Its tag (not 0).
    pub tag: u32,
    /// Unix seconds after which it is gone.
    pub expires: i64,
    /// Its bytes.
    pub value: &'a [u8],
    /// The lock this request holds on `key`, released by the store.
    pub fill: Option<StoreFill>,
}

/// Run `future` on the worker's runtime without waiting for it (dropped outside a runtime,
/// where a Redis lock then expires by itself).
fn spawn(future: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(future);
    }
}

impl ResponseStore {
    /// This process's store: Redis when it is the backend (`inactive`: `--cache-inactive`
    /// seconds), else the shared-memory one when it is mapped.
    pub fn current(inactive: i64) -> Option<ResponseStore> {
        if let Some(local) = crate::shared_cache::store()
            && redis_cache::target().is_none()
        {
            return Some(ResponseStore::Local(local));
        }
        redis_cache::responses(inactive).map(ResponseStore::Redis)
    }

    /// Look `key` (of the group `group`) up at `now`; a live value's bytes go to `value`.
    pub async fn lookup(
        self,
        group: &[u8],
        key: &[u8],
        now: i64,
        value: &mut Vec<u8>,
    ) -> Result<Option<Found>, RemoteError> {
        match self {
            ResponseStore::Local(store) => Ok(store.lookup(key, now, value)),
            ResponseStore::Redis(redis) => redis.lookup(group, key, now, value).await,
        }
    }

    /// Take `key`'s fill lock at `now` for at most `lock_secs`.
    pub async fn begin_fill(self, group: &[u8], key: &[u8], now: i64, lock_secs: u32) -> Attempt {
        match self {
            ResponseStore::Local(store) => {
                match store.begin_fill(key, key_hash(group), now, lock_secs) {
                    FillAttempt::Acquired(token) => Attempt::Acquired(StoreFill::Local(token)),
                    FillAttempt::Busy => Attempt::Busy,
                    FillAttempt::NoRoom => Attempt::NoLock,
                }
            }
            ResponseStore::Redis(redis) => match redis.begin_fill(group, key, lock_secs).await {
                RemoteAttempt::Acquired(fill) => Attempt::Acquired(StoreFill::Redis(fill)),
                RemoteAttempt::Busy => Attempt::Busy,
                RemoteAttempt::NoLock => Attempt::NoLock,
            },
        }
    }

    /// Release a fill lock without storing a value.
    pub fn end_fill(self, fill: StoreFill) {
        match (self, fill) {
            (ResponseStore::Local(store), StoreFill::Local(token)) => store.end_fill(token),
            (ResponseStore::Redis(redis), StoreFill::Redis(fill)) => {
                spawn(async move { redis.end_fill(fill).await });
            }
            _ => {} // a lock of another store: cannot happen
        }
    }

    /// Store `puts` (in order) in the group `group` at `now`. Whether the last one was stored
    /// (for Redis: sent to be stored; a failure there is counted in its errors).
    pub fn insert_all(self, group: &[u8], puts: Vec<Put<'_>>, now: i64) -> bool {
        match self {
            ResponseStore::Local(store) => {
                let group = key_hash(group);
                let mut stored = false;
                for put in puts {
                    let token = match put.fill {
                        Some(StoreFill::Local(token)) => Some(token),
                        _ => None,
                    };
                    let entry = NewEntry {
                        key: put.key,
                        group,
                        tag: put.tag,
                        expires: put.expires,
                        value: put.value,
                    };
                    stored = store.insert(entry, now, token).is_ok();
                }
                stored
            }
            ResponseStore::Redis(redis) => {
                let group = group.to_vec();
                let owned: Vec<_> = puts
                    .into_iter()
                    .map(|p| {
                        let fill = match p.fill {
                            Some(StoreFill::Redis(fill)) => Some(fill),
                            _ => None,
                        };
                        (p.key.to_vec(), p.tag, p.expires, p.value.to_vec(), fill)
                    })
                    .collect();
                spawn(async move {
                    for (key, tag, expires, value, fill) in owned {
                        redis.insert(&group, &key, tag, expires, &value, now, fill).await;
                    }
                });
                true
            }
        }
    }

    /// Remove every value of the group `group`; their tags.
    pub async fn remove_group(self, group: &[u8]) -> Result<Vec<u32>, RemoteError> {
        match self {
            ResponseStore::Local(store) => Ok(store.remove_group(key_hash(group))),
            ResponseStore::Redis(redis) => redis.remove_group(group).await,
        }
    }

    /// Remove every value whose key starts with `prefix`; their tags.
    pub async fn remove_prefix(self, prefix: &[u8]) -> Result<Vec<u32>, RemoteError> {
        match self {
            ResponseStore::Local(store) => Ok(store.remove_prefix(prefix)),
            ResponseStore::Redis(redis) => redis.remove_prefix(prefix).await,
        }
    }
}
