//! The one place a connection asks what serves a request once its head is read: the response
//! cache first (when on), which may answer it; then the app, by worker class: a WSGI call, an
//! ASGI HTTP request, an ASGI WebSocket session, or (a load balancer's worker) an upstream.
//! Another worker pool is to be added here, without touching the reading or writing code. The choice is a pure function of the head and the
//! worker's protocol ([`responder_for`]); [`Conn::serve_request`] carries it out.

use crate::response_store::ResponseStore;
use std::time::Instant;

use ferrocorn_http::{
    BodyFraming, BodyPump, HandshakeError, RequestHead, WebSocketRequest, percent_decode,
    url_scheme_from_headers, websocket_request,
};

use super::cache::Consulted;
use super::pool_hop::pool_for;
use super::{Conn, ConnError, SERVER};
use crate::clock::with_http_date;
use crate::server::shared::Executor;
use ferrocorn_cache::CONDITIONAL_REQUEST_HEADERS;
use ferrocorn_net::client_stream::ClientStream;

/// The protocol the worker's app speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppProtocol {
    Wsgi,
    Asgi,
    /// No app: a load balancer's worker forwards every request to an upstream.
    Upstream,
}

impl AppProtocol {
    fn of(executor: &Executor) -> AppProtocol {
        match executor {
            Executor::Asgi(_) => AppProtocol::Asgi,
            Executor::NoApp => AppProtocol::Upstream,
            _ => AppProtocol::Wsgi,
        }
    }
}

/// What serves a request.
#[derive(Debug)]
pub(super) enum Responder {
    /// The WSGI app (its body is read first, or on the app's demand after `100 Continue`).
    Wsgi,
    /// The ASGI app, over HTTP (its body is fed to it while it runs).
    AsgiHttp,
    /// An ASGI WebSocket session, after a valid handshake.
    AsgiWebSocket(WebSocketRequest),
    /// An invalid WebSocket handshake, answered with its error status.
    BadHandshake(HandshakeError),
    /// An upstream, through the worker's balancer; with the protocol the client asks to
    /// switch to (`Upgrade`), if any.
    Upstream(Option<Vec<u8>>),
}

/// What serves a request with this head, for a worker whose app speaks `protocol`.
pub(super) fn responder_for(protocol: AppProtocol, head: &RequestHead) -> Responder {
    match protocol {
        AppProtocol::Upstream => Responder::Upstream(upgrade_asked(head)),
        AppProtocol::Wsgi => Responder::Wsgi,
        AppProtocol::Asgi => match websocket_request(head) {
            None => Responder::AsgiHttp,
            Some(Ok(request)) => Responder::AsgiWebSocket(request),
            Some(Err(e)) => Responder::BadHandshake(e),
        },
    }
}

/// The protocol an HTTP/1.1 request asks to switch to: its `Upgrade` value when its
/// `Connection` header lists `upgrade`.
fn upgrade_asked(head: &RequestHead) -> Option<Vec<u8>> {
    let upgrade = head.header("UPGRADE")?;
    let listed = head.headers.iter().filter(|(n, _)| n == "CONNECTION").any(|(_, v)| {
        v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    (listed && head.version >= (1, 1)).then(|| upgrade.to_vec())
}

/// A revalidation (`--cache-revalidate`) asks the app about the stored copy: its conditional
/// headers replace the client's (none: the request goes as it came).
fn ask_about_stored_copy(head: &mut RequestHead, revalidation: Vec<(String, Vec<u8>)>) {
    if revalidation.is_empty() {
        return;
    }
    head.headers.retain(|(name, _)| !CONDITIONAL_REQUEST_HEADERS.contains(&name.as_str()));
    head.headers.extend(revalidation);
}

impl<S: ClientStream> Conn<S> {
    /// Serve one request whose head was read. `Ok(true)`: the connection may carry another.
    pub(super) async fn serve_request(&mut self, mut head: RequestHead) -> Result<bool, ConnError> {
        let started = Instant::now();
        let named_scheme = match self.shared.opts.pool_member {
            true => self.adopt_pool_client(&mut head),
            false => None,
        };
        let https = if let Some(https) = named_scheme {
            https
        } else if self.trusted {
            url_scheme_from_headers(&head.headers, &self.shared.opts.secure_scheme_headers)?
                .unwrap_or(false)
        } else {
            false
        };
        if let Some(opts) = &self.shared.opts.cache
            && let Some(store) = ResponseStore::current(opts.rules.inactive)
        {
            match self.consult_cache(opts.clone(), store, &head, https, started).await {
                Consulted::Answered(result) => return result,
                Consulted::ToApp(mut request) => {
                    ask_about_stored_copy(&mut head, std::mem::take(&mut request.revalidation));
                    self.cache.request = Some(request);
                }
                Consulted::Refresh { mut request, answered } => {
                    ask_about_stored_copy(&mut head, std::mem::take(&mut request.revalidation));
                    self.cache.request = Some(request);
                    let refreshed = self.serve_with_app(head, https, started).await;
                    self.cache.finish_request();
                    return answered.and_then(|keep| refreshed.map(|kept| keep && kept));
                }
            }
        }
        let served = self.serve_with_app(head, https, started).await;
        self.cache.finish_request();
        served
    }

    /// Serve a request with the worker's app (or answer an invalid WebSocket handshake).
    async fn serve_with_app(
        &mut self,
        head: RequestHead,
        https: bool,
        started: Instant,
    ) -> Result<bool, ConnError> {
        // A `/` pool worker forwards the requests of the other worker pools.
        if let Some(pool) = pool_for(&self.shared.opts.routes, &head.path) {
            let upgrade = upgrade_asked(&head);
            return self.handle_upstream(head, https, upgrade, started, Some(pool)).await;
        }
        let wants_continue = head.expect_continue && head.framing != BodyFraming::Empty;
        let responder = responder_for(AppProtocol::of(&self.shared.executor), &head);
        // A WSGI app asks for a `100-continue` body itself, on its first read from the socket
        // (when the stream lets the app's thread use it). Otherwise `100 Continue` goes out
        // now: an ASGI app receives the body as the client sends it, and a WSGI app without
        // the socket gets the body read before it is called.
        let defer_continue =
            wants_continue && matches!(responder, Responder::Wsgi) && self.direct.is_some();
        if wants_continue && !defer_continue {
            self.wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if !self.flush().await {
                return Err(ConnError::Closed);
            }
        }
        match responder {
            Responder::Wsgi => self.handle_wsgi(head, https, defer_continue, started).await,
            Responder::AsgiHttp => {
                let decoded_path = percent_decode(&head.path);
                let pump = BodyPump::new(head.framing, &self.shared.opts.limits);
                self.handle_asgi(head, pump, decoded_path, https, started).await
            }
            Responder::AsgiWebSocket(request) => {
                let decoded_path = percent_decode(&head.path);
                self.read_body(head.framing).await?;
                self.handle_websocket(head, request.subprotocols, decoded_path, https).await
            }
            Responder::Upstream(upgrade) => {
                self.handle_upstream(head, https, upgrade, started, None).await
            }
            Responder::BadHandshake(e) => {
                let wbuf = &mut self.wbuf;
                with_http_date(|date| e.write_response(wbuf, date, SERVER));
                self.flush().await;
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead {
        let limits = ferrocorn_http::Limits::default();
        let parsed = ferrocorn_http::parse_request_head(raw.as_bytes(), &limits, false);
        parsed.expect("valid").expect("complete").0
    }

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn a_wsgi_worker_serves_every_request_with_its_app() {
        assert!(matches!(responder_for(AppProtocol::Wsgi, &head(UPGRADE)), Responder::Wsgi));
        let plain = head("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(responder_for(AppProtocol::Wsgi, &plain), Responder::Wsgi));
    }

    #[test]
    fn an_asgi_worker_serves_http_and_websocket_apart() {
        let plain = head("POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(responder_for(AppProtocol::Asgi, &plain), Responder::AsgiHttp));
        let upgrade = responder_for(AppProtocol::Asgi, &head(UPGRADE));
        assert!(matches!(upgrade, Responder::AsgiWebSocket(_)), "{upgrade:?}");
    }

    #[test]
    fn an_invalid_handshake_is_answered_not_served() {
        let no_key = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let responder = responder_for(AppProtocol::Asgi, &head(no_key));
        assert!(matches!(responder, Responder::BadHandshake(_)), "{responder:?}");
    }
}
