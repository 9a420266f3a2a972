//! Cutting a request body out of a connection's read buffer as it arrives (Content-Length or
//! chunked), leaving the bytes past it (a pipelined request) in place. The connection driver
//! uses it to stream an ASGI body to the app and to collect a WSGI body before the app runs.

use crate::{BodyFraming, ChunkedDecoder, ErrorKind, Limits, ParseError};

/// What remains of a request body.
pub enum BodyPump {
    /// Bytes still to come (Content-Length).
    Length(u64),
    /// A chunked body being decoded.
    Chunked(Box<ChunkedDecoder>),
}

impl BodyPump {
    /// The pump for a request's body framing; None when there is no body. Only a chunked
    /// body keeps a copy of `limits` (most requests have none, and a copy allocates).
    pub fn new(framing: BodyFraming, limits: &Limits) -> Option<BodyPump> {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => None,
            BodyFraming::Length(n) => Some(BodyPump::Length(n)),
            BodyFraming::Chunked => {
                Some(BodyPump::Chunked(Box::new(ChunkedDecoder::new(limits.clone()))))
            }
        }
    }

    /// Take the body bytes in `rbuf` (leaving any bytes past the body); returns them and
    /// whether the body is complete.
    pub fn take(&mut self, rbuf: &mut Vec<u8>) -> Result<(Vec<u8>, bool), ParseError> {
        match self {
            BodyPump::Length(left) => {
                let n = (*left).min(rbuf.len() as u64) as usize;
                let rest = rbuf.split_off(n);
                let chunk = std::mem::replace(rbuf, rest);
                *left -= n as u64;
                Ok((chunk, *left == 0))
            }
            BodyPump::Chunked(decoder) => {
                let mut chunk = Vec::new();
                let used = decoder.decode(rbuf, &mut chunk)?;
                rbuf.drain(..used);
                Ok((chunk, decoder.is_done()))
            }
        }
    }
}

impl BodyPump {
    /// The error for a client that closed the connection before the body was complete: a
    /// chunked body without its last chunk is malformed (400), a short Content-Length body just
    /// ends the connection.
    pub fn ended_early(&self) -> ParseError {
        match self {
            BodyPump::Length(_) => ParseError::new(ErrorKind::NoMoreData, "client closed mid-body"),
            BodyPump::Chunked(_) => ParseError::new(
                ErrorKind::ChunkMissingTerminator,
                "client closed inside a chunked body",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_body_is_cut_at_its_end_and_keeps_the_next_request() {
        let mut pump = BodyPump::new(BodyFraming::Length(5), &Limits::default()).unwrap();
        let mut rbuf = b"abc".to_vec();
        assert_eq!(pump.take(&mut rbuf).unwrap(), (b"abc".to_vec(), false));
        rbuf.extend_from_slice(b"deGET /");
        assert_eq!(pump.take(&mut rbuf).unwrap(), (b"de".to_vec(), true));
        assert_eq!(rbuf, b"GET /");
    }

    #[test]
    fn chunked_body_is_decoded_piecewise() {
        let mut pump = BodyPump::new(BodyFraming::Chunked, &Limits::default()).unwrap();
        let mut rbuf = b"3\r\nabc\r\n2\r\nd".to_vec();
        let (first, done) = pump.take(&mut rbuf).unwrap();
        assert!(!done);
        rbuf.extend_from_slice(b"e\r\n0\r\n\r\nNEXT");
        let (second, done) = pump.take(&mut rbuf).unwrap();
        assert!(done);
        assert_eq!([first, second].concat(), b"abcde");
        assert_eq!(rbuf, b"NEXT");
    }

    #[test]
    fn no_body_needs_no_pump() {
        assert!(BodyPump::new(BodyFraming::Empty, &Limits::default()).is_none());
        assert!(BodyPump::new(BodyFraming::Length(0), &Limits::default()).is_none());
    }
}
