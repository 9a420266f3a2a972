//! One ASGI HTTP request as the loop thread sees it: the scope (built in Rust from the parsed
//! head), the request body (a queue the connection fills as the client sends it, bounded so a
//! slow app slows the client; delivered as `http.request` messages), and the channels back to
//! the connection: the response start, body chunks (bounded; a full channel asks the app to
//! wait, so a slow client slows the app instead of filling memory), and the wake-up of a
//! waiting `receive()`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ferrocorn_http::RequestHead;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::awaitable;
use tokio::sync::oneshot;

use super::Bridge;
use super::chunk_channel::{ChunkReceiver, ChunkSender, End, Offer, Waiter, chunk_channel};

/// How the app started its response: status, headers and the first body chunk (sent with
/// the head in one write), and the queue of the rest when the body continues. Err means
/// "answer 500".
pub type StartMsg = Result<ResponseStart, ()>;

/// `http.response.start` plus the body of the first `http.response.body`.
pub struct ResponseStart {
    /// The status code.
    pub status: u16,
    /// The headers, latin-1 text.
    pub headers: Vec<(String, String)>,
    /// The first body chunk.
    pub first: Vec<u8>,
    /// The rest of the body, when the first body message said `more_body` (a response sent
    /// in one message, the common case, needs no queue).
    pub rest: Option<ChunkReceiver>,
}

/// State shared between the connection task and the Python request object.
pub struct RequestShared {
    /// Names the request to the loop glue (its task), e.g. in `Event::Abandoned`.
    pub id: u64,
    exchange: Mutex<Exchange>,
    /// Signalled when the app takes request body from the queue (the connection reads more).
    pub body_taken: tokio::sync::Notify,
}

#[derive(Default)]
struct Exchange {
    /// The client is gone, or the response is complete.
    happened: bool,
    /// The future a waiting `receive()` sleeps on (resolved with None: "look again").
    waiter: Option<Py<PyAny>>,
    /// The app returned (or raised).
    app_done: bool,
    /// Request body not yet received by the app.
    body: VecDeque<Vec<u8>>,
    body_bytes: usize,
    /// Body bytes queued so far, in all.
    body_received: u64,
    /// The connection has queued the whole body.
    body_complete: bool,
    /// The app received the last `http.request` (`more_body` False).
    body_delivered: bool,
}

/// What `receive()` returns next.
enum Next {
    Body(Vec<u8>, bool),
    Disconnect,
    Wait,
}

impl Exchange {
    fn next(&mut self) -> Next {
        if let Some(chunk) = self.body.pop_front() {
            self.body_bytes -= chunk.len();
            let more = !(self.body_complete && self.body.is_empty());
            self.body_delivered = !more;
            return Next::Body(chunk, more);
        }
        if self.body_complete && !self.body_delivered {
            self.body_delivered = true;
            return Next::Body(Vec::new(), false);
        }
        if self.happened { Next::Disconnect } else { Next::Wait }
    }
}

/// What the connection learns when its part of a request ends.
pub struct Ended {
    /// A `receive()` is waiting: post its waiter (`Event::Wake`) to wake it.
    pub wake_receive: bool,
    /// The app is still running.
    pub app_running: bool,
}

impl RequestShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Exchange> {
        self.exchange.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request's shared state; `id` is unique within the worker.
    pub fn new(id: u64) -> Self {
        RequestShared {
            id,
            exchange: Mutex::new(Exchange::default()),
            body_taken: tokio::sync::Notify::new(),
        }
    }

    /// Queue request body for the app (`complete`: nothing follows). Returns true when a
    /// `receive()` is waiting: post its waiter (`Event::Wake`) to wake it.
    pub fn push_body(&self, chunk: Vec<u8>, complete: bool) -> bool {
        let mut state = self.lock();
        if !chunk.is_empty() {
            state.body_bytes += chunk.len();
            state.body_received += chunk.len() as u64;
            state.body.push_back(chunk);
        }
        state.body_complete |= complete;
        state.waiter.is_some()
    }

    /// Request body bytes the connection has read, in all.
    pub fn body_received(&self) -> u64 {
        self.lock().body_received
    }

    /// Request body bytes queued and not yet received by the app.
    pub fn queued_body_bytes(&self) -> usize {
        self.lock().body_bytes
    }

    /// Mark the client gone (or the response complete). The common request, whose app never
    /// waits in `receive()` and has returned, costs the loop no wake-up.
    pub fn set_disconnected(&self) -> Ended {
        let mut state = self.lock();
        state.happened = true;
        Ended { wake_receive: state.waiter.is_some(), app_running: !state.app_done }
    }

    /// The future a waiting `receive()` sleeps on, taken once.
    pub fn take_waiter(&self) -> Option<Py<PyAny>> {
        self.lock().waiter.take()
    }

    /// The next `receive()` message; on `Next::Wait`, `waiter` (if any) is registered to be
    /// woken. Taking body lets the connection read more.
    fn take_next(&self, waiter: Option<Py<PyAny>>) -> Next {
        let next = {
            let mut state = self.lock();
            let next = state.next();
            if matches!(next, Next::Wait) && waiter.is_some() {
                state.waiter = waiter;
            }
            next
        };
        if matches!(next, Next::Body(..)) {
            self.body_taken.notify_one();
        }
        next
    }
}

/// Where the request came from and went to.
pub struct Endpoints {
    /// The client (None for unix sockets).
    pub client: Option<SocketAddr>,
    /// The server address as `(host, port)`; port None for unix sockets.
    pub server: (String, Option<u16>),
    /// `http` or `https`.
    pub https: bool,
    /// ASGI `root_path`.
    pub root_path: String,
}

/// The Python object for one request.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct AsgiRequest {
    head: Arc<RequestHead>,
    decoded_path: Arc<Vec<u8>>,
    endpoints: Endpoints,
    start: Mutex<Option<oneshot::Sender<StartMsg>>>,
    /// `http.response.start` held until the first body message, so both leave in one message.
    pending_start: Mutex<Option<ResponseStart>>,
    /// The rest of a streamed body (made by the first body message with `more_body`).
    chunks: Mutex<Option<ChunkSender>>,
    /// Wakes an app waiting for room in `chunks`.
    bridge: Arc<Bridge>,
    shared: Arc<RequestShared>,
}

impl AsgiRequest {
    /// A request; the receiver of `start` stays with the connection task.
    pub fn new(
        head: Arc<RequestHead>,
        decoded_path: Arc<Vec<u8>>,
        endpoints: Endpoints,
        start: oneshot::Sender<StartMsg>,
        bridge: Arc<Bridge>,
        shared: Arc<RequestShared>,
    ) -> Self {
        AsgiRequest {
            head,
            decoded_path,
            endpoints,
            start: Mutex::new(Some(start)),
            pending_start: Mutex::new(None),
            chunks: Mutex::new(None),
            bridge,
            shared,
        }
    }
}

impl AsgiRequest {
    /// The next message without waiting (the connection reads more when body is taken).
    /// Hand the response start to the connection (once; later calls do nothing).
    fn send_start(&self, start: StartMsg) {
        if let Some(tx) = self.start.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(start);
        }
    }
}

/// `message[key]`, or None when absent (dicts directly, other mappings through `get`).
fn field<'py>(
    message: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match message.cast::<PyDict>() {
        Ok(dict) => dict.get_item(key),
        Err(_) => {
            let value = message.call_method1(intern!(message.py(), "get"), (key,))?;
            Ok((!value.is_none()).then_some(value))
        }
    }
}

/// The `receive()` message for `next` (not `Next::Wait`).
fn message(py: Python<'_>, next: Next) -> PyResult<Bound<'_, PyDict>> {
    let message = PyDict::new(py);
    match next {
        Next::Body(body, more) => {
            message.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
            message.set_item(intern!(py, "body"), PyBytes::new(py, &body))?;
            message.set_item(intern!(py, "more_body"), more)?;
        }
        Next::Disconnect | Next::Wait => {
            message.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
        }
    }
    Ok(message)
}

/// An ASGI `http` or `websocket` scope from a parsed head.
pub fn build_scope<'py>(
    py: Python<'py>,
    kind: &str,
    head: &RequestHead,
    decoded_path: &[u8],
    endpoints: &Endpoints,
    state: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    // Keys and fixed values are interned: no new string, and no hashing, per request.
    let d = PyDict::new(py);
    let kind_value = match kind {
        "http" => intern!(py, "http"),
        _ => intern!(py, "websocket"),
    };
    d.set_item(intern!(py, "type"), kind_value)?;
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.4"))?;
    d.set_item(intern!(py, "asgi"), asgi)?;
    let http_version = if head.version == (1, 0) { intern!(py, "1.0") } else { intern!(py, "1.1") };
    d.set_item(intern!(py, "http_version"), http_version)?;
    if kind == "http" {
        d.set_item(intern!(py, "method"), crate::wsgi::method_string(py, &head.method))?;
    }
    let scheme = match (kind, endpoints.https) {
        ("websocket", true) => intern!(py, "wss"),
        ("websocket", false) => intern!(py, "ws"),
        (_, true) => intern!(py, "https"),
        _ => intern!(py, "http"),
    };
    d.set_item(intern!(py, "scheme"), scheme)?;
    let path = String::from_utf8_lossy(decoded_path).into_owned();
    let root = &endpoints.root_path;
    d.set_item(
        intern!(py, "path"),
        if !root.is_empty() && !path.starts_with(root.as_str()) {
            format!("{root}{path}")
        } else {
            path
        },
    )?;
    d.set_item(intern!(py, "raw_path"), PyBytes::new(py, &head.path))?;
    d.set_item(intern!(py, "query_string"), PyBytes::new(py, &head.query))?;
    d.set_item(intern!(py, "root_path"), root)?;
    let headers = PyList::empty(py);
    for (name, value) in &head.headers {
        let pair = PyTuple::new(
            py,
            [PyBytes::new(py, name.to_ascii_lowercase().as_bytes()), PyBytes::new(py, value)],
        )?;
        headers.append(pair)?;
    }
    d.set_item(intern!(py, "headers"), headers)?;
    let client = intern!(py, "client");
    match endpoints.client {
        Some(addr) => d.set_item(client, (addr.ip().to_string(), addr.port()))?,
        None => d.set_item(client, py.None())?,
    }
    let (host, port) = &endpoints.server;
    let server = intern!(py, "server");
    match port {
        Some(port) => d.set_item(server, (host, *port))?,
        None => d.set_item(server, (host, py.None()))?,
    }
    if let Some(state) = state.filter(|s| !s.is_none()) {
        d.set_item(intern!(py, "state"), state.call_method0(intern!(py, "copy"))?)?;
    }
    Ok(d)
}

/// Latin-1 text of header bytes (ASGI header values are bytes; the response head keeps them
/// byte for byte).
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

#[pymethods]
impl AsgiRequest {
    /// The ASGI HTTP scope; `state` is a copy of the lifespan state (or None).
    #[pyo3(signature = (state = None))]
    fn scope<'py>(
        &self,
        py: Python<'py>,
        state: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        build_scope(py, "http", &self.head, &self.decoded_path, &self.endpoints, state)
    }

    /// ASGI `receive()`: the request body as `http.request` messages (as the client sends
    /// it), then `http.disconnect` once the client is gone or the response is complete.
    /// Complete at once when a message is ready; else the loop glue's waiting coroutine.
    fn receive(slf: Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        match slf.get().shared.take_next(None) {
            Next::Wait => {
                static WAIT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                Ok(WAIT.import(py, "ferrocorn._asgi", "_receive_wait")?.call1((slf,))?.unbind())
            }
            next => awaitable::ready(py, message(py, next)?.into_any().unbind()),
        }
    }

    /// The next `receive()` message, or None after registering `future`, which the loop
    /// resolves (with None) when there is something to receive.
    fn poll_receive<'py>(
        &self,
        py: Python<'py>,
        future: Py<PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        match self.shared.take_next(Some(future)) {
            Next::Wait => Ok(None),
            next => message(py, next).map(Some),
        }
    }

    /// ASGI `send(message)` for `http.response.start` and `http.response.body` (other types
    /// are ignored). Complete at once unless the connection's buffer is full: then the
    /// awaitable waits for room.
    fn send(slf: Bound<'_, Self>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let kind = field(message, intern!(py, "type"))?
            .ok_or_else(|| PyRuntimeError::new_err("ASGI message without a 'type'"))?;
        let kind = kind.cast_into::<PyString>()?;
        match kind.to_str()? {
            "http.response.start" => {
                let status: u16 = field(message, intern!(py, "status"))?
                    .ok_or_else(|| PyRuntimeError::new_err("http.response.start without a status"))?
                    .extract()?;
                match field(message, intern!(py, "headers"))? {
                    Some(headers) => this.start_response(status, &headers)?,
                    None => this.start_response(status, &PyTuple::empty(py))?,
                }
            }
            "http.response.body" => {
                let body = field(message, intern!(py, "body"))?;
                let more_body = match field(message, intern!(py, "more_body"))? {
                    Some(more) => more.is_truthy()?,
                    None => false,
                };
                let data: &[u8] = match &body {
                    Some(body) => body.extract()?,
                    None => b"",
                };
                if !this.send_body(data, more_body)? {
                    // The queue is full: the loop glue waits for room and sends again.
                    static PUSH: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                    let body = body.unwrap_or_else(|| PyBytes::new(py, b"").into_any());
                    let retry = slf.getattr(intern!(py, "send_body"))?;
                    return Ok(PUSH
                        .import(py, "ferrocorn._asgi", "_push")?
                        .call1((slf, retry, body, more_body))?
                        .unbind());
                }
            }
            _ => {}
        }
        awaitable::ready_none(py)
    }

    /// `http.response.start`: kept until the first `http.response.body` (or the app's return).
    fn start_response(&self, status: u16, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut pairs = Vec::new();
        for item in headers.try_iter()? {
            let item = item?;
            let name: Vec<u8> = item.get_item(0)?.extract()?;
            let value: Vec<u8> = item.get_item(1)?.extract()?;
            pairs.push((latin1(&name), latin1(&value)));
        }
        let mut pending = self.pending_start.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_some() || self.start.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(PyRuntimeError::new_err("http.response.start sent twice"));
        }
        *pending = Some(ResponseStart { status, headers: pairs, first: Vec::new(), rest: None });
        Ok(())
    }

    /// `http.response.body`: queue `data`; returns False (nothing queued) when the connection's
    /// queue is full (see `wait_room`). With `more_body` False the response ends.
    fn send_body(&self, data: &[u8], more_body: bool) -> PyResult<bool> {
        if let Some(mut start) = self.pending_start.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            if more_body {
                let (tx, rx) = chunk_channel(Some(self.bridge.clone()));
                *self.chunks.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
                start.rest = Some(rx);
            }
            start.first = data.to_vec();
            self.send_start(Ok(start));
            return Ok(true);
        }
        if self.start.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return Err(PyRuntimeError::new_err("http.response.body before http.response.start"));
        }
        let mut guard = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else { return Ok(true) };
        if !data.is_empty() {
            match tx.offer(data.to_vec()) {
                Offer::Queued => {}
                Offer::Full(_) => return Ok(false),
                Offer::Closed => {
                    self.shared.lock().happened = true;
                    *guard = None;
                    return Ok(true);
                }
            }
        }
        if !more_body {
            *guard = None;
        }
        Ok(true)
    }

    /// After a False from `send_body`: register `room` (an asyncio future) to be resolved when
    /// the connection takes a chunk. False: there is room already (send again at once).
    fn wait_room(&self, room: Py<PyAny>) -> bool {
        let chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        chunks.as_ref().is_some_and(|tx| tx.wait_for_room(Waiter::Loop(room)))
    }

    /// The app failed: a 500 if nothing was sent, else cut the response short.
    fn fail(&self) {
        self.pending_start.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = self.start.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(Err(()));
        } else if let Some(tx) = self.chunks.lock().unwrap_or_else(|e| e.into_inner()).take() {
            tx.end(End::Failed);
        }
    }

    /// The app returned: end the response (a started one with no body message ends empty;
    /// an unstarted one becomes a 500).
    fn finish(&self) {
        self.shared.lock().app_done = true;
        self.chunks.lock().unwrap_or_else(|e| e.into_inner()).take();
        let pending = self.pending_start.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.send_start(pending.ok_or(()));
    }

    /// The request's id within the worker (the loop glue keys its task by it).
    #[getter]
    fn id(&self) -> u64 {
        self.shared.id
    }

    /// Whether the client is gone (or the response is complete).
    #[getter]
    fn disconnected(&self) -> bool {
        self.shared.lock().happened
    }
}
