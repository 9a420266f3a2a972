//! One client connection, from accept to close: optional PROXY header, then a loop of read
//! head → read body → call the app → write the response, with keep-alive, pipelining,
//! `100-continue`, and the timeouts that keep slow clients from holding anything but a little
//! memory. The app is only called once its request is complete (except a deferred
//! `100-continue` body, which the app asks for).
//!
//! This file holds the connection's state and its loop; the jobs are apart: reading
//! (`read.rs`), a WSGI request (`wsgi.rs`), an ASGI request (`asgi.rs`), a WebSocket session
//! (`websocket.rs`), the response cache (`cache.rs`, its counts in `cache_count.rs`), and
//! writing responses and closing (`respond.rs`).

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ferrocorn_http::{BodyPump, ParseError, ProxyInfo, ProxyMode};
use ferrocorn_shm::scoreboard::RequestRecord;
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::shared::{ConnectionLease, Shared};
use crate::asgi::RequestShared;
use crate::logging::error;
use crate::wsgi::{CollectError, SpoolError};
use ferrocorn_net::client_stream::ClientStream;

mod asgi;
mod cache;
mod cache_count;
mod cache_fill;
mod cache_hit;
mod dispatch;
mod key_inputs;
mod pool_hop;
mod read;
mod respond;
mod upstream;
mod websocket;
mod wsgi;

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
    /// The stream's descriptor when the raw-descriptor fast paths are allowed (the stream
    /// reports it and `direct_socket_io` is on); None: every byte goes through `stream`.
    direct: Option<RawFd>,
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
    /// The response cache's buffers and its part in the current request.
    cache: cache::ConnCache,
}

/// An ASGI request body being fed to the app while it runs.
struct BodyFeed {
    pump: BodyPump,
    state: Arc<RequestShared>,
    bridge: Arc<crate::asgi::Bridge>,
}

/// Resolves when the app takes request body from `state`'s full queue.
pub(super) async fn body_taken(state: Option<Arc<RequestShared>>) {
    if let Some(state) = state {
        state.body_taken.notified().await;
    }
}

/// Wake the request's waiting `receive()` (its future goes to the loop through the bridge).
pub(super) fn wake_receive(bridge: &crate::asgi::Bridge, state: &RequestShared) {
    if let Some(future) = state.take_waiter() {
        bridge.post(crate::asgi::Event::Wake(future));
    }
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
    let direct = stream.direct_fd().filter(|_| shared.opts.direct_socket_io);
    let mut conn = Conn {
        shared,
        lease,
        stream,
        direct,
        peer,
        listener,
        trusted,
        rbuf: received,
        wbuf: Vec::with_capacity(READ_CHUNK),
        proxy: None,
        remote: Arc::default(),
        body_feed: None,
        body_unread: false,
        cache: cache::ConnCache::default(),
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
            let handled = self.serve_request(head).await;
            self.lease.not_owed();
            match handled {
                Ok(true) => continue,
                Ok(false) if client_closes => return self.close_after_last_request().await,
                Ok(false) => return self.close_gracefully().await,
                Err(e) => return self.end_with(e).await,
            }
        }
    }
}

/// Log an accept-loop failure.
pub fn log_accept_error(err: &std::io::Error) {
    error!("accept() failed: {err}");
}

/// A connection's `REMOTE_ADDR` and `REMOTE_PORT` (None for a Unix socket).
type RemoteStrings = (Py<PyString>, Option<Py<PyString>>);
