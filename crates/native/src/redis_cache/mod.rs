//! The Redis cache backend (`--cache-backend redis://…`, `rediss://…`,
//! `redis+cluster://…`): the response cache and the app cache keep their entries in Redis, so
//! every instance pointing at it shares them. The master only records where Redis is
//! ([`configure`]); each worker connects on first use, after the fork (`conn.rs`). Redis going
//! away never fails a request: operations give up within a bounded time, the response cache
//! passes requests to the app and stores nothing, the app cache answers like a miss, and
//! the worker reconnects by itself (`health.rs` paces it and the warnings).
//!
//! - `conn.rs`: connections (async for the worker's runtime, blocking for app threads).
//! - `response.rs`: the response cache's store operations.
//! - `app.rs`: the app cache's operations.
//! - `scan.rs`: removal by pattern on every master (prefix PURGE, `cache.clear()`).

pub mod app;
mod conn;
mod health;
mod locks;
mod response;
mod scan;

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ferrocorn_cache::RedisTarget;

pub use conn::RemoteError;
pub use response::{RedisResponses, RemoteAttempt, RemoteFill};

use conn::Remote;

static TARGET: OnceLock<RedisTarget> = OnceLock::new();
static TIMEOUT: OnceLock<Duration> = OnceLock::new();
static REMOTE: Mutex<Option<&'static Remote>> = Mutex::new(None);
static RESPONSES: OnceLock<RedisResponses> = OnceLock::new();
static HOST: OnceLock<String> = OnceLock::new();

/// The shortest timeout an operation gets.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// The timeout when none was configured.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// Operations on Redis that failed in this process (unreachable, timed out or refused).
pub(crate) static ERRORS: AtomicU64 = AtomicU64::new(0);

/// How many Redis operations failed in this process so far (for the cache metrics).
pub fn error_count() -> u64 {
    ERRORS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Record where Redis is and how long an operation may take (the master, before forking;
/// nothing connects). The first target recorded stays for the process's life (a change
/// needs a restart).
pub fn configure(target: RedisTarget, timeout: Duration) {
    let _ = TIMEOUT.set(timeout.max(MIN_TIMEOUT));
    let _ = TARGET.set(target);
}

/// Where Redis is, when it is the backend.
pub fn target() -> Option<&'static RedisTarget> {
    TARGET.get()
}

/// This process's connections to Redis (made on first use), when it is the backend.
fn remote() -> Option<&'static Remote> {
    let target = TARGET.get()?;
    let mut slot = REMOTE.lock().unwrap_or_else(|p| p.into_inner());
    match *slot {
        Some(remote) if remote.owned_here() => Some(remote),
        _ => {
            // First use, or connections inherited over a fork: this process makes its own.
            let timeout = TIMEOUT.get().copied().unwrap_or(DEFAULT_TIMEOUT);
            let remote: &'static Remote = Box::leak(Box::new(Remote::new(target, timeout)));
            *slot = Some(remote);
            Some(remote)
        }
    }
}

/// The response cache's Redis store for this worker, keeping unread entries `inactive`
/// seconds; None when Redis is not the backend.
pub fn responses(inactive: i64) -> Option<&'static RedisResponses> {
    if let Some(made) = RESPONSES.get() {
        return Some(made);
    }
    let remote = remote()?;
    Some(RESPONSES.get_or_init(|| RedisResponses::new(remote, inactive.max(1) as u64)))
}

/// The response cache's store over connections of its own (not this process's shared ones),
/// with where Redis is: for the child the master forks to purge (`master/redis_purge.rs`).
/// None when Redis is not the backend. Each call makes (and keeps for the process's life) a
/// new set of connections: call it once per process.
pub fn private_responses() -> Option<(RedisResponses, &'static RedisTarget)> {
    let target = TARGET.get()?;
    let timeout = TIMEOUT.get().copied().unwrap_or(DEFAULT_TIMEOUT);
    let remote: &'static Remote = Box::leak(Box::new(Remote::new(target, timeout)));
    Some((RedisResponses::new(remote, 1), target))
}

/// This host's name, as fill locks record it.
fn own_host() -> &'static str {
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

/// Whether process `pid` of this host is alive.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; no signal is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
