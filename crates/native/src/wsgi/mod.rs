//! The WSGI bridge (PEP 3333): environ construction, `wsgi.input`, `start_response` with
//! `write()`, `wsgi.file_wrapper`, `wsgi.errors`, and calling the app. The connection driver
//! hands it a fully read request and gets back an [`AppResponse`]; nothing here does socket I/O
//! except the deferred `100-continue` body read in [`input`].

mod blocking_io;
mod body;
mod call;
mod environ;
mod errors_stream;
mod file_wrapper;
mod input;
mod start_response;

pub use blocking_io::{AppWait, ClientSocket};
pub use body::{BodyCollector, CollectError, RequestBody, SpoolError};
pub use call::{AppResponse, FileResponse, close_result, log_exception, next_chunk};
pub use environ::{EnvironBuilder, EnvironError, ListenerEnv, RequestFacts, method_string};
pub use file_wrapper::FileWrapper;
pub use input::{DeferredBody, Input};
pub use start_response::{Committed, DirectWriter, StartResponse, frame_chunk};

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// One worker's view of the app: the callable plus an environ builder per listener.
pub struct WsgiApp {
    app: Py<PyAny>,
    builders: Vec<EnvironBuilder>,
    sendfile: bool,
}

/// The outcome of one app call, with what the driver needs afterwards.
pub struct Handled {
    /// What to send.
    pub response: AppResponse,
    /// The `wsgi.input` object (to learn what happened to a deferred body); the driver drops it
    /// early when the body was not deferred.
    pub input: Option<Py<Input>>,
    /// The environ, kept only when the access log needs `{var}e` atoms.
    pub environ: Option<Py<PyDict>>,
}

impl WsgiApp {
    /// Prepare for `listeners` (one environ template each).
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        listeners: &[ListenerEnv],
        script_name: &str,
        multiprocess: bool,
        multithread: bool,
        sendfile: bool,
    ) -> PyResult<Self> {
        let builders = listeners
            .iter()
            .map(|l| EnvironBuilder::new(py, l, script_name, multiprocess, multithread))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(WsgiApp { app, builders, sendfile })
    }

    /// Build the environ and call the app. `keep_environ` keeps the environ for the access log.
    pub fn handle(
        &self,
        py: Python<'_>,
        listener: usize,
        facts: RequestFacts<'_>,
        input: Py<Input>,
        keep_environ: bool,
        writer: Option<DirectWriter>,
    ) -> Handled {
        let environ = match self.builders[listener].build(py, facts) {
            Ok(env) => env,
            Err(EnvironError::ScriptNameMismatch(msg)) => {
                crate::logging::error!("Error handling request: {msg}");
                return Handled {
                    response: AppResponse::Failed,
                    input: Some(input),
                    environ: None,
                };
            }
            Err(EnvironError::Python(e)) => {
                log_exception(py, "Error building the WSGI environ", &e);
                return Handled {
                    response: AppResponse::Failed,
                    input: Some(input),
                    environ: None,
                };
            }
        };
        let start = match Bound::new(py, StartResponse::with_writer(writer)) {
            Ok(s) => s,
            Err(e) => {
                log_exception(py, "Error creating start_response", &e);
                return Handled {
                    response: AppResponse::Failed,
                    input: Some(input),
                    environ: None,
                };
            }
        };
        let response =
            call::call_app(py, self.app.bind(py), environ.as_any(), &start, self.sendfile);
        Handled { response, input: Some(input), environ: keep_environ.then(|| environ.unbind()) }
    }
}
