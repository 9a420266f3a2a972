//! The instance's one load-balancer table ([`ferrocorn_shm::upstream_board`]): mapped by the
//! master before the first fork when the instance is a balancer, inherited by its workers,
//! with the names of the configured upstreams the master labels its rows with (the list a
//! HUP loaded last).

use std::sync::{Mutex, OnceLock};

use ferrocorn_metrics::UpstreamCounts;
use ferrocorn_shm::scoreboard::{Scoreboard, SlotState};
use ferrocorn_shm::upstream_board::{MAX_UPSTREAMS, UpstreamBoard};

use crate::logging::warning;

static BOARD: OnceLock<UpstreamBoard> = OnceLock::new();
static NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

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
    if let Some(board) = BOARD.get() {
        board.set_upstream_count(names.len());
    }
    *NAMES.lock().unwrap_or_else(|e| e.into_inner()) = names;
    Ok(())
}

/// The table, when the instance is a balancer.
pub fn board() -> Option<&'static UpstreamBoard> {
    BOARD.get()
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
