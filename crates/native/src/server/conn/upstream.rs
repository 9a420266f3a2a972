//! A request on a load balancer's connection: what selection reads (the client's address
//! for `ip_hash`, the rendered key for `hash`), what the upstream is told about the client
//! (`X-Forwarded-*`, `X-Real-IP`, `Forwarded`), the hand-over to the worker's
//! [`ferrocorn_proxy::Balancer`], and the answer when no upstream gave one (502, or 504 after
//! a timeout). No Python is entered.

use std::net::IpAddr;
use std::time::Instant;

use ferrocorn_balance::{Method, SelectKey};
use ferrocorn_cache::KeyRequest;
use ferrocorn_http::{RequestHead, percent_decode};
use ferrocorn_proxy::{ClientError, ForwardContext, Proxied, ProxyRequest};

use super::{Conn, ConnError, Sent};
use crate::logging::{debug, warning};
use crate::server::upstreams::{Reporting, apply_overrides};
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

    /// Serve one request by forwarding it to an upstream.
    pub(super) async fn handle_upstream(
        &mut self,
        head: RequestHead,
        https: bool,
        upgrade: Option<Vec<u8>>,
        started: Instant,
    ) -> Result<bool, ConnError> {
        let shared = self.shared.clone();
        let Some(balancer) = shared.balancer.clone() else { return Err(ConnError::Closed) };
        let Some(options) = shared.opts.balance.clone() else { return Err(ConnError::Closed) };
        let client_ip = self.client_ip();
        let mut rendered = Vec::new();
        let key = match (&balancer.config().method, &options.hash_key) {
            (Method::IpHash, _) => client_ip.map_or(SelectKey::None, SelectKey::ClientIp),
            (Method::Hash { .. }, Some(template)) => {
                let decoded;
                let remote = match template.reads_remote_addr() {
                    true => client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    false => String::new(),
                };
                template.render_into(
                    &KeyRequest {
                        scheme: if https { "https" } else { "http" },
                        method: &head.method,
                        target: &head.target,
                        decoded_path: if template.reads_decoded_path() {
                            decoded = percent_decode(&head.path);
                            &decoded
                        } else {
                            b""
                        },
                        query: &head.query,
                        headers: &head.headers,
                        remote_addr: remote.as_bytes(),
                    },
                    &mut rendered,
                );
                SelectKey::Hash(&rendered)
            }
            _ => SelectKey::None,
        };
        let forward = ForwardContext {
            client_ip,
            client_port: self.peer.port,
            scheme_https: https,
            trusted_client: self.trusted,
            host: head.header("HOST"),
            upgrade: upgrade.as_deref(),
            forwarded: true,
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
        let permit = shared.enter_app().await.ok_or(ConnError::Closed)?;
        shared.request_started();
        apply_overrides(&balancer, &shared.overrides_seen);
        let observer = Reporting { balancer: &balancer };
        let proxied = balancer.proxy(&mut self.stream, &mut self.rbuf, request, &observer).await;
        let (sent, keep) = match proxied {
            Proxied::Relayed { status, relayed, headers, upstream } => {
                if let Some(why) = &relayed.broken {
                    let name = &balancer.config().upstreams[upstream.0].addr;
                    debug!("response from upstream {name} cut short: {why}");
                }
                let sent = Sent { status, body_bytes: relayed.body_bytes, headers };
                (Some(sent), relayed.client_keeps)
            }
            Proxied::Tunnelled { body_bytes, .. } => {
                (Some(Sent { status: 101, body_bytes, headers: Vec::new() }), false)
            }
            Proxied::Failed { status, detail } => {
                warning!(
                    "no upstream answered {} {} ({detail}): answered {status}",
                    head.method,
                    String::from_utf8_lossy(&head.target)
                );
                (Some(self.send_error(status).await), false)
            }
            Proxied::Client(ClientError::Body(e)) => {
                drop(permit);
                self.account(&head, b"", None, started, 0, false, None);
                return Err(ConnError::Parse(e));
            }
            Proxied::Client(ClientError::Gone) => (None, false),
        };
        drop(permit);
        let decoded_path = match self.shared.access_log.is_some() {
            true => percent_decode(&head.path),
            false => Vec::new(),
        };
        self.account(&head, &decoded_path, sent.as_ref(), started, 0, false, None);
        Ok(sent.is_some() && keep)
    }
}
