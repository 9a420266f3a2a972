//! `wsgi.file_wrapper`: wraps a file-like object. When an app returns one whose file has a real
//! descriptor, the connection driver sends it with `sendfile`; otherwise it is iterated in
//! `blksize` blocks like any iterable.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The class placed in `environ["wsgi.file_wrapper"]`.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct FileWrapper {
    /// The wrapped file-like object.
    #[pyo3(get)]
    pub filelike: Py<PyAny>,
    /// Block size for iteration.
    #[pyo3(get)]
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper { filelike, blksize: blksize.max(1) }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let data = self.filelike.bind(py).call_method1("read", (self.blksize,))?;
        let bytes = data.cast_into::<PyBytes>().map_err(PyErr::from)?;
        Ok(if bytes.as_bytes().is_empty() { None } else { Some(bytes) })
    }

    /// Close the wrapped file (when it has a `close`).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let file = self.filelike.bind(py);
        if file.hasattr("close")? {
            file.call_method0("close")?;
        }
        Ok(())
    }
}
