//! `ConfigError`: the one typed error of this crate. Every message names the setting (and its
//! flags) when there is one, shows the offending input, and says what would be accepted.

use std::fmt;

/// What went wrong, for callers that want to branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A command-line option that no setting has.
    UnknownOption,
    /// An abbreviated long option that matches several options.
    AmbiguousOption,
    /// An option that needs a value was given none.
    MissingValue,
    /// A flag that takes no value was given one (`--preload=yes`).
    UnexpectedValue,
    /// A second positional argument.
    ExtraArgument,
    /// A value a setting's validator rejected.
    InvalidValue,
    /// A setting ferrocorn does not (yet) implement was set.
    Unsupported,
    /// `GUNICORN_CMD_ARGS` could not be split into words.
    Syntax,
}

/// A configuration error with a message fit to show to the user as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The category of the error.
    pub kind: ErrorKind,
    /// The setting the error is about, if any.
    pub setting: Option<&'static str>,
    /// The full human-readable message.
    pub message: String,
}

impl ConfigError {
    /// Builds an error.
    pub fn new(kind: ErrorKind, setting: Option<&'static str>, message: impl Into<String>) -> Self {
        ConfigError { kind, setting, message: message.into() }
    }

    /// Returns the error with `context: ` put before its message (e.g. where the value came from).
    pub fn context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
