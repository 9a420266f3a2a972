//! A request on a load balancer's connection: what selection reads (the client's address
//! for `ip_hash`, the rendered key for `hash`), what the upstream is told about the client
//! (`X-Forwarded-*`, `X-Real-IP`, `Forwarded`), the hand-over to the worker's
//! [`ferrocorn_proxy::Balancer`], and the answer when no upstream gave one (502, or 504 after
//! a timeout). No Python is entered.

use std::net::IpAddr;
use std::time::Instant;

use ferrocorn_balance::{Method, SelectKey};
use ferrocorn_http::ResponseHead;
use ferrocorn_http::{RequestHead, percent_decode};
use ferrocorn_proxy::{ClientError, Delivery, ForwardContext, Forwarded, Proxied, ProxyRequest};

use super::cache::CacheStart;
use super::key_inputs::KeyInputs;
use super::pool_hop::pool_client_value;

use super::{Conn, ConnError, Sent};
use crate::logging::warning;
use crate::server::upstreams::{Reporting, take_from_board};
use ferrocorn_net::client_stream::ClientStream;

impl<S: ClientStream> Conn<S> {
    /// The client's address: the PROXY protocol's source when one was given, else the socket
    /// peer's.
    fn client_ip(&self) -> Option<IpAddr> {
        match self.proxy.as_ref().and_then(|p| p.source) {
            Some(source) => Some(source.ip()),
            None => self.peer.ip,
        }
    }

    /// Serve one request by forwarding it: to an upstream (a balancer's worker), or, for a
    /// `/` pool worker, to the worker pool `hop` (an inside hop: the forwarding headers pass
    /// untouched, the client is named for the pool's worker, which accounts and logs the
    /// request; the hop takes no app ticket, so a slow pool never holds this worker).
    pub(super) async fn handle_upstream(
        &mut self,
        head: RequestHead,
        https: bool,
        upgrade: Option<Vec<u8>>,
        started: Instant,
        hop: Option<usize>,
    ) -> Result<bool, ConnError> {
        let shared = self.shared.clone();
        let balancer = match hop {
            Some(pool) => shared.pool_balancers.get(pool).cloned(),
            None => shared.balancer.clone(),
        };
        let Some(balancer) = balancer else { return Err(ConnError::Closed) };
        let hash_key = shared.opts.balance.as_ref().and_then(|b| b.hash_key.as_ref());
        let client_ip = self.client_ip();
        let mut rendered = Vec::new();
        let key = match (&balancer.config().method, hash_key) {
            (Method::IpHash, _) => client_ip.map_or(SelectKey::None, SelectKey::ClientIp),
            (Method::Hash { .. }, Some(template)) => {
                let (reads_path, reads_remote) =
                    (template.reads_decoded_path(), template.reads_remote_addr());
                let inputs = KeyInputs::new(&head, reads_path, reads_remote, client_ip);
                template.render_into(&inputs.request(&head, https), &mut rendered);
                SelectKey::Hash(&rendered)
            }
            _ => SelectKey::None,
        };
        let pool_client = hop.map(|_| pool_client_value(client_ip, self.peer.port, https));
        let forward = ForwardContext {
            client_ip,
            client_port: self.peer.port,
            scheme_https: https,
            trusted_client: self.trusted,
            host: None,
            upgrade: upgrade.as_deref(),
            forwarded: hop.is_none(),
            transparent: hop.is_some(),
            pool_client: pool_client.as_deref(),
        };
        let client_keep_alive =
            head.keep_alive && !self.shared.opts.keepalive.is_zero() && !self.shutting_down();
        let request = ProxyRequest {
            head: &head,
            forward,
            key,
            client_keep_alive,
            limits: &shared.opts.limits,
        };
        let permit = match hop {
            None => {
                let permit = shared.enter_app().await.ok_or(ConnError::Closed)?;
                shared.request_started();
                take_from_board(&balancer, &shared.board_seen);
                Some(permit)
            }
            Some(_) => None,
        };
        // A balancer accounts and logs its requests; an inside hop leaves that to the pool.
        let mut accounts = hop.is_none();
        let observer = Reporting { balancer: &balancer };
        let proxied = match self.cache.request.is_some() {
            true => self.proxy_through_cache(&balancer, request, &observer).await,
            false => {
                let proxied = balancer.proxy(&mut self.stream, &mut self.rbuf, request, &observer);
                Through::Upstream(proxied.await)
            }
        };
        let proxied = match proxied {
            Through::Upstream(proxied) => proxied,
            Through::Cache(sent, keep) => {
                drop(permit);
                if accounts {
                    self.account(&head, b"", sent.as_ref(), started, 0, false, None);
                }
                return Ok(sent.is_some() && keep);
            }
        };
        let (sent, keep) = match proxied {
            Proxied::Relayed { status, relayed, response, upstream } => {
                let name = &balancer.config().upstreams[upstream.0].addr;
                match &relayed.broken {
                    // Nothing reached the client yet: it gets a clear 502, not an empty reply.
                    Some(why) if !relayed.head_sent => {
                        accounts = true;
                        warning!("upstream {name} sent a broken response ({why}): answered 502");
                        (Some(self.send_error(502).await), false)
                    }
                    broken => {
                        if let Some(why) = broken {
                            warning!("response from upstream {name} cut short: {why}");
                        }
                        let headers = match self.shared.access_log.is_some() {
                            true => {
                                response.headers().map(|(n, v)| (latin1(n), latin1(v))).collect()
                            }
                            false => Vec::new(),
                        };
                        let sent = Sent { status, body_bytes: relayed.body_bytes, headers };
                        // `client_keeps` is false when the relay broke
                        (Some(sent), relayed.client_keeps)
                    }
                }
            }
            Proxied::Tunnelled { body_bytes, .. } => {
                (Some(Sent { status: 101, body_bytes, headers: Vec::new() }), false)
            }
            Proxied::Failed { status, detail } => {
                accounts = true; // answered here
                warning!(
                    "no upstream answered {} {} ({detail}): answered {status}",
                    head.method,
                    String::from_utf8_lossy(&head.target)
                );
                (Some(self.send_error(status).await), false)
            }
            Proxied::Client(ClientError::Body(e)) => {
                drop(permit);
                if accounts {
                    self.account(&head, b"", None, started, 0, false, None);
                }
                return Err(ConnError::Parse(e));
            }
            Proxied::Client(ClientError::Gone) => (None, false),
        };
        drop(permit);
        if accounts {
            let decoded_path = match self.shared.access_log.is_some() {
                true => percent_decode(&head.path),
                false => Vec::new(),
            };
            self.account(&head, &decoded_path, sent.as_ref(), started, 0, false, None);
        }
        Ok(sent.is_some() && keep)
    }
}

/// Header bytes as the access log's text (one char per byte, as latin-1).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&c| c as char).collect()
}

/// Who answered a request the response cache passed on.
enum Through {
    /// The upstream (or, failing it, an error page).
    Upstream(Proxied),
    /// The cache, with a stored copy (stale, revalidated): what was sent (None: the client
    /// could not be written to) and whether the connection stays open.
    Cache(Option<Sent>, bool),
}

/// The upstream's response head as the response cache reads it (hop-by-hop headers dropped,
/// values as latin-1 text); None when it is not a valid one.
fn cacheable_head(response: &ferrocorn_proxy::ResponseHead) -> Option<ResponseHead> {
    let latin1 = |b: &[u8]| b.iter().map(|&c| c as char).collect::<String>();
    let status = format!("{} {}", response.status, latin1(response.reason()));
    let headers = response.headers().map(|(n, v)| (latin1(n), latin1(v))).collect();
    ResponseHead::new(&status, headers).ok()
}

impl<S: ClientStream> Conn<S> {
    /// Proxy a request the response cache passed on (a MISS, an expired copy, a refresh):
    /// the upstream's response goes to the client tagged with `X-Cache-Status` and is
    /// captured for the store — or, when the cache answers instead (a stale copy on a failed
    /// upstream, a revalidated copy), or the refresh runs in the background, read into the
    /// store without being sent.
    async fn proxy_through_cache(
        &mut self,
        balancer: &ferrocorn_proxy::Balancer,
        request: ProxyRequest<'_>,
        observer: &Reporting<'_>,
    ) -> Through {
        let head = request.head;
        let mut keep_alive = request.client_keep_alive;
        let forwarded = balancer.forward(&mut self.stream, &mut self.rbuf, request, observer).await;
        let (upstream, response, conn) = match forwarded {
            Forwarded::Response { upstream, response, conn } => (upstream, response, conn),
            Forwarded::Failed { status, detail } => {
                return Through::Upstream(Proxied::Failed { status, detail });
            }
            Forwarded::Client(e) => return Through::Upstream(Proxied::Client(e)),
        };
        let Some(rhead) = cacheable_head(&response).filter(|_| !response.upgrade) else {
            let delivery = plain_delivery(head, keep_alive);
            let (stream, rbuf) = (&mut self.stream, &mut self.rbuf);
            return Through::Upstream(
                balancer.deliver(upstream, response, conn, stream, rbuf, delivery).await,
            );
        };
        let extra = match self.cache_response_start(head, &rhead, &mut keep_alive).await {
            CacheStart::Answered(sent) => {
                drop(conn); // its body is not read: the connection is not reused
                return Through::Cache(sent, keep_alive);
            }
            CacheStart::Refresh => None,
            CacheStart::Send(tagged) => Some(status_header(tagged.as_ref())),
        };
        let capture = &mut self.cache.capture;
        let mut tee = |bytes: &[u8]| {
            if let Some(capture) = capture.as_mut() {
                capture.push(bytes);
            }
        };
        let delivery = Delivery {
            client_version: head.version,
            client_keep_alive: keep_alive,
            extra_headers: extra.as_deref().unwrap_or_default(),
            tee: Some(&mut tee),
        };
        let proxied = match extra {
            Some(_) => {
                balancer
                    .deliver(upstream, response, conn, &mut self.stream, &mut self.rbuf, delivery)
                    .await
            }
            None => {
                // A background refresh: the client has its answer; the body only goes to the store.
                let mut nowhere = tokio::io::join(tokio::io::empty(), tokio::io::sink());
                let mut none = Vec::new();
                balancer.deliver(upstream, response, conn, &mut nowhere, &mut none, delivery).await
            }
        };
        let sent = match &proxied {
            Proxied::Relayed { status, relayed, .. } if relayed.broken.is_none() => {
                Some(Sent { status: *status, body_bytes: relayed.body_bytes, headers: Vec::new() })
            }
            _ => None,
        };
        self.cache_response_end(&rhead, sent.as_ref());
        Through::Upstream(proxied)
    }
}

/// The `X-Cache-Status` line of a head the cache tagged (empty when it did not).
fn status_header(tagged: Option<&ResponseHead>) -> Vec<u8> {
    match tagged.and_then(|t| t.header("X-Cache-Status")) {
        Some(status) => format!("X-Cache-Status: {status}\r\n").into_bytes(),
        None => Vec::new(),
    }
}

/// A delivery without the cache: as the client asked, nothing added.
fn plain_delivery(head: &RequestHead, keep_alive: bool) -> Delivery<'static> {
    Delivery {
        client_version: head.version,
        client_keep_alive: keep_alive,
        extra_headers: b"",
        tee: None,
    }
}
