//! The control socket's `cache.stats` and `cache.purge` commands, for `ferrocorn ctl cache`:
//! the response cache's counts (the shared store's, and the workers' counters from a
//! [`Snapshot`]), and purges — a key with all its `Vary` variants, the keys under a prefix, or
//! every response. The master carries a purge out on its own mapping of the local store, or
//! hands it to its Redis thread (`redis_purge.rs`) when the entries are in Redis. A purge
//! never removes the app cache's values. A request is parsed into a [`Purge`] first (pure).

use std::fmt;

use ferrocorn_cache::RedisTarget;
use ferrocorn_metrics::{CACHE_STATUSES, Snapshot};
use ferrocorn_shm::cache_store::{CacheStore, key_hash};
use ferrocorn_shm::scoreboard::{MasterArea, Scoreboard};
use serde_json::{Map, Value, json};

use crate::redis_cache::RemoteError;
use crate::shared_cache::{TAG_RESPONSE, is_response_cache_tag};

/// The answer to a cache command when the server runs without `--cache`.
pub const CACHE_OFF: &str = "the response cache is off (start with --cache)";

fn cache_off() -> Value {
    json!({"ok": false, "error": CACHE_OFF})
}

/// Where the response cache keeps its entries, for the cache commands (None: `--cache` is off).
#[derive(Clone, Copy)]
pub enum CacheControl<'a> {
    /// The instance's shared-memory store, and where the master counts the purges it does.
    Local {
        /// The store.
        store: &'a CacheStore,
        /// The master's counters.
        master: &'a MasterArea,
    },
    /// A Redis (or Redis Cluster) every instance pointing at it shares, and the board whose
    /// master counters a purge in Redis is counted into.
    Redis {
        /// Where Redis is.
        target: &'static RedisTarget,
        /// The instance's board.
        board: &'a Scoreboard,
    },
}

/// The answer to a `cache.purge` request.
#[derive(Debug, Clone, PartialEq)]
pub enum PurgeReply {
    /// The reply, ready to send.
    Now(Value),
    /// A valid purge of entries kept in Redis: the master's Redis thread carries it out and
    /// answers ([`redis_reply`]).
    InRedis(Purge),
}

/// What a `cache.purge` request removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// A key as `--cache-key` renders it, with all its `Vary` variants (its group).
    Key(Vec<u8>),
    /// Every key that starts with these bytes.
    Prefix(Vec<u8>),
    /// Every response (and the response cache's marks), not the app cache's values.
    All,
}

/// Why a `cache.purge` request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeError {
    /// None of `key`, `prefix`, `all`.
    NoTarget,
    /// More than one of them.
    SeveralTargets,
    /// `key` or `prefix` is not a string.
    NotAString(&'static str),
    /// `key` or `prefix` is empty.
    Empty(&'static str),
    /// `key` or `prefix` starts with NUL: the app cache's namespace, which no response key
    /// has.
    AppNamespace(&'static str),
}

impl fmt::Display for PurgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PurgeError::NoTarget => {
                f.write_str("cache.purge needs a \"key\", a \"prefix\" or \"all\"")
            }
            PurgeError::SeveralTargets => {
                f.write_str("cache.purge takes one of \"key\", \"prefix\" and \"all\"")
            }
            PurgeError::NotAString(field) => {
                write!(f, "cache.purge's \"{field}\" must be a string")
            }
            PurgeError::Empty("prefix") => {
                f.write_str("an empty prefix would match every key; purge everything with --all")
            }
            PurgeError::Empty(field) => write!(f, "cache.purge's \"{field}\" is empty"),
            PurgeError::AppNamespace(field) => write!(
                f,
                "a response cache {field} never starts with NUL (those are the app cache's keys)"
            ),
        }
    }
}

impl Purge {
    /// The purge a `cache.purge` request asks for: exactly one of `"key": KEY`,
    /// `"prefix": PREFIX`, `"all": true`.
    pub fn from_request(request: &Value) -> Result<Purge, PurgeError> {
        let text = |field: &'static str| -> Result<Option<Vec<u8>>, PurgeError> {
            match request.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Err(PurgeError::Empty(field)),
                Some(Value::String(s)) if s.starts_with('\0') => {
                    Err(PurgeError::AppNamespace(field))
                }
                Some(Value::String(s)) => Ok(Some(s.as_bytes().to_vec())),
                Some(_) => Err(PurgeError::NotAString(field)),
            }
        };
        let key = text("key")?;
        let prefix = text("prefix")?;
        let all = request.get("all").and_then(Value::as_bool).unwrap_or(false);
        match (key, prefix, all) {
            (Some(key), None, false) => Ok(Purge::Key(key)),
            (None, Some(prefix), false) => Ok(Purge::Prefix(prefix)),
            (None, None, true) => Ok(Purge::All),
            (None, None, false) => Err(PurgeError::NoTarget),
            _ => Err(PurgeError::SeveralTargets),
        }
    }

    /// Carry it out on `store`; the number of responses removed (not counting the marks kept
    /// beside them).
    pub fn run(&self, store: &CacheStore) -> usize {
        let removed = match self {
            Purge::Key(key) => {
                let group = key_hash(key);
                store.remove_matching(|tag, g| g == group && is_response_cache_tag(tag))
            }
            // no app-cache key matches: they all start with NUL, a prefix never does
            Purge::Prefix(prefix) => store.remove_prefix(prefix),
            Purge::All => store.remove_matching(|tag, _| is_response_cache_tag(tag)),
        };
        removed.iter().filter(|&&tag| tag == TAG_RESPONSE).count()
    }
}

/// The reply to `cache.purge`: at once for the local store (or an invalid request), or the
/// purge for the Redis thread.
pub fn purge(cache: Option<CacheControl<'_>>, request: &Value) -> PurgeReply {
    let Some(cache) = cache else { return PurgeReply::Now(cache_off()) };
    let target = match Purge::from_request(request) {
        Err(e) => return PurgeReply::Now(json!({"ok": false, "error": e.to_string()})),
        Ok(target) => target,
    };
    match cache {
        CacheControl::Local { store, master } => {
            let purged = target.run(store);
            master.count_cache_purge();
            PurgeReply::Now(purged_json(purged))
        }
        CacheControl::Redis { .. } => PurgeReply::InRedis(target),
    }
}

fn purged_json(purged: usize) -> Value {
    let message = match purged {
        1 => "purged 1 cached response".to_owned(),
        n => format!("purged {n} cached responses"),
    };
    json!({"ok": true, "purged": purged, "message": message})
}

/// The reply to a purge of entries in Redis at `target`: how many responses it removed, or
/// why Redis could not do it.
pub fn redis_reply(outcome: Result<usize, RemoteError>, target: &RedisTarget) -> Value {
    match outcome {
        Ok(purged) => purged_json(purged),
        Err(RemoteError::Unavailable) => json!({"ok": false, "error": format!(
            "the cache backend {} did not answer (nothing was purged); try again when it is back",
            target.display()
        )}),
        Err(RemoteError::Refused(why)) => json!({"ok": false, "error": format!(
            "the cache backend {} refused the purge: {why}",
            target.display()
        )}),
    }
}

/// The reply to `cache.stats`: the store's counts and the response cache's counters.
pub fn stats(cache: Option<CacheControl<'_>>, snapshot: &mut dyn FnMut() -> Snapshot) -> Value {
    match cache {
        None => cache_off(),
        Some(cache) => stats_json(&snapshot(), cache),
    }
}

/// The cache's part of a `status` reply (what `ferrocorn top` shows): the `cache.stats`
/// reply without its `ok`.
pub fn summary(s: &Snapshot, cache: CacheControl<'_>) -> Value {
    let mut stats = stats_json(s, cache);
    if let Some(fields) = stats.as_object_mut() {
        fields.remove("ok");
    }
    stats
}

fn stats_json(s: &Snapshot, cache: CacheControl<'_>) -> Value {
    let totals = s.cache_totals();
    let store = match cache {
        CacheControl::Local { .. } => {
            let store = s.cache_store.unwrap_or_default();
            json!({
                "backend": "local",
                "entries": store.entries,
                "bytes": store.bytes,
                "capacity_bytes": store.capacity,
                "evictions": store.evictions,
                "repairs": store.repairs,
            })
        }
        // Redis's own counts cover every instance and every other user of that database;
        // the workers' failed operations are this instance's view of it.
        CacheControl::Redis { target, .. } => json!({
            "backend": target.display(),
            "remote_errors": totals.remote_errors,
        }),
    };
    let requests: Map<String, Value> = CACHE_STATUSES
        .iter()
        .zip(totals.requests)
        .map(|(k, n)| ((*k).to_owned(), json!(n)))
        .collect();
    json!({
        "ok": true,
        "store": store,
        "requests": requests,
        "hit_ratio": totals.hit_ratio(),
        "lock_waits": totals.lock_waits,
        "lock_wait_seconds": totals.lock_wait_micros as f64 / 1e6,
        "stores": totals.stores,
        "not_stored": totals.not_stored,
        "purges": totals.purges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocorn_shm::cache_store::NewEntry;

    fn parse(request: Value) -> Result<Purge, PurgeError> {
        Purge::from_request(&request)
    }

    #[test]
    fn a_request_names_exactly_one_target() {
        assert_eq!(parse(json!({"key": "http/a"})), Ok(Purge::Key(b"http/a".to_vec())));
        assert_eq!(parse(json!({"prefix": "http/"})), Ok(Purge::Prefix(b"http/".to_vec())));
        assert_eq!(parse(json!({"all": true})), Ok(Purge::All));
        assert_eq!(parse(json!({"key": "k", "all": false})), Ok(Purge::Key(b"k".to_vec())));
        assert_eq!(parse(json!({})), Err(PurgeError::NoTarget));
        assert_eq!(parse(json!({"all": false})), Err(PurgeError::NoTarget));
        assert_eq!(parse(json!({"key": "k", "prefix": "p"})), Err(PurgeError::SeveralTargets));
        assert_eq!(parse(json!({"key": "k", "all": true})), Err(PurgeError::SeveralTargets));
        assert_eq!(parse(json!({"key": 3})), Err(PurgeError::NotAString("key")));
        assert_eq!(parse(json!({"prefix": ""})), Err(PurgeError::Empty("prefix")));
        assert_eq!(parse(json!({"key": "\u{0}app:x"})), Err(PurgeError::AppNamespace("key")));
        assert_eq!(parse(json!({"prefix": "\u{0}"})), Err(PurgeError::AppNamespace("prefix")));
        assert!(PurgeError::Empty("prefix").to_string().contains("--all"));
    }

    const NOW: i64 = 1_700_000_000;

    fn put(store: &CacheStore, key: &[u8], group_key: &[u8], tag: u32) {
        let entry =
            NewEntry { key, group: key_hash(group_key), tag, expires: i64::MAX, value: b"v" };
        store.insert(entry, NOW, None).unwrap();
    }

    /// A store with two keys of the response cache (one with a Vary mark and two variants), a
    /// hit-for-miss mark, and two app-cache values.
    fn filled() -> CacheStore {
        let store = CacheStore::new(1 << 20, NOW).unwrap();
        put(&store, b"http/a", b"http/a", crate::shared_cache::TAG_VARY);
        put(&store, b"http/a\0en", b"http/a", TAG_RESPONSE);
        put(&store, b"http/a\0fr", b"http/a", TAG_RESPONSE);
        put(&store, b"http/ab", b"http/ab", TAG_RESPONSE);
        put(&store, b"http/b", b"http/b", crate::shared_cache::TAG_UNCACHEABLE);
        put(&store, b"\0app:http/a", b"\0app:", crate::app_cache::TAG_PICKLED);
        put(&store, b"\0app:n", b"\0app:", crate::app_cache::TAG_INTEGER);
        store
    }

    #[test]
    fn a_key_goes_with_its_variants_and_only_responses_are_counted() {
        let store = filled();
        assert_eq!(Purge::Key(b"http/a".to_vec()).run(&store), 2);
        assert_eq!(store.stats().entries, 4, "http/ab, http/b and the two app values stay");
        assert_eq!(Purge::Key(b"http/a".to_vec()).run(&store), 0);
    }

    #[test]
    fn a_prefix_takes_every_key_under_it() {
        let store = filled();
        assert_eq!(Purge::Prefix(b"http/a".to_vec()).run(&store), 3);
        assert_eq!(store.stats().entries, 3);
    }

    #[test]
    fn all_removes_the_response_cache_and_leaves_the_app_cache() {
        let store = filled();
        assert_eq!(Purge::All.run(&store), 3);
        assert_eq!(store.stats().entries, 2);
        let mut value = Vec::new();
        assert!(store.lookup(b"\0app:http/a", NOW, &mut value).is_some());
        assert!(store.lookup(b"\0app:n", NOW, &mut value).is_some());
        assert!(store.lookup(b"http/b", NOW, &mut value).is_none());
    }

    #[test]
    fn without_the_response_cache_the_commands_say_so() {
        let reply = purge(None, &json!({"all": true}));
        assert_eq!(reply, PurgeReply::Now(json!({"ok": false, "error": CACHE_OFF})));
        let reply = stats(None, &mut || unreachable!("no snapshot is taken"));
        assert_eq!(reply["error"], CACHE_OFF);
    }

    #[test]
    fn stats_show_the_store_and_the_counters() {
        let mut s = Snapshot::default();
        s.retired.cache.requests[0] = 3;
        s.retired.cache.requests[1] = 1;
        s.retired.cache.lock_wait_micros = 1_500_000;
        s.retired.cache.purges = 1;
        s.master_cache_purges = 2;
        s.cache_store =
            Some(ferrocorn_metrics::CacheStoreCounts { entries: 9, ..Default::default() });
        let store = CacheStore::new(1 << 20, NOW).unwrap();
        let board = Scoreboard::new(1).unwrap();
        let v = stats_json(&s, CacheControl::Local { store: &store, master: board.master() });
        assert_eq!(v["store"]["entries"], 9);
        assert_eq!(v["requests"]["hit"], 3);
        assert_eq!(v["requests"]["bypass"], 0);
        assert_eq!(v["hit_ratio"], 0.75);
        assert_eq!(v["lock_wait_seconds"], 1.5);
        assert_eq!(v["purges"], 3);
        assert_eq!(v["requests"].as_object().unwrap().len(), CACHE_STATUSES.len());
    }

    fn redis_target() -> &'static RedisTarget {
        let backend = ferrocorn_cache::Backend::parse("redis://127.0.0.1:6390/2").unwrap();
        let ferrocorn_cache::Backend::Redis(target) = backend else { unreachable!() };
        Box::leak(Box::new(target))
    }

    #[test]
    fn with_redis_a_valid_purge_goes_to_the_redis_thread_and_stats_name_the_backend() {
        let board = Scoreboard::new(1).unwrap();
        let redis = CacheControl::Redis { target: redis_target(), board: &board };
        assert_eq!(purge(Some(redis), &json!({"prefix": "http/"})), {
            PurgeReply::InRedis(Purge::Prefix(b"http/".to_vec()))
        });
        let refused = purge(Some(redis), &json!({"key": "k", "all": true}));
        let PurgeReply::Now(reply) = refused else {
            panic!("an invalid purge is answered at once")
        };
        assert_eq!(reply["ok"], false);
        let mut s = Snapshot::default();
        s.retired.cache.remote_errors = 4;
        let v = stats_json(&s, redis);
        assert_eq!(v["store"], json!({"backend": "redis://127.0.0.1:6390/2", "remote_errors": 4}));
    }

    #[test]
    fn a_redis_purge_reply_says_what_happened() {
        let target = redis_target();
        assert_eq!(redis_reply(Ok(1), target)["message"], "purged 1 cached response");
        let down = redis_reply(Err(RemoteError::Unavailable), target);
        assert_eq!(down["ok"], false);
        assert!(down["error"].as_str().unwrap().contains("redis://127.0.0.1:6390/2"));
        let refused = redis_reply(Err(RemoteError::Refused("NOPERM".into())), target);
        assert!(refused["error"].as_str().unwrap().ends_with("NOPERM"));
    }
}
