//! An ASGI HTTP request on a connection: the scope and channels handed to the asyncio loop,
//! the body fed while the app runs, the response streamed back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ferrocorn_http::{BodyPump, RequestHead, ResponseHead};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::respond::Body;
use super::{BodyFeed, Conn, ConnError, wake_receive};
use crate::asgi::{AsgiRequest, Endpoints, Event, RequestShared};
use crate::logging::error;
use crate::server::app_call::Chunks;
use crate::server::shared::Executor;
use ferrocorn_net::client_stream::ClientStream;

impl<S: ClientStream> Conn<S> {
    /// The scope's `client`, `server`, scheme and `root_path` for this connection.
    pub(super) fn asgi_endpoints(
        &self,
        backend: &crate::server::shared::AsgiBackend,
        https: bool,
    ) -> Endpoints {
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
    pub(super) async fn handle_asgi(
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
                        let body = Body::Stream { first: start.first, chunks: &mut chunks };
                        self.send_response(&head, &rhead, body, &mut keep_alive).await
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
        self.account(&head, &decoded_path, sent.as_ref(), started, request_bytes, app_failed, None);
        Ok(sent.is_some() && keep_alive)
    }
}

/// Wait for the app's answer, at most `limit` (the per-request deadline; zero waits forever).
/// None when the deadline passed; it is logged with the request's path.
pub(super) async fn answer_within<T>(
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
