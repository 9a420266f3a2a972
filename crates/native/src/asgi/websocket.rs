//! ASGI WebSocket sessions: the Python object the loop glue drives (`accept`, `send`, `close`,
//! the denial-response extension) and the messages flowing each way. Frames are parsed and
//! written by the connection's task (`ferrocorn_http` codec); the app only sees messages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferrocorn_http::RequestHead;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::chunk_channel::{ChunkSender, End, Offer, Queued, Waiter};
use super::request::{Endpoints, build_scope, latin1};

/// From the app to the connection.
#[derive(Debug)]
pub enum WsOut {
    /// `websocket.accept`.
    Accept {
        /// Chosen subprotocol.
        subprotocol: Option<String>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// `websocket.send` of text.
    Text(String),
    /// `websocket.send` of bytes.
    Binary(Vec<u8>),
    /// `websocket.close`.
    Close {
        /// Close code.
        code: u16,
        /// Reason.
        reason: String,
    },
    /// `websocket.http.response.start` (denial response).
    DenyStart {
        /// HTTP status.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
    },
    /// `websocket.http.response.body`.
    DenyBody {
        /// Bytes.
        body: Vec<u8>,
        /// More to come.
        more: bool,
    },
}

impl Queued for WsOut {
    fn queued_bytes(&self) -> usize {
        match self {
            WsOut::Text(text) => text.len(),
            WsOut::Binary(bytes) | WsOut::DenyBody { body: bytes, .. } => bytes.len(),
            _ => 0,
        }
    }
}

/// From the connection to the app.
#[derive(Debug)]
pub enum WsIn {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// The connection closed with this code.
    Disconnect(u16),
}

/// State shared by the connection task and the loop thread.
#[derive(Default)]
pub struct WsShared {
    queue: Mutex<Option<Py<PyAny>>>,
    pending: Mutex<VecDeque<WsIn>>,
    closed: AtomicBool,
}

impl WsShared {
    /// The client side is gone.
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Loop thread: the app's queue when attached, else keep `message` for it.
    pub fn route(&self, message: WsIn) -> Option<(Py<PyAny>, WsIn)> {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        match queue.as_ref() {
            Some(q) => Python::attach(|py| Some((q.clone_ref(py), message))),
            None => {
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).push_back(message);
                None
            }
        }
    }
}

/// The receive-side message as an ASGI dict.
pub fn message_dict<'py>(py: Python<'py>, message: WsIn) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match message {
        WsIn::Text(text) => {
            d.set_item("type", "websocket.receive")?;
            d.set_item("text", text)?;
        }
        WsIn::Binary(bytes) => {
            d.set_item("type", "websocket.receive")?;
            d.set_item("bytes", PyBytes::new(py, &bytes))?;
        }
        WsIn::Disconnect(code) => {
            d.set_item("type", "websocket.disconnect")?;
            d.set_item("code", code)?;
        }
    }
    Ok(d)
}

/// The Python object for one WebSocket session.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct WebSocketSession {
    head: Arc<RequestHead>,
    decoded_path: Arc<Vec<u8>>,
    endpoints: Endpoints,
    subprotocols: Vec<String>,
    /// To the connection; taken when the app ends (the connection learns how after the
    /// messages still queued).
    out: Mutex<Option<ChunkSender<WsOut>>>,
    shared: Arc<WsShared>,
}

impl WebSocketSession {
    /// A session; the receiver of `out` stays with the connection task.
    pub fn new(
        head: Arc<RequestHead>,
        decoded_path: Arc<Vec<u8>>,
        endpoints: Endpoints,
        subprotocols: Vec<String>,
        out: ChunkSender<WsOut>,
        shared: Arc<WsShared>,
    ) -> Self {
        WebSocketSession {
            head,
            decoded_path,
            endpoints,
            subprotocols,
            out: Mutex::new(Some(out)),
            shared,
        }
    }

    fn push(&self, message: WsOut) -> PyResult<bool> {
        let out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match out.as_ref().map(|tx| tx.offer(message)) {
            Some(Offer::Queued) => Ok(true),
            Some(Offer::Full(_)) => Ok(false),
            Some(Offer::Closed) | None => {
                Err(PyOSError::new_err("the WebSocket connection is closed"))
            }
        }
    }

    /// The app is done: the connection sends what is queued, then ends the session as `end`
    /// says. Only the first call counts (the glue's `finish` follows a `fail`).
    fn end(&self, end: End) {
        if let Some(tx) = self.out.lock().unwrap_or_else(|e| e.into_inner()).take() {
            tx.end(end);
        }
    }
}

fn header_pairs(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for item in headers.try_iter()? {
        let item = item?;
        let name: Vec<u8> = item.get_item(0)?.extract()?;
        let value: Vec<u8> = item.get_item(1)?.extract()?;
        pairs.push((latin1(&name), latin1(&value)));
    }
    Ok(pairs)
}

#[pymethods]
impl WebSocketSession {
    /// The ASGI websocket scope.
    #[pyo3(signature = (state = None))]
    fn scope<'py>(
        &self,
        py: Python<'py>,
        state: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let scope =
            build_scope(py, "websocket", &self.head, &self.decoded_path, &self.endpoints, state)?;
        scope.set_item("subprotocols", self.subprotocols.clone())?;
        let extensions = PyDict::new(py);
        extensions.set_item("websocket.http.response", PyDict::new(py))?;
        scope.set_item("extensions", extensions)?;
        Ok(scope)
    }

    /// Register the app's message queue; returns messages that arrived before it.
    fn attach_queue<'py>(
        &self,
        py: Python<'py>,
        queue: Py<PyAny>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        *self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()) = Some(queue);
        let pending: Vec<WsIn> =
            self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        pending.into_iter().map(|m| message_dict(py, m)).collect()
    }

    /// `websocket.accept`; False when the connection's buffer is full (try again).
    #[pyo3(signature = (subprotocol = None, headers = None))]
    fn accept(
        &self,
        subprotocol: Option<String>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let headers = match headers {
            Some(h) => header_pairs(h)?,
            None => Vec::new(),
        };
        self.push(WsOut::Accept { subprotocol, headers })
    }

    /// `websocket.send`; False when the buffer is full (try again).
    #[pyo3(signature = (text = None, bytes = None))]
    fn send(&self, text: Option<String>, bytes: Option<Vec<u8>>) -> PyResult<bool> {
        match (text, bytes) {
            (Some(text), _) => self.push(WsOut::Text(text)),
            (None, Some(bytes)) => self.push(WsOut::Binary(bytes)),
            (None, None) => Err(PyRuntimeError::new_err("websocket.send needs text or bytes")),
        }
    }

    /// `websocket.close`.
    #[pyo3(signature = (code = 1000, reason = String::new()))]
    fn close(&self, code: u16, reason: String) -> PyResult<bool> {
        self.push(WsOut::Close { code, reason }).or(Ok(true))
    }

    /// `websocket.http.response.start` (denial response).
    fn deny_start(&self, status: u16, headers: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.push(WsOut::DenyStart { status, headers: header_pairs(headers)? })
    }

    /// `websocket.http.response.body`.
    #[pyo3(signature = (body, more_body = false))]
    fn deny_body(&self, body: Vec<u8>, more_body: bool) -> PyResult<bool> {
        self.push(WsOut::DenyBody { body, more: more_body })
    }

    /// After a False from a send: register `room` (an asyncio future) to be resolved when the
    /// connection takes a message. False: there is room already (send again at once).
    fn wait_room(&self, room: Py<PyAny>) -> bool {
        let out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.as_ref().is_some_and(|tx| tx.wait_for_room(Waiter::Loop(room)))
    }

    /// The app raised: the session ends with 1011 after what was queued.
    fn fail(&self) {
        self.end(End::Failed);
    }

    /// The app returned: a session it left open is closed normally (1000) after what was
    /// queued.
    fn finish(&self) {
        self.end(End::Finished);
    }

    /// Whether the client side is gone.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}
