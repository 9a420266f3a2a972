//! `start_response` and its `write()` callable, with PEP 3333's `exc_info` rules: a second call
//! without `exc_info` is an error; with `exc_info` it replaces the status and headers while
//! nothing was sent, and re-raises the app's exception once headers are on the wire. `write()`
//! sends at once (PEP 3333 requires it) where the client stream lets the app's thread use its
//! socket: the first call commits the status line and headers. Where it does not (TLS,
//! `--no-direct-socket-io`) the bytes are kept and go out first in the response.

use std::sync::Mutex;

use ferrocorn_http::{ResponseFraming, ResponseHead};
use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::blocking_io::ClientSocket;

/// Where `write()` sends bytes: the client socket and how to frame the response.
#[derive(Debug, Clone, Copy)]
pub struct DirectWriter {
    /// The client's socket.
    pub socket: ClientSocket,
    /// The request's HTTP version (the response uses it).
    pub version: (u8, u8),
    /// HEAD request: headers only.
    pub is_head: bool,
    /// The connection may stay open after this response.
    pub keep_alive: bool,
}

/// A response whose head `write()` already sent.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The head that went out.
    pub head: ResponseHead,
    /// Its framing.
    pub framing: ResponseFraming,
    /// Whether it said `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Body bytes sent so far.
    pub sent: u64,
}

#[derive(Debug, Default)]
struct State {
    status: Option<String>,
    headers: Vec<(String, String)>,
    headers_sent: bool,
    written: Vec<u8>,
    committed: Option<Committed>,
}

/// The `start_response` callable handed to the app.
#[pyclass(module = "ferrocorn._native", frozen)]
#[derive(Default)]
pub struct StartResponse {
    state: Mutex<State>,
    writer: Option<DirectWriter>,
}

/// Append `data` to `out` in `framing` (chunked gets its size line and CRLF).
pub fn frame_chunk(out: &mut Vec<u8>, framing: ResponseFraming, data: &[u8]) {
    if data.is_empty() || framing == ResponseFraming::NoBody {
        return;
    }
    if framing == ResponseFraming::Chunked {
        out.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

impl StartResponse {
    /// A start_response whose `write()` goes straight to the client through `writer`, or
    /// (None) is kept and sent with the response.
    pub fn with_writer(writer: Option<DirectWriter>) -> Self {
        StartResponse { state: Mutex::default(), writer }
    }

    /// The committed head, when `write()` already sent it.
    pub fn committed(&self) -> Option<Committed> {
        self.lock().committed.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The status and headers, once `start_response` was called.
    pub fn take_status(&self) -> Option<(String, Vec<(String, String)>)> {
        let mut state = self.lock();
        let status = state.status.clone()?;
        Some((status, std::mem::take(&mut state.headers)))
    }

    /// Whether start_response was called.
    pub fn called(&self) -> bool {
        self.lock().status.is_some()
    }

    /// Mark the headers as sent (after this, `exc_info` re-raises).
    pub fn mark_sent(&self) {
        self.lock().headers_sent = true;
    }

    /// Bytes the app passed to `write()` so far (drained).
    pub fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().written)
    }
}

fn extract_headers(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in headers.try_iter()? {
        let item = item?;
        let pair = item.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(format!(
                "response headers must be (name, value) tuples, got {item}"
            ))
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err("response headers must be (name, value) tuples"));
        }
        let name: String = pair
            .get_item(0)?
            .extract()
            .map_err(|_| PyTypeError::new_err("response header names must be str"))?;
        let value: String = pair.get_item(1)?.extract().map_err(|_| {
            PyTypeError::new_err(format!("value of response header {name:?} must be str"))
        })?;
        out.push((name, value));
    }
    Ok(out)
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let state = this.lock();
            if state.status.is_some() {
                match exc_info {
                    None => {
                        return Err(PyAssertionError::new_err(
                            "start_response() called twice without exc_info",
                        ));
                    }
                    Some(info) if state.headers_sent => {
                        let value = info.get_item(1)?;
                        return Err(PyErr::from_value(value));
                    }
                    Some(_) => {}
                }
            }
        }
        let status: String = status
            .extract()
            .map_err(|_| PyTypeError::new_err("status must be a str such as '200 OK'"))?;
        let headers = extract_headers(headers)?;
        let mut state = this.lock();
        state.status = Some(status);
        state.headers = headers;
        drop(state);
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    /// PEP 3333's `write()`: send bytes now, before the returned iterable.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<()> {
        let mut state = self.lock();
        let Some(status) = state.status.clone() else {
            return Err(PyAssertionError::new_err("write() called before start_response()"));
        };
        state.headers_sent = true;
        let Some(writer) = self.writer else {
            state.written.extend_from_slice(data.as_bytes());
            return Ok(());
        };
        let mut out = Vec::with_capacity(data.as_bytes().len() + 256);
        if state.committed.is_none() {
            let head = ResponseHead::new(&status, state.headers.clone())
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            let framing = head.streamed_framing(writer.is_head, writer.version);
            let keep_alive = writer.keep_alive && framing != ResponseFraming::CloseDelimited;
            crate::clock::with_http_date(|date| {
                head.encode(&mut out, writer.version, framing, keep_alive, date, b"ferrocorn")
            });
            state.committed = Some(Committed { head, framing, keep_alive, sent: 0 });
        }
        let committed = state.committed.as_mut().expect("committed above");
        let bytes = data.as_bytes();
        let room = match committed.framing {
            ResponseFraming::Length(cl) => cl.saturating_sub(committed.sent),
            ResponseFraming::NoBody => 0,
            _ => u64::MAX,
        };
        let take = (bytes.len() as u64).min(room) as usize;
        frame_chunk(&mut out, committed.framing, &bytes[..take]);
        committed.sent += take as u64;
        drop(state);
        let socket = writer.socket;
        socket
            .wait
            .run(py, || socket.write_all(&out))
            .map_err(|e| PyOSError::new_err(format!("client connection lost during write(): {e}")))
    }
}
