//! Writing to a connection's client: a response head and its [`Body`] — whole bytes, a file
//! range, or chunks as they come, whoever produced them (the app, later a cache or an
//! upstream) — framed the same way; error responses; the bookkeeping after a response (the
//! scoreboard's record, the access log); and the ways a connection closes (at once after a
//! last request, or half-closed with a drain).

use std::os::fd::RawFd;
use std::time::Instant;

use ferrocorn_http::{
    RequestHead, ResponseFraming, ResponseHead, write_error_response, write_error_response_with,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::io::AsyncWriteExt;
use tokio::time::{Duration, timeout, timeout_at};

use super::cache::CacheStart;
use super::{COALESCE_BYTES, Conn, ConnError, SERVER, Sent, body_taken};
use crate::access_log::AccessRecord;
use crate::clock::with_http_date;
use crate::logging::{debug, error, warning};
use crate::server::app_call::Chunks;
use crate::server::shared::ConnectionLease;
use crate::wsgi::frame_chunk;
use ferrocorn_cache::RefreshFailure;
use ferrocorn_net::bounded::{poll_once, timeout_if_pending};

/// A response body, as the writer sends it. Nothing in it needs Python except the iterator a
/// sync worker's [`Chunks::Inline`] pulls.
pub(super) enum Body<'a> {
    /// All of it, in memory.
    Whole(&'a [u8]),
    /// Some bytes, then a range of an open file.
    File(FileBody<'a>),
    /// The first bytes, then chunks as they come.
    Stream {
        /// Bytes already at hand.
        first: Vec<u8>,
        /// The rest.
        chunks: &'a mut Chunks,
    },
}

/// A file range to send, after `prefix` (sent with `sendfile` where the stream allows it).
pub(super) struct FileBody<'a> {
    /// Bytes before the file (a WSGI app's `write()` output).
    pub prefix: &'a [u8],
    /// The file, kept open by the caller until the send returns.
    pub fd: RawFd,
    /// Where to start in the file.
    pub offset: u64,
    /// How many bytes of it to send.
    pub length: u64,
}
use ferrocorn_net::client_stream::{ClientStream, send_file, write_last};

impl<S: ClientStream> Conn<S> {
    /// Send a response: `rhead` with `body`, framed for `req`. `keep_alive` says whether the
    /// connection may carry another request; it is cleared when the response must end the
    /// connection (the worker is stopping, the framing is the close, the body fell short).
    /// None when the client could not be written to.
    pub(super) async fn send_response(
        &mut self,
        req: &RequestHead,
        rhead: &ResponseHead,
        body: Body<'_>,
        keep_alive: &mut bool,
    ) -> Option<Sent> {
        *keep_alive &= !self.shutting_down();
        let tagged = match self.cache_response_start(req, rhead, keep_alive).await {
            CacheStart::Answered(sent) => return sent,
            CacheStart::Refresh => {
                let sent = self.refresh_body(rhead, body).await;
                self.cache_response_end(rhead, Some(&sent));
                return Some(sent);
            }
            CacheStart::Send(tagged) => tagged,
        };
        self.capture_body(&body);
        let sending = tagged.as_ref().unwrap_or(rhead);
        let sent = match body {
            Body::Whole(bytes) => self.send_complete(req, sending, bytes, keep_alive).await,
            Body::File(file) => self.send_file_response(req, sending, file, keep_alive).await,
            Body::Stream { first, chunks } => {
                self.send_stream(req, sending, first, chunks, keep_alive).await
            }
        };
        self.cache_response_end(rhead, sent.as_ref());
        sent
    }

    /// After a response (or a failure to send one): the worker's counts and the scoreboard's
    /// record, then the access log line. `environ`: the WSGI environ, when the log format
    /// reads it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn account(
        &self,
        head: &RequestHead,
        decoded_path: &[u8],
        sent: Option<&Sent>,
        started: Instant,
        request_bytes: u64,
        failed: bool,
        environ: Option<&Py<PyDict>>,
    ) {
        self.shared
            .request_finished(sent.map(|s| s.record(&head.method, started, request_bytes)), failed);
        if let Some(sent) = sent {
            self.write_access_log(head, decoded_path, sent, started, environ);
        }
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
        if self.refreshing_in_background() {
            return; // the client's answer (the stale copy) was logged
        }
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

    pub(super) async fn flush(&mut self) -> bool {
        let written = self.stream.write_all(&self.wbuf);
        let result =
            timeout_if_pending(self.shared.opts.io_timeout, client_write(&mut self.lease, written))
                .await;
        self.wbuf.clear();
        Self::flushed(result)
    }

    /// Write `wbuf`, the end of a response. When `close_follows` (the connection closes right
    /// after it, see [`close_follows`]) the close sends the FIN with these bytes
    /// ([`write_last`]); only when nothing but bookkeeping runs between this write and the
    /// close — not before a `post_request` hook, which could hold the response back for as
    /// long as it runs.
    pub(super) async fn flush_response_end(&mut self, close_follows: bool) -> bool {
        if !close_follows || self.shared.app.post_request {
            return self.flush().await;
        }
        let written =
            client_write(&mut self.lease, write_last(&mut self.stream, self.direct, &self.wbuf));
        let result = timeout_if_pending(self.shared.opts.io_timeout, written).await;
        self.wbuf.clear();
        Self::flushed(result)
    }

    pub(super) fn flushed(
        result: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
    ) -> bool {
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

    pub(super) fn encode_head(
        &mut self,
        req: &RequestHead,
        rhead: &ResponseHead,
        framing: ResponseFraming,
        keep_alive: bool,
    ) {
        let wbuf = &mut self.wbuf;
        with_http_date(|date| rhead.encode(wbuf, req.version, framing, keep_alive, date, SERVER));
    }

    pub(super) fn sent(&self, rhead: &ResponseHead, body_bytes: u64) -> Sent {
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
        let framing = rhead.streamed_framing(req.is_head(), req.version);
        *keep_alive &= framing != ResponseFraming::CloseDelimited;
        self.encode_head(req, rhead, framing, *keep_alive);
        self.stream_rest(rhead, framing, 0, Some(first), chunks, keep_alive).await
    }

    /// Send `first` (if any) and the rest of the app's iterable in `framing`, after the head.
    /// `sent` body bytes already went out. Returns None when the response had to be cut short.
    pub(super) async fn stream_rest(
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
            if let Some(capture) = self.cache.capture.as_mut() {
                capture.push(&chunk[..take]);
            }
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

    async fn send_file_response(
        &mut self,
        req: &RequestHead,
        rhead: &ResponseHead,
        file: FileBody<'_>,
        keep_alive: &mut bool,
    ) -> Option<Sent> {
        let FileBody { prefix, fd, offset, length } = file;
        let body_allowed = rhead.body_allowed(req.is_head());
        let total = prefix.len() as u64 + length;
        let framing = match rhead.content_length() {
            Some(cl) => ResponseFraming::Length(cl),
            None => ResponseFraming::Length(total),
        };
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
            client_write(
                &mut self.lease,
                send_file(&mut self.stream, self.direct, fd, offset, file_len),
            ),
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
    /// A 500 or 504 of a request refreshing a cached copy answers that copy instead, when
    /// `--cache-use-stale` allows it.
    pub(super) async fn send_error(&mut self, status: u16) -> Sent {
        let failure = match status {
            504 => RefreshFailure::Timeout,
            _ => RefreshFailure::Error,
        };
        if self.refreshing_in_background() {
            return Sent { status, body_bytes: 0, headers: Vec::new() }; // the client has its answer
        }
        if matches!(status, 500 | 502 | 504)
            && let Some(sent) = self.answer_stale(failure, &mut false).await
        {
            return sent;
        }
        let tag = self.cache_status_line();
        let wbuf = &mut self.wbuf;
        with_http_date(|date| write_error_response_with(wbuf, status, "", &tag, date, SERVER));
        self.flush().await;
        Sent { status, body_bytes: 0, headers: Vec::new() }
    }

    /// End the connection after an error: a malformed request is answered with its status, a
    /// body that could not be spooled with 500 (logged with the fix), a closed one silently.
    pub(super) async fn end_with(&mut self, err: ConnError) {
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
    pub(super) async fn answer_and_close(&mut self, status: u16, detail: &str) {
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
    pub(super) async fn close_after_last_request(&mut self) {
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
    pub(super) async fn close_gracefully(&mut self) {
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
pub(super) fn close_follows(keep_alive: bool, framing: ResponseFraming, chunks: &Chunks) -> bool {
    (!keep_alive || framing == ResponseFraming::CloseDelimited)
        && matches!(chunks, Chunks::Complete)
}

/// Await `write`, a write to the connection's client. When it cannot finish at once the
/// connection waits for its client, which is no work the worker owes it
/// ([`ConnectionLease::not_owed`]: a sync worker whose app slot is free takes the next
/// connection meanwhile, however slowly this client reads); and a worker that can start no
/// other request (a sync worker streaming its app's response) is told, so that it leaves the
/// listener's wait queue meanwhile.
pub(super) async fn client_write<F: std::future::Future>(
    lease: &mut ConnectionLease,
    write: F,
) -> F::Output {
    let mut write = std::pin::pin!(write);
    if let std::task::Poll::Ready(out) = poll_once(write.as_mut()).await {
        return out;
    }
    lease.not_owed();
    lease.shared().waiting_for_client();
    write.await
}
