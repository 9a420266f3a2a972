//! The ASGI class: the app runs on an asyncio loop (uvloop when installed) on the worker's main
//! thread, while all sockets stay on a tokio I/O thread. [`bridge`] carries requests to the
//! loop; [`request`] is the per-request object the loop glue (`ferrocorn/_asgi.py`) drives;
//! [`IoStarter`] starts the I/O thread once lifespan startup has completed.

pub mod awaitable;
pub mod bridge;
pub mod request;
pub mod websocket;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pyo3::prelude::*;

pub use bridge::{Bridge, Event, HubJob, LoopBridge};
pub use request::{AsgiRequest, Endpoints, RequestShared};
pub use websocket::{WebSocketSession, WsIn, WsOut, WsShared};

type IoMain = Box<dyn FnOnce() + Send>;

/// A callable Python invokes when lifespan startup is done: it starts the I/O thread.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct IoStarter {
    main: Mutex<Option<IoMain>>,
    handle: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl IoStarter {
    /// Wrap the I/O thread's body; `handle` receives its join handle.
    pub fn new(main: IoMain, handle: Arc<Mutex<Option<JoinHandle<()>>>>) -> Self {
        IoStarter { main: Mutex::new(Some(main)), handle }
    }
}

#[pymethods]
impl IoStarter {
    fn __call__(&self) -> PyResult<()> {
        let Some(main) = self.main.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        let thread = std::thread::Builder::new()
            .name("ferrocorn-io".into())
            .spawn(main)
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(())
    }
}
