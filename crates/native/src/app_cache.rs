//! The app cache's native half: `ferrocorn.cache` (Python) calls these functions to keep values
//! in the instance's one cache store ([`crate::shared_cache`]), so every worker reads what any
//! worker wrote. Values are bytes the Python side pickled, or exact integers kept as decimal
//! text so that `incr`/`decr` change them atomically under the store's writer lock. Keys live
//! in their own namespace and group, apart from the response cache's, which `cache.clear()`
//! never touches (and which `ctl cache purge --all` leaves to the app).
//!
//! Outside a ferrocorn worker (a unit test, a script, the master before its store exists) the
//! functions use a store private to the process, made on first use; `backend()` says which.
//!
//! With a Redis `--cache-backend` every function goes to Redis instead
//! ([`crate::redis_cache::app`]), with the GIL released while it waits; when Redis cannot be
//! reached they answer as for a missing key and store nothing (`get` None, `set` False, `incr`
//! counts from 0 without storing).

use std::sync::OnceLock;

use ferrocorn_shm::cache_store::{
    CacheStore, Current, FillAttempt, FillToken, Filling, InsertError, Update, key_hash,
};
use pyo3::exceptions::{PyKeyError, PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt};

use crate::redis_cache::RemoteError;
use crate::redis_cache::app::{self as remote, AppLock, Lifetime};
use crate::shared_cache::unix_now;
use ferrocorn_cache::remote::{AppValue, decode_app_value, encode_app_value};

/// A value the Python side pickled.
pub const TAG_PICKLED: u32 = 16;
/// An integer, as decimal ASCII.
pub const TAG_INTEGER: u32 = 17;
/// What every app-cache key starts with in the store (a response-cache key never starts with
/// NUL: it is rendered from a request's target and headers).
const NAMESPACE: &[u8] = b"\0app:";
/// The private store's size outside ferrocorn.
const PROCESS_STORE_BYTES: u64 = 64 << 20;

static PROCESS_STORE: OnceLock<CacheStore> = OnceLock::new();

/// Whether `tag` is one of the app cache's.
pub fn is_app_tag(tag: u32) -> bool {
    matches!(tag, TAG_PICKLED | TAG_INTEGER)
}

/// The group every app-cache value is filed under (removed together by `cache.clear()`).
fn app_group() -> u64 {
    key_hash(NAMESPACE)
}

fn store() -> PyResult<&'static CacheStore> {
    if let Some(shared) = crate::shared_cache::store() {
        return Ok(shared);
    }
    if let Some(private) = PROCESS_STORE.get() {
        return Ok(private);
    }
    let made = CacheStore::new(PROCESS_STORE_BYTES, unix_now())
        .map_err(|e| PyValueError::new_err(format!("cannot map a cache store: {e}")))?;
    Ok(PROCESS_STORE.get_or_init(|| made))
}

fn store_key(key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(NAMESPACE.len() + key.len());
    stored.extend_from_slice(NAMESPACE);
    stored.extend_from_slice(key);
    stored
}

/// The Unix second a value set at `now` for `ttl` seconds expires (None: never). A ttl of a
/// fraction of a second still lives until the next whole second.
fn expires_at(now: i64, ttl: Option<f64>) -> i64 {
    match ttl {
        None => i64::MAX,
        Some(t) if t.is_nan() || t <= 0.0 => now - 1,
        Some(t) => now.saturating_add(t.ceil().min(i64::MAX as f64) as i64),
    }
}

/// A value as the store keeps it (tag and bytes), copied once; None when it could never fit
/// under `key` (checked before copying: a refused 30 MiB value costs no copy).
fn stored_form(
    store: &CacheStore,
    key: &[u8],
    value: &Bound<'_, PyAny>,
) -> PyResult<Option<(u32, Vec<u8>)>> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        let bytes = bytes.as_bytes();
        return Ok(store.fits(key.len(), bytes.len()).then(|| (TAG_PICKLED, bytes.to_vec())));
    }
    if value.is_exact_instance_of::<PyInt>() {
        let n: i64 = value.extract()?;
        return Ok(Some((TAG_INTEGER, n.to_string().into_bytes())));
    }
    Err(PyValueError::new_err("a cache value is pickled bytes or an int"))
}

/// The bytes Redis keeps for a value (pickled bytes or an int).
fn remote_form(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(encode_app_value(&AppValue::Pickled(bytes.as_bytes())));
    }
    if value.is_exact_instance_of::<PyInt>() {
        return Ok(encode_app_value(&AppValue::Integer(value.extract()?)));
    }
    Err(PyValueError::new_err("a cache value is pickled bytes or an int"))
}

fn too_large(_: InsertError) -> PyErr {
    PyValueError::new_err("the value is larger than half the cache store (cache_max_size)")
}

fn parse_integer(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Whether the app cache is in Redis.
fn in_redis() -> bool {
    crate::redis_cache::target().is_some()
}

/// `"redis"` with a Redis backend, `"shared"` in a ferrocorn worker (one store for all
/// workers), `"process"` elsewhere.
#[pyfunction]
pub fn cache_backend() -> &'static str {
    if in_redis() {
        "redis"
    } else if crate::shared_cache::store().is_some() {
        "shared"
    } else {
        "process"
    }
}

/// The value under `key`: bytes (pickled), an int, or None.
#[pyfunction]
pub fn cache_get(py: Python<'_>, key: &[u8]) -> PyResult<Option<Py<PyAny>>> {
    if in_redis() {
        let stored = py.detach(|| remote::get(key)).ok().flatten();
        return Ok(match stored.as_deref().and_then(decode_app_value) {
            Some(AppValue::Pickled(bytes)) => Some(PyBytes::new(py, bytes).into_any().unbind()),
            Some(AppValue::Integer(n)) => Some(n.into_pyobject(py)?.into_any().unbind()),
            None => None,
        });
    }
    let store = store()?;
    let mut value = Vec::new();
    let found = store.lookup(&store_key(key), unix_now(), &mut value);
    Ok(match found.map(|f| f.tag) {
        Some(TAG_PICKLED) => Some(PyBytes::new(py, &value).into_any().unbind()),
        Some(TAG_INTEGER) => parse_integer(&value)
            .map(|n| n.into_pyobject(py).map(|o| o.into_any().unbind()))
            .transpose()?,
        _ => None,
    })
}

/// Store `value` (pickled bytes or an int) under `key` for `ttl` seconds (None: until
/// evicted; 0 or less: remove it). With `only_if_absent`, only when `key` has no live value.
/// Returns whether it was stored.
#[pyfunction]
#[pyo3(signature = (key, value, ttl, only_if_absent=false))]
pub fn cache_set(
    py: Python<'_>,
    key: &[u8],
    value: &Bound<'_, PyAny>,
    ttl: Option<f64>,
    only_if_absent: bool,
) -> PyResult<bool> {
    if in_redis() {
        let bytes = remote_form(value)?;
        let lifetime = Lifetime::of(ttl);
        return Ok(py
            .detach(|| remote::set(key, &bytes, lifetime, only_if_absent))
            .unwrap_or(false));
    }
    let store = store()?;
    let key = store_key(key);
    let Some((tag, bytes)) = stored_form(store, &key, value)? else {
        return Err(too_large(InsertError::TooLarge));
    };
    let now = unix_now();
    let expires = expires_at(now, ttl);
    let group = app_group();
    let stored = store.update(&key, now, |current| match current {
        Some(_) if only_if_absent => (Update::Keep, false),
        _ if expires < now => (Update::Remove, !only_if_absent),
        _ => (Update::Put { group, tag, expires, value: bytes }, true),
    });
    stored.map_err(too_large)
}

/// Remove `key`'s value; whether it had one.
#[pyfunction]
pub fn cache_delete(py: Python<'_>, key: &[u8]) -> PyResult<bool> {
    if in_redis() {
        return Ok(py.detach(|| remote::delete(key)).unwrap_or(false));
    }
    let store = store()?;
    let removed = store.update(&store_key(key), unix_now(), |current| {
        (if current.is_some() { Update::Remove } else { Update::Keep }, current.is_some())
    });
    Ok(removed.unwrap_or(false))
}

/// Why an increment failed.
enum IncrError {
    Missing,
    NotInteger,
    Overflow,
}

/// Add `delta` to the integer under `key` and return the new value, keeping its expiry. A
/// missing key counts from 0 (as Redis's INCRBY), unless `must_exist` (KeyError).
#[pyfunction]
#[pyo3(signature = (key, delta, must_exist=false))]
pub fn cache_incr(py: Python<'_>, key: &[u8], delta: i64, must_exist: bool) -> PyResult<i64> {
    if in_redis() {
        let missing = || PyKeyError::new_err(String::from_utf8_lossy(key).into_owned());
        return match py.detach(|| remote::incr(key, delta, must_exist)) {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(missing()),
            Err(RemoteError::Unavailable) if must_exist => Err(missing()),
            Err(RemoteError::Unavailable) => Ok(delta), // as for a missing key; nothing stored
            Err(RemoteError::Refused(e)) if e.contains("overflow") => {
                Err(PyOverflowError::new_err("the cached integer would overflow"))
            }
            Err(RemoteError::Refused(_)) => {
                Err(PyValueError::new_err("the cached value is not an integer"))
            }
        };
    }
    let store = store()?;
    let group = app_group();
    let outcome = store
        .update(&store_key(key), unix_now(), |current| {
            incremented(current, delta, must_exist, group)
        })
        .map_err(too_large)?;
    outcome.map_err(|e| match e {
        IncrError::Missing => PyKeyError::new_err(String::from_utf8_lossy(key).into_owned()),
        IncrError::NotInteger => PyValueError::new_err("the cached value is not an integer"),
        IncrError::Overflow => PyOverflowError::new_err("the cached integer would overflow"),
    })
}

fn incremented(
    current: Option<Current<'_>>,
    delta: i64,
    must_exist: bool,
    group: u64,
) -> (Update, Result<i64, IncrError>) {
    let (base, expires) = match current {
        None if must_exist => return (Update::Keep, Err(IncrError::Missing)),
        None => (0, i64::MAX),
        Some(c) if c.tag != TAG_INTEGER => return (Update::Keep, Err(IncrError::NotInteger)),
        Some(c) => match parse_integer(c.value) {
            Some(n) => (n, c.expires),
            None => return (Update::Keep, Err(IncrError::NotInteger)),
        },
    };
    let Some(next) = base.checked_add(delta) else {
        return (Update::Keep, Err(IncrError::Overflow));
    };
    let value = next.to_string().into_bytes();
    (Update::Put { group, tag: TAG_INTEGER, expires, value }, Ok(next))
}

/// Give `key`'s value a new lifetime of `ttl` seconds (None: until evicted); whether it had one.
#[pyfunction]
pub fn cache_touch(py: Python<'_>, key: &[u8], ttl: Option<f64>) -> PyResult<bool> {
    if in_redis() {
        let lifetime = Lifetime::of(ttl);
        return Ok(py.detach(|| remote::touch(key, lifetime)).unwrap_or(false));
    }
    let store = store()?;
    let now = unix_now();
    let expires = expires_at(now, ttl);
    let group = app_group();
    let touched = store.update(&store_key(key), now, |current| match current {
        None => (Update::Keep, false),
        Some(_) if expires < now => (Update::Remove, true),
        Some(c) => {
            let value = c.value.to_vec();
            (Update::Put { group, tag: c.tag, expires, value }, true)
        }
    });
    touched.map_err(too_large)
}

/// Remove every app-cache value whose key starts with `prefix` (None: every one; the
/// response cache's entries stay); how many there were. A framework backend clears its own
/// namespace this way.
#[pyfunction]
#[pyo3(signature = (prefix=None))]
pub fn cache_clear(py: Python<'_>, prefix: Option<&[u8]>) -> PyResult<usize> {
    if in_redis() {
        return Ok(py.detach(|| remote::clear(prefix.unwrap_or(b""))).unwrap_or(0));
    }
    let store = store()?;
    let group = app_group();
    Ok(py.detach(|| match prefix {
        None => store.remove_matching(|tag, g| g == group && is_app_tag(tag)).len(),
        // Every app key, and only they, start with the namespace.
        Some(prefix) => store.remove_prefix(&store_key(prefix)).len(),
    }))
}

/// Whether another live process or thread is computing `key` (holds its fill lock).
#[pyfunction]
pub fn cache_filling(py: Python<'_>, key: &[u8]) -> PyResult<bool> {
    if in_redis() {
        return Ok(py.detach(|| remote::filling(key)).unwrap_or(false));
    }
    let store = store()?;
    let mut value = Vec::new();
    let found = store.lookup(&store_key(key), unix_now(), &mut value);
    Ok(found.is_some_and(|f| f.filling == Filling::Alive))
}

/// A fill lock on an app-cache key: while held, [`cache_filling`] is true for that key in
/// every worker. Released by `release()`, or when its process dies, or after its seconds.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct FillLock {
    token: Option<FillToken>,
    remote: Option<AppLock>,
}

#[pymethods]
impl FillLock {
    /// Let the next computer of the key go (after storing its value, or on failure).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(token) = self.token {
            store()?.end_fill(token);
        }
        if let Some(lock) = &self.remote {
            py.detach(|| lock.release());
        }
        Ok(())
    }
}

/// Take the fill lock of `key` for at most `seconds`: a `FillLock`, or None when another live
/// process holds it.
#[pyfunction]
pub fn cache_lock(py: Python<'_>, key: &[u8], seconds: f64) -> PyResult<Option<FillLock>> {
    let secs = seconds.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    if in_redis() {
        return Ok(match py.detach(|| remote::lock(key, secs)) {
            Ok(Some(lock)) => Some(FillLock { token: None, remote: Some(lock) }),
            Ok(None) => None,
            Err(_) => Some(FillLock { token: None, remote: None }), // go ahead without a lock
        });
    }
    let store = store()?;
    Ok(match store.begin_fill(&store_key(key), app_group(), unix_now(), secs) {
        FillAttempt::Acquired(token) => Some(FillLock { token: Some(token), remote: None }),
        FillAttempt::NoRoom => Some(FillLock { token: None, remote: None }),
        FillAttempt::Busy => None,
    })
}

/// How many Redis operations failed in this process (0 without Redis).
#[pyfunction]
pub fn cache_remote_errors() -> u64 {
    crate::redis_cache::error_count()
}

/// Register the functions and classes on the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FillLock>()?;
    m.add_function(wrap_pyfunction!(cache_backend, m)?)?;
    m.add_function(wrap_pyfunction!(cache_get, m)?)?;
    m.add_function(wrap_pyfunction!(cache_set, m)?)?;
    m.add_function(wrap_pyfunction!(cache_delete, m)?)?;
    m.add_function(wrap_pyfunction!(cache_incr, m)?)?;
    m.add_function(wrap_pyfunction!(cache_touch, m)?)?;
    m.add_function(wrap_pyfunction!(cache_clear, m)?)?;
    m.add_function(wrap_pyfunction!(cache_filling, m)?)?;
    m.add_function(wrap_pyfunction!(cache_lock, m)?)?;
    m.add_function(wrap_pyfunction!(cache_remote_errors, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn a_ttl_becomes_a_whole_second_expiry() {
        assert_eq!(expires_at(NOW, None), i64::MAX);
        assert_eq!(expires_at(NOW, Some(10.0)), NOW + 10);
        assert_eq!(expires_at(NOW, Some(0.2)), NOW + 1);
        assert!(expires_at(NOW, Some(0.0)) < NOW);
        assert!(expires_at(NOW, Some(-5.0)) < NOW);
        assert!(expires_at(NOW, Some(f64::NAN)) < NOW);
    }

    fn current(tag: u32, value: &[u8]) -> Option<Current<'_>> {
        Some(Current { tag, expires: NOW + 60, value })
    }

    #[test]
    fn an_increment_counts_from_zero_or_refuses() {
        let (update, result) = incremented(None, 5, false, 1);
        assert!(matches!(result, Ok(5)));
        assert!(matches!(update, Update::Put { tag: TAG_INTEGER, expires: i64::MAX, .. }));
        let (update, result) = incremented(None, 5, true, 1);
        assert!(matches!((update, result), (Update::Keep, Err(IncrError::Missing))));
        let (update, result) = incremented(current(TAG_INTEGER, b"41"), 1, true, 1);
        assert!(matches!(result, Ok(42)));
        assert!(matches!(update, Update::Put { expires, .. } if expires == NOW + 60));
        let (_, result) = incremented(current(TAG_PICKLED, b"41"), 1, false, 1);
        assert!(matches!(result, Err(IncrError::NotInteger)));
        let (_, result) = incremented(current(TAG_INTEGER, b"9223372036854775807"), 1, false, 1);
        assert!(matches!(result, Err(IncrError::Overflow)));
        let (_, result) = incremented(current(TAG_INTEGER, b"-3"), -4, false, 1);
        assert!(matches!(result, Ok(-7)));
    }

    #[test]
    fn app_keys_never_look_like_response_keys() {
        assert!(store_key(b"http").starts_with(b"\0"));
        assert!(is_app_tag(TAG_PICKLED) && is_app_tag(TAG_INTEGER) && !is_app_tag(1));
    }
}
