//! The instance's one load-balancer table ([`ferrocorn_shm::upstream_board`]): mapped by the
//! master before the first fork when the instance is a balancer, inherited by its workers,
//! with the names of the configured upstreams the master labels its rows with (the list a
//! HUP loaded last). A HUP re-lays the rows by name and drops the operator's overrides, and a
//! worker writes only while the rows follow the list it was forked with ([`worker_board`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use ferrocorn_metrics::UpstreamCounts;
use ferrocorn_shm::scoreboard::{Scoreboard, SlotState};
use ferrocorn_shm::upstream_board::{MAX_UPSTREAMS, UpstreamBoard};

use crate::logging::warning;

static BOARD: OnceLock<UpstreamBoard> = OnceLock::new();
static NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The list generation of this process's upstream list: the master sets it at each (re)load,
/// and a worker keeps the value it was forked with (process memory, not the shared table).
static LIST_AT_FORK: AtomicU64 = AtomicU64::new(0);

/// Map the table (once) and record the configured upstreams' names (the master, at start and
/// on reload; `names` empty: not a balancer, nothing is mapped).
pub fn init(names: Vec<String>, slots: usize) -> std::io::Result<()> {
    if names.is_empty() && BOARD.get().is_none() {
        return Ok(());
    }
    if BOARD.get().is_none() {
        let _ = BOARD.set(UpstreamBoard::new(slots)?);
    }
    if names.len() > MAX_UPSTREAMS {
        warning!(
            "{} upstreams configured: all are balanced, the metrics count the first {MAX_UPSTREAMS}",
            names.len()
        );
    }
    let mut known = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(board) = BOARD.get() {
        if !known.is_empty() {
            board.reorder(&moves(&known, &names));
        }
        board.set_upstream_count(names.len());
        LIST_AT_FORK.store(board.list_generation(), Ordering::Relaxed);
    }
    *known = names;
    Ok(())
}

/// For each upstream of `new`, its position in `old` (each old row taken once), if listed.
fn moves(old: &[String], new: &[String]) -> Vec<Option<usize>> {
    let mut taken = vec![false; old.len()];
    new.iter()
        .map(|name| {
            let at = (0..old.len()).find(|&i| !taken[i] && old[i] == *name)?;
            taken[at] = true;
            Some(at)
        })
        .collect()
}

/// The table, when the instance is a balancer.
pub fn board() -> Option<&'static UpstreamBoard> {
    BOARD.get()
}

/// The table for a worker to write its counts and states to and read overrides from: `None`
/// once a reload re-laid the rows for a list other than the one this worker was forked with.
pub fn worker_board() -> Option<&'static UpstreamBoard> {
    board().filter(|b| b.list_generation() == LIST_AT_FORK.load(Ordering::Relaxed))
}

/// The configured upstreams' names, in order.
pub fn names() -> Vec<String> {
    NAMES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Every upstream's counters, with the states the live workers of `scoreboard` see.
pub fn counts(scoreboard: &Scoreboard) -> Vec<UpstreamCounts> {
    let Some(board) = board() else { return Vec::new() };
    let live = |slot: usize| {
        slot < scoreboard.capacity() && {
            let s = scoreboard.slot(slot);
            s.pid() > 0 && s.state() != SlotState::Free
        }
    };
    board.counts(&names(), live)
}

#[cfg(test)]
mod tests {
    use super::moves;

    #[test]
    fn rows_follow_their_upstream_by_name_and_duplicates_pair_in_order() {
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (old, new) = (names(&["a", "b", "a", "c"]), names(&["c", "a", "d", "a", "a"]));
        assert_eq!(moves(&old, &new), [Some(3), Some(0), None, Some(2), None]);
    }
}
