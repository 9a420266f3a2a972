//! The part of a request that runs under the GIL: `pre_request`, `wsgi.input`, the environ and
//! the app call, turned into a [`Reply`] the connection driver can send. The same function runs
//! on the worker's event-loop thread (sync class) or on a pool thread (gthread); for the latter,
//! [`pump_stream`] keeps pulling a streaming response on the pool thread and hands the chunks
//! over a channel, so a slow generator never blocks the event loop.

use std::sync::Arc;

use ferrocorn_http::{ProxyInfo, RequestHead, ResponseHead};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::asgi::Bridge;
use crate::asgi::chunk_channel::{ChunkReceiver, ChunkSender, End, chunk_channel};
use crate::hooks::{Hooks, Request, WorkerHandle};
use crate::wsgi::{
    self, AppResponse, Committed, DeferredBody, DirectWriter, FileResponse, Input, RequestBody,
    RequestFacts, WsgiApp,
};

/// What the app needs, shared by the event loop and the pool threads.
pub struct AppContext {
    /// The WSGI bridge (None for the ASGI class, whose app runs on the loop thread).
    pub wsgi: Option<WsgiApp>,
    /// The config file's hooks.
    pub hooks: Hooks,
    /// The `worker` object for hooks.
    pub worker: Py<WorkerHandle>,
    /// The config defines `pre_request` (looked up once, not per request).
    pub pre_request: bool,
    /// The config defines `post_request`.
    pub post_request: bool,
}

impl AppContext {
    /// A context for `wsgi` (None for ASGI) with the worker's hooks.
    pub fn new(wsgi: Option<WsgiApp>, hooks: Hooks, worker: Py<WorkerHandle>) -> Self {
        let (pre_request, post_request) = (hooks.has("pre_request"), hooks.has("post_request"));
        AppContext { wsgi, hooks, worker, pre_request, post_request }
    }
}

/// Where `wsgi.input` gets the body from.
pub enum InputSource {
    /// Already read (in memory or spooled to a temporary file).
    Buffered(RequestBody),
    /// Read on first use, after `100 Continue`.
    Deferred(DeferredBody),
}

/// One request, ready for the app (owned, so it can cross to a pool thread).
pub struct CallRequest {
    /// Listener index (selects the environ template).
    pub listener: usize,
    /// The request head.
    pub head: Arc<RequestHead>,
    /// Percent-decoded path.
    pub decoded_path: Arc<Vec<u8>>,
    /// Scheme decided from the connection and trusted proxy headers.
    pub https: bool,
    /// PROXY protocol addresses.
    pub proxy: Option<ProxyInfo>,
    /// The body.
    pub input: InputSource,
    /// Keep the environ (access log `{var}e`, `post_request`).
    pub keep_environ: bool,
    /// Where `write()` sends (None: its output is kept and sent with the response).
    pub writer: Option<DirectWriter>,
    /// Run `pre_request`.
    pub pre_hook: bool,
    /// Build the `req` object for `post_request`.
    pub post_hook: bool,
}

/// Where the rest of a streamed body comes from.
pub enum Chunks {
    /// Pull from the app's iterator here, under the GIL (sync class).
    Inline(Py<PyAny>),
    /// Receive from the app's side: the pool thread or greenlet that pulls the iterator
    /// (gthread, gevent) or the ASGI task that sends `more_body` messages.
    Channel(ChunkReceiver),
    /// Nothing follows the first chunk (an ASGI response sent in one message).
    Complete,
}

impl Chunks {
    /// Append the next non-empty chunk to `out`; `Ok(false)` at the end, `Err(())` when the app
    /// failed mid-stream (already logged).
    pub async fn next(&mut self, out: &mut Vec<u8>) -> Result<bool, ()> {
        match self {
            Chunks::Inline(iterator) => Python::attach(|py| {
                wsgi::next_chunk(py, iterator, out).map_err(|e| {
                    wsgi::log_exception(
                        py,
                        "Error handling request (response already started)",
                        &e,
                    );
                })
            }),
            Chunks::Channel(rx) => match rx.recv().await {
                Some(bytes) => {
                    out.extend_from_slice(&bytes);
                    Ok(true)
                }
                None if rx.end() == Some(End::Failed) => Err(()),
                None => Ok(false),
            },
            Chunks::Complete => Ok(false),
        }
    }

    /// Append a chunk the app's side already queued to `out`, without waiting; false when
    /// none is queued now (or the iterator is pulled here).
    pub fn try_next(&mut self, out: &mut Vec<u8>) -> bool {
        let Chunks::Channel(rx) = self else { return false };
        rx.try_recv().map(|bytes| out.extend_from_slice(&bytes)).is_some()
    }
}

/// What to send back.
pub enum Reply {
    /// 500, nothing was sent yet.
    Failed,
    /// The app failed after `write()` sent the head: close.
    Aborted,
    /// The app did not answer within the per-request deadline (`timeout`): 504.
    TimedOut {
        /// Whether the app had started (false: the request waited for a thread all along).
        started: bool,
    },
    /// Everything known.
    Complete {
        /// Status and headers.
        head: ResponseHead,
        /// The body.
        body: Vec<u8>,
    },
    /// Head, first chunk, and the rest to come.
    Stream {
        /// Status and headers.
        head: ResponseHead,
        /// First bytes.
        first: Vec<u8>,
        /// The rest.
        chunks: Chunks,
        /// The app result to `close()` here (None when the pool thread closes it).
        result: Option<Py<PyAny>>,
    },
    /// `write()` sent the head already; the rest to come.
    Continue {
        /// What was sent.
        committed: Committed,
        /// The rest.
        chunks: Chunks,
        /// The app result to `close()` here (None when the pool thread closes it).
        result: Option<Py<PyAny>>,
    },
    /// A file to send with sendfile.
    File(FileResponse),
}

/// The outcome of one app call.
pub struct Called {
    /// What to send.
    pub reply: Reply,
    /// The `wsgi.input` of a deferred body (to learn what became of it).
    pub input: Option<Py<Input>>,
    /// The environ, when kept.
    pub environ: Option<Py<PyDict>>,
    /// The `req` object for `post_request`.
    pub hook_request: Option<Py<Request>>,
}

fn hook_request(py: Python<'_>, req: &CallRequest, remote_addr: &str) -> Option<Py<Request>> {
    let latin1 = |b: &[u8]| -> String { b.iter().map(|&c| c as char).collect() };
    let head = &req.head;
    let request = Request {
        method: head.method.clone(),
        uri: latin1(&head.target),
        path: latin1(&req.decoded_path),
        query: latin1(&head.query),
        fragment: latin1(&head.fragment),
        version: head.version,
        headers: head.headers.iter().map(|(n, v)| (n.clone(), latin1(v))).collect(),
        scheme: if req.https { "https".into() } else { "http".into() },
        remote_addr: remote_addr.to_owned(),
    };
    Py::new(py, request).ok()
}

/// Run the app for `req`. `remote` is the connection's (`REMOTE_ADDR`, `REMOTE_PORT`).
pub fn call(
    py: Python<'_>,
    ctx: &AppContext,
    req: CallRequest,
    remote: &(Py<PyString>, Option<Py<PyString>>),
) -> Called {
    let mut request_obj = None;
    if req.pre_hook || req.post_hook {
        let addr = remote.0.bind(py).to_string();
        request_obj = hook_request(py, &req, &addr);
        if let (true, Some(r)) = (req.pre_hook, &request_obj) {
            let _ = ctx.hooks.call(py, "pre_request", (ctx.worker.clone_ref(py), r.clone_ref(py)));
        }
    }
    let deferred = matches!(req.input, InputSource::Deferred(_));
    let input = match req.input {
        InputSource::Buffered(body) => Input::buffered(body),
        InputSource::Deferred(d) => Input::deferred(d),
    };
    let input = match Py::new(py, input) {
        Ok(i) => i,
        Err(e) => {
            wsgi::log_exception(py, "Error creating wsgi.input", &e);
            return Called {
                reply: Reply::Failed,
                input: None,
                environ: None,
                hook_request: request_obj,
            };
        }
    };
    let facts = RequestFacts {
        head: &req.head,
        decoded_path: &req.decoded_path,
        remote,
        https: req.https,
        proxy: req.proxy.as_ref(),
        input: input.bind(py).clone().into_any(),
    };
    let Some(wsgi) = &ctx.wsgi else {
        return Called {
            reply: Reply::Failed,
            input: None,
            environ: None,
            hook_request: request_obj,
        };
    };
    let handled = wsgi.handle(py, req.listener, facts, input, req.keep_environ, req.writer);
    let reply = match handled.response {
        AppResponse::Failed => Reply::Failed,
        AppResponse::Aborted => Reply::Aborted,
        AppResponse::Complete { head, body } => Reply::Complete { head, body },
        AppResponse::Stream { head, first, iterator, result } => {
            Reply::Stream { head, first, chunks: Chunks::Inline(iterator), result: Some(result) }
        }
        AppResponse::Continue { committed, iterator, result } => {
            Reply::Continue { committed, chunks: Chunks::Inline(iterator), result: Some(result) }
        }
        AppResponse::File(file) => Reply::File(file),
    };
    Called {
        reply,
        input: if deferred { handled.input } else { None },
        environ: handled.environ,
        hook_request: request_obj,
    }
}

/// On a pool thread or in a greenlet: move an inline stream's iteration here, leaving a reply
/// whose chunks arrive over a queue, and return a closure that pumps the iterator (then closes
/// the result). None for a reply that does not stream (most). `hub`: the gevent hub's bridge
/// in a greenlet (None on a thread), which the queue wakes the waiting producer through.
pub fn detach_stream(
    called: &mut Called,
    hub: Option<Arc<Bridge>>,
) -> Option<impl FnOnce(Python<'_>) + use<>> {
    let (Reply::Stream { chunks, result, .. } | Reply::Continue { chunks, result, .. }) =
        &mut called.reply
    else {
        return None;
    };
    let Chunks::Inline(_) = chunks else { return None };
    let (tx, rx) = chunk_channel(hub);
    let Chunks::Inline(iterator) = std::mem::replace(chunks, Chunks::Channel(rx)) else {
        unreachable!("checked above");
    };
    let result = result.take();
    Some(move |py: Python<'_>| pump_stream(py, iterator, result, tx))
}

/// Pull the iterator to its end (or until the receiver is gone), sending chunks; then close.
fn pump_stream(py: Python<'_>, iterator: Py<PyAny>, result: Option<Py<PyAny>>, tx: ChunkSender) {
    loop {
        let mut chunk = Vec::new();
        match wsgi::next_chunk(py, &iterator, &mut chunk) {
            Ok(true) => {
                if !tx.send(py, chunk) {
                    break; // the client went away
                }
            }
            Ok(false) => break,
            Err(e) => {
                wsgi::log_exception(py, "Error handling request (response already started)", &e);
                tx.end(End::Failed);
                break;
            }
        }
    }
    if let Some(result) = result {
        wsgi::close_result(py, result.bind(py));
    }
}
