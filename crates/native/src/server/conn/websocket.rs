//! An ASGI WebSocket session on a connection: the handshake, frames both ways with the
//! app's queues, and the close.

use std::sync::Arc;

use ferrocorn_http::{RequestHead, ResponseHead, write_error_response};
use tokio::time::{Duration, timeout};

use super::respond::Body;
use super::{Conn, ConnError, DenialResponse, SERVER};
use crate::asgi::chunk_channel::{End, chunk_channel};
use crate::asgi::{Event, WebSocketSession, WsIn, WsOut, WsShared};
use crate::clock::with_http_date;
use crate::server::shared::Executor;
use ferrocorn_net::client_stream::ClientStream;

impl<S: ClientStream> Conn<S> {
    /// Serve a WebSocket session with the ASGI class: hand `websocket.connect` to the app,
    /// answer its accept (101), close (403) or denial response, then move frames both ways
    /// until either side closes. The connection is not reused afterwards.
    pub(super) async fn handle_websocket(
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
                            self.send_response(&head, &rhead, Body::Whole(&all), &mut keep).await;
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
}
