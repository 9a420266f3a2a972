//! The ASGI class: the app runs on an asyncio loop (uvloop when installed) on the worker's main
//! thread, and the same thread serves the sockets: the worker's tokio runtime is driven from
//! the loop ([`driver`]). [`bridge`] carries requests to the loop (also to the gevent hub,
//! whose sockets stay on an I/O thread); [`request`] is the per-request object the loop glue
//! (`ferrocorn/_asgi.py`) drives; [`IoStarter`] starts the I/O once lifespan startup has
//! completed.

pub mod awaitable;
pub mod bridge;
pub mod driver;
pub mod request;
pub mod websocket;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pyo3::prelude::*;

pub use bridge::{Bridge, Event, HubJob, LoopBridge};
pub use request::{AsgiRequest, Endpoints, RequestShared};
pub use websocket::{WebSocketSession, WsIn, WsOut, WsShared};

pub use driver::LoopDriver;

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
