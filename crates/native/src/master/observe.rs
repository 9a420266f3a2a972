//! Reading the instance's state for metrics and the control socket: the scoreboard (live
//! workers and the master's retired totals and restarts), `/proc` (per-worker RSS and CPU), the
//! listeners' accept-queue depth (`TCP_INFO`), the cache store's counts, and app-defined
//! metrics.

use std::os::fd::AsRawFd;

use ferrocorn_metrics::{Snapshot, Totals, WorkerSnapshot};
use ferrocorn_shm::monotonic_ms;
use ferrocorn_shm::scoreboard::{Scoreboard, SlotState};

use ferrocorn_net::listen::{BoundAddr, Listener};

/// Resident set size and CPU seconds of `pid`, from /proc.
pub fn process_usage(pid: i32) -> (u64, f64) {
    // SAFETY: sysconf has no memory-safety preconditions.
    let (page, ticks) =
        unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_CLK_TCK)) };
    let rss = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * page.max(1) as u64);
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) start after ") ".
            let rest = s.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) as f64 / ticks.max(1) as f64)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

/// Connections waiting in a TCP listener's accept queue (0 for unix sockets or on error).
pub fn listen_queue_depth(listener: &Listener) -> u64 {
    if !matches!(listener.addr, BoundAddr::Tcp(_)) {
        return 0;
    }
    // SAFETY: tcp_info is plain data; all-zero is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a valid tcp_info.
    let rc = unsafe {
        libc::getsockopt(
            listener.socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // For a listening socket the kernel reports the accept-queue length in tcpi_unacked.
    if rc == 0 { u64::from(info.tcpi_unacked) } else { 0 }
}

/// Live workers from the scoreboard.
pub fn workers(board: &Scoreboard) -> Vec<WorkerSnapshot> {
    let now = monotonic_ms();
    board
        .slots()
        .filter(|(_, s)| s.pid() > 0 && s.state() != SlotState::Free)
        .map(|(_, slot)| {
            let (rss_bytes, cpu_seconds) = process_usage(slot.pid());
            WorkerSnapshot {
                pid: slot.pid(),
                state: slot.state().name().to_owned(),
                age: slot.age(),
                uptime_seconds: now.saturating_sub(slot.started_ms()) as f64 / 1000.0,
                in_flight: u64::from(slot.in_flight()),
                open_connections: slot.open_connections(),
                rss_bytes,
                cpu_seconds,
                totals: slot.counters().totals(),
                pool: slot.pool(),
                requests: slot.requests(),
            }
        })
        .collect()
}

/// The whole instance, for a scrape.
pub fn snapshot(
    board: &Scoreboard,
    listeners: &[Listener],
    workers_target: usize,
    start_time: f64,
    pool_prefixes: &[String],
) -> Snapshot {
    Snapshot {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        start_time_seconds: start_time,
        workers_target,
        workers: workers(board),
        retired: board.master().retired.totals(),
        restarts: board.master().restarts().into_iter().map(|(r, n)| (r.to_owned(), n)).collect(),
        listeners: listeners.iter().map(|l| (l.addr.to_string(), listen_queue_depth(l))).collect(),
        user: crate::user_metrics::collect(),
        cache_store: crate::shared_cache::store_counts(),
        master_cache_purges: board.master().cache_purges(),
        upstreams: crate::upstream_board::counts(board),
        pools: pool_prefixes
            .iter()
            .enumerate()
            .map(|(i, prefix)| (prefix.clone(), board.master().retired_pool_requests(i)))
            .collect(),
    }
}

/// Milliseconds of a latency quantile, for JSON (null without data).
pub fn quantile_ms(totals: &Totals, q: f64) -> Option<f64> {
    totals.quantile(q).filter(|v| v.is_finite()).map(|s| s * 1000.0)
}
