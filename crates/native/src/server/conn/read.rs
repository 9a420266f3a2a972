//! Reading a connection's requests: the PROXY header, request heads (with the header
//! timeout), whole bodies for WSGI, and an ASGI body fed to the app while it runs.

use ferrocorn_http::{
    BodyFraming, ErrorKind, ParseError, ProxyParse, RequestHead, parse_proxy_header,
    parse_request_head,
};
use tokio::io::AsyncReadExt;
use tokio::time::{Duration, timeout_at};

use super::{BODY_QUEUE_LIMIT, BODY_READ_CHUNK, Conn, ConnError, READ_CHUNK, wake_receive};
use crate::logging::debug;
use crate::wsgi::{BodyCollector, RequestBody};
use ferrocorn_net::bounded::{poll_once, timeout_if_pending};
use ferrocorn_net::client_stream::ClientStream;

impl<S: ClientStream> Conn<S> {
    /// Read into `rbuf` what the socket holds now, without waiting; whether bytes came (a
    /// client's first request usually arrives with its connection).
    pub(super) async fn read_what_is_there(&mut self) -> bool {
        self.make_read_room();
        let read = std::pin::pin!(self.stream.read_buf(&mut self.rbuf));
        matches!(poll_once(read).await, std::task::Poll::Ready(Ok(n)) if n > 0)
    }

    /// Read more bytes into `rbuf`; `Ok(0)` on EOF. The connection now waits for its client,
    /// so its request is no longer work its worker owes ([`ConnectionLease::not_owed`]).
    pub(super) async fn fill(&mut self) -> std::io::Result<usize> {
        self.lease.not_owed();
        self.make_read_room();
        self.stream.read_buf(&mut self.rbuf).await
    }

    /// Make sure a read into `rbuf` has room for a useful amount.
    pub(super) fn make_read_room(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_CHUNK);
        }
    }

    pub(super) async fn fill_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<usize, ConnError> {
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

    pub(super) async fn read_proxy_header(&mut self) -> Result<(), ConnError> {
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
    pub(super) async fn read_head(
        &mut self,
        first: bool,
    ) -> Result<Option<(RequestHead, usize)>, ConnError> {
        let opts = &self.shared.opts;
        let idle = if first { opts.header_timeout } else { opts.keepalive };
        let header_timeout = opts.header_timeout;
        // A head has begun (bytes are in): the rest must come within the header timeout, from
        // when it is first waited for (the clock is read only then).
        let mut head_begun = !self.rbuf.is_empty();
        let mut head_deadline = None;
        loop {
            if !self.rbuf.is_empty() {
                let opts = &self.shared.opts;
                if let Some(parsed) = parse_request_head(&self.rbuf, &opts.limits, self.trusted)? {
                    if opts.require_host {
                        parsed.0.require_host()?;
                    }
                    return Ok(Some(parsed));
                }
            }
            match head_begun {
                true => {
                    let deadline = *head_deadline
                        .get_or_insert_with(|| tokio::time::Instant::now() + header_timeout);
                    if self.fill_until(deadline).await? == 0 {
                        return Err(ParseError::new(
                            ErrorKind::NoMoreData,
                            "client closed mid-request",
                        )
                        .into());
                    }
                }
                false => {
                    // A stopping worker keeps idle connections a moment longer so a request
                    // already on its way is answered (with `Connection: close`) instead of
                    // meeting a closed socket.
                    let mut shutdown = self.shared.shutdown.clone();
                    let stopping = *shutdown.borrow();
                    let grace = self.shared.opts.keepalive.max(Duration::from_millis(500));
                    let wait = if stopping { idle.min(grace) } else { idle };
                    let read = tokio::select! {
                        r = timeout_if_pending(wait, self.fill()) => r,
                        _ = shutdown.wait_for(|stop| *stop), if !stopping => continue,
                    };
                    match read {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(None),
                        Ok(Ok(_)) => head_begun = true,
                    }
                }
            }
        }
    }

    /// Read a whole request body: kept in memory up to `--body-buffer-size` bytes, spooled to
    /// a temporary file beyond that (see [`BodyCollector`]).
    pub(super) async fn read_body(
        &mut self,
        framing: BodyFraming,
    ) -> Result<RequestBody, ConnError> {
        let opts = &self.shared.opts;
        let mut body = BodyCollector::new(framing, &opts.limits, opts.body_buffer_size);
        while !body.take_from(&mut self.rbuf)? {
            self.rbuf.reserve(BODY_READ_CHUNK);
            let deadline = tokio::time::Instant::now() + self.shared.opts.io_timeout;
            if self.fill_until(deadline).await? == 0 {
                return Err(body.ended_early().into());
            }
        }
        Ok(body.finish()?)
    }

    /// Read more of the streamed ASGI request body and queue it for the app, waiting while
    /// [`BODY_QUEUE_LIMIT`] bytes are queued. Err when the client left, stalled past the I/O
    /// timeout or sent a malformed body.
    pub(super) async fn feed_body(&mut self) -> Result<(), ConnError> {
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
    pub(super) fn feed_buffered(&mut self) -> Result<(), ConnError> {
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
    pub(super) fn body_has_room(&self) -> bool {
        self.body_feed.as_ref().is_none_or(|f| f.state.queued_body_bytes() < BODY_QUEUE_LIMIT)
    }
}
