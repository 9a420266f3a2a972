//! `wsgi.errors`: a text stream whose writes land in the error log.

use pyo3::prelude::*;

/// The object placed in `environ["wsgi.errors"]`.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    /// Write text (str, or bytes decoded as UTF-8 with replacement) to the error log.
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text: String = match data.extract::<String>() {
            Ok(s) => s,
            Err(_) => String::from_utf8_lossy(&data.extract::<Vec<u8>>()?).into_owned(),
        };
        crate::logging::write_raw(text.as_bytes());
        Ok(text.len())
    }

    /// Write each item of an iterable of strings.
    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    /// Nothing is buffered; present for the file protocol.
    fn flush(&self) {}
}
