//! The control socket, served by the master's own loop: a unix stream socket (mode 0600 by
//! default) where `ferrocorn ctl` and `ferrocorn top` send one JSON line and get one JSON line
//! back. Commands: `status`, `workers`, `workers.add`, `workers.remove`, `reload`,
//! `reopen-logs`, `shutdown`, the response cache's `cache.stats` and `cache.purge`
//! (`cache_control.rs`; a purge in Redis is carried out and answered by a child process,
//! `redis_purge.rs`), and the load balancer's `upstreams` and `upstreams.set`
//! (`upstream_control.rs`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use ferrocorn_arbiter::Command;
use ferrocorn_metrics::{Snapshot, WorkerSnapshot};
use serde_json::{Value, json};

use super::cache_control::{self, CacheControl, PurgeReply};
use super::observe::quantile_ms;
use super::{redis_purge, upstream_control};

/// The bound control socket.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    owner: bool,
}

impl ControlSocket {
    /// Bind at `path` (replacing a stale socket, creating the directory) with `mode`.
    pub fn bind(path: &str, mode: u32) -> Result<ControlSocket, String> {
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if std::fs::symlink_metadata(&path).is_ok() {
            if UnixStream::connect(&path).is_ok() {
                return Err(format!(
                    "control socket {} is in use by another server; give --control-socket PATH or --no-control-socket",
                    path.display()
                ));
            }
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path).map_err(|e| {
            format!(
                "cannot create the control socket {} (setting `control_socket`): {e}",
                path.display()
            )
        })?;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(ControlSocket { listener, path, owner: true })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }

    /// Answer one pending client (if any); returns the action it asked for. `cache`: what
    /// the cache commands act on (None: the response cache is off).
    pub fn serve_one(
        &self,
        snapshot: &mut dyn FnMut() -> Snapshot,
        cache: Option<CacheControl<'_>>,
        master_pid: u32,
    ) -> Option<Command> {
        let (stream, _) = self.listener.accept().ok()?;
        match answer(stream, snapshot, cache, master_pid) {
            Ok(command) => command,
            Err(e) => {
                crate::logging::debug!("control request failed: {e}");
                None
            }
        }
    }
}

impl ControlSocket {
    /// Close the socket in a forked worker without removing the master's socket file.
    pub fn abandon(mut self) {
        self.owner = false;
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn worker_json(w: &WorkerSnapshot) -> Value {
    json!({
        "pid": w.pid,
        "state": w.state,
        "age": w.age,
        "uptime_seconds": w.uptime_seconds,
        "requests": w.totals.request_count(),
        "in_flight": w.in_flight,
        "open_connections": w.open_connections,
        "rss_bytes": w.rss_bytes,
        "cpu_seconds": w.cpu_seconds,
        "p50_ms": quantile_ms(&w.totals, 0.5),
        "p99_ms": quantile_ms(&w.totals, 0.99),
    })
}

fn status_json(s: &Snapshot, master_pid: u32) -> Value {
    let totals = s.totals();
    let restarts: serde_json::Map<String, Value> =
        s.restarts.iter().map(|(r, n)| (r.clone(), json!(n))).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    json!({
        "ok": true,
        "pid": master_pid,
        "version": s.version,
        "uptime_seconds": (now - s.start_time_seconds).max(0.0),
        "workers_target": s.workers_target,
        "workers": s.workers.iter().map(worker_json).collect::<Vec<_>>(),
        "totals": {
            "requests": totals.request_count(),
            "in_flight": s.workers.iter().map(|w| w.in_flight).sum::<u64>(),
            "exceptions": totals.exceptions,
            "p50_ms": quantile_ms(&totals, 0.5),
            "p99_ms": quantile_ms(&totals, 0.99),
        },
        "restarts": restarts,
    })
}

fn answer(
    stream: UnixStream,
    snapshot: &mut dyn FnMut() -> Snapshot,
    cache: Option<CacheControl<'_>>,
    master_pid: u32,
) -> std::io::Result<Option<Command>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut line = String::new();
    BufReader::new(&stream).take(64 * 1024).read_line(&mut line)?;
    let (reply, command) = match serde_json::from_str::<Value>(line.trim()) {
        Err(e) => (json!({"ok": false, "error": format!("request is not JSON: {e}")}), None),
        Ok(request) if request.get("command").and_then(Value::as_str) == Some("cache.purge") => {
            match cache_control::purge(cache, &request) {
                PurgeReply::Now(reply) => (reply, None),
                PurgeReply::InRedis(purge) => {
                    if let Some(CacheControl::Redis { board, .. }) = cache {
                        redis_purge::submit(purge, stream, board);
                    }
                    return Ok(None);
                }
            }
        }
        Ok(request) => dispatch(&request, snapshot, cache, master_pid),
    };
    let mut out = reply.to_string();
    out.push('\n');
    (&stream).write_all(out.as_bytes())?;
    Ok(command)
}

/// The prefixes of the worker pools other than `/`, in pool order (pool 1 first).
static POOL_PREFIXES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Record the worker pools' prefixes (the master, at start and on reload).
pub fn set_pool_prefixes(prefixes: Vec<String>) {
    *POOL_PREFIXES.lock().unwrap_or_else(|e| e.into_inner()) = prefixes;
}

/// The pool a request names by its `pool` prefix (absent or `/`: pool 0).
fn pool_arg(request: &Value) -> Result<usize, Value> {
    match request.get("pool").and_then(Value::as_str) {
        None | Some("/") => Ok(0),
        Some(prefix) => {
            let prefixes = POOL_PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
            match prefixes.iter().position(|p| p == prefix) {
                Some(i) => Ok(i + 1),
                None => Err(json!({"ok": false, "error": format!(
                    "no pool {prefix:?}; the pools are \"/\" and {:?}", *prefixes
                )})),
            }
        }
    }
}

fn count_arg(request: &Value) -> Result<usize, Value> {
    match request.get("count").map(|c| c.as_u64()) {
        None => Ok(1),
        Some(Some(n)) if n >= 1 => Ok(n as usize),
        _ => Err(json!({"ok": false, "error": "count must be a whole number >= 1"})),
    }
}

fn dispatch(
    request: &Value,
    snapshot: &mut dyn FnMut() -> Snapshot,
    cache: Option<CacheControl<'_>>,
    master_pid: u32,
) -> (Value, Option<Command>) {
    let ok = |message: &str| json!({"ok": true, "message": message});
    match request.get("command").and_then(Value::as_str) {
        Some("status") => {
            let s = snapshot();
            let mut status = status_json(&s, master_pid);
            // what `ferrocorn top` shows besides the workers, for the servers that have it
            if let Some(cache) = cache {
                status["cache"] = cache_control::summary(&s, cache);
            }
            if crate::upstream_board::board().is_some() {
                status["upstreams"] = upstream_control::list(&s)["upstreams"].take();
            }
            (status, None)
        }
        Some("workers") => {
            let s = snapshot();
            (
                json!({"ok": true, "workers": s.workers.iter().map(worker_json).collect::<Vec<_>>()}),
                None,
            )
        }
        Some("workers.add") => match count_arg(request).and_then(|n| Ok((n, pool_arg(request)?))) {
            Ok((count, pool)) => (
                ok(&format!("adding {count} worker(s)")),
                Some(Command::AddWorkers { count, pool }),
            ),
            Err(e) => (e, None),
        },
        Some("workers.remove") => {
            match count_arg(request).and_then(|n| Ok((n, pool_arg(request)?))) {
                Ok((count, pool)) => (
                    ok(&format!("removing {count} worker(s)")),
                    Some(Command::RemoveWorkers { count, pool }),
                ),
                Err(e) => (e, None),
            }
        }
        Some("reload") => (ok("reloading"), Some(Command::Reload)),
        Some("reopen-logs") => (ok("reopening log files"), Some(Command::ReopenLogs)),
        Some("shutdown") => {
            let graceful = request.get("graceful").and_then(Value::as_bool).unwrap_or(false);
            (
                ok(if graceful { "shutting down gracefully" } else { "shutting down" }),
                Some(Command::Shutdown { graceful }),
            )
        }
        Some("cache.stats") => (cache_control::stats(cache, snapshot), None),
        Some("upstreams") => (upstream_control::list(&snapshot()), None),
        Some("upstreams.set") => (upstream_control::set(request, &snapshot()), None),
        Some(other) => (json!({"ok": false, "error": format!("unknown command {other:?}")}), None),
        None => (json!({"ok": false, "error": "request needs a \"command\""}), None),
    }
}
