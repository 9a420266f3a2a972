//! The master's purges of a response cache kept in Redis (`ferrocorn ctl cache purge` with
//! `--cache-backend redis://…`). Each runs in a short-lived child process forked for it, which
//! connects, purges, answers the control client itself and exits: a prefix purge scans every
//! Redis master and may take seconds, and the master's loop (signals, heartbeats, timeouts)
//! must never wait for it — while the master itself stays single-threaded and without a
//! runtime, which its forks of workers rely on. The arbiter reaps the child as a process that
//! is not a worker; its count of purges goes into the shared master counters.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ferrocorn_arbiter::SignalPipe;
use ferrocorn_shm::scoreboard::Scoreboard;
use serde_json::{Value, json};

use super::cache_control::{Purge, redis_reply};
use crate::redis_cache::{RedisResponses, RemoteError};
use crate::shared_cache::TAG_RESPONSE;

/// The longest a purge child lives, whatever Redis does.
const CHILD_LIFETIME: Duration = Duration::from_secs(300);

/// Carry `purge` out in a child process that answers `client`.
pub fn submit(purge: Purge, client: UnixStream, board: &Scoreboard) {
    // SAFETY: the master is single-threaded (no runtime, no helper threads), so the child gets
    // a consistent copy of the address space. The child runs only the Rust code below — never
    // the interpreter — and leaves with `_exit`, so it never returns into the master's loop.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => {
            let error = std::io::Error::last_os_error();
            answer(
                &client,
                &json!({"ok": false, "error": format!("cannot fork a purge: {error}")}),
            );
        }
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                SignalPipe::default_in_helper();
                run_in_child(&purge, &client, board)
            }))
            .unwrap_or(70);
            // SAFETY: ends the child without running the master's destructors or atexit
            // handlers (which would remove its sockets and pid file).
            unsafe { libc::_exit(code) }
        }
        _ => {} // the child has its own copy of the client; the master's closes on drop
    }
}

/// The child's work: purge, answer, exit code.
fn run_in_child(purge: &Purge, client: &UnixStream, board: &Scoreboard) -> i32 {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        answer(client, &json!({"ok": false, "error": "cannot start a runtime for the purge"}));
        return 1;
    };
    let Some((store, target)) = crate::redis_cache::private_responses() else {
        answer(client, &json!({"ok": false, "error": super::cache_control::CACHE_OFF}));
        return 1;
    };
    let outcome = runtime.block_on(async {
        tokio::time::timeout(CHILD_LIFETIME, purge_in_redis(purge, &store))
            .await
            .unwrap_or(Err(RemoteError::Unavailable))
    });
    let ok = outcome.is_ok();
    if ok {
        board.master().count_cache_purge();
    }
    answer(client, &redis_reply(outcome, target));
    if ok { 0 } else { 1 }
}

fn answer(client: &UnixStream, reply: &Value) {
    let mut out = reply.to_string();
    out.push('\n');
    if let Err(e) = (&*client).write_all(out.as_bytes()) {
        crate::logging::debug!("control request failed: {e}");
    }
}

/// Carry `purge` out in Redis: the responses it removed (not the marks kept beside them).
async fn purge_in_redis(purge: &Purge, store: &RedisResponses) -> Result<usize, RemoteError> {
    let tags = match purge {
        Purge::Key(key) => store.remove_group(key).await?,
        Purge::Prefix(prefix) => store.remove_prefix(prefix).await?,
        Purge::All => store.remove_prefix(b"").await?,
    };
    Ok(tags.iter().filter(|&&tag| tag == TAG_RESPONSE).count())
}
