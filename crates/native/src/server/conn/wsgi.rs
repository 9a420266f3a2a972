//! A WSGI request on a connection: the app called on its executor, the response written
//! (whole, streamed or from a file), the `post_request` hook and the access log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ferrocorn_http::{RequestHead, percent_decode};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::types::PyString;

use super::asgi::answer_within;
use super::respond::{Body, FileBody};
use super::{Conn, ConnError, Peer, RemoteStrings, Sent};
use crate::server::app_call::{self, CallRequest, Called, Chunks, InputSource, Reply};
use crate::server::shared::Executor;
use crate::wsgi::{self, ClientSocket, DeferredBody, DirectWriter, RequestBody};
use ferrocorn_net::client_stream::ClientStream;

impl<S: ClientStream> Conn<S> {
    /// Serve a request with the WSGI app: read its body (or, when `deferred`, leave it to the
    /// app's first read, which sends `100 Continue`), call the app, write its response.
    /// `Ok(true)`: the connection may carry another request.
    pub(super) async fn handle_wsgi(
        &mut self,
        head: RequestHead,
        https: bool,
        deferred: bool,
        started: Instant,
    ) -> Result<bool, ConnError> {
        let body =
            if deferred { RequestBody::default() } else { self.read_body(head.framing).await? };
        let request_bytes = body.len();
        let decoded_path = percent_decode(&head.path);
        let (pre_hook, post_hook) = (self.shared.app.pre_request, self.shared.app.post_request);
        let keep_environ =
            post_hook || self.shared.access_log.as_ref().is_some_and(|l| l.needs_environ());

        let shared = self.shared.clone();
        let keep_alive_wanted = head.keep_alive
            && !self.shared.opts.keepalive.is_zero()
            && !deferred
            && !self.shutting_down();
        let head = Arc::new(head);
        let decoded_path = Arc::new(decoded_path);
        // The app's thread uses the socket itself (`write()`, a deferred body) only where the
        // stream allows it; otherwise `write()` output waits for the app's return.
        let wait = shared.executor.app_wait();
        // (Not for a background refresh of the cache: its answer must not reach the client.)
        let direct = self.direct.filter(|_| !self.refreshing_in_background());
        let socket =
            direct.map(|fd| ClientSocket { fd, timeout: self.shared.opts.io_timeout, wait });
        debug_assert!(!deferred || socket.is_some(), "a body is deferred only with the socket");
        let input = match socket {
            Some(socket) if deferred => InputSource::Deferred(DeferredBody {
                socket,
                framing: head.framing,
                buffered: std::mem::take(&mut self.rbuf),
                limits: self.shared.opts.limits.clone(),
                buffer_size: self.shared.opts.body_buffer_size,
            }),
            _ => InputSource::Buffered(body),
        };
        let call_request = CallRequest {
            listener: self.listener,
            head: head.clone(),
            decoded_path: decoded_path.clone(),
            https,
            proxy: self.proxy.clone(),
            input,
            keep_environ,
            writer: socket.map(|socket| DirectWriter {
                socket,
                version: head.version,
                is_head: head.is_head(),
                keep_alive: keep_alive_wanted,
            }),
            pre_hook,
            post_hook,
        };
        let permit = shared.enter_app().await.ok_or(ConnError::Closed)?;
        shared.request_started();
        let called = match &shared.executor {
            Executor::Inline | Executor::Asgi(_) => {
                let peer = self.peer;
                Python::attach(|py| {
                    let remote = self.remote.get_or_init(|| remote_strings(py, peer));
                    app_call::call(py, &shared.app, call_request, remote)
                })
            }
            Executor::Pool(_) | Executor::Hub(_) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let ctx = shared.app.clone();
                let peer = self.peer;
                let began = Arc::new(AtomicBool::new(false));
                let job_began = began.clone();
                let hub = shared.executor.hub_bridge();
                let remote = self.remote.clone();
                let job = Box::new(move |py: Python<'_>| {
                    if tx.is_closed() {
                        return; // answered 504 while queued for a thread: never started
                    }
                    job_began.store(true, Ordering::Release);
                    let remote = remote.get_or_init(|| remote_strings(py, peer));
                    let mut called = app_call::call(py, &ctx, call_request, remote);
                    match app_call::detach_stream(&mut called, hub) {
                        // The pump needs the connection reading its chunks now.
                        Some(pump) => {
                            if tx.send(called).is_ok() {
                                pump(py);
                            }
                        }
                        None => crate::server::pool::deliver(move || drop(tx.send(called))),
                    }
                });
                let submitted = shared.executor.submit(job).unwrap_or(false);
                match (submitted, answer_within(self.shared.opts.timeout, rx, &head).await) {
                    (true, Some(Ok(called))) => called,
                    (true, None) => Called {
                        reply: Reply::TimedOut { started: began.load(Ordering::Acquire) },
                        input: None,
                        environ: None,
                        hook_request: None,
                    },
                    _ => Called {
                        reply: Reply::Failed,
                        input: None,
                        environ: None,
                        hook_request: None,
                    },
                }
            }
            // A balancer's worker sends no request here (`dispatch.rs`); were one to come, it
            // fails like an app that could not be called.
            Executor::NoApp => {
                Called { reply: Reply::Failed, input: None, environ: None, hook_request: None }
            }
        };
        let Called { reply, input, environ, hook_request } = called;

        let mut keep_alive = head.keep_alive && !self.shared.opts.keepalive.is_zero();
        if deferred {
            let outcome =
                Python::attach(|_py| input.as_ref().and_then(|i| i.get().take_deferred_outcome()));
            match outcome {
                Some(o) if o.consumed && !o.failed => self.rbuf = o.remainder,
                _ => {
                    keep_alive = false;
                    self.body_unread = true;
                }
            }
        }
        let app_failed = matches!(reply, Reply::Failed | Reply::Aborted);
        let sent = match reply {
            Reply::Failed => {
                drop(permit);
                Some(self.send_error(500).await)
            }
            Reply::Complete { head: rhead, body } => {
                drop(permit);
                self.send_response(&head, &rhead, Body::Whole(&body), &mut keep_alive).await
            }
            Reply::Stream { head: rhead, first, mut chunks, result } => {
                let body = Body::Stream { first, chunks: &mut chunks };
                let sent = self.send_response(&head, &rhead, body, &mut keep_alive).await;
                close_in_python(chunks, result);
                drop(permit);
                sent
            }
            Reply::Continue { committed, mut chunks, result } => {
                keep_alive = committed.keep_alive;
                let sent = self
                    .stream_rest(
                        &committed.head,
                        committed.framing,
                        committed.sent,
                        None,
                        &mut chunks,
                        &mut keep_alive,
                    )
                    .await;
                close_in_python(chunks, result);
                drop(permit);
                sent
            }
            Reply::Aborted => {
                drop(permit);
                keep_alive = false;
                None
            }
            Reply::TimedOut { started } => {
                drop(permit);
                keep_alive = false;
                if started {
                    // The app still holds a thread (or greenlet) it cannot be made to give up.
                    shared.retire_after_deadline();
                }
                Some(self.send_error(504).await)
            }
            Reply::File(file) => {
                let body = Body::File(FileBody {
                    prefix: &file.prefix,
                    fd: file.fd,
                    offset: file.offset,
                    length: file.length,
                });
                let sent = self.send_response(&head, &file.head, body, &mut keep_alive).await;
                Python::attach(|py| {
                    wsgi::close_result(py, file.result.bind(py));
                    drop(file);
                });
                drop(permit);
                sent
            }
        };
        self.account(
            &head,
            &decoded_path,
            sent.as_ref(),
            started,
            request_bytes,
            app_failed,
            environ.as_ref(),
        );
        let environ = match (post_hook, hook_request) {
            (true, Some(req)) => {
                self.run_post_request(req, environ, sent.as_ref());
                None
            }
            _ => environ,
        };
        // Dropped without attaching (pyo3 defers the decref to the app's threads): with
        // gthread, gevent and asgi the GIL is usually held by Python, and waiting for it here
        // would stall every connection of the thread driving the runtime.
        drop((environ, input));
        Ok(sent.is_some() && keep_alive)
    }

    /// Run the `post_request` hook where the app runs: on the sync worker's own thread, or as a
    /// job of the gthread pool or the gevent hub — never where the sockets are served, which would have
    /// to wait for the GIL the app's threads hold (a no-op hook cut gthread hello from 68k to
    /// 21k RPS). It runs after the response was sent and may overlap the connection's next
    /// request.
    pub(super) fn run_post_request(
        &self,
        req: Py<crate::hooks::Request>,
        environ: Option<Py<PyDict>>,
        sent: Option<&Sent>,
    ) {
        let response = sent.map(|s| crate::hooks::Response {
            status: format!("{} {}", s.status, ferrocorn_http::reason_phrase(s.status)),
            status_code: s.status,
            headers: s.headers.clone(),
            sent: s.body_bytes,
        });
        let ctx = self.shared.app.clone();
        let hook = move |py: Python<'_>| {
            let environ = environ.map(|e| e.into_any()).unwrap_or_else(|| py.None());
            let response = match response {
                Some(r) => Py::new(py, r).map(|r| r.into_any()).unwrap_or_else(|_| py.None()),
                None => py.None(),
            };
            let worker = ctx.worker.clone_ref(py);
            let _ = ctx.hooks.call(py, "post_request", (worker, req, environ, response));
        };
        if let Err(hook) = self.shared.executor.submit(Box::new(hook)) {
            Python::attach(hook);
        }
    }
}

pub(super) fn remote_strings(py: Python<'_>, peer: Peer) -> RemoteStrings {
    let addr = peer.ip.map(|ip| ip.to_string()).unwrap_or_default();
    (
        PyString::new(py, &addr).unbind(),
        peer.port.map(|p| PyString::new(py, &p.to_string()).unbind()),
    )
}

/// Close the app's result (sync class) and release the Python objects of a finished stream.
pub(super) fn close_in_python(chunks: Chunks, result: Option<Py<PyAny>>) {
    if matches!(chunks, Chunks::Channel(_)) && result.is_none() {
        return; // the pool thread closes its own result
    }
    Python::attach(|py| {
        if let Some(result) = &result {
            wsgi::close_result(py, result.bind(py));
        }
        drop((chunks, result));
    });
}
