//! Awaitables that are already complete. What `receive()` and `send()` return when nothing has
//! to wait: `await` gets the value at once, without a coroutine frame, a future or a trip
//! through the event loop (the common case — a send into a non-full buffer, the first
//! `http.request`).

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// An awaitable whose `await` returns `value`.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Ends the `await` at once: StopIteration carrying the value.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.value {
            Some(value) => Err(PyStopIteration::new_err((value.clone_ref(py),))),
            None => Ok(None),
        }
    }
}

/// A complete awaitable returning `value`.
pub fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready { value: Some(value) })?.into_any())
}

/// The shared complete awaitable returning None (stateless, so one serves every `await`).
pub fn ready_none(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static NONE: PyOnceLock<Py<Ready>> = PyOnceLock::new();
    Ok(NONE.get_or_try_init(py, || Py::new(py, Ready { value: None }))?.clone_ref(py).into_any())
}
