//! `ferrocorn._native`: the Python extension module and ferrocorn's composition root. It is the
//! only crate that knows Python: it maps settings to options ([`options`]), loads the app
//! ([`app`]), serves HTTP on tokio ([`server`]) and bridges to WSGI ([`wsgi`]).
//!
//! This crate talks to CPython and the OS through FFI, so `unsafe` is allowed here (and only
//! here); every `unsafe` block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

mod access_log;
mod app;
mod app_cache;
mod asgi;
mod cli;
mod clock;
mod hooks;
mod hub_timer_wake;
mod logging;
mod master;
mod options;
mod redis_cache;
mod response_store;
mod server;
mod settings_load;
mod shared_cache;
mod timer_fd;
mod upstream_board;
mod user_metrics;
mod wsgi;

use pyo3::prelude::*;

/// Write one line to ferrocorn's error log at `level` (debug, info, warning, error, critical).
#[pyfunction]
fn log(level: &str, message: &str) {
    logging::log(logging::Level::parse(level).unwrap_or(logging::Level::Info), message);
}

/// Run the `ferrocorn` command line (argv without the program name); returns the exit code.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    cli::run(py, argv)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(log, m)?)?;
    m.add_class::<asgi::LoopBridge>()?;
    m.add_class::<asgi::AsgiRequest>()?;
    m.add_class::<server::loop_driver::IoStarter>()?;
    m.add_class::<server::loop_driver::LoopDriver>()?;
    m.add_class::<asgi::HubJob>()?;
    m.add_class::<hub_timer_wake::TimerWake>()?;
    m.add_class::<asgi::WebSocketSession>()?;
    m.add_class::<wsgi::FileWrapper>()?;
    m.add_class::<user_metrics::Metric>()?;
    m.add_class::<user_metrics::Series>()?;
    m.add_function(wrap_pyfunction!(user_metrics::counter, m)?)?;
    m.add_function(wrap_pyfunction!(user_metrics::gauge, m)?)?;
    m.add_function(wrap_pyfunction!(user_metrics::histogram, m)?)?;
    app_cache::register(m)?;
    Ok(())
}
