//! The hand-off between the worker's I/O (tokio) and its Python loop: a queue of events the
//! loop drains in one callback. The gevent hub's I/O runs on a thread of its own, which wakes
//! the hub through an eventfd it watches (`loop.add_reader`) and never touches Python; the
//! ASGI loop drives its I/O itself (`driver.rs`) and drains the queue after each drive, so its
//! posts write nothing. Python answers through channels that never block the loop.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use super::request::AsgiRequest;

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

/// The queue and, for a loop that sleeps while another thread posts, its wake-up descriptor.
pub struct Bridge {
    queue: Mutex<VecDeque<Event>>,
    /// The eventfd a post writes when it finds the queue empty (gevent's hub watches it);
    /// None when the loop drives the I/O itself and drains the queue after each drive
    /// (`driver.rs`, the ASGI class).
    wakeup: Option<OwnedFd>,
}

impl Bridge {
    /// A bridge whose posts wake the loop through a fresh non-blocking eventfd (an I/O thread
    /// posts to a loop that sleeps meanwhile).
    pub fn new() -> std::io::Result<Arc<Bridge>> {
        // SAFETY: eventfd creates a new descriptor; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let wakeup = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(Bridge { queue: Mutex::new(VecDeque::new()), wakeup: Some(wakeup) }))
    }

    /// A bridge for a loop that drives the I/O itself and drains the queue after each drive:
    /// posts only queue.
    pub fn drained_by_loop() -> Arc<Bridge> {
        Arc::new(Bridge { queue: Mutex::new(VecDeque::new()), wakeup: None })
    }

    /// The descriptor the loop watches, if posts wake it.
    pub fn fd(&self) -> Option<RawFd> {
        self.wakeup.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Queue an event; wake the loop if it may be asleep (from any thread).
    pub fn post(&self, event: Event) {
        let queued = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push_back(event);
            queue.len()
        };
        if queued == 1
            && let Some(wakeup) = &self.wakeup
        {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a valid u64 to our eventfd.
            unsafe { libc::write(wakeup.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// The worker's I/O has ended: tell the loop to stop, `graceful`ly (let its tasks finish)
    /// or not.
    pub fn post_stop(&self, graceful: bool) {
        self.post(Event::Stop { graceful });
    }

    /// Take every queued event (loop thread).
    pub fn take(&self) -> Vec<Event> {
        if let Some(wakeup) = &self.wakeup {
            let mut counter: u64 = 0;
            // SAFETY: reading 8 bytes into a valid u64 from our non-blocking eventfd.
            unsafe { libc::read(wakeup.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
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
    /// The eventfd to register with the loop (None: the loop drains after each drive).
    #[getter]
    fn fd(&self) -> Option<RawFd> {
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
