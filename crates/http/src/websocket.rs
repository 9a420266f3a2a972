//! WebSocket (RFC 6455) for the server side, free of I/O like the rest of the crate: the
//! opening-handshake check of a parsed [`RequestHead`] and the `101 Switching Protocols`
//! answer, an incremental decoder for (masked) client frames that assembles fragmented
//! messages, and the encoders for (unmasked) server frames. The ASGI worker maps these onto
//! `websocket.connect/accept/receive/send/close`.
//!
//! Owns: [`websocket_request`], [`accept_key`], [`write_accept_response`], [`HandshakeError`],
//! [`Opcode`], [`Message`], [`FrameDecoder`], [`WsError`], the `encode_*` functions and
//! [`is_valid_close_code`]. SHA-1 and base64 are implemented here (a few lines each) so the
//! crate keeps its single dependency.
//!
//! Choices:
//! * no extensions are supported (no `permessage-deflate`): any RSV bit set is a protocol
//!   error, and the accept response never carries `Sec-WebSocket-Extensions`;
//! * a missing `Sec-WebSocket-Version` is answered like a wrong one (426 with
//!   `Sec-WebSocket-Version: 13`);
//! * valid close codes are exactly 1000–1003, 1007–1011 and 3000–4999;
//! * text is checked for UTF-8 at the end of every fragment (fail fast), not per byte.

use crate::token::{is_field_ctl, is_token, trim_ows};
use crate::{RequestHead, reason_phrase};
use std::fmt;

/// The GUID appended to `Sec-WebSocket-Key` before hashing (RFC 6455 §1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Default limit for one assembled data message: 16 MiB, as uvicorn's `ws_max_size`.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

/// A valid WebSocket opening handshake, ready to be offered to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketRequest {
    /// `Sec-WebSocket-Key` as sent (24 base64 characters of 16 bytes).
    pub key: String,
    /// `Sec-WebSocket-Protocol` values in order (all header lines, comma-split, trimmed,
    /// empty items dropped).
    pub subprotocols: Vec<String>,
    /// `Sec-WebSocket-Extensions` items as sent (parameters kept), for information only:
    /// none is negotiated.
    pub extensions: Vec<String>,
}

/// Why an upgrade request is refused. [`status`](Self::status) says how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The method is not `GET`.
    MethodNotGet,
    /// The request is older than HTTP/1.1.
    HttpVersion,
    /// `Connection` does not list the `upgrade` token.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` is missing or not `13` (answered 426).
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key` header.
    MissingKey,
    /// `Sec-WebSocket-Key` repeated, or not base64 of exactly 16 bytes.
    InvalidKey,
}

impl HandshakeError {
    /// The status to answer: 426 for [`UnsupportedVersion`](Self::UnsupportedVersion), 400
    /// for everything else.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// Headers the error response must carry besides the usual ones: `Sec-WebSocket-Version:
    /// 13` for a 426 (RFC 6455 §4.4), nothing otherwise.
    pub fn response_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        }
    }

    /// The reason phrase of [`status`](Self::status) (`Upgrade Required` or `Bad Request`).
    pub fn reason_phrase(self) -> &'static str {
        match self.status() {
            426 => "Upgrade Required",
            code => reason_phrase(code),
        }
    }

    /// Append a complete error response: status line, `Server`, `Date`,
    /// [`response_headers`](Self::response_headers), `Connection: close` and a one-line
    /// `text/plain` body saying what was wrong.
    pub fn write_response(self, out: &mut Vec<u8>, date: &[u8], server: &[u8]) {
        let body = format!("{self}\n");
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\nServer: ", self.status(), self.reason_phrase()).as_bytes(),
        );
        out.extend_from_slice(server);
        out.extend_from_slice(b"\r\nDate: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
        for (name, value) in self.response_headers() {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::MethodNotGet => "WebSocket upgrade requires GET",
            HandshakeError::HttpVersion => "WebSocket upgrade requires HTTP/1.1",
            HandshakeError::MissingConnectionUpgrade => {
                "WebSocket upgrade without 'Connection: upgrade'"
            }
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version (need 13)",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::InvalidKey => "invalid Sec-WebSocket-Key",
        })
    }
}

impl std::error::Error for HandshakeError {}

/// Comma-separated items of every `upper_name` header line, trimmed, empty items dropped.
fn list_items<'a>(head: &'a RequestHead, upper_name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    head.headers
        .iter()
        .filter(move |(n, _)| n == upper_name)
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// True when some `upper_name` header lists `token` (ASCII case-insensitive).
fn has_token(head: &RequestHead, upper_name: &str, token: &str) -> bool {
    list_items(head, upper_name).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

/// Check a request for a WebSocket upgrade.
///
/// * `None`: no `Upgrade` header lists `websocket`; serve it as plain HTTP.
/// * `Some(Err(e))`: an upgrade attempt that is invalid; answer `e.status()` (see
///   [`HandshakeError::write_response`]).
/// * `Some(Ok(req))`: a valid handshake; answer with [`write_accept_response`] once the app
///   accepts.
pub fn websocket_request(head: &RequestHead) -> Option<Result<WebSocketRequest, HandshakeError>> {
    if !has_token(head, "UPGRADE", "websocket") {
        return None;
    }
    Some(validate(head))
}

fn validate(head: &RequestHead) -> Result<WebSocketRequest, HandshakeError> {
    if head.method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if head.version < (1, 1) {
        return Err(HandshakeError::HttpVersion);
    }
    if !has_token(head, "CONNECTION", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let mut versions = head.headers.iter().filter(|(n, _)| n == "SEC-WEBSOCKET-VERSION");
    match (versions.next(), versions.next()) {
        (Some((_, v)), None) if v.as_slice() == b"13" => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let mut keys = head.headers.iter().filter(|(n, _)| n == "SEC-WEBSOCKET-KEY");
    let key = match (keys.next(), keys.next()) {
        (None, _) => return Err(HandshakeError::MissingKey),
        (Some(_), Some(_)) => return Err(HandshakeError::InvalidKey),
        (Some((_, v)), None) => v,
    };
    if base64_decode(key).is_none_or(|k| k.len() != 16) {
        return Err(HandshakeError::InvalidKey);
    }
    // Valid base64 is ASCII, so this is lossless.
    let key = String::from_utf8_lossy(key).into_owned();
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(WebSocketRequest {
        key,
        subprotocols: list_items(head, "SEC-WEBSOCKET-PROTOCOL").map(lossy).collect(),
        extensions: list_items(head, "SEC-WEBSOCKET-EXTENSIONS").map(lossy).collect(),
    })
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut input = Vec::with_capacity(key.len() + GUID.len());
    input.extend_from_slice(key.as_bytes());
    input.extend_from_slice(GUID.as_bytes());
    base64_encode(&sha1(&input))
}

/// Headers the server owns in a 101 answer; the app's versions are dropped.
const OWNED_101_HEADERS: [&str; 6] = [
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
];

/// Append the `HTTP/1.1 101 Switching Protocols` head accepting the handshake for `key`, with
/// `Sec-WebSocket-Protocol: subprotocol` when given, then `extra_headers` (e.g. `Server`,
/// `Date`, the app's `websocket.accept` headers).
///
/// Extra headers with a name that is not a token or a value with control characters are
/// skipped (they cannot be written safely), and so are the ones the server owns: `Upgrade`,
/// `Connection`, `Sec-WebSocket-Accept`, `Sec-WebSocket-Extensions`, `Content-Length`,
/// `Transfer-Encoding`, and `Sec-WebSocket-Protocol` when `subprotocol` is given.
pub fn write_accept_response(
    out: &mut Vec<u8>,
    key: &str,
    subprotocol: Option<&str>,
    extra_headers: &[(String, String)],
) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
    out.extend_from_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(proto) = subprotocol.filter(|p| is_header_value(p)) {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(proto.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra_headers {
        let value = value.trim_matches([' ', '\t']);
        if !is_token(name.as_bytes())
            || !is_header_value(value)
            || OWNED_101_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h))
            || (subprotocol.is_some() && name.eq_ignore_ascii_case("sec-websocket-protocol"))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn is_header_value(v: &str) -> bool {
    !v.bytes().any(is_field_ctl)
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// A frame opcode (RFC 6455 §5.2). Other values are reserved and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// `0x0`: continues a fragmented message.
    Continuation,
    /// `0x1`: first frame of a UTF-8 text message.
    Text,
    /// `0x2`: first frame of a binary message.
    Binary,
    /// `0x8`: close.
    Close,
    /// `0x9`: ping.
    Ping,
    /// `0xA`: pong.
    Pong,
}

impl Opcode {
    /// The opcode for the low four bits of a frame's first byte, `None` when reserved.
    pub fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// The four-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// True for close, ping and pong.
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// One complete message from the client (data messages reassembled from their fragments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping; answer with [`encode_pong`] and the same payload.
    Ping(Vec<u8>),
    /// A pong (unsolicited ones are allowed and ignored).
    Pong(Vec<u8>),
    /// A close frame: `None` when it had no body, else the (valid) code and UTF-8 reason.
    Close(Option<(u16, String)>),
}

/// What is wrong with the client's frames; the connection is failed with a close frame of
/// [`close_code`](WsError::close_code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WsErrorKind {
    /// Framing violation (1002).
    Protocol,
    /// Text or close reason that is not UTF-8 (1007).
    InvalidPayload,
    /// Message over the size limit (1009).
    MessageTooBig,
}

/// A fatal error in the client's frame stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError {
    kind: WsErrorKind,
    reason: String,
}

impl WsError {
    fn new(kind: WsErrorKind, reason: impl Into<String>) -> Self {
        WsError { kind, reason: reason.into() }
    }

    fn protocol(reason: impl Into<String>) -> Self {
        WsError::new(WsErrorKind::Protocol, reason)
    }

    /// Which error this is.
    pub fn kind(&self) -> WsErrorKind {
        self.kind
    }

    /// The close code to send: 1002, 1007 or 1009.
    pub fn close_code(&self) -> u16 {
        match self.kind {
            WsErrorKind::Protocol => 1002,
            WsErrorKind::InvalidPayload => 1007,
            WsErrorKind::MessageTooBig => 1009,
        }
    }

    /// A short reason (for the log and the close frame; [`encode_close`] truncates it).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebSocket error {}: {}", self.close_code(), self.reason)
    }
}

impl std::error::Error for WsError {}

/// True for a close code a peer may send (RFC 6455 §7.4): 1000–1003, 1007–1011, 3000–4999.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    fin: bool,
    opcode: Opcode,
    mask: [u8; 4],
    /// Payload bytes already unmasked (indexes the mask).
    done: usize,
    /// Payload bytes still to come (bounded by the size limit or 125, so it fits a `usize`).
    remaining: usize,
}

/// Incremental decoder of client → server frames. Feed it bytes with [`decode`](Self::decode);
/// it returns one complete [`Message`] at a time.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_message_size: usize,
    /// Header bytes received so far (2–14 bytes once complete).
    head: [u8; 14],
    head_len: usize,
    /// The frame whose payload is being read, once its header is complete.
    frame: Option<Frame>,
    /// `Text` or `Binary` while a data message is being assembled.
    message_opcode: Option<Opcode>,
    /// Payload of the data message being assembled.
    message: Vec<u8>,
    /// Prefix of `message` known to be valid UTF-8 (text messages).
    utf8_checked: usize,
    /// Payload of the control frame being read.
    control: Vec<u8>,
    /// Set after an error: the stream cannot be resynchronised.
    failed: Option<WsError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder refusing data messages (all fragments together) longer than
    /// `max_message_size` bytes with 1009. Pass `usize::MAX` for no limit.
    pub fn new(max_message_size: usize) -> Self {
        FrameDecoder {
            max_message_size,
            head: [0; 14],
            head_len: 0,
            frame: None,
            message_opcode: None,
            message: Vec::new(),
            utf8_checked: 0,
            control: Vec::new(),
            failed: None,
        }
    }

    /// The message size limit.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// True when no frame or fragmented message is partially received (a clean point to stop).
    pub fn is_idle(&self) -> bool {
        self.head_len == 0 && self.frame.is_none() && self.message_opcode.is_none()
    }

    /// Consume bytes from the start of `input`.
    ///
    /// * `Ok((n, Some(msg)))`: the first `n` bytes completed `msg`; call again with
    ///   `input[n..]` (more messages may already be there).
    /// * `Ok((n, None))`: all of `input` was consumed (`n == input.len()`) and buffered; more
    ///   bytes are needed.
    /// * `Err(e)`: protocol violation; send a close frame with `e.close_code()` and close.
    ///   Every later call returns the same error.
    ///
    /// Frames after a [`Message::Close`] are not the decoder's business: the caller stops
    /// reading once it has one.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), WsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.decode_inner(input);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn decode_inner(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), WsError> {
        let mut pos = 0;
        loop {
            let mut frame = match self.frame {
                Some(f) => f,
                None => {
                    if !self.fill_head(input, &mut pos, 2) {
                        return Ok((pos, None));
                    }
                    self.check_start()?;
                    let need = header_len(self.head[1]);
                    if !self.fill_head(input, &mut pos, need) {
                        return Ok((pos, None));
                    }
                    self.start_frame()?
                }
            };
            let take = frame.remaining.min(input.len() - pos);
            let buf = if frame.opcode.is_control() { &mut self.control } else { &mut self.message };
            buf.extend(
                input[pos..pos + take]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ frame.mask[(frame.done + i) % 4]),
            );
            pos += take;
            frame.done += take;
            frame.remaining -= take;
            if frame.remaining > 0 {
                self.frame = Some(frame);
                return Ok((pos, None));
            }
            self.frame = None;
            if let Some(msg) = self.finish_frame(frame)? {
                return Ok((pos, Some(msg)));
            }
        }
    }

    /// Copy header bytes until `head_len == need`; false when `input` ran out first.
    fn fill_head(&mut self, input: &[u8], pos: &mut usize, need: usize) -> bool {
        let take = need.saturating_sub(self.head_len).min(input.len() - *pos);
        self.head[self.head_len..self.head_len + take].copy_from_slice(&input[*pos..*pos + take]);
        self.head_len += take;
        *pos += take;
        self.head_len >= need
    }

    /// Checks that only need the first two header bytes (so bad frames fail early).
    fn check_start(&self) -> Result<(), WsError> {
        let (b0, b1) = (self.head[0], self.head[1]);
        if b0 & 0x70 != 0 {
            return Err(WsError::protocol("reserved bits set"));
        }
        let Some(opcode) = Opcode::from_bits(b0 & 0x0f) else {
            return Err(WsError::protocol(format!("reserved opcode {:#x}", b0 & 0x0f)));
        };
        if b1 & 0x80 == 0 {
            return Err(WsError::protocol("client frame not masked"));
        }
        let fin = b0 & 0x80 != 0;
        let len7 = usize::from(b1 & 0x7f);
        match opcode {
            _ if opcode.is_control() && !fin => Err(WsError::protocol("fragmented control frame")),
            _ if opcode.is_control() && len7 > MAX_CONTROL_PAYLOAD => {
                Err(WsError::protocol("control frame payload over 125 bytes"))
            }
            Opcode::Continuation if self.message_opcode.is_none() => {
                Err(WsError::protocol("continuation frame without a message to continue"))
            }
            Opcode::Text | Opcode::Binary if self.message_opcode.is_some() => {
                Err(WsError::protocol("new data frame inside a fragmented message"))
            }
            _ => Ok(()),
        }
    }

    /// Parse the complete header (already checked by `check_start`) into a [`Frame`].
    fn start_frame(&mut self) -> Result<Frame, WsError> {
        let h = &self.head[..self.head_len];
        let fin = h[0] & 0x80 != 0;
        let opcode = Opcode::from_bits(h[0] & 0x0f).unwrap_or(Opcode::Close);
        let (len, mask_at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(WsError::protocol("64-bit payload length with the high bit set"));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = [h[mask_at], h[mask_at + 1], h[mask_at + 2], h[mask_at + 3]];
        self.head_len = 0;
        let remaining = if opcode.is_control() {
            self.control.clear();
            // check_start bounded it by 125.
            usize::try_from(len).unwrap_or(MAX_CONTROL_PAYLOAD)
        } else {
            let room = self.max_message_size.saturating_sub(self.message.len());
            match usize::try_from(len) {
                Ok(n) if n <= room => n,
                _ => {
                    return Err(WsError::new(
                        WsErrorKind::MessageTooBig,
                        format!("message over {} bytes", self.max_message_size),
                    ));
                }
            }
        };
        if matches!(opcode, Opcode::Text | Opcode::Binary) {
            self.message_opcode = Some(opcode);
            self.message.clear();
            self.utf8_checked = 0;
        }
        Ok(Frame { fin, opcode, mask, done: 0, remaining })
    }

    /// A frame's payload is complete: produce a message if it ends one.
    fn finish_frame(&mut self, frame: Frame) -> Result<Option<Message>, WsError> {
        match frame.opcode {
            Opcode::Ping => return Ok(Some(Message::Ping(std::mem::take(&mut self.control)))),
            Opcode::Pong => return Ok(Some(Message::Pong(std::mem::take(&mut self.control)))),
            Opcode::Close => return parse_close(&self.control).map(|c| Some(Message::Close(c))),
            Opcode::Continuation | Opcode::Text | Opcode::Binary => {}
        }
        let is_text = self.message_opcode == Some(Opcode::Text);
        if !frame.fin {
            if is_text {
                // Fail fast on invalid UTF-8; a sequence cut at the fragment end may continue.
                match std::str::from_utf8(&self.message[self.utf8_checked..]) {
                    Ok(_) => self.utf8_checked = self.message.len(),
                    Err(e) if e.error_len().is_none() => self.utf8_checked += e.valid_up_to(),
                    Err(_) => return Err(invalid_utf8()),
                }
            }
            return Ok(None);
        }
        self.message_opcode = None;
        self.utf8_checked = 0;
        let payload = std::mem::take(&mut self.message);
        if is_text {
            String::from_utf8(payload).map(|s| Some(Message::Text(s))).map_err(|_| invalid_utf8())
        } else {
            Ok(Some(Message::Binary(payload)))
        }
    }
}

fn invalid_utf8() -> WsError {
    WsError::new(WsErrorKind::InvalidPayload, "invalid UTF-8 in text message")
}

/// Total header length (2–14 bytes) given the second header byte.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// Body of a close frame: empty, or a valid code plus a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::protocol("close frame body of 1 byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(WsError::protocol(format!("invalid close code {code}")));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| {
                WsError::new(WsErrorKind::InvalidPayload, "invalid UTF-8 in close reason")
            })?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding (server → client, never masked)
// ---------------------------------------------------------------------------------------------

/// Append one unmasked frame. Control frames must be final with at most 125 payload bytes
/// (the helpers below respect this; a violation is a bug in the caller).
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], fin: bool) {
    debug_assert!(!opcode.is_control() || (fin && payload.len() <= MAX_CONTROL_PAYLOAD));
    out.reserve(payload.len() + 10);
    out.push(if fin { 0x80 } else { 0 } | opcode.bits());
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Append a single-frame text message.
pub fn encode_text(out: &mut Vec<u8>, text: &str) {
    encode_frame(out, Opcode::Text, text.as_bytes(), true);
}

/// Append a single-frame binary message.
pub fn encode_binary(out: &mut Vec<u8>, data: &[u8]) {
    encode_frame(out, Opcode::Binary, data, true);
}

/// Append a close frame with `code` and `reason`; the reason is cut at a character boundary
/// to fit the 123 bytes a control frame leaves for it.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(out, Opcode::Close, &payload[..2 + end], true);
}

/// Append a ping (payload cut to 125 bytes).
pub fn encode_ping(out: &mut Vec<u8>, payload: &[u8]) {
    encode_frame(out, Opcode::Ping, &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)], true);
}

/// Append a pong answering a ping with `payload` (cut to 125 bytes).
pub fn encode_pong(out: &mut Vec<u8>, payload: &[u8]) {
    encode_frame(out, Opcode::Pong, &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)], true);
}

// ---------------------------------------------------------------------------------------------
// SHA-1 (FIPS 180-4) and base64 (RFC 4648), just enough for the handshake
// ---------------------------------------------------------------------------------------------

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t =
                a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict padded base64 (standard alphabet); `None` on any malformation.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let pad = s.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks_exact(4).enumerate() {
        let last = ci == s.len() / 4 - 1;
        let chunk_pad = if last { pad } else { 0 };
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if i >= 4 - chunk_pad {
                0
            } else {
                u32::try_from(B64.iter().position(|&a| a == c)?).ok()?
            };
            n = n << 6 | v;
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - chunk_pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BodyFraming;

    fn head(method: &str, version: (u8, u8), headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.to_owned(),
            target: b"/ws".to_vec(),
            path: b"/ws".to_vec(),
            query: Vec::new(),
            fragment: Vec::new(),
            version,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_uppercase(), v.as_bytes().to_vec()))
                .collect(),
            framing: BodyFraming::Empty,
            keep_alive: true,
            expect_continue: false,
        }
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn good_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Host", "server.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Version", "13"),
        ]
    }

    fn check(headers: &[(&str, &str)]) -> Option<Result<WebSocketRequest, HandshakeError>> {
        websocket_request(&head("GET", (1, 1), headers))
    }

    fn with(replace: &str, value: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
        let mut h: Vec<_> =
            good_headers().into_iter().filter(|(n, _)| !n.eq_ignore_ascii_case(replace)).collect();
        if let Some(v) = value {
            let name =
                good_headers().iter().find(|(n, _)| n.eq_ignore_ascii_case(replace)).unwrap().0;
            h.push((name, v));
        }
        h
    }

    #[test]
    fn sha1_vectors() {
        let hex = |d: [u8; 20]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(hex(sha1(&[b'a'; 1000])), "291e9a6c66994949b57ba5e650361e98fc36b1ba");
    }

    #[test]
    fn base64_round_trip() {
        for (raw, enc) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
            if !enc.is_empty() {
                assert_eq!(base64_decode(enc.as_bytes()).unwrap(), raw.as_bytes());
            }
        }
        for bad in ["", "Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "Zm=v"] {
            assert_eq!(base64_decode(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(base64_decode(KEY.as_bytes()).unwrap(), b"the sample nonce");
    }

    #[test]
    fn websocket_accept_key_rfc_example() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn websocket_handshake_ok() {
        let mut h = good_headers();
        h.push(("Sec-WebSocket-Protocol", "chat, superchat"));
        h.push(("Sec-WebSocket-Protocol", " v2 ,"));
        h.push(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"));
        let req = check(&h).unwrap().unwrap();
        assert_eq!(req.key, KEY);
        assert_eq!(req.subprotocols, ["chat", "superchat", "v2"]);
        assert_eq!(req.extensions, ["permessage-deflate; client_max_window_bits"]);

        // Token lists, case-insensitive.
        let req = check(&with("Connection", Some("keep-alive, UPGRADE"))).unwrap().unwrap();
        assert!(req.subprotocols.is_empty() && req.extensions.is_empty());
        assert!(check(&with("Upgrade", Some("h2c, WebSocket"))).unwrap().is_ok());
    }

    #[test]
    fn websocket_not_an_upgrade() {
        assert_eq!(check(&with("Upgrade", None)), None);
        assert_eq!(check(&with("Upgrade", Some("h2c"))), None);
        assert_eq!(check(&with("Upgrade", Some("websocketx"))), None);
    }

    #[test]
    fn websocket_handshake_errors() {
        let err = |r: Option<Result<WebSocketRequest, HandshakeError>>| r.unwrap().unwrap_err();
        let h = good_headers();
        assert_eq!(err(websocket_request(&head("POST", (1, 1), &h))), HandshakeError::MethodNotGet);
        assert_eq!(err(websocket_request(&head("GET", (1, 0), &h))), HandshakeError::HttpVersion);
        assert_eq!(err(check(&with("Connection", None))), HandshakeError::MissingConnectionUpgrade);
        assert_eq!(
            err(check(&with("Connection", Some("keep-alive")))),
            HandshakeError::MissingConnectionUpgrade
        );
        assert_eq!(err(check(&with("Sec-WebSocket-Key", None))), HandshakeError::MissingKey);
        for bad in ["", "abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ=!", "Zm9vYmFy"] {
            assert_eq!(
                err(check(&with("Sec-WebSocket-Key", Some(bad)))),
                HandshakeError::InvalidKey
            );
        }
        let mut twice = good_headers();
        twice.push(("Sec-WebSocket-Key", KEY));
        assert_eq!(err(check(&twice)), HandshakeError::InvalidKey);
        for (version, expect) in [(None, 426), (Some("8"), 426), (Some("13, 8"), 426)] {
            let e = err(check(&with("Sec-WebSocket-Version", version)));
            assert_eq!(e, HandshakeError::UnsupportedVersion);
            assert_eq!(e.status(), expect);
        }
        assert_eq!(HandshakeError::InvalidKey.status(), 400);
    }

    #[test]
    fn websocket_error_responses() {
        let mut out = Vec::new();
        HandshakeError::UnsupportedVersion.write_response(&mut out, b"DATE", b"ferrocorn");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\nServer: ferrocorn\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\n"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        let mut out = Vec::new();
        HandshakeError::MissingKey.write_response(&mut out, b"DATE", b"ferrocorn");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\nServer:"));
        assert!(!text.contains("Sec-WebSocket-Version"));
    }

    #[test]
    fn websocket_accept_response() {
        let mut out = Vec::new();
        let extra = vec![
            ("X-App".to_owned(), "yes".to_owned()),
            ("Set-Cookie".to_owned(), "a=b".to_owned()),
            ("Connection".to_owned(), "close".to_owned()),
            ("Sec-WebSocket-Protocol".to_owned(), "other".to_owned()),
            ("Bad Name".to_owned(), "x".to_owned()),
            ("X-Evil".to_owned(), "a\r\nInjected: 1".to_owned()),
        ];
        write_accept_response(&mut out, KEY, Some("chat"), &extra);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\
             X-App: yes\r\nSet-Cookie: a=b\r\n\r\n"
        );
        let mut out = Vec::new();
        write_accept_response(&mut out, KEY, None, &[]);
        assert!(!String::from_utf8(out).unwrap().contains("Sec-WebSocket-Protocol"));
    }

    // --- frames ---------------------------------------------------------------------------

    /// Turn an unmasked (server) frame into a masked (client) one.
    fn mask_frame(frame: &[u8], key: [u8; 4]) -> Vec<u8> {
        let hlen = header_len(frame[1]);
        let mut out = frame[..hlen].to_vec();
        out[1] |= 0x80;
        out.extend_from_slice(&key);
        out.extend(frame[hlen..].iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// A masked client frame with raw first-byte bits.
    fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        encode_frame(&mut f, Opcode::Binary, payload, true);
        f[0] = b0;
        mask_frame(&f, [0x11, 0x22, 0x33, 0x44])
    }

    /// Decode everything, collecting messages; stops at the first error.
    fn decode_all(dec: &mut FrameDecoder, mut input: &[u8]) -> Result<Vec<Message>, WsError> {
        let mut msgs = Vec::new();
        loop {
            let (n, msg) = dec.decode(input)?;
            input = &input[n..];
            match msg {
                Some(m) => msgs.push(m),
                None => {
                    assert!(input.is_empty());
                    return Ok(msgs);
                }
            }
        }
    }

    fn decode_bytewise(dec: &mut FrameDecoder, input: &[u8]) -> Result<Vec<Message>, WsError> {
        let mut msgs = Vec::new();
        for b in input {
            let (n, msg) = dec.decode(std::slice::from_ref(b))?;
            assert_eq!(n, 1);
            msgs.extend(msg);
        }
        Ok(msgs)
    }

    fn err_code(input: &[u8]) -> u16 {
        decode_all(&mut FrameDecoder::new(1 << 20), input).unwrap_err().close_code()
    }

    const HELLO: [u8; 11] = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];

    #[test]
    fn websocket_decode_rfc_hello() {
        let mut dec = FrameDecoder::default();
        assert_eq!(dec.decode(&HELLO).unwrap(), (11, Some(Message::Text("Hello".into()))));
        assert!(dec.is_idle());
        let mut dec = FrameDecoder::default();
        assert_eq!(decode_bytewise(&mut dec, &HELLO).unwrap(), [Message::Text("Hello".into())]);
    }

    #[test]
    fn websocket_decode_returns_one_message_at_a_time() {
        let mut input = HELLO.to_vec();
        input.extend_from_slice(&HELLO);
        input.extend_from_slice(&HELLO[..4]);
        let mut dec = FrameDecoder::default();
        assert_eq!(dec.decode(&input).unwrap(), (11, Some(Message::Text("Hello".into()))));
        assert_eq!(dec.decode(&input[11..]).unwrap(), (11, Some(Message::Text("Hello".into()))));
        assert_eq!(dec.decode(&input[22..]).unwrap(), (4, None));
        assert!(!dec.is_idle());
        assert_eq!(dec.decode(&HELLO[4..]).unwrap(), (7, Some(Message::Text("Hello".into()))));
    }

    #[test]
    fn websocket_fragmented_with_interleaved_ping() {
        // RFC 6455 §5.7: "Hel" + "lo", here with a masked ping between the fragments.
        let mut input = client(0x01, b"Hel");
        input.extend(client(0x89, b"ping!"));
        input.extend(client(0x00, b""));
        input.extend(client(0x80, b"lo"));
        input.extend(client(0x8A, b""));
        let expect = vec![
            Message::Ping(b"ping!".to_vec()),
            Message::Text("Hello".into()),
            Message::Pong(Vec::new()),
        ];
        assert_eq!(decode_all(&mut FrameDecoder::default(), &input).unwrap(), expect);
        assert_eq!(decode_bytewise(&mut FrameDecoder::default(), &input).unwrap(), expect);

        // Binary fragments; a UTF-8 sequence split across text fragments is fine.
        let mut input = client(0x02, &[1, 2]);
        input.extend(client(0x80, &[3]));
        let euro = "€".as_bytes();
        input.extend(client(0x01, &euro[..1]));
        input.extend(client(0x00, &euro[1..2]));
        input.extend(client(0x80, &euro[2..]));
        assert_eq!(
            decode_all(&mut FrameDecoder::default(), &input).unwrap(),
            [Message::Binary(vec![1, 2, 3]), Message::Text("€".into())]
        );
    }

    #[test]
    fn websocket_fragmentation_errors() {
        // Continuation without a start.
        assert_eq!(err_code(&client(0x80, b"x")), 1002);
        // New data frame while a message is open.
        let mut input = client(0x01, b"a");
        input.extend(client(0x81, b"b"));
        assert_eq!(err_code(&input), 1002);
        let mut input = client(0x02, b"a");
        input.extend(client(0x02, b"b"));
        assert_eq!(err_code(&input), 1002);
        // Fragmented control frame.
        assert_eq!(err_code(&client(0x09, b"")), 1002);
        // Control frame over 125 bytes (126-byte ping).
        assert_eq!(err_code(&client(0x89, &[0; 126])), 1002);
        // Reserved bits and opcodes.
        for b0 in [0xC1, 0xA1, 0x91, 0x83, 0x87, 0x8B, 0x8F] {
            assert_eq!(err_code(&client(b0, b"")), 1002, "{b0:#x}");
        }
    }

    #[test]
    fn websocket_lengths_16_and_64_bit() {
        for len in [125usize, 126, 127, 1000, 0xFFFF, 0x10000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut server = Vec::new();
            encode_binary(&mut server, &payload);
            let expect_header = match len {
                0..=125 => 2,
                126..=0xFFFF => 4,
                _ => 10,
            };
            assert_eq!(server.len(), expect_header + len);
            let input = mask_frame(&server, [1, 2, 3, 4]);
            let mut dec = FrameDecoder::default();
            assert_eq!(
                dec.decode(&input).unwrap(),
                (input.len(), Some(Message::Binary(payload.clone())))
            );
        }
        // A 64-bit length with the high bit set.
        let mut input = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1];
        input.extend_from_slice(&[0; 4]);
        assert_eq!(err_code(&input), 1002);
        // A 64-bit length that is too big fails before any payload arrives.
        let mut input = vec![0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0];
        input.extend_from_slice(&[0; 4]);
        assert_eq!(err_code(&input), 1009);
    }

    #[test]
    fn websocket_bytewise_long_frame() {
        let payload = "x".repeat(300);
        let mut server = Vec::new();
        encode_text(&mut server, &payload);
        let mut input = mask_frame(&server, [9, 8, 7, 6]);
        input.extend(client(0x88, &1000u16.to_be_bytes()));
        assert_eq!(
            decode_bytewise(&mut FrameDecoder::default(), &input).unwrap(),
            [Message::Text(payload), Message::Close(Some((1000, String::new())))]
        );
    }

    #[test]
    fn websocket_unmasked_client_frame() {
        let mut server = Vec::new();
        encode_text(&mut server, "hi");
        assert_eq!(err_code(&server), 1002);
        // Fails as soon as the second byte arrives.
        let mut dec = FrameDecoder::default();
        assert_eq!(dec.decode(&server[..1]).unwrap(), (1, None));
        let e = dec.decode(&server[1..2]).unwrap_err();
        assert_eq!(e.close_code(), 1002);
        assert_eq!(e.kind(), WsErrorKind::Protocol);
        // The decoder stays failed.
        assert_eq!(dec.decode(&HELLO).unwrap_err(), e);
    }

    #[test]
    fn websocket_invalid_utf8() {
        assert_eq!(err_code(&client(0x81, &[0xff, 0xfe])), 1007);
        assert_eq!(err_code(&client(0x81, &[b'a', 0xe2, 0x82])), 1007); // truncated at the end
        // Fails at the first bad fragment, before the message ends.
        let mut dec = FrameDecoder::default();
        let e = decode_all(&mut dec, &client(0x01, &[b'o', b'k', 0xc0, 0x80])).unwrap_err();
        assert_eq!(e.close_code(), 1007);
        // Binary is not checked.
        assert_eq!(
            decode_all(&mut FrameDecoder::default(), &client(0x82, &[0xff])).unwrap(),
            [Message::Binary(vec![0xff])]
        );
    }

    #[test]
    fn websocket_too_large() {
        let mut dec = FrameDecoder::new(10);
        assert_eq!(
            decode_all(&mut dec, &client(0x82, &[0; 10])).unwrap(),
            [Message::Binary(vec![0; 10])]
        );
        assert_eq!(
            decode_all(&mut FrameDecoder::new(10), &client(0x82, &[0; 11]))
                .unwrap_err()
                .close_code(),
            1009
        );
        // Over the limit only across fragments.
        let mut input = client(0x01, b"123456");
        input.extend(client(0x80, b"7890A"));
        let e = decode_all(&mut FrameDecoder::new(10), &input).unwrap_err();
        assert_eq!((e.close_code(), e.kind()), (1009, WsErrorKind::MessageTooBig));
        // Control frames do not count toward the limit.
        let mut input = client(0x02, b"12345");
        input.extend(client(0x89, b"123456789012"));
        input.extend(client(0x80, b"67890"));
        assert_eq!(
            decode_all(&mut FrameDecoder::new(10), &input).unwrap(),
            [Message::Ping(b"123456789012".to_vec()), Message::Binary(b"1234567890".to_vec())]
        );
    }

    #[test]
    fn websocket_close_frames() {
        let close = |body: &[u8]| decode_all(&mut FrameDecoder::default(), &client(0x88, body));
        assert_eq!(close(b"").unwrap(), [Message::Close(None)]);
        let mut body = 1001u16.to_be_bytes().to_vec();
        body.extend_from_slice("bye ✓".as_bytes());
        assert_eq!(close(&body).unwrap(), [Message::Close(Some((1001, "bye ✓".into())))]);
        assert_eq!(close(&[0x03]).unwrap_err().close_code(), 1002);
        for code in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2000, 2999, 5000, 65535] {
            assert_eq!(close(&code.to_be_bytes()).unwrap_err().close_code(), 1002, "{code}");
        }
        for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999] {
            assert_eq!(
                close(&code.to_be_bytes()).unwrap(),
                [Message::Close(Some((code, String::new())))]
            );
        }
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.push(0xff);
        assert_eq!(close(&body).unwrap_err().close_code(), 1007);
    }

    #[test]
    fn websocket_encode_round_trip() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let mut out = Vec::new();
        encode_text(&mut out, "héllo");
        encode_binary(&mut out, &[0, 1, 2]);
        encode_pong(&mut out, b"p");
        encode_ping(&mut out, &[7; 200]);
        encode_close(&mut out, 1000, "done");
        encode_frame(&mut out, Opcode::Text, b"ab", false);
        encode_frame(&mut out, Opcode::Continuation, b"cd", true);
        assert_eq!(&out[..2], [0x81, 6]);
        // Re-frame every server frame as a client frame.
        let mut input = Vec::new();
        let mut rest = out.as_slice();
        while !rest.is_empty() {
            let len = match rest[1] {
                126 => 4 + usize::from(u16::from_be_bytes([rest[2], rest[3]])),
                127 => unreachable!(),
                n => 2 + usize::from(n),
            };
            input.extend(mask_frame(&rest[..len], key));
            rest = &rest[len..];
        }
        assert_eq!(
            decode_all(&mut FrameDecoder::default(), &input).unwrap(),
            [
                Message::Text("héllo".into()),
                Message::Binary(vec![0, 1, 2]),
                Message::Pong(b"p".to_vec()),
                Message::Ping(vec![7; 125]),
                Message::Close(Some((1000, "done".into()))),
                Message::Text("abcd".into()),
            ]
        );
    }

    #[test]
    fn websocket_close_reason_truncated_at_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes; 123 would split a character
        let mut out = Vec::new();
        encode_close(&mut out, 1011, &reason);
        assert_eq!(out[1], 2 + 122);
        assert_eq!(&out[2..4], 1011u16.to_be_bytes());
        assert_eq!(std::str::from_utf8(&out[4..]).unwrap(), "é".repeat(61));
        let mut out = Vec::new();
        encode_close(&mut out, 1000, &"a".repeat(200));
        assert_eq!(out.len(), 2 + 125);
    }

    #[test]
    fn websocket_opcode_bits() {
        for op in [
            Opcode::Continuation,
            Opcode::Text,
            Opcode::Binary,
            Opcode::Close,
            Opcode::Ping,
            Opcode::Pong,
        ] {
            assert_eq!(Opcode::from_bits(op.bits()), Some(op));
            assert_eq!(op.is_control(), op.bits() >= 8);
        }
        assert_eq!(Opcode::from_bits(3), None);
    }
}
