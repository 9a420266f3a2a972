//! `start_response` and its `write()` callable, with PEP 3333's `exc_info` rules: a second call
//! without `exc_info` is an error; with `exc_info` it replaces the status and headers while
//! nothing was sent, and re-raises the app's exception once headers are on the wire.

use std::sync::Mutex;

use pyo3::exceptions::{PyAssertionError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

#[derive(Debug, Default)]
struct State {
    status: Option<String>,
    headers: Vec<(String, String)>,
    headers_sent: bool,
    written: Vec<u8>,
}

/// The `start_response` callable handed to the app.
#[pyclass(module = "ferrocorn._native", frozen)]
#[derive(Default)]
pub struct StartResponse {
    state: Mutex<State>,
}

impl StartResponse {
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

    /// PEP 3333's legacy `write()`: bytes written before the returned iterable.
    fn write(&self, data: &Bound<'_, PyBytes>) -> PyResult<()> {
        let mut state = self.lock();
        if state.status.is_none() {
            return Err(PyAssertionError::new_err("write() called before start_response()"));
        }
        state.headers_sent = true;
        state.written.extend_from_slice(data.as_bytes());
        Ok(())
    }
}
