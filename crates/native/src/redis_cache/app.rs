//! The app cache's operations against Redis (`ferrocorn.cache` with a Redis backend), blocking,
//! for app threads that have released the GIL: `fc:a:<key>` holds a value (decimal text for an
//! integer, so `INCRBY` is the atomic increment; a marker byte then the pickle otherwise), and
//! `fc:al:<key>` the lock of `cached(lock=True)`.

use ferrocorn_cache::remote::{app_entry, app_lock};
use ferrocorn_shm::cache_store::Filling;
use redis::ConnectionLike;

use super::conn::RemoteError;
use super::locks::{RELEASE, TAKE_OVER, filling_of, new_holder};
use super::remote;

/// `touch`: whether the key exists, then its new lifetime. KEYS: value; ARGV: seconds or "".
const TOUCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '' then redis.call('PERSIST', KEYS[1]) else redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
";

/// `incr` of an existing key only. KEYS: value; ARGV: delta.
const INCR_EXISTING: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('INCRBY', KEYS[1], ARGV[1])
";

/// How long a value is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Until Redis evicts it.
    Forever,
    /// This many seconds.
    Secs(u64),
    /// Not at all (a ttl of 0 or less).
    Gone,
}

impl Lifetime {
    /// The lifetime of a ttl in seconds (None: forever); a fraction counts as a whole second.
    pub fn of(ttl: Option<f64>) -> Lifetime {
        match ttl {
            None => Lifetime::Forever,
            Some(t) if t.is_nan() || t <= 0.0 => Lifetime::Gone,
            Some(t) => Lifetime::Secs(t.ceil().min(u64::MAX as f64) as u64),
        }
    }
}

fn eval(script: &str, key: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key);
    cmd
}

fn run<T>(
    what: &str,
    op: impl FnOnce(&mut dyn ConnectionLike) -> redis::RedisResult<T>,
) -> Result<T, RemoteError> {
    remote().ok_or(RemoteError::Unavailable)?.blocking(what, op)
}

/// The stored bytes under `key`.
pub fn get(key: &[u8]) -> Result<Option<Vec<u8>>, RemoteError> {
    run("a get", |c| redis::cmd("GET").arg(app_entry(key)).query(c))
}

/// Store `stored` under `key` for `lifetime` (with `only_if_absent`: `SET NX`); whether it
/// was stored.
pub fn set(
    key: &[u8],
    stored: &[u8],
    lifetime: Lifetime,
    only_if_absent: bool,
) -> Result<bool, RemoteError> {
    let name = app_entry(key);
    let mut cmd = match lifetime {
        Lifetime::Gone if only_if_absent => return Ok(false),
        Lifetime::Gone => {
            let _: i64 = run("a set", |c| redis::cmd("DEL").arg(&name).query(c))?;
            return Ok(true);
        }
        _ => redis::cmd("SET"),
    };
    cmd.arg(&name).arg(stored);
    if let Lifetime::Secs(secs) = lifetime {
        cmd.arg("EX").arg(secs);
    }
    if only_if_absent {
        cmd.arg("NX");
    }
    let done: Option<String> = run("a set", |c| cmd.query(c))?;
    Ok(done.is_some())
}

/// Remove `key`'s value; whether it had one.
pub fn delete(key: &[u8]) -> Result<bool, RemoteError> {
    let removed: i64 = run("a delete", |c| redis::cmd("DEL").arg(app_entry(key)).query(c))?;
    Ok(removed > 0)
}

/// Add `delta` to the integer under `key` (a missing key counts from 0, unless `must_exist`:
/// then None). Refused: the value is not an integer, or would overflow.
pub fn incr(key: &[u8], delta: i64, must_exist: bool) -> Result<Option<i64>, RemoteError> {
    let name = app_entry(key);
    if must_exist {
        run("an incr", |c| eval(INCR_EXISTING, &name).arg(delta).query(c))
    } else {
        run("an incr", |c| redis::cmd("INCRBY").arg(&name).arg(delta).query(c)).map(Some)
    }
}

/// Give `key`'s value a new `lifetime`; whether it had one.
pub fn touch(key: &[u8], lifetime: Lifetime) -> Result<bool, RemoteError> {
    let name = app_entry(key);
    let seconds = match lifetime {
        Lifetime::Gone => return delete(key),
        Lifetime::Forever => String::new(),
        Lifetime::Secs(s) => s.to_string(),
    };
    let touched: i64 = run("a touch", |c| eval(TOUCH, &name).arg(seconds).query(c))?;
    Ok(touched == 1)
}

/// Remove every app-cache value whose key starts with `prefix` (empty: every one) on every
/// master; how many.
pub fn clear(prefix: &[u8]) -> Result<usize, RemoteError> {
    let remote = remote().ok_or(RemoteError::Unavailable)?;
    let mut pattern = ferrocorn_cache::remote::APP_PREFIX.to_vec();
    ferrocorn_cache::remote::glob_escape(prefix, &mut pattern);
    pattern.push(b'*');
    super::scan::delete_matching_blocking(remote, &pattern)
}

fn holder_dead(value: &[u8]) -> bool {
    filling_of(Some(value)) == Filling::Dead
}

/// Whether a live process holds `key`'s lock.
pub fn filling(key: &[u8]) -> Result<bool, RemoteError> {
    let seen: Option<Vec<u8>> =
        run("a lock check", |c| redis::cmd("GET").arg(app_lock(key)).query(c))?;
    Ok(seen.is_some_and(|v| !holder_dead(&v)))
}

/// An app-cache lock held in Redis.
#[derive(Debug)]
pub struct AppLock {
    lock: Vec<u8>,
    holder: String,
}

impl AppLock {
    /// Release it if it is still this one's.
    pub fn release(&self) {
        let _: Result<i64, _> =
            run("a lock release", |c| eval(RELEASE, &self.lock).arg(&self.holder).query(c));
    }
}

/// Take `key`'s lock for `seconds`: Some(lock), or None when a live process holds it.
pub fn lock(key: &[u8], seconds: u32) -> Result<Option<AppLock>, RemoteError> {
    let lock = app_lock(key);
    let holder = new_holder();
    let ms = u64::from(seconds.max(1)) * 1000;
    let taken: Option<String> = run("a lock", |c| {
        redis::cmd("SET").arg(&lock).arg(&holder).arg("NX").arg("PX").arg(ms).query(c)
    })?;
    if taken.is_some() {
        return Ok(Some(AppLock { lock, holder }));
    }
    let seen: Option<Vec<u8>> = run("a lock", |c| redis::cmd("GET").arg(&lock).query(c))?;
    match seen {
        Some(seen) if holder_dead(&seen) => {
            let took: i64 =
                run("a lock", |c| eval(TAKE_OVER, &lock).arg(&seen).arg(&holder).arg(ms).query(c))?;
            Ok((took == 1).then_some(AppLock { lock, holder }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_becomes_whole_seconds() {
        assert_eq!(Lifetime::of(None), Lifetime::Forever);
        assert_eq!(Lifetime::of(Some(0.2)), Lifetime::Secs(1));
        assert_eq!(Lifetime::of(Some(10.0)), Lifetime::Secs(10));
        assert_eq!(Lifetime::of(Some(0.0)), Lifetime::Gone);
        assert_eq!(Lifetime::of(Some(f64::NAN)), Lifetime::Gone);
    }
}
