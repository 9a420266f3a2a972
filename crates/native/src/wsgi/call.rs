//! Calling the app: `app(environ, start_response)`, then turning its result into an
//! [`AppResponse`] the connection driver can send — the whole body when it is known up front
//! (a list or tuple, or an iterable whose Content-Length is already met), a stream pulled chunk
//! by chunk, or a file for `sendfile`. Exceptions before anything was sent become a 500 with the
//! traceback in the error log; `close()` on the result is always called exactly once.

use std::os::fd::RawFd;

use ferrocorn_http::{ResponseError, ResponseHead};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator, PyList, PyTuple};

use super::file_wrapper::FileWrapper;
use super::start_response::StartResponse;

/// What the app produced.
pub enum AppResponse {
    /// Status, headers and the entire body.
    Complete {
        /// Validated status and headers.
        head: ResponseHead,
        /// The whole body.
        body: Vec<u8>,
    },
    /// Status, headers, the first non-empty bytes, and the iterator for the rest.
    Stream {
        /// Validated status and headers.
        head: ResponseHead,
        /// Bytes produced so far (write() output plus the first chunk).
        first: Vec<u8>,
        /// The live iterator.
        iterator: Py<PyAny>,
        /// The app's result object (whose `close()` must be called).
        result: Py<PyAny>,
    },
    /// A `wsgi.file_wrapper` over a real file: send with sendfile.
    File(FileResponse),
    /// `write()` already sent the head (and maybe body bytes); continue with the iterable.
    Continue {
        /// What was sent.
        committed: super::Committed,
        /// The iterator over the app's result.
        iterator: Py<PyAny>,
        /// The app's result object (whose `close()` must be called).
        result: Py<PyAny>,
    },
    /// The app failed before anything was sent; answer 500. The reason is already logged.
    Failed,
    /// The app failed after `write()` sent the head: the connection must be closed.
    Aborted,
}

/// A `wsgi.file_wrapper` response over a real file, to send with sendfile.
pub struct FileResponse {
    /// Validated status and headers.
    pub head: ResponseHead,
    /// Bytes passed to write() before the file.
    pub prefix: Vec<u8>,
    /// The file's descriptor (kept open by `result` until close()).
    pub fd: RawFd,
    /// Where to start.
    pub offset: u64,
    /// How many bytes to send.
    pub length: u64,
    /// The FileWrapper (close() closes the file).
    pub result: Py<PyAny>,
}

/// Call `close()` on an app result if it has one; errors are logged.
pub fn close_result(py: Python<'_>, result: &Bound<'_, PyAny>) {
    if let Ok(close) = result.getattr(pyo3::intern!(py, "close"))
        && let Err(e) = close.call0()
    {
        log_exception(py, "Error closing the app's response iterable", &e);
    }
}

/// Log an app exception with its traceback.
pub fn log_exception(py: Python<'_>, context: &str, err: &PyErr) {
    let tb = crate::app::format_traceback(py, err);
    crate::logging::error!("{context}\n{}", tb.trim_end());
}

fn head_from(start: &StartResponse) -> Result<ResponseHead, String> {
    let (status, headers) = start
        .take_status()
        .ok_or_else(|| "the app returned without calling start_response()".to_owned())?;
    ResponseHead::new(&status, headers).map_err(|e: ResponseError| e.to_string())
}

fn chunk_bytes<'a>(item: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    item.cast::<PyBytes>().map(|b| b.as_bytes()).map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "the app's response iterable must yield bytes, got {}",
            item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })
}

fn file_source(py: Python<'_>, wrapper: &Bound<'_, FileWrapper>) -> Option<(RawFd, u64, u64)> {
    let file = wrapper.get().filelike.bind(py);
    let fd: RawFd = file.call_method0("fileno").ok()?.extract().ok()?;
    // Flush Python-level buffers so the descriptor's view is current.
    let _ = file.call_method0("flush");
    // SAFETY: fstat/lseek on the descriptor the file object reports; `stat` is a valid out-pointer.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 || (stat.st_mode & libc::S_IFMT) != libc::S_IFREG
    {
        return None;
    }
    let offset = file.call_method0("tell").ok()?.extract::<u64>().ok()?;
    let size = stat.st_size as u64;
    Some((fd, offset, size.saturating_sub(offset)))
}

/// Call the app and collect the beginning of its response.
pub fn call_app(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    environ: &Bound<'_, PyAny>,
    start: &Bound<'_, StartResponse>,
    sendfile: bool,
) -> AppResponse {
    let starter = start.get();
    let result = match app.call1((environ, start)) {
        Ok(r) => r,
        Err(e) => {
            log_exception(py, "Error handling request", &e);
            return if starter.committed().is_some() {
                AppResponse::Aborted
            } else {
                AppResponse::Failed
            };
        }
    };
    if let Some(committed) = starter.committed() {
        return match result.try_iter() {
            Ok(it) => AppResponse::Continue {
                committed,
                iterator: it.into_any().unbind(),
                result: result.unbind(),
            },
            Err(e) => {
                log_exception(py, "Error handling request", &e);
                close_result(py, &result);
                AppResponse::Aborted
            }
        };
    }
    // Fast path: list or tuple of bytes.
    if let Ok(list) = result.cast::<PyList>() {
        return complete_from_items(py, starter, list.iter(), &result);
    }
    if let Ok(tuple) = result.cast::<PyTuple>() {
        return complete_from_items(py, starter, tuple.iter(), &result);
    }
    if let Ok(wrapper) = result.cast::<FileWrapper>()
        && sendfile
        && let Some((fd, offset, size)) = file_source(py, wrapper)
    {
        return match head_from(starter) {
            Ok(head) => {
                starter.mark_sent();
                let length = head.content_length().map_or(size, |cl| cl.min(size));
                AppResponse::File(FileResponse {
                    head,
                    prefix: starter.take_written(),
                    fd,
                    offset,
                    length,
                    result: result.clone().unbind(),
                })
            }
            Err(msg) => {
                crate::logging::error!("Error handling request: {msg}");
                close_result(py, &result);
                AppResponse::Failed
            }
        };
    }
    stream_start(py, starter, &result)
}

fn complete_from_items<'py>(
    py: Python<'py>,
    starter: &StartResponse,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    result: &Bound<'py, PyAny>,
) -> AppResponse {
    let mut body = starter.take_written();
    for item in items {
        match chunk_bytes(&item) {
            Ok(bytes) => body.extend_from_slice(bytes),
            Err(e) => {
                log_exception(py, "Error handling request", &e);
                close_result(py, result);
                return AppResponse::Failed;
            }
        }
    }
    finish_complete(starter, body)
}

fn finish_complete(starter: &StartResponse, body: Vec<u8>) -> AppResponse {
    match head_from(starter) {
        Ok(head) => {
            starter.mark_sent();
            AppResponse::Complete { head, body }
        }
        Err(msg) => {
            crate::logging::error!("Error handling request: {msg}");
            AppResponse::Failed
        }
    }
}

/// Pull from an arbitrary iterable until the first non-empty chunk (headers are only sent with
/// body bytes or at the end, so the app may still change them with `exc_info` until then).
fn stream_start(py: Python<'_>, starter: &StartResponse, result: &Bound<'_, PyAny>) -> AppResponse {
    let fail = |e: PyErr| {
        log_exception(py, "Error handling request", &e);
        close_result(py, result);
        AppResponse::Failed
    };
    let iterator = match result.try_iter() {
        Ok(it) => it,
        Err(e) => return fail(e),
    };
    let mut first = Vec::new();
    let mut iterator = iterator;
    for item in iterator.by_ref() {
        let item = match item {
            Ok(i) => i,
            Err(e) => return fail(e),
        };
        match chunk_bytes(&item) {
            Ok([]) => continue,
            Ok(bytes) => {
                first.extend_from_slice(bytes);
                break;
            }
            Err(e) => return fail(e),
        }
    }
    let written = starter.take_written();
    let mut first = if written.is_empty() { first } else { [written, first].concat() };
    let head = match head_from(starter) {
        Ok(h) => h,
        Err(msg) => {
            crate::logging::error!("Error handling request: {msg}");
            close_result(py, result);
            return AppResponse::Failed;
        }
    };
    starter.mark_sent();
    // When the first chunk already fills the declared length (or the iterator is done), finish
    // in this same call: one write, no chunked framing.
    let mut exhausted = first.is_empty();
    if !exhausted && head.content_length().is_some_and(|cl| first.len() as u64 >= cl) {
        match iterator.clone().next() {
            None => exhausted = true,
            Some(Ok(item)) => {
                if let Ok(bytes) = chunk_bytes(&item) {
                    first.extend_from_slice(bytes);
                }
            }
            Some(Err(e)) => return fail(e),
        }
    }

    if exhausted {
        close_result(py, result);
        first.shrink_to_fit();
        return AppResponse::Complete { head, body: first };
    }
    AppResponse::Stream {
        head,
        first,
        iterator: iterator.into_any().unbind(),
        result: result.clone().unbind(),
    }
}

/// Pull the next non-empty chunk of a stream into `out`; `Ok(false)` at the end.
pub fn next_chunk(py: Python<'_>, iterator: &Py<PyAny>, out: &mut Vec<u8>) -> PyResult<bool> {
    let mut it = iterator.bind(py).cast::<PyIterator>()?.clone();
    for item in it.by_ref() {
        let item = item?;
        let bytes = chunk_bytes(&item)?;
        if !bytes.is_empty() {
            out.extend_from_slice(bytes);
            return Ok(true);
        }
    }
    Ok(false)
}
