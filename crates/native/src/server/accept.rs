//! Taking connections from the listeners the workers share: one accept loop per listener,
//! which waits until the worker could serve another connection, asks the accept policy
//! (`accept_policy.rs`) whether it would take one, waits on the listener only then (an arrival
//! wakes one waiting worker where exclusive wake-ups are set up: `shared_listener.rs`), and
//! otherwise waits for an event that could change the decision (never a polling timer); then
//! it hands the connection, with what its client sent, to the connection driver (`conn/`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferrocorn_shm::scoreboard::{AcceptRecheck, SlotState};

use super::accept_policy::{self, Decision, Weighing, WorkerView};
use super::conn::{Peer, log_accept_error, serve};
use super::shared::{ConnectionLease, Executor, Shared};
use super::shared_listener::{Accepted, AcceptedStream, SharedListener};
use super::sibling_wake::{self, SiblingWaker, Waiting};

/// Whether fewer requests are admitted than the worker runs at once, and fewer new
/// connections wait for their first answer than it could serve at once. A connection that is
/// only waiting for this worker is better left in the kernel's queue, which every idle sibling
/// takes from: so a sync worker holds one unanswered connection at a time, as Gunicorn's sync
/// worker does, and under one connection per request the listener's queue is the workers'
/// shared queue. (Keep-alive connections spread all the same: a connection once answered no
/// longer counts.)
fn could_start_a_request(shared: &Shared) -> bool {
    let concurrency = shared.opts.concurrency();
    shared.admitted() < concurrency && shared.unanswered.load(Ordering::Relaxed) < concurrency
}

/// How long a worker that left a waiting connection to its siblings goes without looking at
/// it again when nothing wakes it and the policy named no deadline. It is woken by its own
/// events and by a sibling taking a connection (`sibling_wake.rs`: a sibling's new count can
/// make this worker's share room for one more); this only covers a change neither reports,
/// such as a sibling that exited. Counted as `ferrocorn_accept_rechecks_total{cause="fallback"}`.
const RECHECK_FALLBACK_MS: u64 = 50;

/// The accept policy's view of this worker and its serving siblings, from the scoreboard.
/// Siblings are the workers of its own pool: only they accept on the same listeners.
fn accept_decision(shared: &Shared) -> Decision {
    let me = shared.runtime.slot;
    let board = &shared.runtime.board;
    let my_pool = board.slot(me).pool();
    let views: Vec<WorkerView> = board
        .slots()
        .filter(|(_, slot)| slot.pool() == my_pool)
        .filter_map(|(index, slot)| {
            let state = slot.state();
            let serving = slot.pid() != 0 && matches!(state, SlotState::Idle | SlotState::Busy);
            (serving || index == me).then(|| WorkerView {
                me: index == me,
                connections: slot.connections_in_use(),
                // A busy slot's heartbeat is refreshed when its current request starts.
                busy_since_ms: (state == SlotState::Busy).then(|| slot.last_heartbeat_ms()),
                recent_request_micros: slot.recent_request_micros(),
            })
        })
        .collect();
    let weighing = match shared.executor {
        Executor::Inline => Weighing::OneAtATime,
        _ => Weighing::Concurrent,
    };
    accept_policy::decide(ferrocorn_shm::monotonic_ms(), weighing, &views)
}

/// Whether this worker may hold one more connection under `worker_connections` (gthread and
/// gevent, as in Gunicorn, and the balancer).
fn below_connection_cap(shared: &Shared) -> bool {
    match shared.opts.worker_class {
        crate::options::WorkerClass::Gthread { .. }
        | crate::options::WorkerClass::Gevent
        | crate::options::WorkerClass::Balancer => {
            (shared.connections.load(Ordering::Relaxed) as u64)
                < shared.opts.worker_connections as u64
        }
        _ => true,
    }
}

/// Whether this worker could serve one more connection: it could start a request and is under
/// its connection cap. Both change only by its own events.
fn could_serve_another(shared: &Shared) -> bool {
    could_start_a_request(shared) && below_connection_cap(shared)
}

/// Wait until [`could_serve_another`].
async fn wait_until_it_could_serve(shared: &Shared) {
    loop {
        let changed = shared.accept_inputs_changed.notified();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        if could_serve_another(shared) {
            return;
        }
        changed.await;
    }
}

/// A connection is waiting and the policy said to leave it to a sibling: wait for what could
/// change that — `changed` (an event of this worker, registered before the decision), the
/// policy's deadline, or the fallback interval — and count which it was.
async fn wait_after_leaving(
    shared: &Shared,
    changed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    sibling_took: Option<&Waiting<'_>>,
    recheck_at_ms: Option<u64>,
) {
    let now = ferrocorn_shm::monotonic_ms();
    let until_deadline = recheck_at_ms.map(|at| at.saturating_sub(now));
    let (wait_ms, cause) = match until_deadline {
        Some(ms) if ms < RECHECK_FALLBACK_MS => (ms, AcceptRecheck::Deadline),
        _ => (RECHECK_FALLBACK_MS, AcceptRecheck::Fallback),
    };
    let sibling_took = async {
        match sibling_took {
            Some(waiting) => waiting.posted().await,
            None => std::future::pending().await,
        }
    };
    let cause = tokio::select! {
        biased;
        _ = changed => AcceptRecheck::Event,
        _ = sibling_took => AcceptRecheck::Event,
        _ = tokio::time::sleep(std::time::Duration::from_millis(wait_ms)) => cause,
    };
    shared.slot().accept_deferred(cause);
}

/// Ask the accept policy whether to take a connection now. When it says to leave it to a
/// sibling, leave the listener's wait queue (`listener`, with exclusive wake-ups), wait for what
/// could change that, and return `Some(true)`: the caller looks again. The worker's own events
/// are listened for before the decision, so one that comes in between is not lost. `None`: the
/// worker stops.
async fn left_to_a_sibling(
    shared: &Shared,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    listener: Option<&mut SharedListener>,
    sibling: Option<&SiblingWaker>,
) -> Option<bool> {
    let changed = shared.accept_inputs_changed.notified();
    let mut changed = std::pin::pin!(changed);
    changed.as_mut().enable();
    let sibling_took = sibling.map(SiblingWaker::register_wait);
    let Decision::Leave { recheck_at_ms } = accept_decision(shared) else {
        return Some(false);
    };
    if let Some(listener) = listener {
        listener.set_waiting(false);
    }
    tokio::select! {
        _ = wait_after_leaving(shared, changed, sibling_took.as_ref(), recheck_at_ms) => Some(true),
        _ = shutdown.wait_for(|stop| *stop) => None,
    }
}

pub(super) async fn accept_loop(shared: Arc<Shared>, mut listener: SharedListener, index: usize) {
    let mut shutdown = shared.shutdown.clone();
    let sibling = SiblingWaker::register();
    loop {
        let exclusive = listener.exclusive();
        // A busy worker does not even look: the connection stays in the kernel queue for an
        // idle sibling.
        if !could_serve_another(&shared) {
            listener.set_waiting(false);
            tokio::select! {
                _ = wait_until_it_could_serve(&shared) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
        if exclusive {
            // Only a worker that would take a connection waits for one: an arrival wakes one
            // waiting worker, and it takes the connection.
            match left_to_a_sibling(&shared, &mut shutdown, Some(&mut listener), sibling.as_ref())
                .await
            {
                None => return,
                Some(true) => continue,
                Some(false) => listener.set_waiting(true),
            }
        }
        let filled_up = shared.filled_up.notified();
        let mut filled_up = std::pin::pin!(filled_up);
        if exclusive {
            filled_up.as_mut().enable();
        }
        let woken = loop {
            tokio::select! {
                ready = listener.readiness() => break Some(ready),
                // A request took the worker's last place while it waits (a gthread worker's
                // threads are all busy; a sync worker writes a response to a slow reader): out
                // of the wait queue, or a woken worker could not take the connection.
                _ = filled_up.as_mut(), if exclusive => {
                    if !could_serve_another(&shared) {
                        break None;
                    }
                    filled_up.set(shared.filled_up.notified());
                    filled_up.as_mut().enable();
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        };
        // Filled up while waiting: out of the wait queue (at the top of the loop).
        let Some(ready) = woken else { continue };
        let accepted = match ready {
            Err(e) => Err(e),
            Ok(ready) => {
                // Woken while the worker filled up (a request started since it began waiting):
                // the connection stays queued; this worker's next wait, or a sibling's joining
                // the queue, reports it again.
                if !could_serve_another(&shared) {
                    continue;
                }
                if !exclusive {
                    // Every watching worker was woken by the arrival: decide now, from the
                    // siblings' state of this moment (time may have passed since the last
                    // look: a sync worker's app ran meanwhile). A connection left stays
                    // readable for the sibling that takes it and for this worker's next look.
                    match left_to_a_sibling(&shared, &mut shutdown, None, sibling.as_ref()).await {
                        None => return,
                        Some(true) => continue,
                        Some(false) => {}
                    }
                }
                // Never take a connection once the worker is stopping: its main task may have
                // counted the connections to drain already, and one taken now would be dropped
                // unanswered with the runtime (the selects above pick a ready branch at random).
                if *shared.shutdown.borrow() {
                    return;
                }
                match ready.try_accept() {
                    Ok(None) => {
                        shared.slot().accept_missed();
                        continue;
                    }
                    Ok(Some(accepted)) => Ok(accepted),
                    Err(e) => Err(e),
                }
            }
        };
        match accepted {
            Ok(Accepted { stream, received }) => {
                let lease = ConnectionLease::new(&shared, !received.is_empty());
                // Its count is published: a sibling that left connections to this worker
                // may take one now.
                sibling_wake::post();
                match stream {
                    // (TCP_NODELAY comes from the listener: `listen.rs`.)
                    AcceptedStream::Tcp(stream, addr) => {
                        let peer = Peer { ip: addr.map(|a| a.ip()), port: addr.map(|a| a.port()) };
                        shared.spawn(serve(lease, stream, peer, index, received));
                    }
                    AcceptedStream::Unix(stream) => {
                        let peer = Peer { ip: None, port: None };
                        shared.spawn(serve(lease, stream, peer, index, received));
                    }
                }
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                log_accept_error(&e);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
