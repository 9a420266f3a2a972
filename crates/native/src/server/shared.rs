//! What every task of one worker shares: the worker's options, app and executor (where the
//! app runs: inline, a thread pool, the asyncio loop, the gevent hub), its admission to the
//! app (one ticket per request it runs at once), its counts of connections and of requests
//! owed an answer, the lease each connection holds on those counts from accept to close, and
//! what it publishes in its scoreboard slot when a request starts or ends (retiring after
//! `max_requests`). The accept loops (`accept.rs`) read these counts; the connection driver
//! (`conn/`) moves them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ferrocorn_shm::scoreboard::{RequestRecord, Scoreboard, Slot, SlotState};
use tokio::sync::{Notify, Semaphore, watch};

use super::app_call::AppContext;
use super::pool::{Job, PythonPool};
use crate::access_log::AccessLog;
use crate::logging::{info, warning};
use crate::options::ServeOptions;
use crate::wsgi::AppWait;

/// State shared by every connection of one worker (used by one thread at a time: the one
/// driving the runtime).
pub struct Shared {
    /// Server options.
    pub opts: ServeOptions,
    /// The app, hooks and `worker` object (shared with pool threads).
    pub app: Arc<AppContext>,
    /// Where the app runs.
    pub executor: Executor,
    /// One permit per request the worker admits at once (`ServeOptions::admitted`); take it
    /// with [`Shared::enter_app`].
    pub(super) app_slot: Semaphore,
    /// Signalled when something this worker's accept decision depends on changes: a ticket is
    /// returned, a connection starts closing or closes.
    pub(super) accept_inputs_changed: Notify,
    /// Signalled when a request takes the last of the requests the worker runs at once.
    pub(super) filled_up: Notify,
    /// The last request id handed out ([`Shared::next_request_id`]).
    pub(super) request_ids: AtomicU64,
    /// The access log, when enabled.
    pub access_log: Option<AccessLog>,
    /// Becomes true when a graceful stop begins.
    pub shutdown: watch::Receiver<bool>,
    /// Sends the graceful stop (signal, or retirement after `max_requests`).
    pub(super) stop: watch::Sender<bool>,
    /// This worker's scoreboard, hooks and identity.
    pub runtime: WorkerRuntime,
    pub(super) statsd: Option<super::statsd::Statsd>,
    pub(super) connections: AtomicUsize,
    /// Connections whose first request came with them and is not answered yet, with no wait
    /// for their client in between ([`ConnectionLease`]).
    pub(super) unanswered: AtomicUsize,
    pub(super) all_closed: Notify,
    /// A load balancer's upstream group, pool and settings (the balancer class only).
    pub balancer: Option<Arc<ferrocorn_proxy::Balancer>>,
    /// The generations of the shared upstream table this worker took in last (checked at
    /// each request and by the balancer's 250 ms upkeep).
    pub board_seen: Arc<BoardSeen>,
    /// A `/` pool worker's way to each other worker pool (`opts.routes`, same order).
    pub pool_balancers: Vec<Arc<ferrocorn_proxy::Balancer>>,
}

/// The generations of the shared upstream table a balancer worker took in last.
#[derive(Debug, Default)]
pub struct BoardSeen {
    /// The operator's overrides (`ferrocorn ctl upstreams`).
    pub overrides: AtomicU64,
    /// The prober's health verdicts.
    pub health: AtomicU64,
}

/// Where a worker runs its app.
pub enum Executor {
    /// On this (event-loop) thread: the sync class.
    Inline,
    /// On a pool of Python threads: gthread.
    Pool(Arc<PythonPool>),
    /// On the asyncio loop of the main thread: the ASGI class.
    Asgi(AsgiBackend),
    /// In greenlets on the gevent hub of the main thread: the gevent class.
    Hub(Arc<crate::asgi::Bridge>),
    /// Nowhere: a load balancer's worker, whose requests go to its upstreams
    /// ([`Shared::balancer`]) without entering Python.
    NoApp,
}

impl Executor {
    /// How the app's side of this class waits for the server (a client socket, a full
    /// response channel): gevent's greenlets yield to the hub, every other class parks a thread.
    pub fn app_wait(&self) -> AppWait {
        match self {
            Executor::Hub(_) => AppWait::Greenlet,
            _ => AppWait::Thread,
        }
    }

    /// The gthread pool, for that class.
    pub(super) fn pool(&self) -> Option<Arc<PythonPool>> {
        match self {
            Executor::Pool(pool) => Some(pool.clone()),
            _ => None,
        }
    }

    /// The gevent hub's bridge (wakes greenlets waiting for the server), for that class.
    pub fn hub_bridge(&self) -> Option<Arc<crate::asgi::Bridge>> {
        match self {
            Executor::Hub(bridge) => Some(bridge.clone()),
            _ => None,
        }
    }

    /// Hand `job` to the Python side that runs apps apart from the sockets: the gthread pool or
    /// the gevent hub. `Ok(false)`: the pool is shut down (the job is dropped); `Err(job)`:
    /// this class runs the app on the calling thread (sync) or through its own loop glue
    /// (asgi), so the caller runs it.
    pub fn submit(&self, job: Job) -> Result<bool, Job> {
        match self {
            Executor::Pool(pool) => Ok(pool.submit(job)),
            Executor::Hub(bridge) => {
                // Posted at once, not deferred to the I/O thread's park: gevent apps wait on
                // I/O and the hub is usually asleep, so a deferred wake-up only made the hub
                // sleep more often (measured: 56 -> 42 us CPU per request, 20 ms app).
                bridge.post(crate::asgi::Event::Wsgi(crate::asgi::HubJob::new(job)));
                Ok(true)
            }
            Executor::Inline | Executor::Asgi(_) | Executor::NoApp => Err(job),
        }
    }
}

/// The Python loop a worker's requests go to, for the classes whose app runs on one.
pub enum LoopSide {
    /// The ASGI class's asyncio loop.
    Asgi(AsgiBackend),
    /// The gevent class's hub.
    Hub(Arc<crate::asgi::Bridge>),
}

/// What connections need to hand requests to the ASGI loop.
pub struct AsgiBackend {
    /// The queue to the loop thread.
    pub bridge: Arc<crate::asgi::Bridge>,
    /// ASGI `root_path`.
    pub root_path: String,
    /// Per listener: the scope's `server` (host, port).
    pub servers: Vec<(String, Option<u16>)>,
    /// The descriptor the asyncio loop watches for the worker's listeners.
    pub listener_wake: Arc<super::exclusive_wake::LoopListenerWake>,
}

/// What a forked worker knows about itself and its master.
pub struct WorkerRuntime {
    /// The shared scoreboard.
    pub board: Arc<Scoreboard>,
    /// This worker's slot in it.
    pub slot: usize,
    /// Retire after this many requests (0 = never), jitter already applied.
    pub max_requests: u64,
}

impl Shared {
    /// Spawn one of the worker's tasks: on the LocalSet, except under gthread, whose runtime is
    /// driven by whichever pool thread leads (so its tasks must be able to move between
    /// threads).
    pub(super) fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) {
        match self.executor {
            Executor::Pool(_) => drop(tokio::spawn(task)),
            _ => drop(tokio::task::spawn_local(task)),
        }
    }

    pub(super) fn slot(&self) -> &Slot {
        self.runtime.board.slot(self.runtime.slot)
    }

    /// A fresh id for a request of this worker (names its task to the loop glue).
    pub fn next_request_id(&self) -> u64 {
        self.request_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Wait for admission to the app (requests beyond it wait here, in Rust); None when the
    /// worker is shutting down its slot.
    pub async fn enter_app(&self) -> Option<AppTicket<'_>> {
        let permit = self.app_slot.acquire().await.ok()?;
        // A sync worker runs its app on the thread that would wait in the listener's wait
        // queue: it is out of it by itself, until it waits for a client (`waiting_for_client`).
        if !matches!(self.executor, Executor::Inline) {
            self.tell_if_full();
        }
        Some(AppTicket { _permit: permit, shared: self })
    }

    /// A request of this worker is about to wait for its client (a response write that could
    /// not finish at once).
    pub(super) fn waiting_for_client(&self) {
        self.tell_if_full();
    }

    /// If the worker can start no more requests, tell its accept loops: a worker that waits in
    /// the listener's wait queue while full would be woken for a connection it cannot take
    /// (`accept.rs`).
    fn tell_if_full(&self) {
        if self.admitted() >= self.opts.concurrency() {
            self.filled_up.notify_waiters();
        }
    }

    /// Requests admitted now (tickets held).
    pub(super) fn admitted(&self) -> usize {
        self.opts.admitted() - self.app_slot.available_permits()
    }

    /// A request is about to run.
    pub fn request_started(&self) {
        let slot = self.slot();
        slot.request_started();
        if slot.state() != SlotState::Retiring {
            slot.set_state(SlotState::Busy);
        }
    }

    /// A request outlived the per-request deadline on a class whose app cannot be interrupted
    /// (a Python thread, a greenlet, a loop task): stop taking work and let the master replace
    /// this worker once its other requests are done.
    pub fn retire_after_deadline(&self) {
        let slot = self.slot();
        if slot.state() != SlotState::Retiring {
            warning!(
                "Recycling this worker: a request could not be interrupted after its deadline"
            );
            slot.set_state(SlotState::Retiring);
            let _ = self.stop.send(true);
        }
    }

    /// A request finished (`record` says how, when a response was produced); retires the
    /// worker when its quota is reached.
    pub fn request_finished(&self, record: Option<RequestRecord>, app_failed: bool) {
        let slot = self.slot();
        slot.request_finished();
        if let Some(record) = record {
            slot.record(record);
            if let Some(statsd) = &self.statsd {
                statsd.request(record);
            }
        }
        if app_failed {
            slot.record_exception();
        }
        let served = slot.requests();
        let max = self.runtime.max_requests;
        if max > 0 && served >= max && slot.state() != SlotState::Retiring {
            info!("Autorestarting worker after current request.");
            slot.set_state(SlotState::Retiring);
            let _ = self.stop.send(true);
        } else if slot.state() != SlotState::Retiring && slot.in_flight() == 0 {
            slot.set_state(SlotState::Idle);
        }
    }
}

/// A connection's place in its worker's counts (the worker's own, and its scoreboard slot's,
/// which the siblings' accept decisions read), held from accept to close.
pub struct ConnectionLease {
    shared: Arc<Shared>,
    /// Counted in [`Shared::unanswered`]: its first request came with the connection and is
    /// not answered yet, with no wait for its client in between, so the worker owes it work
    /// now. A client still sending (a slowloris head, a slow upload) is the client's wait, not
    /// the worker's, and must not stop the worker from accepting.
    owed: bool,
    /// Its last response is written ([`Self::closing`]): it no longer counts as in use.
    closing: bool,
}

impl ConnectionLease {
    /// A connection just accepted; `request_sent`: its client has sent bytes already.
    pub(super) fn new(shared: &Arc<Shared>, request_sent: bool) -> Self {
        shared.connections.fetch_add(1, Ordering::Relaxed);
        shared.slot().connection_opened();
        if request_sent {
            shared.unanswered.fetch_add(1, Ordering::Relaxed);
        }
        ConnectionLease { shared: shared.clone(), owed: request_sent, closing: false }
    }

    /// The worker the connection belongs to.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The first request was answered (or failed), or the connection has to wait for its
    /// client: it no longer counts as work the worker owes.
    pub fn not_owed(&mut self) {
        if self.owed {
            self.owed = false;
            self.shared.unanswered.fetch_sub(1, Ordering::Relaxed);
            self.shared.accept_inputs_changed.notify_waiters();
        }
    }

    /// The connection will carry no more requests (its last response is written; it only
    /// waits for the client's side to close): it stops counting toward the worker's share.
    pub fn closing(&mut self) {
        self.not_owed();
        if !self.closing {
            self.closing = true;
            self.shared.slot().connection_closing();
            self.shared.accept_inputs_changed.notify_waiters();
        }
    }
}

impl Drop for ConnectionLease {
    fn drop(&mut self) {
        if self.owed {
            self.shared.unanswered.fetch_sub(1, Ordering::Relaxed);
        }
        self.shared.slot().connection_closed(self.closing);
        let left = self.shared.connections.fetch_sub(1, Ordering::Relaxed) - 1;
        self.shared.accept_inputs_changed.notify_waiters();
        if left == 0 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

/// A request's admission to the app (see [`Shared::enter_app`]); returned on drop.
pub struct AppTicket<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    shared: &'a Shared,
}

impl Drop for AppTicket<'_> {
    fn drop(&mut self) {
        // The permit goes back to the semaphore right after this (field drop order), before
        // any waiter runs: this thread drives the runtime.
        self.shared.accept_inputs_changed.notify_waiters();
    }
}
