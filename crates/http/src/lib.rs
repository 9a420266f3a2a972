//! HTTP/1.x wire protocol for ferrocorn, free of I/O: it turns bytes into request heads and
//! body chunks, and response metadata into bytes. The tokio connection driver (in
//! `ferrocorn-native`) feeds it; this crate never reads a socket, a clock or a setting file.
//!
//! The parsing rules are Gunicorn's (its `gunicorn/http/message.py` semantics, checked against
//! its request corpus): request-line and header limits, method/version validation, `header_map`
//! for underscore header names, `Transfer-Encoding`/`Content-Length` framing rules, chunked
//! bodies with trailers, and PROXY protocol v1/v2. Every failure is a [`ParseError`] that knows
//! the HTTP status it is answered with (or that the connection is just closed).

mod body;
mod chunked;
mod error;
mod fields;
mod limits;
mod parser;
mod proxy;
mod request;
mod response;
mod scheme;
mod token;
mod websocket;

pub use body::BodyPump;
pub use chunked::ChunkedDecoder;
pub use error::{ErrorKind, ParseError};
pub use limits::{HeaderMapPolicy, Limits};
pub use parser::parse_request_head;
pub use proxy::{ProxyInfo, ProxyMode, ProxyParse, parse_proxy_header};
pub use request::{BodyFraming, RequestHead};
pub use response::{
    ResponseError, ResponseFraming, ResponseHead, reason_phrase, write_error_response,
    write_error_response_with,
};
pub use scheme::{percent_decode, url_scheme_from_headers};
pub use websocket::{
    DEFAULT_MAX_MESSAGE_SIZE, FrameDecoder, HandshakeError, Message, Opcode, WebSocketRequest,
    WsError, WsErrorKind, accept_key, encode_binary, encode_close, encode_frame, encode_ping,
    encode_pong, encode_text, is_valid_close_code, websocket_request, write_accept_response,
};
