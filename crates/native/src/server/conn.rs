//! One client connection, from accept to close: optional PROXY header, then a loop of read
//! head → read body → call the app → write the response, with keep-alive, pipelining,
//! `100-continue`, and the timeouts that keep slow clients from holding anything but a little
//! memory. The app is only called once its request is complete (except a deferred
//! `100-continue` body, which the app asks for).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ferrocorn_http::{
    BodyFraming, BodyPump, ErrorKind, ParseError, ProxyInfo, ProxyMode, ProxyParse, RequestHead,
    ResponseFraming, ResponseHead, parse_proxy_header, parse_request_head, percent_decode,
    url_scheme_from_headers, write_error_response,
};
use pyo3::prelude::*;
use pyo3::types::PyString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Duration, timeout, timeout_at};

use super::io::{ClientStream, send_file, write_last};
use super::shared::{ConnectionLease, Executor, Shared};
use crate::asgi::{
    AsgiRequest, Bridge, Endpoints, Event, RequestShared, WebSocketSession, WsIn, WsOut, WsShared,
};
use ferrocorn_arbiter::RequestRecord;
use pyo3::types::PyDict;
use std::net::SocketAddr;
use tokio::sync::oneshot;

use super::app_call::{self, CallRequest, Called, Chunks, InputSource, Reply};
use super::chunk_channel::{End, chunk_channel};
use crate::access_log::AccessRecord;
use crate::clock::with_http_date;
use crate::logging::{debug, error, warning};
use crate::wsgi::{
    self, BodyCollector, ClientSocket, CollectError, DeferredBody, DirectWriter, FileResponse,
    RequestBody, SpoolError, frame_chunk,
};

const SERVER: &[u8] = b"ferrocorn";
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// Read size while a request body is coming (larger reads, fewer syscalls).
const BODY_READ_CHUNK: usize = 64 * 1024;
/// Request body bytes queued for an ASGI app before the connection stops reading the socket.
const BODY_QUEUE_LIMIT: usize = 256 * 1024;
/// A streamed response's chunks already queued by the app go out in one write up to this size.
const COALESCE_BYTES: usize = 64 * 1024;

/// The client's address as seen on the socket.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// IP, or None for a unix-socket peer.
    pub ip: Option<IpAddr>,
    /// Port, or None for a unix-socket peer.
    pub port: Option<u16>,
}

enum ConnError {
    Parse(ParseError),
    /// A WSGI body could not be spooled to its temporary file (answered 500).
    Spool(SpoolError),
    Closed,
}

impl From<CollectError> for ConnError {
    fn from(e: CollectError) -> Self {
        match e {
            CollectError::Parse(e) => ConnError::Parse(e),
            CollectError::Spool(e) => ConnError::Spool(e),
        }
    }
}

impl From<SpoolError> for ConnError {
    fn from(e: SpoolError) -> Self {
        ConnError::Spool(e)
    }
}

impl From<ParseError> for ConnError {
    fn from(e: ParseError) -> Self {
        ConnError::Parse(e)
    }
}

/// A WebSocket denial response being collected: status, headers, body so far.
type DenialResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// What the access log needs to know about a finished response.
struct Sent {
    status: u16,
    body_bytes: u64,
    headers: Vec<(String, String)>,
}

impl Sent {
    /// The scoreboard record of this response.
    fn record(&self, method: &str, started: Instant, request_bytes: u64) -> RequestRecord {
        RequestRecord {
            method: ferrocorn_metrics::method_index(method),
            status: ferrocorn_metrics::status_index(self.status),
            code: self.status,
            micros: started.elapsed().as_micros() as u64,
            request_bytes,
            response_bytes: self.body_bytes,
        }
    }
}

struct Conn<S: ClientStream> {
    shared: Arc<Shared>,
    /// The connection's place in the worker's counts: marked closing once the last response
    /// is written.
    lease: ConnectionLease,
    stream: S,
    peer: Peer,
    listener: usize,
    trusted: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    proxy: Option<ProxyInfo>,
    /// `REMOTE_ADDR` and `REMOTE_PORT` as Python strings, made once per connection by the
    /// first request's app call (on whichever thread runs it).
    remote: Arc<OnceLock<RemoteStrings>>,
    /// The ASGI request body still being read while the app runs.
    body_feed: Option<BodyFeed>,
    /// Part of the last request's body may still be on its way (the app did not read it):
    /// closing must drain it, or the kernel would answer it with a reset.
    body_unread: bool,
}

/// An ASGI request body being fed to the app while it runs.
struct BodyFeed {
    pump: BodyPump,
    state: Arc<RequestShared>,
    bridge: Arc<crate::asgi::Bridge>,
}

/// Serve one connection until it closes.
/// `received`: what the client had sent when the connection was accepted.
pub async fn serve<S: ClientStream>(
    lease: ConnectionLease,
    stream: S,
    peer: Peer,
    listener: usize,
    received: Vec<u8>,
) {
    let shared = lease.shared().clone();
    let trusted = shared.opts.forwarded_allow.allows(peer.ip);
    let mut conn = Conn {
        shared,
        lease,
        stream,
        peer,
        listener,
        trusted,
        rbuf: received,
        wbuf: Vec::with_capacity(READ_CHUNK),
        proxy: None,
        remote: Arc::default(),
        body_feed: None,
        body_unread: false,
    };
    conn.run().await;
    // Not attaching here: pyo3 defers the decref to the next time a Python thread attaches, so
    // the thread serving the sockets never waits for the GIL (which the app's threads may hold for long).
    drop(conn.remote);
}

impl<S: ClientStream> Conn<S> {
    fn shutting_down(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    async fn run(&mut self) {
        if self.shared.opts.proxy_mode != ProxyMode::Off
            && let Err(e) = self.read_proxy_header().await
        {
            return self.end_with(e).await;
        }
        let mut first = true;
        loop {
            let (head, consumed) = match self.read_head(first).await {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => return self.end_with(e).await,
            };
            first = false;
            self.rbuf.drain(..consumed);
            let client_closes = !head.keep_alive;
            let handled = self.handle(head).await;
            self.lease.not_owed();
            match handled {
                Ok(true) => continue,
                Ok(false) if client_closes => return self.close_after_last_request().await,
                Ok(false) => return self.close_gracefully().await,
                Err(e) => return self.end_with(e).await,
            }
        }
    }

    /// Read into `rbuf` what the socket holds now, without waiting; whether bytes came (a
    /// client's first request usually arrives with its connection).
    async fn read_what_is_there(&mut self) -> bool {
        self.make_read_room();
        let mut read = std::pin::pin!(self.stream.read_buf(&mut self.rbuf));
        let looked =
            std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
        matches!(looked, std::task::Poll::Ready(Ok(n)) if n > 0)
    }

    /// Read more bytes into `rbuf`; `Ok(0)` on EOF. The connection now waits for its client,
    /// so its request is no longer work its worker owes ([`ConnectionLease::not_owed`]).
    async fn fill(&mut self) -> std::io::Result<usize> {
        self.lease.not_owed();
        self.make_read_room();
        self.stream.read_buf(&mut self.rbuf).await
    }

    /// Make sure a read into `rbuf` has room for a useful amount.
    fn make_read_room(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_CHUNK);
        }
    }

    async fn fill_until(&mut self, deadline: tokio::time::Instant) -> Result<usize, ConnError> {
        match timeout_at(deadline, self.fill()).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => {
                debug!("read error from client: {e}");
                Err(ConnError::Closed)
            }
            Err(_) => {
                debug!("client too slow; closing connection");
                Err(ConnError::Closed)
            }
        }
    }

    async fn read_proxy_header(&mut self) -> Result<(), ConnError> {
        let deadline = tokio::time::Instant::now() + self.shared.opts.header_timeout;
        loop {
            match parse_proxy_header(&self.rbuf, self.shared.opts.proxy_mode)? {
                ProxyParse::NotProxy => return Ok(()),
                ProxyParse::Done(info, used) => {
                    if !self.shared.opts.proxy_allow.allows(self.peer.ip) {
                        return Err(ParseError::new(
                            ErrorKind::ForbiddenProxyRequest,
                            "PROXY header from a peer not in proxy_allow_ips",
                        )
                        .into());
                    }
                    self.rbuf.drain(..used);
                    self.proxy = Some(info);
                    return Ok(());
                }
                ProxyParse::Incomplete => {
                    if self.fill_until(deadline).await? == 0 {
                        return Err(ConnError::Closed);
                    }
                }
            }
        }
    }

    /// Wait for and parse the next request head. `Ok(None)`: the client closed (or stayed idle,
    /// or the worker is stopping) between requests.
    async fn read_head(&mut self, first: bool) -> Result<Option<(RequestHead, usize)>, ConnError> {
        let opts = &self.shared.opts;
        let idle = if first { opts.header_timeout } else { opts.keepalive };
        let header_timeout = opts.header_timeout;
        let mut head_deadline =
            (!self.rbuf.is_empty()).then(|| tokio::time::Instant::now() + header_timeout);
        loop {
            if !self.rbuf.is_empty() {
                let opts = &self.shared.opts;
                if let Some(parsed) = parse_request_head(&self.rbuf, &opts.limits, self.trusted)? {
                    return Ok(Some(parsed));
                }
            }
            match head_deadline {
                Some(deadline) => {
                    if self.fill_until(deadline).await? == 0 {
                        return Err(ParseError::new(
                            ErrorKind::NoMoreData,
                            "client closed mid-request",
                        )
                        .into());
                    }
                }
                None => {
                    // A stopping worker keeps idle connections a moment longer so a request
                    // already on its way is answered (with `Connection: close`) instead of
                    // meeting a closed socket.
                    let mut shutdown = self.shared.shutdown.clone();
                    let stopping = *shutdown.borrow();
                    let grace = self.shared.opts.keepalive.max(Duration::from_millis(500));
                    let wait = if stopping { idle.min(grace) } else { idle };
                    let read = tokio::select! {
                        r = timeout(wait, self.fill()) => r,
                        _ = shutdown.wait_for(|stop| *stop), if !stopping => continue,
                    };
                    match read {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(None),
                        Ok(Ok(_)) => {
                            head_deadline = Some(tokio::time::Instant::now() + header_timeout)
                        }
                    }
                }
            }
        }
    }

    /// Read a whole request body: kept in memory up to `--body-buffer-size` bytes, spooled to
    /// a temporary file beyond that (see [`BodyCollector`]).
    async fn read_body(&mut self, framing: BodyFraming) -> Result<RequestBody, ConnError> {
        let opts = &self.shared.opts;
        let mut body = BodyCollector::new(framing, opts.limits.clone(), opts.body_buffer_size);
        while !body.take_from(&mut self.rbuf)? {
            self.rbuf.reserve(BODY_READ_CHUNK);
            let deadline = tokio::time::Instant::now() + self.shared.opts.io_timeout;
            if self.fill_until(deadline).await? == 0 {
                return Err(body.ended_early().into());
            }
        }
        Ok(body.finish()?)
    }

    /// Serve one request. `Ok(true)`: the connection may carry another request.
    async fn handle(&mut self, head: RequestHead) -> Result<bool, ConnError> {
        let started = Instant::now();
        let https = if self.trusted {
            url_scheme_from_headers(&head.headers, &self.shared.opts.secure_scheme_headers)?
                .unwrap_or(false)
        } else {
            false
        };
        let wants_continue = head.expect_continue && head.framing != BodyFraming::Empty;
        if matches!(self.shared.executor, Executor::Asgi(_)) {
            // The ASGI app receives the body as the client sends it, so `100 Continue` goes
            // out now (WSGI defers it to the app's first read).
            if wants_continue {
                self.wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                if !self.flush().await {
                    return Err(ConnError::Closed);
                }
            }
            let decoded_path = percent_decode(&head.path);
            return match ferrocorn_http::websocket_request(&head) {
                None => {
                    let pump = BodyPump::new(head.framing, self.shared.opts.limits.clone());
                    self.handle_asgi(head, pump, decoded_path, https, started).await
                }
                Some(Ok(request)) => {
                    self.read_body(head.framing).await?;
                    self.handle_websocket(head, request.subprotocols, decoded_path, https).await
                }
                Some(Err(e)) => {
                    let wbuf = &mut self.wbuf;
                    with_http_date(|date| e.write_response(wbuf, date, SERVER));
                    self.flush().await;
                    Ok(false)
                }
            };
        }
        let deferred = wants_continue;
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
        let wait = shared.executor.app_wait();
        let socket = ClientSocket {
            fd: self.stream.as_raw_fd(),
            timeout: self.shared.opts.io_timeout,
            wait,
        };
        let input = if deferred {
            InputSource::Deferred(DeferredBody {
                socket,
                framing: head.framing,
                buffered: std::mem::take(&mut self.rbuf),
                limits: self.shared.opts.limits.clone(),
                buffer_size: self.shared.opts.body_buffer_size,
            })
        } else {
            InputSource::Buffered(body)
        };
        let call_request = CallRequest {
            listener: self.listener,
            head: head.clone(),
            decoded_path: decoded_path.clone(),
            https,
            proxy: self.proxy.clone(),
            input,
            keep_environ,
            writer: DirectWriter {
                socket,
                version: head.version,
                is_head: head.is_head(),
                keep_alive: keep_alive_wanted,
            },
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
                        None => super::pool::deliver(move || drop(tx.send(called))),
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
                keep_alive &= !self.shutting_down();
                self.send_complete(&head, &rhead, &body, &mut keep_alive).await
            }
            Reply::Stream { head: rhead, first, mut chunks, result } => {
                let sent =
                    self.send_stream(&head, &rhead, first, &mut chunks, &mut keep_alive).await;
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
                let sent = self.send_file_response(&head, &file, &mut keep_alive).await;
                Python::attach(|py| {
                    wsgi::close_result(py, file.result.bind(py));
                    drop(file);
                });
                drop(permit);
                sent
            }
        };
        shared.request_finished(
            sent.as_ref().map(|s| s.record(&head.method, started, request_bytes)),
            app_failed,
        );
        if let Some(sent) = &sent {
            self.write_access_log(&head, &decoded_path, sent, started, environ.as_ref());
        }
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
    fn run_post_request(
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

    /// Read more of the streamed ASGI request body and queue it for the app, waiting while
    /// [`BODY_QUEUE_LIMIT`] bytes are queued. Err when the client left, stalled past the I/O
    /// timeout or sent a malformed body.
    async fn feed_body(&mut self) -> Result<(), ConnError> {
        let Some(state) = self.body_feed.as_ref().map(|f| f.state.clone()) else { return Ok(()) };
        while state.queued_body_bytes() >= BODY_QUEUE_LIMIT {
            state.body_taken.notified().await;
        }
        if self.rbuf.is_empty() {
            let deadline = tokio::time::Instant::now() + self.shared.opts.io_timeout;
            if self.fill_until(deadline).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
        self.feed_buffered()
    }

    /// Queue the body bytes in the read buffer for the app (the feed ends with the body).
    fn feed_buffered(&mut self) -> Result<(), ConnError> {
        let Some(feed) = self.body_feed.as_mut() else { return Ok(()) };
        let (chunk, complete) = feed.pump.take(&mut self.rbuf)?;
        if feed.state.push_body(chunk, complete) {
            wake_receive(&feed.bridge, &feed.state);
        }
        if complete {
            self.body_feed = None;
        }
        Ok(())
    }

    /// Whether the response phase may read the socket: not while the app has a full body
    /// queue (it reads on once the app takes some).
    fn body_has_room(&self) -> bool {
        self.body_feed.as_ref().is_none_or(|f| f.state.queued_body_bytes() < BODY_QUEUE_LIMIT)
    }

    /// One access-log line (when the access log is on).
    fn write_access_log(
        &self,
        head: &RequestHead,
        decoded_path: &[u8],
        sent: &Sent,
        started: Instant,
        environ: Option<&Py<PyDict>>,
    ) {
        let Some(log) = &self.shared.access_log else { return };
        let path_info: String = decoded_path.iter().map(|&b| b as char).collect();
        let protocol = format!("HTTP/{}.{}", head.version.0, head.version.1);
        let remote_addr = match self.proxy.as_ref().and_then(|p| p.source) {
            Some(source) => source.ip().to_string(),
            None => self.peer.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        };
        let write = |lookup: &dyn Fn(&str) -> Option<String>| {
            log.write(&AccessRecord {
                remote_addr: &remote_addr,
                method: &head.method,
                raw_uri: &head.target,
                path_info: &path_info,
                query: &head.query,
                protocol: &protocol,
                status: sent.status,
                body_bytes: sent.body_bytes,
                request_headers: &head.headers,
                response_headers: &sent.headers,
                duration: started.elapsed(),
                environ: lookup,
            })
        };
        // The GIL is taken only when the format reads the environ (`{NAME}e`).
        match environ {
            Some(environ) => Python::attach(|py| {
                let environ = environ.bind(py);
                write(&|key: &str| environ.get_item(key).ok().flatten().map(|v| v.to_string()))
            }),
            None => write(&|_: &str| None),
        }
    }

    /// The scope's `client`, `server`, scheme and `root_path` for this connection.
    fn asgi_endpoints(&self, backend: &super::shared::AsgiBackend, https: bool) -> Endpoints {
        let client = match self.proxy.as_ref().and_then(|p| p.source) {
            Some(source) => Some(source),
            None => self.peer.ip.zip(self.peer.port).map(|(ip, port)| SocketAddr::new(ip, port)),
        };
        Endpoints {
            client,
            server: backend.servers.get(self.listener).cloned().unwrap_or_default(),
            https,
            root_path: backend.root_path.clone(),
        }
    }

    /// Serve one request with the ASGI class: hand it to the loop thread with the body bytes
    /// already read, feed it the rest of the body while it runs, then stream what the app
    /// sends back.
    async fn handle_asgi(
        &mut self,
        head: RequestHead,
        pump: Option<BodyPump>,
        decoded_path: Vec<u8>,
        https: bool,
        started: Instant,
    ) -> Result<bool, ConnError> {
        let shared = self.shared.clone();
        let Executor::Asgi(backend) = &shared.executor else { return Err(ConnError::Closed) };
        let head = Arc::new(head);
        let decoded_path = Arc::new(decoded_path);
        let (start_tx, mut start_rx) = oneshot::channel();
        let state = Arc::new(RequestShared::new(shared.next_request_id()));
        match pump {
            Some(pump) => {
                let (state, bridge) = (state.clone(), backend.bridge.clone());
                self.body_feed = Some(BodyFeed { pump, state, bridge });
                self.feed_buffered()?;
            }
            None => {
                state.push_body(Vec::new(), true);
            }
        }
        let endpoints = self.asgi_endpoints(backend, https);
        let permit = shared.enter_app().await.ok_or(ConnError::Closed)?;
        shared.request_started();
        backend.bridge.post(Event::Http(AsgiRequest::new(
            head.clone(),
            decoded_path.clone(),
            endpoints,
            start_tx,
            backend.bridge.clone(),
            state.clone(),
        )));
        // Wait for the response start; meanwhile read the rest of the body for `receive()`.
        // The per-request deadline runs from the end of the body: a slow upload is the
        // client's time, not the app's.
        let answered = loop {
            if self.body_feed.is_none() {
                let limit = self.shared.opts.timeout;
                break Some(answer_within(limit, &mut start_rx, &head).await);
            }
            tokio::select! {
                answered = &mut start_rx => break Some(Some(answered)),
                fed = self.feed_body() => if fed.is_err() {
                    break None; // the client left (or sent a malformed body)
                },
            }
        };
        let mut keep_alive = head.keep_alive && !self.shared.opts.keepalive.is_zero();
        let mut app_failed = false;
        let mut timed_out = false;
        let sent = match answered {
            None => None,
            Some(None) => {
                timed_out = true;
                keep_alive = false;
                shared.retire_after_deadline();
                Some(self.send_error(504).await)
            }
            Some(Some(Ok(Ok(start)))) => {
                match ResponseHead::new(&start.status.to_string(), start.headers) {
                    Ok(rhead) => {
                        let mut chunks = start.rest.map_or(Chunks::Complete, Chunks::Channel);
                        self.send_stream(&head, &rhead, start.first, &mut chunks, &mut keep_alive)
                            .await
                    }
                    Err(e) => {
                        error!("Error handling request: the ASGI app sent {e}");
                        app_failed = true;
                        keep_alive = false;
                        Some(self.send_error(500).await)
                    }
                }
            }
            _ => {
                app_failed = true;
                keep_alive = false;
                Some(self.send_error(500).await)
            }
        };
        if self.body_feed.take().is_some() {
            keep_alive = false; // the rest of the body is still on the socket
            self.body_unread = true;
        }
        let request_bytes = state.body_received();
        let complete = sent.is_some() && !timed_out;
        let ended = state.set_disconnected();
        if ended.app_running && !complete {
            // The client left (or the request timed out) while the app still runs.
            backend.bridge.post(Event::Abandoned(state.id));
        }
        if ended.wake_receive {
            wake_receive(&backend.bridge, &state);
        }
        drop(permit);
        shared.request_finished(
            sent.as_ref().map(|s| s.record(&head.method, started, request_bytes)),
            app_failed,
        );
        if let Some(sent) = &sent {
            self.write_access_log(&head, &decoded_path, sent, started, None);
        }
        Ok(sent.is_some() && keep_alive)
    }

    /// Serve a WebSocket session with the ASGI class: hand `websocket.connect` to the app,
    /// answer its accept (101), close (403) or denial response, then move frames both ways
    /// until either side closes. The connection is not reused afterwards.
    async fn handle_websocket(
        &mut self,
        head: RequestHead,
        subprotocols: Vec<String>,
        decoded_path: Vec<u8>,
        https: bool,
    ) -> Result<bool, ConnError> {
        use ferrocorn_http::{
            FrameDecoder, Message, encode_binary, encode_close, encode_pong, encode_text,
        };
        let shared = self.shared.clone();
        let Executor::Asgi(backend) = &shared.executor else { return Err(ConnError::Closed) };
        let head = Arc::new(head);
        let key = head
            .header("SEC-WEBSOCKET-KEY")
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let (out_tx, mut out_rx) = chunk_channel::<WsOut>(Some(backend.bridge.clone()));
        let ws_shared = Arc::new(WsShared::default());
        let endpoints = self.asgi_endpoints(backend, https);
        let permit = shared.enter_app().await.ok_or(ConnError::Closed)?;
        backend.bridge.post(Event::WebSocket(WebSocketSession::new(
            head.clone(),
            Arc::new(decoded_path),
            endpoints,
            subprotocols,
            out_tx,
            ws_shared.clone(),
        )));
        // The app decides: accept, close (403) or a denial response.
        let mut deny: Option<DenialResponse> = None;
        loop {
            match out_rx.recv().await {
                Some(WsOut::Accept { subprotocol, headers }) => {
                    ferrocorn_http::write_accept_response(
                        &mut self.wbuf,
                        &key,
                        subprotocol.as_deref(),
                        &headers,
                    );
                    if !self.flush().await {
                        ws_shared.mark_closed();
                        return Ok(false);
                    }
                    break;
                }
                Some(WsOut::DenyStart { status, headers }) => {
                    deny = Some((status, headers, Vec::new()))
                }
                Some(WsOut::DenyBody { body, more }) => {
                    let Some((status, headers, mut all)) = deny.take() else { continue };
                    all.extend_from_slice(&body);
                    if more {
                        deny = Some((status, headers, all));
                        continue;
                    }
                    match ResponseHead::new(&status.to_string(), headers) {
                        Ok(rhead) => {
                            let mut keep = false;
                            self.send_complete(&head, &rhead, &all, &mut keep).await;
                        }
                        Err(_) => {
                            self.send_error(500).await;
                        }
                    }
                    drop(permit);
                    return Ok(false);
                }
                None if out_rx.end() == Some(End::Failed) => {
                    self.send_error(500).await;
                    drop(permit);
                    return Ok(false);
                }
                Some(WsOut::Close { .. }) | None => {
                    // Closed (or gone) before accepting: 403, as ASGI servers answer.
                    let wbuf = &mut self.wbuf;
                    with_http_date(|date| write_error_response(wbuf, 403, "", date, SERVER));
                    self.flush().await;
                    drop(permit);
                    return Ok(false);
                }
                Some(_) => {} // sends before accept are ignored
            }
        }
        let mut decoder = FrameDecoder::default();
        let mut close_sent = false;
        let mut disconnect_code = 1006u16;
        'session: loop {
            // Frames already buffered first.
            loop {
                match decoder.decode(&self.rbuf) {
                    Ok((used, message)) => {
                        self.rbuf.drain(..used);
                        let Some(message) = message else { break };
                        match message {
                            Message::Text(text) => backend
                                .bridge
                                .post(Event::WsIncoming(ws_shared.clone(), WsIn::Text(text))),
                            Message::Binary(bytes) => backend
                                .bridge
                                .post(Event::WsIncoming(ws_shared.clone(), WsIn::Binary(bytes))),
                            Message::Ping(payload) => {
                                encode_pong(&mut self.wbuf, &payload);
                                if !self.flush().await {
                                    break 'session;
                                }
                            }
                            Message::Pong(_) => {}
                            Message::Close(code) => {
                                disconnect_code = code.as_ref().map_or(1005, |(c, _)| *c);
                                if !close_sent {
                                    encode_close(
                                        &mut self.wbuf,
                                        code.as_ref().map_or(1000, |(c, _)| *c),
                                        "",
                                    );
                                    self.flush().await;
                                }
                                break 'session;
                            }
                        }
                    }
                    Err(e) => {
                        disconnect_code = e.close_code();
                        encode_close(&mut self.wbuf, e.close_code(), e.reason());
                        self.flush().await;
                        break 'session;
                    }
                }
                if self.rbuf.is_empty() {
                    break;
                }
            }
            tokio::select! {
                read = self.fill() => match read {
                    Ok(n) if n > 0 => {}
                    _ => break 'session,
                },
                // An app that returned while the queue was full closes normally after it.
                out = out_rx.recv() => match out.or_else(|| {
                    (out_rx.end() == Some(End::Finished))
                        .then(|| WsOut::Close { code: 1000, reason: String::new() })
                }) {
                    Some(WsOut::Text(text)) => encode_text(&mut self.wbuf, &text),
                    Some(WsOut::Binary(bytes)) => encode_binary(&mut self.wbuf, &bytes),
                    Some(WsOut::Close { code, reason }) => {
                        if !close_sent {
                            let code = if ferrocorn_http::is_valid_close_code(code) { code } else { 1000 };
                            encode_close(&mut self.wbuf, code, &reason);
                            close_sent = true;
                            disconnect_code = code;
                        }
                    }
                    None => {
                        if !close_sent {
                            encode_close(&mut self.wbuf, 1011, "");
                            disconnect_code = 1011;
                        }
                        if !self.wbuf.is_empty() {
                            self.flush().await;
                        }
                        break 'session;
                    }
                    Some(_) => {}
                },
            }
            if !self.wbuf.is_empty() && !self.flush().await {
                break;
            }
            if close_sent {
                // Give the client a moment to answer the close, then end.
                let _ = timeout(Duration::from_secs(2), self.fill()).await;
                break;
            }
        }
        ws_shared.mark_closed();
        backend.bridge.post(Event::WsIncoming(ws_shared, WsIn::Disconnect(disconnect_code)));
        drop(permit);
        Ok(false)
    }

    async fn flush(&mut self) -> bool {
        let written = self.stream.write_all(&self.wbuf);
        let result =
            timeout(self.shared.opts.io_timeout, client_write(&self.shared, written)).await;
        self.wbuf.clear();
        Self::flushed(result)
    }

    /// Write `wbuf`, the end of a response. When `close_follows` (the connection closes right
    /// after it, see [`close_follows`]) the close sends the FIN with these bytes
    /// ([`write_last`]); only when nothing but bookkeeping runs between this write and the
    /// close — not before a `post_request` hook, which could hold the response back for as
    /// long as it runs.
    async fn flush_response_end(&mut self, close_follows: bool) -> bool {
        if !close_follows || self.shared.app.post_request {
            return self.flush().await;
        }
        let written = client_write(&self.shared, write_last(&self.stream, &self.wbuf));
        let result = timeout(self.shared.opts.io_timeout, written).await;
        self.wbuf.clear();
        Self::flushed(result)
    }

    fn flushed(result: Result<std::io::Result<()>, tokio::time::error::Elapsed>) -> bool {
        match result {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                debug!("write error to client: {e}");
                false
            }
            Err(_) => {
                debug!("client did not read the response in time");
                false
            }
        }
    }

    fn encode_head(
        &mut self,
        req: &RequestHead,
        rhead: &ResponseHead,
        framing: ResponseFraming,
        keep_alive: bool,
    ) {
        let wbuf = &mut self.wbuf;
        with_http_date(|date| rhead.encode(wbuf, req.version, framing, keep_alive, date, SERVER));
    }

    fn sent(&self, rhead: &ResponseHead, body_bytes: u64) -> Sent {
        let wants_headers = self.shared.access_log.is_some() || self.shared.app.post_request;
        let headers = if wants_headers { rhead.headers().to_vec() } else { Vec::new() };
        Sent { status: rhead.status(), body_bytes, headers }
    }

    async fn send_complete(
        &mut self,
        req: &RequestHead,
        rhead: &ResponseHead,
        body: &[u8],
        keep_alive: &mut bool,
    ) -> Option<Sent> {
        let body_allowed = rhead.body_allowed(req.is_head());
        let no_body_status = rhead.status() < 200 || rhead.status() == 204 || rhead.status() == 304;
        let (framing, send_len) = match rhead.content_length() {
            Some(cl) => {
                if body_allowed && (body.len() as u64) < cl {
                    *keep_alive = false; // the app promised more than it gave
                }
                (ResponseFraming::Length(cl), (body.len() as u64).min(cl) as usize)
            }
            None if no_body_status => (ResponseFraming::NoBody, 0),
            None => (ResponseFraming::Length(body.len() as u64), body.len()),
        };
        self.encode_head(req, rhead, framing, *keep_alive);
        let send_len = if body_allowed { send_len } else { 0 };
        self.wbuf.extend_from_slice(&body[..send_len]);
        let ok = self.flush_response_end(!*keep_alive).await;
        ok.then(|| self.sent(rhead, send_len as u64))
    }

    async fn send_stream(
        &mut self,
        req: &RequestHead,
        rhead: &ResponseHead,
        first: Vec<u8>,
        chunks: &mut Chunks,
        keep_alive: &mut bool,
    ) -> Option<Sent> {
        let body_allowed = rhead.body_allowed(req.is_head());
        let framing = if !body_allowed {
            ResponseFraming::NoBody
        } else if let Some(cl) = rhead.content_length() {
            ResponseFraming::Length(cl)
        } else if req.version == (1, 1) {
            ResponseFraming::Chunked
        } else {
            *keep_alive = false;
            ResponseFraming::CloseDelimited
        };
        *keep_alive &= !self.shutting_down();
        self.encode_head(req, rhead, framing, *keep_alive);
        self.stream_rest(rhead, framing, 0, Some(first), chunks, keep_alive).await
    }

    /// Send `first` (if any) and the rest of the app's iterable in `framing`, after the head.
    /// `sent` body bytes already went out. Returns None when the response had to be cut short.
    async fn stream_rest(
        &mut self,
        rhead: &ResponseHead,
        framing: ResponseFraming,
        mut sent: u64,
        first: Option<Vec<u8>>,
        chunks: &mut Chunks,
        keep_alive: &mut bool,
    ) -> Option<Sent> {
        if framing == ResponseFraming::NoBody {
            let closes = close_follows(*keep_alive, framing, chunks);
            return self.flush_response_end(closes).await.then(|| self.sent(rhead, sent));
        }
        let limit = rhead.content_length().unwrap_or(u64::MAX);
        let mut chunk = first.unwrap_or_default();
        loop {
            let take = (chunk.len() as u64).min(limit.saturating_sub(sent)) as usize;
            frame_chunk(&mut self.wbuf, framing, &chunk[..take]);
            sent += take as u64;
            if sent >= limit {
                break;
            }
            chunk.clear();
            // Chunks the app's side already queued go out in the same write as this one.
            if self.wbuf.len() < COALESCE_BYTES && chunks.try_next(&mut chunk) {
                continue;
            }
            if !self.wbuf.is_empty() && !self.flush().await {
                return None;
            }
            let more = if matches!(chunks, Chunks::Channel(_)) {
                // While the app (on another thread or loop) prepares the next chunk, watch the
                // client: a close ends the response now, so the app learns of the disconnect
                // (`http.disconnect`, a failed send) instead of producing for nobody.
                // An ASGI request body still coming is fed to the app meanwhile (full duplex).
                loop {
                    let feeding = self.body_feed.as_ref().map(|f| f.state.clone());
                    let room = self.body_has_room();
                    tokio::select! {
                        more = chunks.next(&mut chunk) => break more,
                        read = self.fill(), if room => match read {
                            Ok(n) if n > 0 => {
                                // body bytes go to the app; pipelined ones wait in the buffer
                                if self.feed_buffered().is_err() {
                                    return None;
                                }
                            }
                            _ => return None,
                        },
                        () = body_taken(feeding), if !room => {}
                    }
                }
            } else {
                chunks.next(&mut chunk).await
            };
            match more {
                Ok(true) => continue,
                Ok(false) => break,
                Err(()) => return None, // truncated: close without a terminator
            }
        }
        if framing == ResponseFraming::Chunked {
            self.wbuf.extend_from_slice(b"0\r\n\r\n");
        }
        let closes = close_follows(*keep_alive, framing, chunks);
        if !self.wbuf.is_empty() && !self.flush_response_end(closes).await {
            return None;
        }
        if framing == ResponseFraming::CloseDelimited
            || rhead.content_length().is_some_and(|cl| sent < cl)
        {
            *keep_alive = false;
        }
        Some(self.sent(rhead, sent))
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_file_response(
        &mut self,
        req: &RequestHead,
        file: &FileResponse,
        keep_alive: &mut bool,
    ) -> Option<Sent> {
        let FileResponse { head: rhead, prefix, fd, offset, length, .. } = file;
        let (fd, offset, length) = (*fd, *offset, *length);
        let body_allowed = rhead.body_allowed(req.is_head());
        let total = prefix.len() as u64 + length;
        let framing = match rhead.content_length() {
            Some(cl) => ResponseFraming::Length(cl),
            None => ResponseFraming::Length(total),
        };
        *keep_alive &= !self.shutting_down();
        self.encode_head(req, rhead, framing, *keep_alive);
        if !body_allowed {
            return self.flush().await.then(|| self.sent(rhead, 0));
        }
        let limit = rhead.content_length().unwrap_or(total);
        let prefix_len = (prefix.len() as u64).min(limit) as usize;
        self.wbuf.extend_from_slice(&prefix[..prefix_len]);
        if !self.flush().await {
            return None;
        }
        let file_len = length.min(limit - prefix_len as u64);
        let result = timeout(
            self.shared.opts.io_timeout.max(Duration::from_secs(1)) * 10,
            client_write(&self.shared, send_file(&self.stream, fd, offset, file_len)),
        )
        .await;
        match result {
            Ok(Ok(n)) => {
                if n < file_len {
                    *keep_alive = false;
                }
                Some(self.sent(rhead, prefix_len as u64 + n))
            }
            Ok(Err(e)) => {
                debug!("sendfile failed: {e}");
                None
            }
            Err(_) => None,
        }
    }

    /// Answer `status` with a small error page (`Connection: close`); what the logs record.
    async fn send_error(&mut self, status: u16) -> Sent {
        let wbuf = &mut self.wbuf;
        with_http_date(|date| write_error_response(wbuf, status, "", date, SERVER));
        self.flush().await;
        Sent { status, body_bytes: 0, headers: Vec::new() }
    }

    /// End the connection after an error: a malformed request is answered with its status, a
    /// body that could not be spooled with 500 (logged with the fix), a closed one silently.
    async fn end_with(&mut self, err: ConnError) {
        match err {
            ConnError::Parse(e) => match e.status() {
                Some(status) => {
                    warning!(
                        "Invalid request from ip={}: {e}",
                        self.peer.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "unix".into())
                    );
                    self.answer_and_close(status, e.detail()).await;
                }
                None => debug!("client went away: {e}"),
            },
            ConnError::Spool(e) => {
                error!("{e}");
                self.answer_and_close(e.status(), "could not store the request body").await;
            }
            ConnError::Closed => {}
        }
    }

    /// Send a small error page, then close the connection gracefully.
    async fn answer_and_close(&mut self, status: u16, detail: &str) {
        let wbuf = &mut self.wbuf;
        with_http_date(|date| write_error_response(wbuf, status, detail, date, SERVER));
        if self.flush().await {
            self.close_gracefully().await;
        }
    }

    /// Close after the response to a request whose client said it was its last (HTTP/1.0
    /// without keep-alive, `Connection: close`): at once when nothing more can come from it —
    /// the request was read whole, nothing follows it in the buffer or on the socket — which
    /// is the usual case and costs no wait for the client's FIN; otherwise as
    /// [`Self::close_gracefully`]. (A client that says `close` sends no further request.)
    async fn close_after_last_request(&mut self) {
        if self.body_unread || !self.rbuf.is_empty() {
            return self.close_gracefully().await;
        }
        // (`rbuf` is empty and no longer needed: what is read lands there.)
        if self.read_what_is_there().await {
            // Bytes after the last request: drain them so the response is not reset.
            return self.close_gracefully().await;
        }
        // Nothing waiting, the client's FIN already here, or a failed socket: close now.
        self.lease.closing();
    }

    /// Half-close and drain briefly so the client reads our last response instead of a reset.
    async fn close_gracefully(&mut self) {
        self.lease.closing();
        if self.stream.shutdown().await.is_err() {
            return;
        }
        // Drained into `rbuf`, which is no longer needed (a buffer of the task's own would
        // make every connection's task that much larger to move).
        let mut drained = 0usize;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while drained < 64 * 1024 {
            self.rbuf.clear();
            match timeout_at(deadline, self.fill()).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}

/// Whether the connection closes right after a streamed response ends: it will not be kept
/// alive (or its framing is the close), and nothing runs in between — a streamed WSGI body is
/// closed in Python after it, so only a body the app handed over whole qualifies.
fn close_follows(keep_alive: bool, framing: ResponseFraming, chunks: &Chunks) -> bool {
    (!keep_alive || framing == ResponseFraming::CloseDelimited)
        && matches!(chunks, Chunks::Complete)
}

/// Await `write`, a write to the connection's client. When it cannot finish at once the
/// request waits for its client; the worker is told first, so that a worker that can start no
/// other request leaves the listener's wait queue meanwhile (a sync worker writing a large
/// response to a slow reader).
async fn client_write<F: std::future::Future>(shared: &Shared, write: F) -> F::Output {
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => {
            shared.waiting_for_client();
            write.await
        }
    }
}

/// Log an accept-loop failure.
pub fn log_accept_error(err: &std::io::Error) {
    error!("accept() failed: {err}");
}

/// A connection's `REMOTE_ADDR` and `REMOTE_PORT` (None for a Unix socket).
type RemoteStrings = (Py<PyString>, Option<Py<PyString>>);

fn remote_strings(py: Python<'_>, peer: Peer) -> RemoteStrings {
    let addr = peer.ip.map(|ip| ip.to_string()).unwrap_or_default();
    (
        PyString::new(py, &addr).unbind(),
        peer.port.map(|p| PyString::new(py, &p.to_string()).unbind()),
    )
}

/// Resolves when the app takes request body from `state`'s full queue.
async fn body_taken(state: Option<Arc<RequestShared>>) {
    if let Some(state) = state {
        state.body_taken.notified().await;
    }
}

/// Wait for the app's answer, at most `limit` (the per-request deadline; zero waits forever).
/// None when the deadline passed; it is logged with the request's path.
async fn answer_within<T>(
    limit: std::time::Duration,
    answer: impl std::future::Future<Output = T>,
    head: &RequestHead,
) -> Option<T> {
    if limit.is_zero() {
        return Some(answer.await);
    }
    match timeout(limit, answer).await {
        Ok(value) => Some(value),
        Err(_) => {
            error!(
                "Request timed out after {:.1}s: {} {} (answered 504)",
                limit.as_secs_f64(),
                head.method,
                String::from_utf8_lossy(&head.target)
            );
            None
        }
    }
}

/// Wake the request's waiting `receive()` (its future goes to the loop through the bridge).
fn wake_receive(bridge: &Bridge, state: &RequestShared) {
    if let Some(future) = state.take_waiter() {
        bridge.post(Event::Wake(future));
    }
}

/// Close the app's result (sync class) and release the Python objects of a finished stream.
fn close_in_python(chunks: Chunks, result: Option<Py<PyAny>>) {
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
