//! The error log: Gunicorn's line format (`[stamp] [pid] [LEVEL] message`), a level filter, and
//! a sink that is stderr, stdout or a file (reopened on demand). One process-wide instance,
//! set once at start, so every module (and `wsgi.errors`) can log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// Severity, ordered from most to least verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Debug detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd that was handled.
    Warning,
    /// A request or worker failed.
    Error,
    /// The server cannot go on as configured.
    Critical,
}

impl Level {
    /// Parse Gunicorn's `loglevel` names (case-insensitive; `warn` accepted).
    pub fn parse(name: &str) -> Option<Level> {
        match name.to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// Where log lines go: `-` means the standard stream, anything else is a file path.
#[derive(Debug)]
pub enum Sink {
    /// Standard error.
    Stderr,
    /// Standard output.
    Stdout,
    /// An append-mode file and its path (kept for reopening).
    File(File, String),
    /// A Python `logging` logger (when `logconfig`/`logconfig_dict`/`logconfig_json` is set).
    Python(&'static str),
}

fn python_log(logger: &'static str, level: Level, message: &str) {
    use pyo3::prelude::*;
    let levelno = match level {
        Level::Debug => 10,
        Level::Info => 20,
        Level::Warning => 30,
        Level::Error => 40,
        Level::Critical => 50,
    };
    Python::attach(|py| {
        let _ = py
            .import("logging")
            .and_then(|l| l.call_method1("getLogger", (logger,)))
            .and_then(|l| l.call_method1("log", (levelno, message)));
    });
}

impl Sink {
    /// Open `target` (`-` = `default_stream`), in append mode for files.
    pub fn open(target: &str, default_to_stdout: bool) -> std::io::Result<Sink> {
        if target == "-" {
            return Ok(if default_to_stdout { Sink::Stdout } else { Sink::Stderr });
        }
        let file = OpenOptions::new().create(true).append(true).open(target)?;
        Ok(Sink::File(file, target.to_owned()))
    }

    /// Write one whole line (the caller includes the newline).
    pub fn write_line(&mut self, line: &[u8]) {
        let _ = match self {
            Sink::Stderr => std::io::stderr().write_all(line),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line).and_then(|_| out.flush())
            }
            Sink::File(file, _) => file.write_all(line),
            Sink::Python(logger) => {
                python_log(logger, Level::Info, String::from_utf8_lossy(line).trim_end());
                Ok(())
            }
        };
    }

    /// Reopen a file sink (after log rotation); streams are left alone.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        if let Sink::File(file, path) = self {
            *file = OpenOptions::new().create(true).append(true).open(&*path)?;
        }
        Ok(())
    }
}

struct ErrorLog {
    level: Level,
    sink: Mutex<Sink>,
}

static ERROR_LOG: OnceLock<ErrorLog> = OnceLock::new();

/// Install the process-wide error log. A later call replaces the sink (used once Python
/// logging is configured).
pub fn init(level: Level, sink: Sink) {
    if let Err(log) = ERROR_LOG.set(ErrorLog { level, sink: Mutex::new(sink) })
        && let Some(current) = ERROR_LOG.get()
    {
        *current.sink.lock().unwrap_or_else(|e| e.into_inner()) =
            log.sink.into_inner().unwrap_or(Sink::Stderr);
    }
}

/// Whether a message at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level >= ERROR_LOG.get().map_or(Level::Info, |l| l.level)
}

/// Write one message (each line of a multi-line message is prefixed like Gunicorn's).
pub fn log(level: Level, message: &str) {
    if !enabled(level) {
        return;
    }
    if let Some(log) = ERROR_LOG.get() {
        let sink = log.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Sink::Python(logger) = &*sink {
            let logger = *logger;
            drop(sink);
            return python_log(logger, level, message);
        }
    }
    let stamp = crate::clock::error_log_stamp(SystemTime::now());
    let line = format!("{stamp} [{}] [{}] {}\n", std::process::id(), level.label(), message);
    match ERROR_LOG.get() {
        Some(log) => log.sink.lock().unwrap_or_else(|e| e.into_inner()).write_line(line.as_bytes()),
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Write raw text (e.g. from `wsgi.errors`) to the error log without a prefix.
pub fn write_raw(text: &[u8]) {
    match ERROR_LOG.get() {
        Some(log) => log.sink.lock().unwrap_or_else(|e| e.into_inner()).write_line(text),
        None => {
            let _ = std::io::stderr().write_all(text);
        }
    }
}

/// Reopen the error log file (USR1).
pub fn reopen() -> std::io::Result<()> {
    match ERROR_LOG.get() {
        Some(log) => log.sink.lock().unwrap_or_else(|e| e.into_inner()).reopen(),
        None => Ok(()),
    }
}

/// `log(Level::Info, ..)` with `format!` arguments.
macro_rules! info { ($($t:tt)*) => { $crate::logging::log($crate::logging::Level::Info, &format!($($t)*)) } }
/// `log(Level::Debug, ..)` with `format!` arguments (formatted only when enabled).
macro_rules! debug { ($($t:tt)*) => { if $crate::logging::enabled($crate::logging::Level::Debug) { $crate::logging::log($crate::logging::Level::Debug, &format!($($t)*)) } } }
/// `log(Level::Warning, ..)` with `format!` arguments.
macro_rules! warning { ($($t:tt)*) => { $crate::logging::log($crate::logging::Level::Warning, &format!($($t)*)) } }
/// `log(Level::Error, ..)` with `format!` arguments.
macro_rules! error { ($($t:tt)*) => { $crate::logging::log($crate::logging::Level::Error, &format!($($t)*)) } }
pub(crate) use {debug, error, info, warning};
