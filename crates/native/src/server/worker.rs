//! A worker's event loop: a current-thread tokio runtime built in this (forked) process, an
//! accept loop per listener (which asks `accept_policy` whether to take a waiting connection
//! and waits for events, never a polling timer, when told to leave it), the lease each
//! connection holds on the worker's counts, the per-worker app slot that makes a sync worker
//! run one request at a time (and stop accepting while busy), the heartbeat and state it
//! publishes in its
//! scoreboard slot, retirement after `max_requests`, and stop signals — TERM drains gracefully
//! within `graceful_timeout`, INT and QUIT stop at once, USR1 reopens log files. The runtime is
//! driven by the worker's thread, except under gthread, whose pool threads take turns driving
//! it (`pool.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ferrocorn_arbiter::{AcceptRecheck, RequestRecord, Scoreboard, Slot, SlotState};

use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, Semaphore, watch};

use super::accept_policy::{self, Decision, Weighing, WorkerView};
use super::app_call::AppContext;
use super::conn::{Peer, log_accept_error, serve};
use super::pool::{Job, PythonPool};
use crate::access_log::AccessLog;
use crate::listen::Listener;
use crate::logging::{info, warning};
use crate::options::ServerOptions;
use crate::wsgi::AppWait;

/// State shared by every connection of one worker (used by one thread at a time: the one
/// driving the runtime).
pub struct Shared {
    /// Server options.
    pub opts: ServerOptions,
    /// The app, hooks and `worker` object (shared with pool threads).
    pub app: Arc<AppContext>,
    /// Where the app runs.
    pub executor: Executor,
    /// One permit per request the worker admits at once (`ServerOptions::admitted`); take it
    /// with [`Shared::enter_app`].
    app_slot: Semaphore,
    /// Signalled when something this worker's accept decision depends on changes: a ticket is
    /// returned, a connection starts closing or closes.
    accept_inputs_changed: Notify,
    /// The last request id handed out ([`Shared::next_request_id`]).
    request_ids: AtomicU64,
    /// The access log, when enabled.
    pub access_log: Option<AccessLog>,
    /// Becomes true when a graceful stop begins.
    pub shutdown: watch::Receiver<bool>,
    /// Sends the graceful stop (signal, or retirement after `max_requests`).
    stop: watch::Sender<bool>,
    /// This worker's scoreboard, hooks and identity.
    pub runtime: WorkerRuntime,
    statsd: Option<super::statsd::Statsd>,
    connections: AtomicUsize,
    /// Connections whose first request came with them and is not answered yet, with no wait
    /// for their client in between ([`ConnectionLease`]).
    unanswered: AtomicUsize,
    all_closed: Notify,
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
    fn pool(&self) -> Option<Arc<PythonPool>> {
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
            Executor::Inline | Executor::Asgi(_) => Err(job),
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
    fn slot(&self) -> &Slot {
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
        Some(AppTicket { _permit: permit, shared: self })
    }

    /// Requests admitted now (tickets held).
    fn admitted(&self) -> usize {
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
    fn new(shared: &Arc<Shared>, request_sent: bool) -> Self {
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

/// A listening socket shared with the sibling workers. It is watched for readiness, not
/// accepted on blindly: the worker decides whether to take a waiting connection when one is
/// there, from the siblings' state of that moment. (A sync worker that passed the check, then
/// ran a long request while parked in `accept`, used to take the connection that arrived
/// meanwhile, and its requests waited behind the long ones.)
struct SharedListener {
    socket: AsyncFd<Socket>,
    unix: bool,
}

impl SharedListener {
    /// Watch `listener` (the worker's own duplicate of the shared socket).
    fn new(listener: Listener) -> std::io::Result<Self> {
        let unix = matches!(listener.addr, crate::listen::BoundAddr::Unix(_));
        let socket = listener.socket;
        socket.set_nonblocking(true)?;
        // SAFETY: `socket` is an open descriptor (the worker's duplicate of the listener) that
        // the AsyncFd owns from here on; `Socket::as_raw_fd` always returns that same descriptor.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
        Ok(SharedListener { socket, unix })
    }

    /// Take a waiting connection, if there still is one (`Ok(None)`: a sibling was quicker).
    fn try_accept(
        &self,
        ready: &mut AsyncFdReadyGuard<'_, Socket>,
    ) -> std::io::Result<Option<Accepted>> {
        // Non-blocking from the start: no fcntl calls per connection.
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let (socket, addr) = match ready.try_io(|fd| fd.get_ref().accept4(flags)) {
            Ok(accepted) => accepted?,
            Err(_would_block) => return Ok(None),
        };
        let received = read_waiting(&socket);
        let stream = if self.unix {
            let stream = std::os::unix::net::UnixStream::from(socket);
            AcceptedStream::Unix(tokio::net::UnixStream::from_std(stream)?)
        } else {
            let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(socket))?;
            AcceptedStream::Tcp(stream, addr.as_socket())
        };
        Ok(Some(Accepted { stream, received }))
    }
}

/// What the client sent with its connection so far (usually its whole first request), read
/// without waiting: the connection's first read, done here so the worker knows whether a
/// request came before it decides on the next connection. Empty when nothing came yet, or when
/// the socket failed (its next read says how).
fn read_waiting(socket: &Socket) -> Vec<u8> {
    let mut received = Vec::with_capacity(super::conn::READ_CHUNK);
    if let Ok(n) = socket.recv(received.spare_capacity_mut()) {
        // SAFETY: `recv` initialized the first `n` bytes of the spare capacity it was given.
        unsafe { received.set_len(n) };
    }
    received
}

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

/// How long a worker that left a waiting connection to its siblings goes without looking at
/// it again when nothing of its own happens and the policy named no deadline. Siblings publish
/// their changes in the scoreboard without an event this worker could wait on; the rules make
/// the sibling that should take the connection take it (it is woken by the connection's
/// arrival, or comes back to the listener after its own request), so this only covers a change
/// the rules cannot foresee, such as a sibling that exited. Counted as
/// `ferrocorn_accept_rechecks_total{cause="fallback"}`; never on the path of a short
/// connection, which the events cover.
const RECHECK_FALLBACK_MS: u64 = 50;

/// The accept policy's view of this worker and its serving siblings, from the scoreboard.
fn accept_decision(shared: &Shared) -> Decision {
    let me = shared.runtime.slot;
    let views: Vec<WorkerView> = shared
        .runtime
        .board
        .slots()
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
    accept_policy::decide(ferrocorn_arbiter::monotonic_ms(), weighing, &views)
}

/// Whether this worker may hold one more connection under `worker_connections` (gthread and
/// gevent only, as in Gunicorn).
fn below_connection_cap(shared: &Shared) -> bool {
    match shared.opts.worker_class {
        crate::options::WorkerClass::Gthread { .. } | crate::options::WorkerClass::Gevent => {
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
    recheck_at_ms: Option<u64>,
) {
    let now = ferrocorn_arbiter::monotonic_ms();
    let until_deadline = recheck_at_ms.map(|at| at.saturating_sub(now));
    let (wait_ms, cause) = match until_deadline {
        Some(ms) if ms < RECHECK_FALLBACK_MS => (ms, AcceptRecheck::Deadline),
        _ => (RECHECK_FALLBACK_MS, AcceptRecheck::Fallback),
    };
    let cause = tokio::select! {
        biased;
        _ = changed => AcceptRecheck::Event,
        _ = tokio::time::sleep(std::time::Duration::from_millis(wait_ms)) => cause,
    };
    shared.slot().accept_deferred(cause);
}

async fn accept_loop(shared: Arc<Shared>, listener: SharedListener, index: usize) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        // A busy worker does not even look: the connection stays in the kernel queue for an
        // idle sibling.
        tokio::select! {
            _ = wait_until_it_could_serve(&shared) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let ready = tokio::select! {
            ready = listener.socket.readable() => ready,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        // A connection is there: decide now, from the siblings' state of this moment (time may
        // have passed since the last look: a sync worker's app ran meanwhile).
        let accepted = match ready {
            Ok(mut ready) => {
                if !could_serve_another(&shared) {
                    continue;
                }
                let changed = shared.accept_inputs_changed.notified();
                let mut changed = std::pin::pin!(changed);
                changed.as_mut().enable();
                if let Decision::Leave { recheck_at_ms } = accept_decision(&shared) {
                    // The connection stays readable for the sibling that takes it (every
                    // worker watching the listener was woken by its arrival) and for this
                    // worker's next look.
                    drop(ready);
                    tokio::select! {
                        _ = wait_after_leaving(&shared, changed, recheck_at_ms) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                    continue;
                }
                // Never take a connection once the worker is stopping: its main task may have
                // counted the connections to drain already, and one taken now would be dropped
                // unanswered with the runtime (the selects above pick a ready branch at random).
                if *shared.shutdown.borrow() {
                    return;
                }
                match listener.try_accept(&mut ready) {
                    Ok(None) => {
                        shared.slot().accept_missed();
                        continue;
                    }
                    Ok(Some(accepted)) => Ok(accepted),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match accepted {
            Ok(Accepted { stream, received }) => {
                let lease = ConnectionLease::new(&shared, !received.is_empty());
                match stream {
                    // (TCP_NODELAY comes from the listener: `listen.rs`.)
                    AcceptedStream::Tcp(stream, addr) => {
                        let peer = Peer { ip: addr.map(|a| a.ip()), port: addr.map(|a| a.port()) };
                        spawn_task(&shared, serve(lease, stream, peer, index, received));
                    }
                    AcceptedStream::Unix(stream) => {
                        let peer = Peer { ip: None, port: None };
                        spawn_task(&shared, serve(lease, stream, peer, index, received));
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

/// Spawn one of the worker's tasks: on the LocalSet, except under gthread, whose runtime is
/// driven by whichever pool thread leads (so its tasks must be able to move between threads).
fn spawn_task<F: std::future::Future<Output = ()> + Send + 'static>(shared: &Shared, task: F) {
    match shared.executor {
        Executor::Pool(_) => drop(tokio::spawn(task)),
        _ => drop(tokio::task::spawn_local(task)),
    }
}

/// A connection just accepted, with what its client had sent by then.
struct Accepted {
    stream: AcceptedStream,
    received: Vec<u8>,
}

enum AcceptedStream {
    /// A TCP connection and the peer's address.
    Tcp(tokio::net::TcpStream, Option<std::net::SocketAddr>),
    Unix(tokio::net::UnixStream),
}

/// How the worker's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// TERM: stopped accepting and let in-flight requests finish.
    Graceful,
    /// INT or QUIT: stopped at once.
    Quick,
}

/// A worker's runtime with its main task spawned but not yet driven: [`run`] blocks on it;
/// the ASGI class drives it from its asyncio loop instead (`crate::asgi::driver`).
pub struct WorkerLoop {
    /// The worker's current-thread runtime.
    pub runtime: tokio::runtime::Runtime,
    /// Where the worker's tasks (accept loops, connections) run.
    pub local: tokio::task::LocalSet,
    /// The worker's main task: it ends when the worker stops.
    pub main: tokio::task::JoinHandle<std::io::Result<StopReason>>,
    /// gthread: the pool whose threads take turns driving the runtime (its tasks are plain
    /// tasks, not the LocalSet's).
    pub pool: Option<Arc<PythonPool>>,
}

impl WorkerLoop {
    /// The main task's outcome once it has ended (a panic becomes an error).
    pub fn outcome(
        joined: Result<std::io::Result<StopReason>, tokio::task::JoinError>,
    ) -> std::io::Result<StopReason> {
        joined.unwrap_or_else(|e| {
            Err(std::io::Error::other(format!("the worker's loop failed: {e}")))
        })
    }
}

/// Run the worker until a stop signal. Builds its own runtime (never in a process that will fork).
pub fn run(
    opts: ServerOptions,
    app: AppContext,
    listeners: &[Listener],
    access_log: Option<AccessLog>,
    runtime_info: WorkerRuntime,
    loop_side: Option<LoopSide>,
) -> std::io::Result<StopReason> {
    let listeners = listeners.iter().map(Listener::try_clone).collect::<std::io::Result<_>>()?;
    let worker = build(opts, app, listeners, access_log, runtime_info, loop_side)?;
    let joined = match worker.pool {
        Some(pool) => pool.run_worker(worker.runtime, worker.main)?,
        None => worker.local.block_on(&worker.runtime, worker.main),
    };
    WorkerLoop::outcome(joined)
}

/// Build the worker's runtime and spawn its main task, without running anything yet.
pub fn build(
    opts: ServerOptions,
    app: AppContext,
    listeners: Vec<Listener>,
    access_log: Option<AccessLog>,
    runtime_info: WorkerRuntime,
    loop_side: Option<LoopSide>,
) -> std::io::Result<WorkerLoop> {
    let executor = match (opts.worker_class, loop_side) {
        (_, Some(LoopSide::Asgi(backend))) => Executor::Asgi(backend),
        (_, Some(LoopSide::Hub(bridge))) => Executor::Hub(bridge),
        (crate::options::WorkerClass::Gthread { threads }, None) => {
            Executor::Pool(Arc::new(PythonPool::new(threads)))
        }
        _ => Executor::Inline,
    };
    let mut builder = tokio::runtime::Builder::new_current_thread();
    // gthread's requests are handed over with deferred wake-ups; one goes out before the
    // thread sleeps. (The gevent hub is woken at each post; the ASGI loop drains its bridge
    // after every drive.)
    if let Executor::Pool(pool) = &executor {
        let pool = pool.clone();
        builder.on_thread_park(move || pool.flush());
    }
    let runtime = builder.enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let pool = executor.pool();
    let worker = worker_main(opts, app, executor, listeners, access_log, runtime_info);
    let main = match &pool {
        // Driven by whichever thread leads (`PythonPool::run_worker`): a plain task.
        Some(pool) => {
            let finished = FinishOnDrop(pool.clone());
            runtime.spawn(async move {
                let _finished = finished;
                worker.await
            })
        }
        None => local.spawn_local(worker),
    };
    Ok(WorkerLoop { runtime, local, main, pool })
}

/// Tells the gthread pool the worker's main task is over when it ends — also by a panic, so
/// the threads stop leading and [`run`] returns instead of waiting forever.
struct FinishOnDrop(Arc<PythonPool>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.worker_finished();
    }
}

/// The worker's life: accept loops, heartbeat, and the stop signals; returns how it stopped.
async fn worker_main(
    opts: ServerOptions,
    app: AppContext,
    executor: Executor,
    listeners: Vec<Listener>,
    access_log: Option<AccessLog>,
    runtime_info: WorkerRuntime,
) -> std::io::Result<StopReason> {
    let statsd_target = opts.statsd.clone();
    let admitted = opts.admitted();
    let (stop_tx, stop_rx) = watch::channel(false);
    let graceful_timeout = opts.graceful_timeout;
    let shared = Arc::new(Shared {
        opts,
        app: Arc::new(app),
        executor,
        app_slot: Semaphore::new(admitted),
        accept_inputs_changed: Notify::new(),
        request_ids: AtomicU64::new(0),
        access_log,
        shutdown: stop_rx.clone(),
        stop: stop_tx,
        runtime: runtime_info,
        statsd: statsd_target.and_then(super::statsd::Statsd::connect),
        connections: AtomicUsize::new(0),
        unanswered: AtomicUsize::new(0),
        all_closed: Notify::new(),
    });
    for (index, listener) in listeners.into_iter().enumerate() {
        let watched = SharedListener::new(listener)?;
        spawn_task(&shared, accept_loop(shared.clone(), watched, index));
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    // Those that arrived while the app loaded were only remembered (arbiter's reset_in_child).
    ferrocorn_arbiter::replay_early_signals();
    let heartbeat_shared = shared.clone();
    spawn_task(&shared, async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            heartbeat_shared.slot().heartbeat();
        }
    });
    let mut retire = stop_rx;
    let reason = loop {
        tokio::select! {
            _ = retire.wait_for(|stop| *stop) => break StopReason::Graceful,
            _ = term.recv() => { info!("Handling signal: term"); break StopReason::Graceful; }
            _ = int.recv() => { info!("Handling signal: int"); break StopReason::Quick; }
            _ = quit.recv() => { info!("Handling signal: quit"); break StopReason::Quick; }
            _ = usr1.recv() => {
                info!("Handling signal: usr1");
                if let Err(e) = crate::logging::reopen() { warning!("cannot reopen the error log: {e}"); }
                if let Some(log) = &shared.access_log
                    && let Err(e) = log.reopen() { warning!("cannot reopen the access log: {e}"); }
            }
        }
    };
    let _ = shared.stop.send(true);
    shared.slot().set_state(SlotState::Retiring);
    // Registered before the count is read, so a last connection closing in between is seen.
    let drained = shared.all_closed.notified();
    let mut drained = std::pin::pin!(drained);
    drained.as_mut().enable();
    if reason == StopReason::Graceful
        && shared.connections.load(Ordering::Relaxed) > 0
        && tokio::time::timeout(graceful_timeout, drained).await.is_err()
    {
        warning!(
            "graceful timeout reached with {} connection(s) still open",
            shared.connections.load(Ordering::Relaxed)
        );
    }
    Ok(reason)
}
