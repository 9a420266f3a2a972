//! A worker's event loop: a current-thread tokio runtime built in this (forked) process, the
//! accept loops (`accept.rs`) and the heartbeat spawned on it, and the stop signals — TERM
//! drains gracefully within `graceful_timeout`, INT and QUIT stop at once, USR1 reopens log
//! files; retirement after `max_requests` stops it the same way. The runtime is driven by the
//! worker's thread, except under gthread, whose pool threads take turns driving it
//! (`pool.rs`), and the ASGI class, whose asyncio loop drives it (`server/loop_driver.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ferrocorn_shm::scoreboard::SlotState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, Semaphore, watch};

use super::accept::accept_loop;
use super::app_call::AppContext;
use super::pool::PythonPool;
pub use super::shared::{AsgiBackend, LoopSide, WorkerRuntime};
use super::shared::{Executor, Shared};
use super::shared_listener::{SharedListener, Watching};
use crate::access_log::AccessLog;
use crate::logging::{info, warning};
use crate::options::ServeOptions;
use ferrocorn_net::listen::Listener;

/// How the worker's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// TERM: stopped accepting and let in-flight requests finish.
    Graceful,
    /// INT or QUIT: stopped at once.
    Quick,
}

/// The worker's I/O ended with `outcome`: log a failure and tell the Python loop that runs
/// its app (the asyncio loop, the gevent hub) to stop, gracefully unless it was a quick stop.
pub fn stop_the_loop(bridge: &crate::asgi::Bridge, outcome: &std::io::Result<StopReason>) {
    if let Err(e) = outcome {
        crate::logging::error!("worker failed: {e}");
    }
    bridge.post_stop(!matches!(outcome, Ok(StopReason::Quick)));
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
    opts: ServeOptions,
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
    opts: ServeOptions,
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
        (crate::options::WorkerClass::Balancer, None) => Executor::NoApp,
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
    opts: ServeOptions,
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
    let balancer = match &opts.balance {
        Some(balance) => Some(super::upstreams::start(balance).await?),
        None => None,
    };
    let pool_balancers = super::upstreams::pool_balancers(&opts.routes)?;
    let shared = Arc::new(Shared {
        opts,
        app: Arc::new(app),
        executor,
        app_slot: Semaphore::new(admitted),
        accept_inputs_changed: Notify::new(),
        filled_up: Notify::new(),
        request_ids: AtomicU64::new(0),
        access_log,
        shutdown: stop_rx.clone(),
        stop: stop_tx,
        runtime: runtime_info,
        statsd: statsd_target.and_then(super::statsd::Statsd::connect),
        connections: AtomicUsize::new(0),
        unanswered: AtomicUsize::new(0),
        all_closed: Notify::new(),
        balancer,
        board_seen: Arc::default(),
        pool_balancers,
    });
    if let Some(balancer) = &shared.balancer {
        super::upstreams::spawn_upkeep(&shared, balancer.clone());
    }
    super::upstreams::spawn_pool_upkeep(&shared);
    for (index, listener) in listeners.into_iter().enumerate() {
        // The ASGI class's runtime epoll is nested in the asyncio loop's, where its thread
        // waits: the listeners go into the loop's epoll (`shared_listener.rs`).
        let watching = match &shared.executor {
            Executor::Asgi(backend) => Watching::AsyncioLoop(backend.listener_wake.clone()),
            _ => Watching::Runtime,
        };
        let watched = SharedListener::new(listener, &watching)?;
        shared.spawn(accept_loop(shared.clone(), watched, index));
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    // Those that arrived while the app loaded were only remembered (arbiter's reset_in_child).
    ferrocorn_arbiter::replay_early_signals();
    let heartbeat_shared = shared.clone();
    shared.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            let slot = heartbeat_shared.slot();
            slot.heartbeat();
            let failed = crate::redis_cache::error_count();
            slot.counters().cache().publish_remote_errors(failed);
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
    if shared.balancer.is_some() {
        super::upstreams::leave_probing();
    }
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
