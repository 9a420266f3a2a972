//! The worker's SIGABRT handler (the master's timeout signal): run the `worker_abort` hook,
//! then exit with status 1 at once, like Gunicorn's worker.

use pyo3::prelude::*;

use crate::hooks::WorkerHandle;

/// Callable installed with `signal.signal(SIGABRT, ...)`.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct AbortHandler {
    hook: Option<Py<PyAny>>,
    worker: Py<WorkerHandle>,
}

#[pymethods]
impl AbortHandler {
    fn __call__(&self, py: Python<'_>, _signum: i32, _frame: &Bound<'_, PyAny>) {
        self.worker.bind(py).get().set_dead();
        if let Some(hook) = &self.hook
            && let Err(e) = hook.bind(py).call1((self.worker.clone_ref(py),))
        {
            crate::wsgi::log_exception(py, "Exception in worker_abort hook", &e);
        }
        crate::logging::info!("Worker exiting (pid: {})", std::process::id());
        // SAFETY: immediate exit, as Gunicorn's aborted worker does; nothing may keep running.
        unsafe { libc::_exit(1) };
    }
}

/// Build the handler for `worker` with the configured hook (if any).
pub fn make_handler(
    py: Python<'_>,
    worker: Py<WorkerHandle>,
    hook: Option<Py<PyAny>>,
) -> PyResult<Py<AbortHandler>> {
    Py::new(py, AbortHandler { hook, worker })
}
