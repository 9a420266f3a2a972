//! `wsgi.input`: the request body as a file-like object (`read`, `read(n)`, `readline`,
//! `readline(n)`, `readlines`, iteration). Normally the body was read in full by the connection
//! driver before the app was called, so no Python thread ever waits on a slow client. For
//! `Expect: 100-continue` the body is deferred: the first read sends `100 Continue` and then
//! reads the body from the socket (blocking, with a timeout), so a client is only asked for its
//! body when the app really wants it.

use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Duration;

use super::blocking_io::{read_some, write_all_fd};

use ferrocorn_http::{BodyFraming, ChunkedDecoder, ErrorKind, Limits, ParseError};
use pyo3::exceptions::{PyIOError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// A body not read yet: the socket it will come from and what is already buffered.
#[derive(Debug)]
pub struct DeferredBody {
    /// The connection's socket descriptor (owned by the connection driver, valid while the app runs).
    pub fd: RawFd,
    /// How the body is framed.
    pub framing: BodyFraming,
    /// Bytes already read after the request head.
    pub buffered: Vec<u8>,
    /// Parser limits (for chunked trailers).
    pub limits: Limits,
    /// Longest wait for the client between reads.
    pub timeout: Duration,
}

/// What became of a deferred body, for the connection driver.
#[derive(Debug, Default)]
pub struct DeferredOutcome {
    /// The body was read (a 100 Continue was sent).
    pub consumed: bool,
    /// Bytes read past the end of the body (the start of a pipelined request).
    pub remainder: Vec<u8>,
    /// Reading failed; the connection must be closed.
    pub failed: bool,
}

#[derive(Debug)]
struct InputState {
    body: Vec<u8>,
    position: usize,
    deferred: Option<DeferredBody>,
    outcome: DeferredOutcome,
}

/// The object placed in `environ["wsgi.input"]`.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct Input {
    state: Mutex<InputState>,
}

impl Input {
    /// An input over a body already read.
    pub fn buffered(body: Vec<u8>) -> Self {
        Input {
            state: Mutex::new(InputState {
                body,
                position: 0,
                deferred: None,
                outcome: DeferredOutcome::default(),
            }),
        }
    }

    /// An input whose body is fetched on first use (after sending 100 Continue).
    pub fn deferred(body: DeferredBody) -> Self {
        Input {
            state: Mutex::new(InputState {
                body: Vec::new(),
                position: 0,
                deferred: Some(body),
                outcome: DeferredOutcome::default(),
            }),
        }
    }

    /// For the driver after the app returned: `None` when the body was not deferred.
    pub fn take_deferred_outcome(&self) -> Option<DeferredOutcome> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.deferred.is_some() {
            // Never read: the body (if the client sends it) is still on the socket.
            return Some(DeferredOutcome::default());
        }
        let outcome = std::mem::take(&mut state.outcome);
        if outcome.consumed || outcome.failed { Some(outcome) } else { None }
    }

    fn with_body<R>(&self, py: Python<'_>, f: impl FnOnce(&mut InputState) -> R) -> PyResult<R> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(deferred) = state.deferred.take() {
            // The socket read blocks; let other Python threads run meanwhile.
            let result = py.detach(|| fetch_deferred(deferred));
            match result {
                Ok((body, remainder)) => {
                    state.body = body;
                    state.outcome = DeferredOutcome { consumed: true, remainder, failed: false };
                }
                Err(e) => {
                    state.outcome.failed = true;
                    return Err(PyIOError::new_err(format!("error reading request body: {e}")));
                }
            }
        }
        Ok(f(&mut state))
    }
}

/// Send 100 Continue, then read the whole body. Returns the body and any bytes past it.
fn fetch_deferred(deferred: DeferredBody) -> Result<(Vec<u8>, Vec<u8>), ParseError> {
    let io_err = |e: std::io::Error| ParseError::new(ErrorKind::NoMoreData, e.to_string());
    write_all_fd(deferred.fd, b"HTTP/1.1 100 Continue\r\n\r\n", deferred.timeout)
        .map_err(io_err)?;
    let mut pending = deferred.buffered;
    match deferred.framing {
        BodyFraming::Empty => Ok((Vec::new(), pending)),
        BodyFraming::Length(n) => {
            let n =
                usize::try_from(n).map_err(|_| io_err(std::io::ErrorKind::OutOfMemory.into()))?;
            while pending.len() < n {
                if read_some(deferred.fd, &mut pending, deferred.timeout).map_err(io_err)? == 0 {
                    return Err(ParseError::new(ErrorKind::NoMoreData, "client closed mid-body"));
                }
            }
            let remainder = pending.split_off(n);
            Ok((pending, remainder))
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new(deferred.limits);
            let mut body = Vec::new();
            loop {
                let used = decoder.decode(&pending, &mut body)?;
                pending.drain(..used);
                if decoder.is_done() {
                    return Ok((body, pending));
                }
                if read_some(deferred.fd, &mut pending, deferred.timeout).map_err(io_err)? == 0 {
                    return Err(ParseError::new(
                        ErrorKind::ChunkMissingTerminator,
                        "client closed mid-body",
                    ));
                }
            }
        }
    }
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

fn take_line(state: &mut InputState, limit: Option<usize>) -> (usize, usize) {
    let rest = &state.body[state.position..];
    let window = limit.map_or(rest.len(), |l| l.min(rest.len()));
    let end = memchr::memchr(b'\n', &rest[..window]).map_or(window, |i| i + 1);
    let start = state.position;
    state.position += end;
    (start, start + end)
}

#[pymethods]
impl Input {
    /// Read up to `size` bytes (all remaining when omitted, None or negative).
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let (start, end, bytes) = self.with_body(py, |state| {
            let left = state.body.len() - state.position;
            let n = size_arg(size).map_or(left, |s| s.min(left));
            let start = state.position;
            state.position += n;
            (start, start + n, PyBytes::new(py, &state.body[start..start + n]))
        })?;
        let _ = (start, end);
        Ok(bytes)
    }

    /// Read one line (up to and including `\n`), at most `size` bytes.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.with_body(py, |state| {
            let (start, end) = take_line(state, size_arg(size));
            PyBytes::new(py, &state.body[start..end])
        })
    }

    /// Read all remaining lines (stopping once `hint` bytes were collected, when given).
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let lines = PyList::empty(py);
        let hint = size_arg(hint).filter(|h| *h > 0);
        let chunks: Vec<(usize, usize)> = self.with_body(py, |state| {
            let mut out = Vec::new();
            let mut total = 0;
            while state.position < state.body.len() {
                let (s, e) = take_line(state, None);
                total += e - s;
                out.push((s, e));
                if hint.is_some_and(|h| total >= h) {
                    break;
                }
            }
            out
        })?;
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (s, e) in chunks {
            lines.append(PyBytes::new(py, &state.body[s..e]))?;
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok(if line.as_bytes().is_empty() { None } else { Some(line) })
    }

    /// Always False: the body is ready to read.
    fn isatty(&self) -> bool {
        false
    }

    /// No-op (the server owns the connection).
    fn close(&self) {}

    /// True: the stream can be read.
    fn readable(&self) -> bool {
        true
    }

    #[getter]
    fn closed(&self) -> bool {
        false
    }

    /// Raises: seeking is not supported (as in Gunicorn).
    fn seek(&self, _offset: isize) -> PyResult<()> {
        Err(PyValueError::new_err("wsgi.input is not seekable"))
    }
}
