//! The gthread class's Python threads. Requests waiting for a thread wait in Rust (this
//! queue, or the worker's admission), never in a Python thread.
//!
//! Threads are woken lazily, because every extra runnable Python thread costs a GIL hand-off
//! (a futex and a context switch) per request. A thread that finishes a job takes the next
//! queued one without releasing the GIL; a sleeping thread is woken only when no thread is
//! awake, or when a job has waited [`STALE_AFTER`] while no job started — i.e. the awake
//! threads are blocked (a sleep, a socket) or busy with long requests. A quick app thus runs
//! on one thread at near sync-class cost, while a blocking app still gets all `--threads`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// Work for a pool thread.
pub type Job = Box<dyn FnOnce(Python<'_>) + Send>;

/// How long a queued job may wait for an awake thread before a sleeping one is woken for it.
pub const STALE_AFTER: Duration = Duration::from_micros(200);

struct Queued {
    job: Job,
    since: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Threads waiting on `State::wake`.
    sleeping: usize,
    /// Wake-ups sent and not yet taken by a sleeping thread.
    wakes_pending: usize,
    /// The monitor waits with no deadline (nothing to watch).
    monitor_parked: bool,
    /// Jobs taken by a thread so far (the monitor's sign of progress).
    started: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Sleeping pool threads wait here.
    wake: Condvar,
    /// The monitor waits here.
    monitor: Condvar,
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

    /// A pool thread's life: run queued jobs back to back while attached; sleep (detached)
    /// when there are none.
    fn run_thread(&self) {
        Python::attach(|py| {
            loop {
                let next = self.pop(&mut self.lock());
                let job = match next {
                    Some(queued) => queued.job,
                    None => match py.detach(|| self.sleep_for_job()) {
                        Some(job) => job,
                        None => return, // the pool was dropped
                    },
                };
                job(py);
                // Drops the references the I/O thread released without the GIL (pyo3 defers
                // them to the next attach); this thread may stay attached for a long time.
                Python::attach(|_| {});
            }
        })
    }

    /// Wait (detached) until woken with work; None once the pool is closed.
    fn sleep_for_job(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if let Some(queued) = self.pop(&mut st) {
                return Some(queued.job);
            }
            if st.closed {
                return None;
            }
            st.sleeping += 1;
            loop {
                st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                if st.closed || st.wakes_pending > 0 {
                    break;
                }
            }
            st.sleeping -= 1;
            st.wakes_pending = st.wakes_pending.saturating_sub(1);
        }
    }

    /// Wake a sleeping thread when a job has waited [`STALE_AFTER`] and no job started
    /// during the last tick: the awake threads are blocked or busy with long requests (a thread
    /// working through quick jobs starts one every few microseconds, and more threads would
    /// only contend for the GIL). While jobs flow the monitor ticks every [`STALE_AFTER`];
    /// after a tick with an empty queue it parks until a submit finds it parked.
    fn run_monitor(&self) {
        let mut st = self.lock();
        let mut quiet_ticks = 0;
        let mut seen_started = st.started;
        loop {
            if st.closed {
                return;
            }
            let waited = st.queue.front().map(|q| q.since.elapsed());
            if waited.is_none() && quiet_ticks > 0 {
                st.monitor_parked = true;
                st = self.monitor.wait(st).unwrap_or_else(|e| e.into_inner());
                st.monitor_parked = false;
                quiet_ticks = 0;
                seen_started = st.started;
                continue;
            }
            quiet_ticks = if waited.is_none() { quiet_ticks + 1 } else { 0 };
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

/// A fixed set of Python threads plus a monitor thread (no Python) that wakes them.
pub struct PythonPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl PythonPool {
    /// Start `size` threads.
    pub fn start(size: usize) -> std::io::Result<PythonPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            monitor: Condvar::new(),
            wake_wanted: AtomicBool::new(false),
            size,
        });
        let mut threads = Vec::with_capacity(size + 1);
        for n in 0..size {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ferrocorn-py-{n}"))
                    .spawn(move || shared.run_thread())?,
            );
        }
        let monitor = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ferrocorn-pool".into())
                .spawn(move || monitor.run_monitor())?,
        );
        Ok(PythonPool { shared, threads })
    }

    /// Queue a job (false when the pool is shut down). The wake-ups it needs — a thread when
    /// none is awake, the monitor when it is parked — are left to [`PythonPool::flush`]: the
    /// I/O thread queues everything one pass of its loop read and wakes once, when it is about
    /// to sleep, instead of once per request.
    pub fn submit_deferred(&self, job: Job) -> bool {
        let mut st = self.shared.lock();
        if st.closed {
            return false;
        }
        st.queue.push_back(Queued { job, since: Instant::now() });
        if self.shared.awake(&st) == 0 || st.monitor_parked {
            self.shared.wake_wanted.store(true, Ordering::Release);
        }
        true
    }

    /// Send the wake-ups [`PythonPool::submit_deferred`] left pending: a thread if none is
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
        drop(st);
        self.shared.wake.notify_all();
        self.shared.monitor.notify_all();
        self.threads.clear();
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

    /// Wait until every thread sleeps and the monitor is parked (a pool idle for a while).
    fn wait_until_idle(pool: &PythonPool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = pool.shared.lock();
            if st.sleeping == pool.shared.size && st.monitor_parked {
                return;
            }
            drop(st);
            assert!(Instant::now() < deadline, "the pool never went idle");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn blocked_jobs_get_every_thread() {
        Python::initialize();
        let pool = PythonPool::start(4).unwrap();
        // A burst into an idle pool: all queued before the one deferred wake-up (the I/O thread
        // read them in one pass). The monitor must still find the blocked jobs.
        wait_until_idle(&pool);
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = mpsc::channel();
        for _ in 0..8 {
            assert!(pool.submit_deferred(counting_job(
                &running,
                &peak,
                Duration::from_millis(100),
                tx.clone()
            )));
        }
        pool.flush();
        for _ in 0..8 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn quick_jobs_all_run_and_drop_closes_the_queue() {
        Python::initialize();
        let pool = PythonPool::start(2).unwrap();
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = mpsc::channel();
        for _ in 0..1000 {
            assert!(pool.submit_deferred(counting_job(
                &running,
                &peak,
                Duration::ZERO,
                tx.clone()
            )));
            pool.flush();
        }
        for _ in 0..1000 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) >= 1);
        let shared = pool.shared.clone();
        drop(pool);
        assert!(shared.lock().closed);
    }
}
