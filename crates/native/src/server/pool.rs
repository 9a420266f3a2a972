//! The gthread class's Python threads, and which thread drives the worker's runtime (its
//! sockets and timers). Requests waiting for a thread wait in Rust (this queue, or the worker's
//! admission), never in a Python thread.
//!
//! Leader/follower: one pool thread at a time leads — it runs the runtime (detached from the
//! GIL) until a request is queued, then leaves the lead and runs the queued requests itself,
//! and leads again when they are done. A quick app thus costs no thread hand-off at all: the
//! thread that read a request runs it and sends its answer. While the lead is vacant nobody
//! reads the sockets, so a lead vacant for [`STALE_AFTER`] (the requests turned out slow or
//! blocking) is taken by the spare: the worker's main thread, which has no Python and only
//! leads while the pool threads are busy, and hands the lead back to the first of them that
//! comes free. The heartbeat, deadlines and signals thus never wait for the app.
//!
//! Other threads are woken lazily, because every extra runnable Python thread costs a GIL
//! hand-off (a futex and a context switch) per request: a sleeping thread is woken only when
//! no thread is awake, or when a job has waited [`STALE_AFTER`] while no job started — i.e. the
//! awake threads are blocked (a sleep, a socket) or busy with long requests. A blocking app
//! thus still gets all `--threads`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::asgi::chunk_channel;

/// Work for a pool thread.
pub type Job = Box<dyn FnOnce(Python<'_>) + Send>;

/// A finished job's answer for its connection, handed over by the next leader from inside the
/// runtime ([`deliver`]).
pub type Delivery = Box<dyn FnOnce() + Send>;

/// How long a queued job may wait for an awake thread before a sleeping one is woken for it,
/// and how long the lead may stay vacant before the spare takes it.
pub const STALE_AFTER: Duration = Duration::from_micros(200);

/// Who drives the worker's runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leader {
    /// Nobody since `since`: the last leader left to run requests, or handed the lead back.
    /// `offered`: a sleeping pool thread should wake and take it (a pool thread that left to
    /// run requests comes back for it by itself).
    Vacant { since: Instant, offered: bool },
    /// A pool thread.
    Pool,
    /// The worker's main thread, while the pool threads are busy. `handover_wanted`: a pool
    /// thread came free and wants the lead back.
    Spare { handover_wanted: bool },
}

impl Default for Leader {
    /// At start: vacant, offered to the first pool thread.
    fn default() -> Self {
        Leader::Vacant { since: Instant::now(), offered: true }
    }
}

/// Which thread runs [`Shared::lead`].
#[derive(Clone, Copy)]
enum Role {
    Pool,
    Spare,
}

thread_local! {
    /// On a pool thread: its pool.
    static OWN_POOL: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// Called by a thread about to block until its connection takes what it sent (a full response
/// queue). On a pool thread that left the lead, nobody else would drive that connection until
/// the lead is found vacant, so the spare takes it now.
fn lend_the_lead() {
    OWN_POOL.with_borrow(|pool| {
        if let Some(shared) = pool {
            let mut st = shared.lock();
            if matches!(st.leader, Leader::Vacant { .. }) {
                shared.give_lead_to_spare(&mut st);
            }
        }
    })
}

/// Hand a finished job's answer to its connection. On a pool thread it goes through the
/// leader: the one leading now is told to look; while the lead is vacant, whoever takes it next
/// hands it over (the thread that left it to run this job, when that was quick), from inside
/// the runtime, so the connection is woken without a wake-up of the runtime. Elsewhere (a
/// gevent greenlet) it is handed over at once.
pub fn deliver(delivery: impl FnOnce() + Send + 'static) {
    OWN_POOL.with_borrow(|pool| match pool {
        Some(shared) => {
            let mut st = shared.lock();
            st.deliveries.push(Box::new(delivery));
            if !matches!(st.leader, Leader::Vacant { .. }) {
                shared.wake_lead(&mut st);
            }
        }
        None => delivery(),
    })
}

struct Queued {
    job: Job,
    since: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Threads waiting on `Shared::wake`.
    sleeping: usize,
    /// Wake-ups sent and not yet taken by a sleeping thread.
    wakes_pending: usize,
    /// The monitor waits with no deadline (nothing to watch).
    monitor_parked: bool,
    /// Jobs taken by a thread so far (the monitor's sign of progress).
    started: u64,
    closed: bool,
    /// Who drives the runtime now.
    leader: Leader,
    /// Times a pool leader left to run requests (the monitor's sign of activity).
    lead_exits: u64,
    /// The waker of the leader's [`Shared::lead`] future.
    lead_waker: Option<Waker>,
    /// That waker was woken since it was registered.
    lead_woken: bool,
    /// The worker's main task ended: nobody leads any more.
    finished: bool,
    /// Answers waiting for a leader to hand them over.
    deliveries: Vec<Delivery>,
}

struct Shared {
    state: Mutex<State>,
    /// Sleeping pool threads wait here.
    wake: Condvar,
    /// The monitor waits here.
    monitor: Condvar,
    /// The spare (the worker's main thread) waits here for the lead.
    spare: Condvar,
    /// A deferred submit found no thread awake ([`PythonPool::flush`]).
    wake_wanted: AtomicBool,
    size: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn awake(&self, st: &State) -> usize {
        self.size - st.sleeping + st.wakes_pending
    }

    fn pop(&self, st: &mut State) -> Option<Queued> {
        let queued = st.queue.pop_front();
        st.started += u64::from(queued.is_some());
        queued
    }

    fn wake_one(&self, st: &mut State) {
        st.wakes_pending += 1;
        self.wake.notify_one();
    }

    /// Make the leader's [`Shared::lead`] future look again (once per registration).
    fn wake_lead(&self, st: &mut State) {
        if !st.lead_woken
            && let Some(waker) = &st.lead_waker
        {
            st.lead_woken = true;
            waker.wake_by_ref();
        }
    }

    /// The spare leads from now on (the lead was vacant).
    fn give_lead_to_spare(&self, st: &mut State) {
        if st.finished || st.closed {
            return;
        }
        st.leader = Leader::Spare { handover_wanted: false };
        self.spare.notify_one();
    }

    /// The lead is vacant from now on; `offered` to a sleeping pool thread, which is woken.
    fn vacate(&self, st: &mut State, offered: bool) {
        st.leader = Leader::Vacant { since: Instant::now(), offered };
        if st.monitor_parked {
            self.monitor.notify_one();
        }
        if offered {
            self.wake.notify_one();
        }
    }

    /// What a leader blocks on: the runtime runs the worker's tasks until this ends — for a
    /// pool thread when a request is queued for it, for the spare when a pool thread wants the
    /// lead back, for both when the worker is done.
    /// Each look first hands over the answers waiting in [`State::deliveries`]: from inside
    /// the runtime, waking their connections only queues them.
    fn lead(&self, role: Role) -> impl Future<Output = ()> + '_ {
        let mut handing_over = Vec::new();
        std::future::poll_fn(move |cx| {
            let mut st = self.lock();
            if !st.deliveries.is_empty() {
                std::mem::swap(&mut st.deliveries, &mut handing_over);
                drop(st);
                handing_over.drain(..).for_each(|deliver| deliver());
                st = self.lock();
            }
            let leave = st.finished
                || st.closed
                || match role {
                    Role::Pool => !st.queue.is_empty(),
                    Role::Spare => st.leader == Leader::Spare { handover_wanted: true },
                };
            if leave {
                st.lead_waker = None;
                return Poll::Ready(());
            }
            if !st.lead_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.lead_waker = Some(cx.waker().clone());
            }
            st.lead_woken = false;
            Poll::Pending
        })
    }

    /// A pool thread's life: run queued jobs back to back while attached; when there are
    /// none, lead or sleep (detached).
    fn run_thread(&self, runtime: &Runtime) {
        Python::attach(|py| {
            loop {
                let next = self.pop(&mut self.lock());
                let job = match next {
                    Some(queued) => queued.job,
                    None => match py.detach(|| self.lead_or_sleep(runtime)) {
                        Some(job) => job,
                        None => return, // the pool was dropped or the worker is done
                    },
                };
                job(py);
                // Drops the references the leader released without the GIL (pyo3 defers
                // them to the next attach); this thread may stay attached for a long time.
                Python::attach(|_| {});
            }
        })
    }

    /// Detached, with no job at hand: take the lead when it is vacant and drive the runtime
    /// until a request is queued; otherwise sleep until woken with work or offered the lead.
    /// None once the pool is closed or the worker is done.
    fn lead_or_sleep(&self, runtime: &Runtime) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if let Some(queued) = self.pop(&mut st) {
                return Some(queued.job);
            }
            if st.closed || st.finished {
                return None;
            }
            match st.leader {
                Leader::Vacant { .. } => {
                    st.leader = Leader::Pool;
                    drop(st);
                    runtime.block_on(self.lead(Role::Pool));
                    st = self.lock();
                    if !st.finished {
                        st.lead_exits += 1;
                        self.vacate(&mut st, false);
                    }
                    continue;
                }
                Leader::Spare { handover_wanted: false } => {
                    st.leader = Leader::Spare { handover_wanted: true };
                    self.wake_lead(&mut st);
                }
                _ => {}
            }
            st.sleeping += 1;
            loop {
                st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                let offered = matches!(st.leader, Leader::Vacant { offered: true, .. });
                if st.closed || st.finished || st.wakes_pending > 0 || offered {
                    break;
                }
            }
            st.sleeping -= 1;
            st.wakes_pending = st.wakes_pending.saturating_sub(1);
        }
    }

    /// The spare's life (the worker's main thread): wait until the monitor gives it the lead,
    /// drive the runtime until a pool thread wants the lead back, repeat until the worker is
    /// done.
    fn run_spare(&self, runtime: &Runtime) {
        let mut st = self.lock();
        while !st.finished && !st.closed {
            if !matches!(st.leader, Leader::Spare { .. }) {
                st = self.spare.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            drop(st);
            runtime.block_on(self.lead(Role::Spare));
            st = self.lock();
            if !st.finished {
                self.vacate(&mut st, true);
            }
        }
    }

    /// Wake a sleeping thread when a job has waited [`STALE_AFTER`] and no job started
    /// during the last tick: the awake threads are blocked or busy with long requests (a thread
    /// working through quick jobs starts one every few microseconds, and more threads would
    /// only contend for the GIL). Give the lead to the spare when it has been vacant that long.
    /// While jobs or leaders come and go the monitor ticks every [`STALE_AFTER`]; after a quiet
    /// tick it parks until a submit or a vacated lead finds it parked.
    fn run_monitor(&self) {
        let mut st = self.lock();
        let mut quiet_ticks = 0;
        let mut seen_started = st.started;
        let mut seen_exits = st.lead_exits;
        loop {
            if st.closed || st.finished {
                return;
            }
            let waited = st.queue.front().map(|q| q.since.elapsed());
            let vacant_for = match st.leader {
                Leader::Vacant { since, .. } => Some(since.elapsed()),
                _ => None,
            };
            let active = waited.is_some() || vacant_for.is_some() || st.lead_exits != seen_exits;
            seen_exits = st.lead_exits;
            if !active && quiet_ticks > 0 {
                st.monitor_parked = true;
                st = self.monitor.wait(st).unwrap_or_else(|e| e.into_inner());
                st.monitor_parked = false;
                quiet_ticks = 0;
                seen_started = st.started;
                seen_exits = st.lead_exits;
                continue;
            }
            quiet_ticks = if active { 0 } else { quiet_ticks + 1 };
            if vacant_for.is_some_and(|v| v >= STALE_AFTER) {
                self.give_lead_to_spare(&mut st);
            }
            let progressed = st.started != seen_started;
            seen_started = st.started;
            let can_wake = st.sleeping > st.wakes_pending && st.wakes_pending == 0;
            if can_wake && !progressed && waited.is_some_and(|w| w >= STALE_AFTER) {
                self.wake_one(&mut st);
            }
            st = self.monitor.wait_timeout(st, STALE_AFTER).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// A fixed set of Python threads plus a monitor thread (no Python) that wakes them, and the
/// leadership of the worker's runtime shared between them and the worker's main thread.
pub struct PythonPool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl PythonPool {
    /// A pool of `size` threads; they start with [`PythonPool::run_worker`].
    pub fn new(size: usize) -> PythonPool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            monitor: Condvar::new(),
            spare: Condvar::new(),
            wake_wanted: AtomicBool::new(false),
            size,
        });
        PythonPool { shared, threads: Mutex::new(Vec::new()) }
    }

    /// Start the threads and run the worker on them until its main task `main` ends (see
    /// [`PythonPool::worker_finished`]); the calling thread is the spare leader meanwhile.
    pub fn run_worker<T: Send + 'static>(
        &self,
        runtime: Runtime,
        main: tokio::task::JoinHandle<T>,
    ) -> std::io::Result<Result<T, tokio::task::JoinError>> {
        let runtime = Arc::new(runtime);
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for n in 0..self.shared.size {
            let (shared, runtime) = (self.shared.clone(), runtime.clone());
            threads.push(std::thread::Builder::new().name(format!("ferrocorn-py-{n}")).spawn(
                move || {
                    OWN_POOL.set(Some(shared.clone()));
                    chunk_channel::before_parking_on_this_thread(Some(lend_the_lead));
                    shared.run_thread(&runtime);
                    chunk_channel::before_parking_on_this_thread(None);
                    OWN_POOL.take();
                },
            )?);
        }
        let monitor = self.shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ferrocorn-pool".into())
                .spawn(move || monitor.run_monitor())?,
        );
        drop(threads);
        self.shared.run_spare(&runtime);
        // Nobody leads any more; the main task has ended, so this returns at once.
        Ok(runtime.block_on(main))
    }

    /// The worker's main task ended: every leader leaves, nobody leads again.
    pub fn worker_finished(&self) {
        let mut st = self.shared.lock();
        st.finished = true;
        if let Some(waker) = st.lead_waker.take() {
            waker.wake();
        }
        self.shared.spare.notify_all();
        self.shared.wake.notify_all();
        self.shared.monitor.notify_all();
    }

    /// Queue a job (false when the pool is shut down). A pool thread that leads leaves the lead
    /// to run it. Under the spare, the wake-ups it needs — a thread when none is awake, the
    /// monitor when it is parked — are left to [`PythonPool::flush`]: the spare queues
    /// everything one pass of its loop read and wakes once, when it is about to sleep.
    pub fn submit(&self, job: Job) -> bool {
        let mut st = self.shared.lock();
        if st.closed {
            return false;
        }
        st.queue.push_back(Queued { job, since: Instant::now() });
        if st.leader == Leader::Pool {
            self.shared.wake_lead(&mut st);
        } else if self.shared.awake(&st) == 0 || st.monitor_parked {
            self.shared.wake_wanted.store(true, Ordering::Release);
        }
        true
    }

    /// Send the wake-ups [`PythonPool::submit`] left pending: a thread if none is
    /// awake, and the monitor if it is parked (so that a burst of blocking jobs does not run
    /// one after another on the one awake thread).
    pub fn flush(&self) {
        if !self.shared.wake_wanted.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut st = self.shared.lock();
        if st.queue.is_empty() {
            return;
        }
        if self.shared.awake(&st) == 0 {
            self.shared.wake_one(&mut st);
        }
        if st.monitor_parked {
            self.shared.monitor.notify_one();
        }
    }
}

impl Drop for PythonPool {
    /// Closing the queue lets idle threads end at once. Threads still inside the app are not
    /// waited for: blocking here would stop the worker's heartbeat; the process exits anyway.
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.closed = true;
        st.queue.clear();
        if let Some(waker) = st.lead_waker.take() {
            waker.wake();
        }
        drop(st);
        self.shared.wake.notify_all();
        self.shared.monitor.notify_all();
        self.shared.spare.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    fn counting_job(
        running: &Arc<AtomicUsize>,
        peak: &Arc<AtomicUsize>,
        hold: Duration,
        done: mpsc::Sender<()>,
    ) -> Job {
        let (running, peak) = (running.clone(), peak.clone());
        Box::new(move |py: Python<'_>| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            py.detach(|| std::thread::sleep(hold));
            running.fetch_sub(1, Ordering::SeqCst);
            let _ = done.send(());
        })
    }

    /// A pool of `size` running a worker whose main task ends when the returned sender is
    /// dropped; the join handle yields what `run_worker` returned.
    struct Running {
        pool: Arc<PythonPool>,
        handle: tokio::runtime::Handle,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        worker: Option<std::thread::JoinHandle<&'static str>>,
    }

    impl Running {
        fn start(size: usize) -> Running {
            Python::initialize();
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let pool = Arc::new(PythonPool::new(size));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let finisher = pool.clone();
            let main = runtime.spawn(async move {
                let _ = stopped.await;
                finisher.worker_finished();
                "main ended"
            });
            let handle = runtime.handle().clone();
            let runner = pool.clone();
            let worker =
                std::thread::spawn(move || runner.run_worker(runtime, main).unwrap().unwrap());
            Running { pool, handle, stop: Some(stop), worker: Some(worker) }
        }

        fn leader(&self) -> Leader {
            self.pool.shared.lock().leader
        }

        fn finish(mut self) -> &'static str {
            drop(self.stop.take());
            self.worker.take().unwrap().join().unwrap()
        }
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn blocked_jobs_get_every_thread_and_the_spare_leads_meanwhile() {
        let pool = Running::start(4);
        wait_for("a pool thread to lead", || pool.leader() == Leader::Pool);
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = mpsc::channel();
        for _ in 0..8 {
            let job = counting_job(&running, &peak, Duration::from_millis(300), tx.clone());
            assert!(pool.pool.submit(job));
        }
        pool.pool.flush();
        // Every pool thread is inside the app now; the runtime must still run (timers here).
        wait_for("four jobs running", || running.load(Ordering::SeqCst) == 4);
        let (ticked_tx, ticked_rx) = mpsc::channel();
        pool.handle.spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = ticked_tx.send(());
        });
        ticked_rx.recv_timeout(Duration::from_millis(200)).expect("nobody drove the runtime");
        assert!(matches!(pool.leader(), Leader::Spare { .. }));
        for _ in 0..8 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        // The first thread to come free asked for the lead back.
        wait_for("a pool thread to lead again", || pool.leader() == Leader::Pool);
        assert_eq!(pool.finish(), "main ended");
    }

    #[test]
    fn quick_jobs_all_run_and_the_lead_stays_with_the_pool() {
        let pool = Running::start(4);
        wait_for("a pool thread to lead", || pool.leader() == Leader::Pool);
        let (tx, rx) = mpsc::channel();
        for _ in 0..1000 {
            let tx = tx.clone();
            assert!(pool.pool.submit(Box::new(move |_py: Python<'_>| {
                let _ = tx.send(());
            })));
            pool.pool.flush();
        }
        for _ in 0..1000 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        // Whoever led meanwhile (the spare, when a job took long on a busy box), a pool
        // thread leads once the jobs are done.
        wait_for("a pool thread to lead again", || pool.leader() == Leader::Pool);
        assert_eq!(pool.finish(), "main ended");
    }

    #[test]
    fn dropping_the_pool_closes_the_queue() {
        let pool = PythonPool::new(2);
        let shared = pool.shared.clone();
        drop(pool);
        assert!(shared.lock().closed);
        assert!(
            !PythonPool { shared, threads: Mutex::new(Vec::new()) }
                .submit(Box::new(|_py: Python<'_>| {}))
        );
    }
}
