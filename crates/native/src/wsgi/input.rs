//! `wsgi.input`: the request body as a file-like object (`read`, `read(n)`, `readline`,
//! `readline(n)`, `readlines`, iteration). Normally the body was read in full by the connection
//! driver before the app was called (a large one into a temporary file, see [`super::body`]), so
//! no Python thread ever waits on a slow client. For
//! `Expect: 100-continue` the body is deferred: the first read sends `100 Continue` and then
//! reads the body from the socket (blocking, with a timeout), so a client is only asked for its
//! body when the app really wants it.

use std::sync::{Mutex, MutexGuard, TryLockError};

use super::blocking_io::ClientSocket;
use super::body::{BodyCollector, CollectError, RequestBody};

use ferrocorn_http::{BodyFraming, ErrorKind, Limits, ParseError};
use pyo3::exceptions::{PyIOError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// A body not read yet: the socket it will come from and what is already buffered.
#[derive(Debug)]
pub struct DeferredBody {
    /// The client's socket.
    pub socket: ClientSocket,
    /// How the body is framed.
    pub framing: BodyFraming,
    /// Bytes already read after the request head.
    pub buffered: Vec<u8>,
    /// Parser limits (for chunked trailers).
    pub limits: Limits,
    /// Body bytes kept in memory before the rest is spooled to a temporary file.
    pub buffer_size: usize,
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
    body: RequestBody,
    position: u64,
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
    pub fn buffered(body: RequestBody) -> Self {
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
                body: RequestBody::default(),
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

    /// The state, with a deferred body fetched first (without the GIL: the socket read
    /// blocks). A thread finding the state locked by another waits without the GIL, so the
    /// holder can take it back.
    fn state(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, InputState>> {
        let mut state = loop {
            match self.state.try_lock() {
                Ok(guard) => break guard,
                Err(TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(TryLockError::WouldBlock) => py.detach(std::thread::yield_now),
            }
        };
        if let Some(deferred) = state.deferred.take() {
            let how = deferred.socket.wait;
            match how.run(py, || fetch_deferred(deferred)) {
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
        Ok(state)
    }

    /// The next line of the body, at most `limit` bytes; empty at the end.
    fn next_line(&self, py: Python<'_>, limit: usize) -> PyResult<Vec<u8>> {
        let mut state = self.state(py)?;
        let (body, position) = (&state.body, state.position);
        let line = if body.is_spooled() {
            py.detach(|| body.line_at(position, limit))
        } else {
            body.line_at(position, limit)
        }
        .map_err(spool_read_error)?;
        state.position += line.len() as u64;
        Ok(line)
    }
}

/// Reads from a spooled body up to this size fill the `bytes` object directly, holding the GIL
/// (a page-cache copy of at most this many bytes).
const DIRECT_READ_MAX: usize = 256 * 1024;

fn spool_read_error(e: std::io::Error) -> PyErr {
    PyIOError::new_err(format!("error reading the spooled request body: {e}"))
}

/// Send 100 Continue, then read the whole body. Returns the body and any bytes past it.
fn fetch_deferred(deferred: DeferredBody) -> Result<(RequestBody, Vec<u8>), ParseError> {
    let failed = |detail: String| ParseError::new(ErrorKind::NoMoreData, detail);
    let socket = deferred.socket;
    socket.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|e| failed(e.to_string()))?;
    let mut pending = deferred.buffered;
    let mut body = BodyCollector::new(deferred.framing, &deferred.limits, deferred.buffer_size);
    loop {
        match body.take_from(&mut pending) {
            Ok(true) => break,
            Ok(false) => {}
            Err(CollectError::Parse(e)) => return Err(e),
            Err(CollectError::Spool(e)) => return Err(failed(e.to_string())),
        }
        if socket.read_some(&mut pending).map_err(|e| failed(e.to_string()))? == 0 {
            return Err(body.ended_early());
        }
    }
    Ok((body.finish().map_err(|e| failed(e.to_string()))?, pending))
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    /// Read up to `size` bytes (all remaining when omitted, None or negative).
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let mut state = self.state(py)?;
        let (body, position) = (&state.body, state.position);
        let left = body.len() - position;
        let n = size_arg(size).map_or(left, |s| (s as u64).min(left)) as usize;
        let bytes = match body {
            RequestBody::Memory(all) => {
                PyBytes::new(py, &all[position as usize..position as usize + n])
            }
            // A piece of the usual size is read straight into the bytes object (one copy
            // less); a large read runs without the GIL.
            spooled if n <= DIRECT_READ_MAX => PyBytes::new_with(py, n, |buf| {
                spooled.read_into(position, buf).map_err(spool_read_error)
            })?,
            spooled => {
                let data = py.detach(|| spooled.read_at(position, n)).map_err(spool_read_error)?;
                PyBytes::new(py, &data)
            }
        };
        state.position += n as u64;
        Ok(bytes)
    }

    /// Read one line (up to and including `\n`), at most `size` bytes.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.next_line(py, size_arg(size).unwrap_or(usize::MAX))?;
        Ok(PyBytes::new(py, &line))
    }

    /// Read all remaining lines (stopping once `hint` bytes were collected, when given).
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let lines = PyList::empty(py);
        let hint = size_arg(hint).filter(|h| *h > 0);
        let mut total = 0;
        loop {
            let line = self.next_line(py, usize::MAX)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
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
