//! A balancer worker's upstream side: its group's selection state (`ferrocorn-balance`), its
//! keep-alive pool, and one request carried through them — choose an upstream, send, and on
//! a failure that `--next-upstream` allows, go on to another one until a response comes, the
//! tries or the time run out, or none is left (502; 504 when the last failure was a timeout).
//! A reused keep-alive connection the upstream had closed costs a fresh connection to the
//! same upstream, not a failure (for an idempotent request). What happened is told to an
//! [`Observer`] (logs and metrics live with the caller).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrocorn_balance::{Failure, Group, Outcome, PeerId, SelectKey, Tried, idempotent};
use ferrocorn_http::{Limits, RequestHead};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::ProxyConfig;
use crate::connection::{ConnectError, UpstreamConn};
use crate::exchange::{AttemptError, ClientError, Relayed, RequestBody, relay, send_and_receive};
use crate::forwarding::ForwardContext;
use crate::pool::Pool;
use crate::request_out::write_upstream_head;
use crate::response_head::ResponseHead;
use crate::response_out::write_client_head;

/// What the caller learns as a request is proxied (logging and metrics). Each attempt is
/// `attempt_started`, then exactly one of `attempt_failed`, `response_head` and
/// `attempt_abandoned`.
pub trait Observer: Sync {
    /// An attempt on `upstream` begins.
    fn attempt_started(&self, _upstream: PeerId) {}
    /// The attempt on `upstream` failed; the request may go on to another.
    fn attempt_failed(&self, upstream: PeerId, failure: Failure, detail: &str);
    /// The attempt on `upstream` got its response head after `waited`.
    fn response_head(&self, _upstream: PeerId, _waited: Duration) {}
    /// The attempt on `upstream` ended on the client's side (it went away, or sent a
    /// malformed body): not the upstream's failure.
    fn attempt_abandoned(&self, _upstream: PeerId) {}
    /// The request goes on from `upstream` (which failed it) to another one.
    fn retried(&self, _upstream: PeerId) {}
}

/// One request to proxy.
pub struct ProxyRequest<'a> {
    /// Its head, as the client sent it.
    pub head: &'a RequestHead,
    /// The client and its connection, for the forwarding headers.
    pub forward: ForwardContext<'a>,
    /// What `hash`/`ip_hash` selection reads.
    pub key: SelectKey<'a>,
    /// The client connection may carry another request after this one.
    pub client_keep_alive: bool,
    /// The parser's limits (for a chunked request body).
    pub limits: &'a Limits,
}

/// How a proxied request ended.
#[derive(Debug)]
pub enum Proxied {
    /// A response from `upstream` went to the client.
    Relayed {
        /// The upstream that answered.
        upstream: PeerId,
        /// Its status.
        status: u16,
        /// How the relay went.
        relayed: Relayed,
        /// The upstream's response head (its headers for the access log).
        response: ResponseHead,
    },
    /// The connection became a tunnel to `upstream` (101 Switching Protocols) and it ended.
    Tunnelled {
        /// The upstream of the tunnel.
        upstream: PeerId,
        /// Bytes sent to the client over it.
        body_bytes: u64,
    },
    /// Nothing went to the client: answer it with this status (502, 504).
    Failed {
        /// The status to answer.
        status: u16,
        /// What failed, for the error page and the log.
        detail: String,
    },
    /// The client went away or sent a malformed body.
    Client(ClientError),
}

/// How the upstream side of a request ended ([`Balancer::forward`]).
pub enum Forwarded {
    /// `upstream` answered with `response`; its body is still on `conn`
    /// ([`Balancer::deliver`] relays it).
    Response {
        /// The upstream that answered.
        upstream: PeerId,
        /// Its response head.
        response: ResponseHead,
        /// Its connection, with the rest of the response.
        conn: UpstreamConn,
    },
    /// No upstream gave a response: answer the client with this status (502, 504).
    Failed {
        /// The status to answer.
        status: u16,
        /// What failed, for the error page and the log.
        detail: String,
    },
    /// The client went away or sent a malformed body.
    Client(ClientError),
}

/// Hears every body byte of a response as it goes to the client.
pub type BodyTee<'t> = dyn FnMut(&[u8]) + Send + 't;

/// How a response is delivered to the client ([`Balancer::deliver`]).
pub struct Delivery<'a> {
    /// The client's HTTP version.
    pub client_version: (u8, u8),
    /// The client connection may carry another request after this one.
    pub client_keep_alive: bool,
    /// Header lines (each ending in CRLF) added to the response head, e.g. `X-Cache-Status`.
    pub extra_headers: &'a [u8],
    /// Hears every body byte as it goes to the client (the response cache's capture).
    pub tee: Option<&'a mut BodyTee<'a>>,
}

/// One worker's upstream group, pool and settings.
pub struct Balancer {
    config: ProxyConfig,
    group: Mutex<Group>,
    pool: Mutex<Pool>,
}

impl Balancer {
    /// The balancer of `config`; `seed` seeds the random choices (`random_two`).
    pub fn new(config: ProxyConfig, seed: u64) -> Result<Balancer, ferrocorn_balance::GroupError> {
        let mut group = Group::new(config.upstreams.clone(), config.method.clone(), seed)?;
        if let Some(check) = &config.health_check {
            group.set_health_check(check.clone());
        }
        let pool = Pool::new(config.upstreams.len(), config.keepalive, config.keepalive_timeout);
        Ok(Balancer { config, group: Mutex::new(group), pool: Mutex::new(pool) })
    }

    /// Its configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The selection state (for health checks, runtime changes and the metrics).
    pub fn group(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Proxy one request whose head was read from `client` (`rbuf`: the client's bytes read
    /// past the head): [`forward`](Self::forward) it, then [`deliver`](Self::deliver) the
    /// response. Leaves in `rbuf` only bytes after the request's body.
    pub async fn proxy<C: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut C,
        rbuf: &mut Vec<u8>,
        request: ProxyRequest<'_>,
        observer: &dyn Observer,
    ) -> Proxied {
        let delivery = Delivery {
            client_version: request.head.version,
            client_keep_alive: request.client_keep_alive,
            extra_headers: b"",
            tee: None,
        };
        match self.forward(client, rbuf, request, observer).await {
            Forwarded::Response { upstream, response, conn } => {
                self.deliver(upstream, response, conn, client, rbuf, delivery).await
            }
            Forwarded::Failed { status, detail } => Proxied::Failed { status, detail },
            Forwarded::Client(e) => Proxied::Client(e),
        }
    }

    /// Send one request to upstreams until one answers (its response head read and the
    /// upstream's accounting settled), the tries or the time run out, or none is left.
    pub async fn forward<C: AsyncRead + Unpin>(
        &self,
        client: &mut C,
        rbuf: &mut Vec<u8>,
        request: ProxyRequest<'_>,
        observer: &dyn Observer,
    ) -> Forwarded {
        let started = Instant::now();
        let config = &self.config;
        let head = request.head;
        let mut upstream_head = Vec::with_capacity(512);
        write_upstream_head(head, &request.forward, &mut upstream_head);
        let mut body = RequestBody::new(head, request.limits);
        if let Err(e) = body.prefetch(client, rbuf, config.client_timeout).await {
            return Forwarded::Client(e);
        }
        let idempotent = idempotent(&head.method);
        let mut tried = Tried::default();
        let mut tries = 0usize;
        let mut last: Option<(Failure, String)> = None;
        let mut failed_on: Option<PeerId> = None;
        loop {
            let now = Instant::now();
            let out_of_time = !config.next_upstream_timeout.is_zero()
                && now.duration_since(started) >= config.next_upstream_timeout;
            let out_of_tries =
                config.next_upstream_tries != 0 && tries >= config.next_upstream_tries;
            let chosen = match (tries, out_of_time || out_of_tries) {
                (0, _) | (_, false) => self.group().select(request.key, &tried, now),
                _ => None,
            };
            let Some(peer) = chosen else {
                return failed(last);
            };
            if let Some(previous) = failed_on.take() {
                observer.retried(previous);
            }
            tried.insert(peer);
            tries += 1;
            observer.attempt_started(peer);
            let attempt_began = Instant::now();
            let attempt = self.attempt(peer, &upstream_head, &mut body, client, rbuf, head).await;
            let (failure, detail, request_sent) = match attempt {
                Ok((response, conn)) => {
                    let status = response.status;
                    let listed = Failure::Status(status);
                    let retry =
                        config.next_upstream.goes_on(listed, true, idempotent) && body.replayable();
                    if retry {
                        self.group().release(peer, Outcome::Failure, Instant::now());
                        observer.attempt_failed(peer, listed, &format!("answered {status}"));
                        last = Some((listed, format!("the upstream answered {status}")));
                        failed_on = Some(peer);
                        continue;
                    }
                    observer.response_head(peer, attempt_began.elapsed());
                    let counts = config.next_upstream.counts(listed);
                    let mut group = self.group();
                    let now = Instant::now();
                    group.observe_status(peer, status, now);
                    let outcome = if counts { Outcome::Failure } else { Outcome::Success };
                    group.release(peer, outcome, now);
                    return Forwarded::Response { upstream: peer, response, conn };
                }
                Err(Attempted::Connect(e)) => {
                    let failure = match e {
                        ConnectError::TimedOut => Failure::Timeout,
                        ConnectError::Failed(_) => Failure::Error,
                    };
                    (failure, e.to_string(), false)
                }
                Err(Attempted::Exchange(AttemptError::Client(e))) => {
                    self.group().release(peer, Outcome::Success, Instant::now());
                    observer.attempt_abandoned(peer);
                    return Forwarded::Client(e);
                }
                Err(Attempted::Exchange(e)) => {
                    let failure = match &e {
                        AttemptError::SendTimeout | AttemptError::ReceiveTimeout => {
                            Failure::Timeout
                        }
                        AttemptError::InvalidHeader(_) => Failure::InvalidHeader,
                        _ => Failure::Error,
                    };
                    (failure, e.to_string(), true)
                }
            };
            self.group().release(peer, Outcome::Failure, Instant::now());
            observer.attempt_failed(peer, failure, &detail);
            last = Some((failure, detail));
            failed_on = Some(peer);
            let goes_on = config.next_upstream.goes_on(failure, request_sent, idempotent)
                && body.replayable();
            if !goes_on {
                return failed(last);
            }
        }
    }

    /// Send the request to `peer` on a kept connection or a new one; a kept one the upstream
    /// had closed is replaced by a new one once, for a request that may be sent twice.
    async fn attempt<C: AsyncRead + Unpin>(
        &self,
        peer: PeerId,
        upstream_head: &[u8],
        body: &mut RequestBody,
        client: &mut C,
        rbuf: &mut Vec<u8>,
        head: &RequestHead,
    ) -> Result<(ResponseHead, UpstreamConn), Attempted> {
        let config = &self.config;
        let mut kept = self.pool().take(peer, Instant::now());
        loop {
            let reused = kept.is_some();
            let mut conn = match kept.take() {
                Some(conn) => conn,
                None => self.open(peer).await?,
            };
            let sent = send_and_receive(
                &mut conn,
                upstream_head,
                body,
                client,
                rbuf,
                head.is_head(),
                config.timeout,
                config.client_timeout,
            )
            .await;
            match sent {
                Ok(response) => return Ok((response, conn)),
                // The upstream had closed the kept connection: once more on a new one.
                Err(AttemptError::Send(_) | AttemptError::Receive(_))
                    if reused && body.replayable() && idempotent(&head.method) => {}
                Err(e) => return Err(Attempted::Exchange(e)),
            }
        }
    }

    async fn open(&self, peer: PeerId) -> Result<UpstreamConn, Attempted> {
        let addr = &self.config.upstreams[peer.0].addr;
        UpstreamConn::open(addr, self.config.connect_timeout).await.map_err(Attempted::Connect)
    }

    /// Relay the response `upstream` gave (or open the tunnel of a 101) to `client`, then
    /// keep the upstream connection when it can carry another request.
    pub async fn deliver<C: AsyncRead + AsyncWrite + Unpin>(
        &self,
        upstream: PeerId,
        response: ResponseHead,
        mut conn: UpstreamConn,
        client: &mut C,
        rbuf: &mut Vec<u8>,
        delivery: Delivery<'_>,
    ) -> Proxied {
        let config = &self.config;
        let status = response.status;
        if response.upgrade {
            let body_bytes =
                tunnel(&mut conn, &response, client, rbuf, delivery.client_version).await;
            return Proxied::Tunnelled { upstream, body_bytes };
        }
        let relayed =
            relay(&mut conn, &response, client, delivery, config.timeout, config.client_timeout)
                .await;
        if relayed.upstream_reusable {
            conn.responses += 1;
            self.pool().put(upstream, conn, Instant::now());
        }
        Proxied::Relayed { upstream, status, relayed, response }
    }

    /// Close idle connections past their timeout or closed by their upstream (called now and
    /// then by the worker).
    pub fn expire_idle(&self) {
        self.pool().sweep(Instant::now());
    }
}

/// Why an attempt ended without a response.
enum Attempted {
    Connect(ConnectError),
    Exchange(AttemptError),
}

/// The answer when no upstream gave a response: 504 after a timeout, else 502.
fn failed(last: Option<(Failure, String)>) -> Forwarded {
    match last {
        Some((Failure::Timeout, detail)) => Forwarded::Failed { status: 504, detail },
        Some((_, detail)) => Forwarded::Failed { status: 502, detail },
        None => Forwarded::Failed { status: 502, detail: "no live upstreams".into() },
    }
}

/// Carry a 101 response to the client, then bytes both ways until either side closes.
/// Returns the bytes sent to the client.
async fn tunnel<C: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut UpstreamConn,
    response: &ResponseHead,
    client: &mut C,
    rbuf: &mut Vec<u8>,
    client_version: (u8, u8),
) -> u64 {
    let mut out = Vec::with_capacity(256 + conn.buffered.len());
    write_client_head(
        response,
        &mut out,
        client_version,
        true,
        crate::response_head::ResponseFraming::UntilClose,
    );
    out.append(&mut conn.buffered);
    if client.write_all(&out).await.is_err() {
        return 0;
    }
    if !rbuf.is_empty() {
        if conn.write_all(rbuf).await.is_err() {
            return 0;
        }
        rbuf.clear();
    }
    match tokio::io::copy_bidirectional(client, conn).await {
        Ok((_, to_client)) => to_client,
        Err(_) => 0,
    }
}
