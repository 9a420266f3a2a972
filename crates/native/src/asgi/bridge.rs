//! The hand-off between the worker's I/O (tokio) and its Python loop: a queue of events the
//! loop drains in one callback. The gevent hub's I/O runs on a thread of its own, which wakes
//! the hub through an eventfd it watches (`loop.add_reader`) and never touches Python; the
//! ASGI loop drives its I/O itself (`driver.rs`) and drains the queue after each drive, so its
//! posts write nothing. Python answers through channels that never block the loop.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use super::request::AsgiRequest;

/// Deferred events after which the loop is woken anyway.
const DEFER_AT_MOST: usize = 32;

/// Something the loop thread must act on.
pub enum Event {
    /// A complete HTTP request to run (ASGI class).
    Http(AsgiRequest),
    /// A WSGI request to run in a greenlet (gevent class).
    Wsgi(HubJob),
    /// A WebSocket session to run (ASGI class).
    WebSocket(super::WebSocketSession),
    /// A message (or the close) from a WebSocket client.
    WsIncoming(Arc<super::WsShared>, super::WsIn),
    /// Wake what waits on this object (an asyncio future: resolved; a gevent `Event`: set): a
    /// `receive()` (body arrived, the client went away, the response is complete), or a
    /// producer waiting for room in a full queue to its connection.
    Wake(Py<PyAny>),
    /// The connection of a request (by id) ended before its response was complete while the
    /// app still runs: cancel its task after `asgi_disconnect_grace_period`.
    Abandoned(u64),
    /// The worker's I/O has stopped; `graceful` tells whether to run lifespan shutdown.
    Stop {
        /// A graceful stop (TERM, max_requests), not a quick one.
        graceful: bool,
    },
}

/// The queue and its wake-up descriptor.
pub struct Bridge {
    queue: Mutex<VecDeque<Event>>,
    wakeup: OwnedFd,
    /// A deferred post found the queue empty: [`Bridge::flush`] must wake the loop.
    wake_wanted: AtomicBool,
    /// The loop drains the queue itself after each drive of the I/O (`driver.rs`): posts
    /// never write the eventfd.
    drained_by_loop: bool,
}

impl Bridge {
    /// A bridge whose posts wake the loop through a fresh non-blocking eventfd (an I/O thread
    /// posts to a loop that sleeps meanwhile).
    pub fn new() -> std::io::Result<Arc<Bridge>> {
        Self::with_wakeups(false)
    }

    /// A bridge for a loop that drives the I/O itself and drains the queue after each drive.
    pub fn drained_by_loop() -> std::io::Result<Arc<Bridge>> {
        Self::with_wakeups(true)
    }

    fn with_wakeups(drained_by_loop: bool) -> std::io::Result<Arc<Bridge>> {
        // SAFETY: eventfd creates a new descriptor; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let wakeup = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(Bridge {
            queue: Mutex::new(VecDeque::new()),
            wakeup,
            wake_wanted: AtomicBool::new(false),
            drained_by_loop,
        }))
    }

    /// The descriptor the loop watches.
    pub fn fd(&self) -> RawFd {
        self.wakeup.as_raw_fd()
    }

    /// Queue an event and wake the loop (from any thread).
    pub fn post(&self, event: Event) {
        if self.push(event) == 1 {
            self.wake();
        }
    }

    /// Queue an event from the I/O thread and leave the wake-up to [`Bridge::flush`], which
    /// the I/O thread calls before it sleeps: one wake-up for everything one pass of its loop
    /// read, instead of an eventfd write (and a loop wake-up) per request.
    /// A long pass (many busy connections) still wakes the loop every [`DEFER_AT_MOST`]
    /// events, so the app does not idle while the I/O thread reads.
    pub fn post_deferred(&self, event: Event) {
        let queued = self.push(event);
        if queued == 1 {
            self.wake_wanted.store(true, Ordering::Release);
        } else if queued.is_multiple_of(DEFER_AT_MOST) {
            self.wake();
        }
    }

    /// Send the wake-up [`Bridge::post_deferred`] left pending, if any.
    pub fn flush(&self) {
        if self.wake_wanted.swap(false, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// Queue `event`; returns the queue's length (1: it was empty, the loop may be asleep).
    fn push(&self, event: Event) -> usize {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.push_back(event);
        queue.len()
    }

    fn wake(&self) {
        if self.drained_by_loop {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.wakeup.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Take every queued event (loop thread).
    pub fn take(&self) -> Vec<Event> {
        // Always read when posts write the fd: a flag telling whether one did could be seen
        // before the writer sets it (the write wakes this thread, which may preempt the
        // writer), and the loop would then spin on a readable fd it does not drain.
        if !self.drained_by_loop {
            let mut counter: u64 = 0;
            // SAFETY: reading 8 bytes into a valid u64 from our non-blocking eventfd.
            unsafe { libc::read(self.wakeup.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
        }
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect()
    }
}

/// Work for the loop thread's Python (gevent: one greenlet per job).
type HubWork = Box<dyn FnOnce(Python<'_>) + Send>;

/// A request for the gevent hub; `run()` is spawned as a greenlet.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct HubJob {
    work: Mutex<Option<HubWork>>,
}

impl HubJob {
    /// Wrap `work`.
    pub fn new(work: HubWork) -> Self {
        HubJob { work: Mutex::new(Some(work)) }
    }
}

#[pymethods]
impl HubJob {
    /// Run the request (once).
    fn run(&self, py: Python<'_>) {
        let work = self.work.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(work) = work {
            work(py);
        }
    }
}

/// The Python face of the bridge: `fd` to watch and `drain()` to call when it is readable.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct LoopBridge {
    pub(crate) inner: Arc<Bridge>,
}

#[pymethods]
impl LoopBridge {
    /// The eventfd to register with the loop.
    #[getter]
    fn fd(&self) -> RawFd {
        self.inner.fd()
    }

    /// Take the pending events: a list of `("http", request)`, `("wsgi", job)`,
    /// `("websocket", session)`, `("ws", (queue, message))`, `("wake", future or event)`,
    /// `("abandoned", request_id)` and `("stop", graceful)` tuples.
    fn drain(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let mut out = Vec::new();
        for event in self.inner.take() {
            let item = match event {
                Event::Http(request) => {
                    ("http", Py::new(py, request)?).into_pyobject(py)?.into_any().unbind()
                }
                Event::Wsgi(job) => {
                    ("wsgi", Py::new(py, job)?).into_pyobject(py)?.into_any().unbind()
                }
                Event::WebSocket(session) => {
                    ("websocket", Py::new(py, session)?).into_pyobject(py)?.into_any().unbind()
                }
                Event::WsIncoming(shared, message) => match shared.route(message) {
                    Some((queue, message)) => {
                        ("ws", (queue, super::websocket::message_dict(py, message)?))
                            .into_pyobject(py)?
                            .into_any()
                            .unbind()
                    }
                    None => continue,
                },
                Event::Wake(waiter) => ("wake", waiter).into_pyobject(py)?.into_any().unbind(),
                Event::Abandoned(id) => ("abandoned", id).into_pyobject(py)?.into_any().unbind(),
                Event::Stop { graceful } => {
                    ("stop", graceful).into_pyobject(py)?.into_any().unbind()
                }
            };
            out.push(item);
        }
        Ok(out)
    }
}
