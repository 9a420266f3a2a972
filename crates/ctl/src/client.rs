//! One request/reply exchange over the control socket: connect, write one
//! line of JSON, read one line of JSON back, close.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// How long one read or write on the control socket may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on the size of one reply line.
const MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;

/// Why a request over the control socket failed.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing accepted the connection at this path.
    Connect {
        /// The socket path that was tried.
        path: PathBuf,
        /// The error from `connect(2)`.
        source: io::Error,
    },
    /// The connection broke (or timed out) while talking.
    Io {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The server answered something that is not one JSON object line.
    BadReply {
        /// The socket path.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
}

impl ClientError {
    /// The socket path this error is about.
    pub fn path(&self) -> &Path {
        match self {
            ClientError::Connect { path, .. }
            | ClientError::Io { path, .. }
            | ClientError::BadReply { path, .. } => path,
        }
    }

    /// A short description of the cause, without the path.
    pub fn cause(&self) -> String {
        match self {
            ClientError::Connect { source, .. } | ClientError::Io { source, .. } => {
                source.to_string()
            }
            ClientError::BadReply { detail, .. } => format!("invalid reply: {detail}"),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { path, source } => write!(
                f,
                "cannot connect to control socket {}: {source} (is ferrocorn running? \
                 pass --socket PATH if it uses another socket; the server may also be \
                 running with --no-control-socket)",
                path.display()
            ),
            ClientError::Io { path, source } => {
                write!(f, "control socket {}: {source}", path.display())
            }
            ClientError::BadReply { path, detail } => {
                write!(f, "control socket {}: invalid reply: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// A reply line from the server: the raw text (without its newline) and the
/// parsed JSON object.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The reply exactly as received, minus the trailing line terminator.
    pub raw: String,
    /// The parsed reply; always a JSON object.
    pub value: Value,
}

impl Reply {
    /// Whether the server said `"ok": true`.
    pub fn is_ok(&self) -> bool {
        self.value.get("ok").and_then(Value::as_bool) == Some(true)
    }

    /// The server's `"error"` message, or a generic one when absent.
    pub fn error_message(&self) -> String {
        match self.value.get("error") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "server reported failure without an error message".to_owned(),
        }
    }
}

/// Sends `request` as one JSON line to the control socket at `path` and
/// returns the one-line reply.
pub fn request(path: &Path, request: &Value) -> Result<Reply, ClientError> {
    let io_err = |source: io::Error| ClientError::Io { path: path.to_path_buf(), source };
    let mut stream = UnixStream::connect(path)
        .map_err(|source| ClientError::Connect { path: path.to_path_buf(), source })?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;

    let mut line = request.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_err)?;
    stream.flush().map_err(io_err)?;

    let mut reader = BufReader::new(stream.take(MAX_REPLY_BYTES));
    let mut raw = String::new();
    reader.read_line(&mut raw).map_err(io_err)?;
    let bad = |detail: String| ClientError::BadReply { path: path.to_path_buf(), detail };
    if raw.is_empty() {
        return Err(bad("connection closed without a reply".to_owned()));
    }
    if !raw.ends_with('\n') && raw.len() as u64 >= MAX_REPLY_BYTES {
        return Err(bad(format!("reply longer than {MAX_REPLY_BYTES} bytes")));
    }
    while raw.ends_with('\n') || raw.ends_with('\r') {
        raw.pop();
    }
    let value: Value = serde_json::from_str(&raw).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        return Err(bad("not a JSON object".to_owned()));
    }
    Ok(Reply { raw, value })
}
