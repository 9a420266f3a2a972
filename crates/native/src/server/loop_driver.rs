//! The ASGI class's sockets served from its asyncio loop thread: the worker's tokio runtime is
//! driven by the loop instead of by a thread of its own, so a request costs no hand-off between
//! threads. The loop watches two descriptors and calls [`LoopDriver::drive`] when either is
//! readable: the runtime's epoll descriptor (a socket, a signal, or a wake-up from Python is
//! pending) and a periodic timerfd (tokio's timers: keep-alive, deadlines, the heartbeat).
//! A drive runs the runtime's tasks and looks at its sockets and timers without waiting, until
//! a look finds nothing new; then the loop runs Python again.
//!
//! This leans on the current-thread scheduler of tokio 1.54 (the workspace's minimum): a
//! wake-up deferred by `yield_now` makes `block_on` poll the driver without blocking, and a
//! task woken from inside the runtime does not write the driver's eventfd (so a drive leaves
//! the epoll descriptor quiet unless a socket, a signal or Python woke something).
//!
//! Also here: [`IoStarter`], which the loop glue calls once lifespan startup has completed to
//! start the worker's I/O, on the loop (ASGI: it returns the driver) or on a thread (gevent).

use std::collections::HashSet;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::prelude::*;

use crate::asgi::Bridge;
use crate::server::exclusive_wake::LoopListenerWake;
use crate::server::worker::WorkerLoop;
use crate::timer_fd::TimerFd;

/// How often the loop drives the runtime when nothing else does, so its timers fire: at most
/// this late (they are all seconds long: keep-alive, header and request timeouts, graceful
/// stop; the heartbeat is every 500 ms). Tokio does not tell when its next timer is due, and a
/// tick costs an idle worker ~90 µs of CPU (5 ms ticks: 1.9 % of a core; 50 ms: 0.2 %).
const TIMER_TICK: Duration = Duration::from_millis(50);

/// Rounds (run tasks, then look at sockets and timers) in one drive before the loop gets a turn.
const MAX_ROUNDS: u32 = 8;

/// The waker the worker's tasks wake the runtime through: it notes the wake-up, so a drive
/// knows whether its last look at the sockets found work, and passes it on to the runtime.
struct TaskWake {
    woken: AtomicBool,
    runtime: OnceLock<Waker>,
}

impl Wake for TaskWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(runtime) = self.runtime.get() {
            runtime.wake_by_ref();
        }
    }
}

/// One drive: polled by the runtime's `block_on`; ready when a look at the sockets and timers
/// woke no task (false) or after [`MAX_ROUNDS`] rounds (true: work remains).
struct Drive<'a, F> {
    tasks: Pin<&'a mut F>,
    wake: &'a Arc<TaskWake>,
    waker: &'a Waker,
    rounds: u32,
}

impl<F: Future> Future for Drive<'_, F> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        this.wake.runtime.get_or_init(|| cx.waker().clone());
        let woken_since_last_look = this.wake.woken.swap(false, Ordering::AcqRel);
        // Run the queued tasks (the LocalSet registers `waker`, so the next wake-up is noted).
        let _ = this.tasks.as_mut().poll(&mut Context::from_waker(this.waker));
        let tasks_left = this.wake.woken.load(Ordering::Acquire);
        if this.rounds > 0 && !woken_since_last_look && !tasks_left {
            return Poll::Ready(false);
        }
        if this.rounds == MAX_ROUNDS {
            return Poll::Ready(true);
        }
        this.rounds += 1;
        // A deferred wake-up: the runtime polls its driver without blocking, then polls us.
        let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
        Poll::Pending
    }
}

/// The worker's runtime, driven from the asyncio loop (one per ASGI worker).
#[pyclass(module = "ferrocorn._native", unsendable)]
pub struct LoopDriver {
    worker: Option<WorkerLoop>,
    runtime_fd: RawFd,
    tick: TimerFd,
    wake: Arc<TaskWake>,
    waker: Waker,
    bridge: Arc<Bridge>,
    listener_wake: Arc<LoopListenerWake>,
    stop_posted: bool,
}

impl LoopDriver {
    /// Build the worker's runtime (`build`) on this thread and find its epoll descriptor.
    pub fn start(
        build: impl FnOnce() -> std::io::Result<WorkerLoop>,
        bridge: Arc<Bridge>,
        listener_wake: Arc<LoopListenerWake>,
    ) -> std::io::Result<LoopDriver> {
        let (epolls_before, eventfds_before) = (anon_fds("[eventpoll]")?, anon_fds("[eventfd]")?);
        let worker = build()?;
        let new_epolls: Vec<RawFd> =
            anon_fds("[eventpoll]")?.difference(&epolls_before).copied().collect();
        let new_eventfds: HashSet<RawFd> =
            anon_fds("[eventfd]")?.difference(&eventfds_before).copied().collect();
        let runtime_fd = runtime_epoll(&new_epolls, &new_eventfds)?;
        let wake = Arc::new(TaskWake { woken: AtomicBool::new(false), runtime: OnceLock::new() });
        let waker = Waker::from(wake.clone());
        Ok(LoopDriver {
            worker: Some(worker),
            runtime_fd,
            tick: {
                let tick = TimerFd::new()?;
                tick.set_periodic(TIMER_TICK)?;
                tick
            },
            wake,
            waker,
            bridge,
            listener_wake,
            stop_posted: false,
        })
    }
}

#[pymethods]
impl LoopDriver {
    /// The runtime's epoll descriptor: readable when the runtime has something to do.
    #[getter]
    fn runtime_fd(&self) -> RawFd {
        self.runtime_fd
    }

    /// A periodic timerfd: the runtime's timers are looked at on each tick.
    #[getter]
    fn tick_fd(&self) -> RawFd {
        self.tick.as_raw_fd()
    }

    /// A descriptor to watch for the worker's listeners: the loop reports it readable when a
    /// connection is waiting (the listeners are in the loop's epoll under its token; it is
    /// never readable itself). Call [`LoopDriver::listeners_ready`] then.
    #[getter]
    fn listener_fd(&self) -> RawFd {
        self.listener_wake.fd()
    }

    /// A listener has a connection (the loop saw `listener_fd` readable): tell the accept
    /// loops, then drive.
    fn listeners_ready(&mut self) -> bool {
        self.listener_wake.report();
        self.drive()
    }

    /// Run the worker's tasks until a look at its sockets and timers finds nothing new.
    /// Returns true when work remains (the loop should drive again soon). When the worker's
    /// main task has ended, posts the stop to the bridge.
    fn drive(&mut self) -> bool {
        let Some(worker) = self.worker.as_mut() else {
            return false;
        };
        let tasks = std::pin::pin!(worker.local.run_until(std::future::pending::<()>()));
        let drive = Drive { tasks, wake: &self.wake, waker: &self.waker, rounds: 0 };
        let work_left = worker.runtime.block_on(drive);
        if !self.stop_posted && worker.main.is_finished() {
            self.stop_posted = true;
            let joined = worker.local.block_on(&worker.runtime, &mut worker.main);
            super::worker::stop_the_loop(&self.bridge, &WorkerLoop::outcome(joined));
        }
        work_left
    }

    /// Consume a tick of the timerfd, then drive.
    fn tick(&mut self) -> bool {
        self.tick.clear();
        self.drive()
    }

    /// Drop the runtime: every connection still open is closed. Call after the loop stopped
    /// watching the descriptors.
    fn close(&mut self) {
        self.worker = None;
    }
}

/// The descriptors of one anonymous-inode kind (`[eventpoll]`, `[eventfd]`) this process has
/// open.
fn anon_fds(kind: &str) -> std::io::Result<HashSet<RawFd>> {
    let target_name = format!("anon_inode:{kind}");
    let mut fds = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        if target.as_os_str() == target_name.as_str()
            && let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok())
        {
            fds.insert(fd);
        }
    }
    Ok(fds)
}

/// The descriptors epoll descriptor `fd` watches (`tfd:` lines of `/proc/self/fdinfo`).
fn watched_by(fd: RawFd) -> std::io::Result<Vec<RawFd>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    Ok(info
        .lines()
        .filter_map(|l| l.strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect())
}

/// The runtime's epoll descriptor among the epoll descriptors (`new_epolls`) and eventfds
/// (`new_eventfds`) that appeared while it was built: the one watching mio's waker, a new
/// eventfd. mio keeps a duplicate of its epoll descriptor (its registry's), so several may
/// qualify; they must watch the same descriptors, or the choice would be a guess. (Another
/// thread of the app may open an epoll of its own meanwhile: it watches no new eventfd.)
fn runtime_epoll(new_epolls: &[RawFd], new_eventfds: &HashSet<RawFd>) -> std::io::Result<RawFd> {
    let mut candidates = Vec::new();
    for &fd in new_epolls {
        let watched = watched_by(fd)?;
        if watched.iter().any(|w| new_eventfds.contains(w)) {
            candidates.push((fd, watched));
        }
    }
    candidates.sort();
    let Some((first, first_watches)) = candidates.first() else {
        return Err(std::io::Error::other(
            "cannot find the worker runtime's epoll descriptor (none watches a new eventfd)",
        ));
    };
    if candidates.iter().any(|(_, watched)| watched != first_watches) {
        return Err(std::io::Error::other(format!(
            "building the worker's runtime opened {} different epoll descriptors",
            candidates.len()
        )));
    }
    Ok(*first)
}

/// How the worker's I/O starts.
pub enum IoStart {
    /// On a thread of its own, running this body (gevent); the join handle goes to `handle`.
    Thread {
        /// The I/O thread's body.
        main: Box<dyn FnOnce() + Send>,
        /// Receives the thread's join handle.
        handle: Arc<Mutex<Option<JoinHandle<()>>>>,
    },
    /// On the calling (loop) thread: builds the driver the loop drives (ASGI).
    OnLoop(Box<dyn FnOnce() -> std::io::Result<LoopDriver> + Send>),
}

/// A callable Python invokes when lifespan startup is done: it starts the I/O, and returns
/// the [`LoopDriver`] when the loop is to drive it (else None).
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct IoStarter {
    start: Mutex<Option<IoStart>>,
}

impl IoStarter {
    /// Start the I/O this way when called.
    pub fn new(start: IoStart) -> Self {
        IoStarter { start: Mutex::new(Some(start)) }
    }
}

#[pymethods]
impl IoStarter {
    fn __call__(&self, py: Python<'_>) -> PyResult<Option<Py<LoopDriver>>> {
        let start = self.start.lock().unwrap_or_else(|e| e.into_inner()).take();
        match start {
            None => Ok(None),
            Some(IoStart::Thread { main, handle }) => {
                let thread = std::thread::Builder::new()
                    .name("ferrocorn-io".into())
                    .spawn(main)
                    .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
                *handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
                Ok(None)
            }
            Some(IoStart::OnLoop(build)) => {
                let driver =
                    build().map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
                Ok(Some(Py::new(py, driver)?))
            }
        }
    }
}
