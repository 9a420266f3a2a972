//! How the workers of one instance share client connections, read from the scoreboard.
//! Keep-alive connections stay with the worker that accepted them, so two rules keep the
//! workers evenly loaded (Gunicorn's sync workers get this by closing every connection):
//!
//! - **accepting** ([`may_accept`]): a worker holding more than its fair share (the average
//!   over serving workers, plus one) leaves a new connection to a sibling — except, in the sync
//!   class, when no sibling is idle: a busy sync worker serves nothing until its request ends,
//!   so the connection would wait for it while this worker could serve it at once;
//! - **answering** (sync class, [`ConnectionShare::exceeded`]): a worker holding more than its
//!   share (the average rounded up) answers a kept-alive connection with `Connection: close`;
//!   the client reconnects and the kernel hands the new connection to a worker that is
//!   accepting — an idle one, since a busy sync worker does not accept. This evens out what
//!   the accept rule cannot: connections accepted while the others were busy, or left
//!   unevenly when clients on one worker went away.

use std::cell::Cell;
use std::time::{Duration, Instant};

use ferrocorn_arbiter::{Scoreboard, SlotState};

/// How often the answering rule recomputes the share from the scoreboard (not per response:
/// the scan reads one cache line per slot).
const RECOMPUTE_EVERY: Duration = Duration::from_millis(20);

/// Slots scanned beyond twice the configured worker count (workers added with TTIN, or
/// replacements starting while old workers drain).
const SCAN_SLACK: usize = 16;

/// What the scoreboard says about the serving workers (idle or busy, not booting or retiring).
struct Census {
    /// Their open connections.
    total: u64,
    /// How many there are.
    serving: u64,
    /// How many of them, other than the asking worker, are idle.
    others_idle: u64,
}

fn census(board: &Scoreboard, mine: usize, workers: usize) -> Census {
    let mut census = Census { total: 0, serving: 0, others_idle: 0 };
    let scan = (2 * workers + SCAN_SLACK).min(board.capacity());
    for (index, slot) in board.slots().take(scan) {
        let state = slot.state();
        if slot.pid() > 0 && matches!(state, SlotState::Idle | SlotState::Busy) {
            census.total += slot.open_connections();
            census.serving += 1;
            census.others_idle += u64::from(index != mine && state == SlotState::Idle);
        }
    }
    census
}

/// Whether the worker in slot `mine` may accept one more connection (`sync`: the worker runs
/// one request at a time, so a busy sibling cannot serve at all).
pub fn may_accept(board: &Scoreboard, mine: usize, workers: usize, sync: bool) -> bool {
    let open = board.slot(mine).open_connections();
    if open == 0 {
        return true;
    }
    let c = census(board, mine, workers);
    c.serving <= 1 || (sync && c.others_idle == 0) || open * c.serving <= c.total + c.serving
}

/// One worker's cached view of its share of connections, for the answering rule.
#[derive(Default)]
pub struct ConnectionShare {
    fair: Cell<Option<u64>>,
    computed: Cell<Option<Instant>>,
}

impl ConnectionShare {
    /// Whether the worker in slot `mine` holds more open connections than its share.
    pub fn exceeded(&self, board: &Scoreboard, mine: usize, workers: usize) -> bool {
        let open = board.slot(mine).open_connections();
        if open <= 1 {
            return false;
        }
        let now = Instant::now();
        if self.computed.get().is_none_or(|at| now.duration_since(at) >= RECOMPUTE_EVERY) {
            let c = census(board, mine, workers);
            self.fair.set((c.serving > 1).then(|| c.total.div_ceil(c.serving)));
            self.computed.set(Some(now));
        }
        self.fair.get().is_some_and(|fair| open > fair)
    }
}
