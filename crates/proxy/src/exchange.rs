//! One request's exchange with upstreams, as bytes: its head for the upstream (made once),
//! its body as it comes from the client (the first 64 KiB held so the request can go to
//! another upstream; past that, streamed and no longer replayable), one attempt's send and
//! the wait for the response head, and the relay of the chosen response to the client with
//! its framing made right for the client (re-chunked, or closed after). Every wait is bounded:
//! the upstream's by `--upstream-timeout`, the client's by the client timeout. Backpressure is
//! the loop itself: nothing more is read from one side until the other took what came.

use std::io;
use std::time::Duration;

use ferrocorn_http::{BodyPump, Limits, ParseError, RequestHead};
use ferrocorn_net::bounded::timeout_if_pending;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::balancer::Delivery;
use crate::connection::UpstreamConn;
use crate::error::UpstreamHeadError;
use crate::fields::put_chunk_size;
use crate::response_head::{ResponseFraming, ResponseHead, ResponseLimits, parse_response_head};
use crate::response_out::{client_framing, write_client_head};

/// Request body bytes held in memory so the request can be sent again to another upstream.
pub const REPLAY_LIMIT: usize = 64 * 1024;
const READ_SIZE: usize = 16 * 1024;

/// Why an attempt on one upstream failed before its response head arrived.
#[derive(Debug)]
pub enum AttemptError {
    /// Writing the request failed (the upstream closed, reset).
    Send(io::Error),
    /// The upstream did not take the request in time.
    SendTimeout,
    /// Reading the response head failed, or the upstream closed before sending one.
    Receive(io::Error),
    /// No response head within the timeout.
    ReceiveTimeout,
    /// The response head was malformed.
    InvalidHeader(UpstreamHeadError),
    /// The client closed, or sent a malformed body, while its body was being forwarded.
    Client(ClientError),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Send(e) => write!(f, "sending the request failed: {e}"),
            AttemptError::SendTimeout => f.write_str("timed out sending the request"),
            AttemptError::Receive(e) => write!(f, "reading the response head failed: {e}"),
            AttemptError::ReceiveTimeout => f.write_str("timed out waiting for the response"),
            AttemptError::InvalidHeader(e) => write!(f, "invalid response head: {e}"),
            AttemptError::Client(e) => write!(f, "{e}"),
        }
    }
}

/// What went wrong on the client's side of an exchange.
#[derive(Debug)]
pub enum ClientError {
    /// The client closed or stopped sending its body.
    Gone,
    /// Its chunked body was malformed (answered 400 when nothing was sent yet).
    Body(ParseError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Gone => f.write_str("the client went away"),
            ClientError::Body(e) => write!(f, "malformed request body: {e}"),
        }
    }
}

/// The request's body as the upstreams get it.
pub struct RequestBody {
    pump: Option<BodyPump>,
    chunked: bool,
    /// Encoded body bytes read so far, while they fit in [`REPLAY_LIMIT`].
    held: Vec<u8>,
    /// Every byte of the body is in `held`.
    complete: bool,
    /// Some of the body was sent and let go: the request cannot be sent again.
    streamed: bool,
}

impl RequestBody {
    /// The body of `head` (its framing says what follows the head on the client connection).
    pub fn new(head: &RequestHead, limits: &Limits) -> RequestBody {
        let pump = BodyPump::new(head.framing, limits);
        let chunked = matches!(pump, Some(BodyPump::Chunked(_)));
        RequestBody { complete: pump.is_none(), pump, chunked, held: Vec::new(), streamed: false }
    }

    /// Whether the request can still be sent to another upstream.
    pub fn replayable(&self) -> bool {
        !self.streamed
    }

    /// Take what the client already sent, then read until the body is complete or
    /// [`REPLAY_LIMIT`] bytes are held.
    pub async fn prefetch<C: AsyncRead + Unpin>(
        &mut self,
        client: &mut C,
        rbuf: &mut Vec<u8>,
        client_timeout: Duration,
    ) -> Result<(), ClientError> {
        loop {
            self.take_buffered(rbuf)?;
            if self.complete || self.held.len() >= REPLAY_LIMIT {
                return Ok(());
            }
            read_client(client, rbuf, client_timeout).await?;
        }
    }

    /// Move the body bytes in `rbuf` into `held`, encoded for the upstream.
    fn take_buffered(&mut self, rbuf: &mut Vec<u8>) -> Result<(), ClientError> {
        let Some(pump) = &mut self.pump else { return Ok(()) };
        let (data, done) = pump.take(rbuf).map_err(ClientError::Body)?;
        encode_body(&mut self.held, &data, self.chunked, done);
        self.complete = done;
        Ok(())
    }
}

/// Append body `data` for the upstream: as is, or as a chunk (and the last chunk at `done`).
fn encode_body(out: &mut Vec<u8>, data: &[u8], chunked: bool, done: bool) {
    if !chunked {
        out.extend_from_slice(data);
        return;
    }
    if !data.is_empty() {
        put_chunk_size(out, data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    if done {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

/// Read more of the client's bytes into `rbuf`; its close is [`ClientError::Gone`].
async fn read_client<C: AsyncRead + Unpin>(
    client: &mut C,
    rbuf: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), ClientError> {
    rbuf.reserve(READ_SIZE);
    match tokio::time::timeout(limit, client.read_buf(rbuf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        _ => Err(ClientError::Gone),
    }
}

/// Write `bytes` to an upstream within `limit`.
async fn send(conn: &mut UpstreamConn, bytes: &[u8], limit: Duration) -> Result<(), AttemptError> {
    match timeout_if_pending(limit, conn.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AttemptError::Send(e)),
        Err(_) => Err(AttemptError::SendTimeout),
    }
}

/// Read more from an upstream into its buffer within `limit`; Ok(0) is its close.
async fn receive(conn: &mut UpstreamConn, limit: Duration) -> io::Result<usize> {
    let mut buffered = std::mem::take(&mut conn.buffered);
    buffered.reserve(READ_SIZE);
    let read = tokio::time::timeout(limit, conn.read_buf(&mut buffered)).await;
    conn.buffered = buffered;
    match read {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "upstream timed out")),
    }
}

/// Send the request (head, held body, then the rest of the body from the client) and wait
/// for the response head, skipping interim 1xx responses other than 101.
#[allow(clippy::too_many_arguments)]
pub async fn send_and_receive<C: AsyncRead + Unpin>(
    conn: &mut UpstreamConn,
    request_head: &[u8],
    body: &mut RequestBody,
    client: &mut C,
    rbuf: &mut Vec<u8>,
    is_head: bool,
    upstream_timeout: Duration,
    client_timeout: Duration,
) -> Result<ResponseHead, AttemptError> {
    if body.held.is_empty() {
        send(conn, request_head, upstream_timeout).await?;
    } else {
        let mut first = Vec::with_capacity(request_head.len() + body.held.len());
        first.extend_from_slice(request_head);
        first.extend_from_slice(&body.held);
        send(conn, &first, upstream_timeout).await?;
    }
    while !body.complete {
        body.streamed = true;
        body.held.clear();
        read_client(client, rbuf, client_timeout).await.map_err(AttemptError::Client)?;
        body.take_buffered(rbuf).map_err(AttemptError::Client)?;
        send(conn, &body.held, upstream_timeout).await?;
    }
    if body.streamed {
        body.held.clear();
    }
    loop {
        let parsed = parse_response_head(&conn.buffered, is_head, ResponseLimits::default())
            .map_err(AttemptError::InvalidHeader)?;
        if let Some((head, used)) = parsed {
            conn.buffered.drain(..used);
            if head.status >= 200 || head.upgrade {
                return Ok(head);
            }
            continue; // 100 Continue, 102, 103: the final response follows
        }
        match receive(conn, upstream_timeout).await {
            Ok(0) => {
                return Err(AttemptError::Receive(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before a response",
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(AttemptError::ReceiveTimeout);
            }
            Err(e) => return Err(AttemptError::Receive(e)),
        }
    }
}

/// How a relayed response ended.
#[derive(Debug)]
pub struct Relayed {
    /// Body bytes written to the client.
    pub body_bytes: u64,
    /// Whether anything (the head first) went to the client: when the relay broke before,
    /// the client can still be given an error response instead.
    pub head_sent: bool,
    /// The client connection may carry another request.
    pub client_keeps: bool,
    /// The upstream connection ended its response cleanly and may carry another request.
    pub upstream_reusable: bool,
    /// Why the relay stopped early, if it did (logged; the client connection is closed).
    pub broken: Option<String>,
}

/// Relay `response` (its head already parsed, the rest of its bytes in `conn`) to the
/// client.
pub async fn relay<C: AsyncWrite + Unpin>(
    conn: &mut UpstreamConn,
    response: &ResponseHead,
    client: &mut C,
    delivery: Delivery<'_>,
    upstream_timeout: Duration,
    client_timeout: Duration,
) -> Relayed {
    let client_version = delivery.client_version;
    let out_framing = client_framing(response.framing, client_version);
    let client_keeps =
        delivery.client_keep_alive && !matches!(out_framing, ResponseFraming::UntilClose);
    let mut out = Vec::with_capacity(512 + conn.buffered.len());
    write_client_head(response, &mut out, client_version, client_keeps, out_framing);
    if !delivery.extra_headers.is_empty() && out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
        out.extend_from_slice(delivery.extra_headers);
        out.extend_from_slice(b"\r\n");
    }
    let mut relay = BodyRelay {
        out,
        out_chunked: matches!(out_framing, ResponseFraming::Chunked),
        body_bytes: 0,
        head_sent: false,
        client_timeout,
        tee: delivery.tee,
    };
    let ended = relay.body(conn, response.framing, client, upstream_timeout).await;
    let (upstream_reusable, broken) = match ended {
        Ok(()) => (response.keep_alive && conn.buffered.is_empty(), None),
        Err(why) => (false, Some(why)),
    };
    Relayed {
        body_bytes: relay.body_bytes,
        head_sent: relay.head_sent,
        client_keeps: client_keeps && broken.is_none(),
        upstream_reusable: upstream_reusable && !response.upgrade,
        broken,
    }
}

/// The body half of [`relay`]: what is still to write, and how.
struct BodyRelay<'a> {
    out: Vec<u8>,
    out_chunked: bool,
    body_bytes: u64,
    head_sent: bool,
    client_timeout: Duration,
    tee: Option<&'a mut crate::balancer::BodyTee<'a>>,
}

impl BodyRelay<'_> {
    /// Queue body `data` for the client in its framing.
    fn queue(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.body_bytes += data.len() as u64;
        if let Some(tee) = self.tee.as_mut() {
            tee(data);
        }
        if self.out_chunked {
            put_chunk_size(&mut self.out, data.len());
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.out.extend_from_slice(data);
        }
    }

    /// Write what is queued.
    async fn flush<C: AsyncWrite + Unpin>(&mut self, client: &mut C) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.head_sent = true;
        let written = timeout_if_pending(self.client_timeout, client.write_all(&self.out)).await;
        self.out.clear();
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("writing to the client failed: {e}")),
            Err(_) => Err("the client did not read the response in time".into()),
        }
    }

    /// Relay the body in the upstream's `framing`, then write the end of the client's.
    async fn body<C: AsyncWrite + Unpin>(
        &mut self,
        conn: &mut UpstreamConn,
        framing: ResponseFraming,
        client: &mut C,
        upstream_timeout: Duration,
    ) -> Result<(), String> {
        match framing {
            ResponseFraming::NoBody => {}
            ResponseFraming::Length(mut left) => loop {
                let n = (left as usize).min(conn.buffered.len());
                self.queue(&conn.buffered[..n]);
                conn.buffered.drain(..n);
                left -= n as u64;
                if left == 0 {
                    break;
                }
                self.flush(client).await?;
                read_upstream_body(conn, upstream_timeout).await?;
            },
            ResponseFraming::Chunked => {
                let mut decoder = ferrocorn_http::ChunkedDecoder::new(Limits::default());
                let mut data = Vec::new();
                loop {
                    let used = decoder
                        .decode(&conn.buffered, &mut data)
                        .map_err(|e| format!("malformed chunked body from the upstream: {e}"))?;
                    conn.buffered.drain(..used);
                    self.queue(&data);
                    data.clear();
                    if decoder.is_done() {
                        break;
                    }
                    self.flush(client).await?;
                    read_upstream_body(conn, upstream_timeout).await?;
                }
            }
            ResponseFraming::UntilClose => loop {
                self.queue(&conn.buffered);
                conn.buffered.clear();
                self.flush(client).await?;
                match receive(conn, upstream_timeout).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(format!("reading the response body failed: {e}")),
                }
            },
        }
        if self.out_chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush(client).await
    }
}

/// Read more of a response body; the upstream's close before the end is an error.
async fn read_upstream_body(conn: &mut UpstreamConn, limit: Duration) -> Result<(), String> {
    match receive(conn, limit).await {
        Ok(0) => Err("the upstream closed the connection inside the response body".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("reading the response body failed: {e}")),
    }
}
