//! Typed errors of `ferrocorn bench`: everything that stops a run before or
//! instead of producing a [`crate::Report`], each printable as one line.

use std::fmt;
use std::io;

/// Why a benchmark could not run. `Display` gives one line without a trailing
/// newline; [`BenchError::exit_code`] gives the process exit code to use.
#[derive(Debug)]
pub enum BenchError {
    /// A command-line problem (unknown option, missing or bad value).
    Usage(String),
    /// The URL could not be parsed.
    BadUrl(String),
    /// The URL asks for something this tool does not do (e.g. https).
    Unsupported(String),
    /// A bad option value given through the library API (e.g. zero connections).
    InvalidOption(String),
    /// The host name did not resolve.
    Resolve {
        /// The `host:port` that failed to resolve.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The target refused or did not answer the first connection attempt.
    Connect {
        /// The socket address that was tried.
        addr: String,
        /// The connect error.
        source: io::Error,
    },
    /// A local I/O problem (reading `--body-file`, starting a runtime or a thread).
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl BenchError {
    /// Exit code for this error: 2 for usage/input mistakes, 1 for run-time failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchError::Usage(_)
            | BenchError::BadUrl(_)
            | BenchError::Unsupported(_)
            | BenchError::InvalidOption(_) => 2,
            BenchError::Resolve { .. } | BenchError::Connect { .. } | BenchError::Io { .. } => 1,
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Usage(m) => write!(f, "{m} (see --help)"),
            BenchError::BadUrl(m) => write!(f, "bad URL: {m}"),
            BenchError::Unsupported(m) => write!(f, "{m}"),
            BenchError::InvalidOption(m) => write!(f, "{m}"),
            BenchError::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            BenchError::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            BenchError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Resolve { source, .. }
            | BenchError::Connect { source, .. }
            | BenchError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
