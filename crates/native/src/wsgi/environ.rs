//! Building the WSGI environ fast: a per-listener template dict holds the constant keys (and
//! placeholders for the per-request ones, so the copy is already sized), keys are interned
//! strings, `HTTP_*` key objects are cached per worker, values are decoded as latin-1 as PEP
//! 3333 requires. Duplicate headers are joined with `,` like Gunicorn.

use std::collections::HashMap;
use std::sync::Mutex;

use ferrocorn_http::{ProxyInfo, RequestHead};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{IntoPyObjectExt, intern};

use super::errors_stream::ErrorStream;
use super::file_wrapper::FileWrapper;

/// Decode bytes as latin-1 into a Python str (every byte maps to the code point of its value).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8 and identical in latin-1.
        return PyString::new(py, std::str::from_utf8(bytes).unwrap_or_default());
    }
    let text: String = bytes.iter().map(|&b| b as char).collect();
    PyString::new(py, &text)
}

/// Constant, per-listener facts that go into every environ.
#[derive(Debug, Clone)]
pub struct ListenerEnv {
    /// `SERVER_NAME` (empty for unix sockets: derived from Host per request).
    pub server_name: String,
    /// `SERVER_PORT` (empty for unix sockets).
    pub server_port: String,
}

/// Per-request facts the environ needs besides the head.
pub struct RequestFacts<'a> {
    /// The parsed request head.
    pub head: &'a RequestHead,
    /// Percent-decoded path bytes (before SCRIPT_NAME is stripped).
    pub decoded_path: &'a [u8],
    /// `REMOTE_ADDR` and `REMOTE_PORT` (cached per connection).
    pub remote: &'a (Py<PyString>, Option<Py<PyString>>),
    /// True when the request came over https (or a trusted proxy said so).
    pub https: bool,
    /// PROXY protocol information, if any.
    pub proxy: Option<&'a ProxyInfo>,
    /// The `wsgi.input` object.
    pub input: Bound<'a, PyAny>,
}

/// Why the environ could not be built (answered 500, like Gunicorn's ConfigurationProblem).
#[derive(Debug)]
pub enum EnvironError {
    /// The path does not start with the configured SCRIPT_NAME.
    ScriptNameMismatch(String),
    /// A Python error.
    Python(PyErr),
}

impl From<PyErr> for EnvironError {
    fn from(e: PyErr) -> Self {
        EnvironError::Python(e)
    }
}

/// Builds environs for one worker.
pub struct EnvironBuilder {
    template: Py<PyDict>,
    script_name: String,
    http_keys: Mutex<HashMap<String, Py<PyString>>>,
    is_unix: bool,
}

const HTTP_KEY_CACHE_LIMIT: usize = 512;

impl EnvironBuilder {
    /// Build the template for one listener.
    pub fn new(
        py: Python<'_>,
        listener: &ListenerEnv,
        script_name: &str,
        multiprocess: bool,
        multithread: bool,
    ) -> PyResult<Self> {
        let d = PyDict::new(py);
        // Per-request keys first, as placeholders, so copies are pre-sized.
        for key in [
            "REQUEST_METHOD",
            "PATH_INFO",
            "QUERY_STRING",
            "RAW_URI",
            "SERVER_PROTOCOL",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "wsgi.input",
            "HTTP_HOST",
            "HTTP_USER_AGENT",
            "HTTP_ACCEPT",
        ] {
            d.set_item(key, "")?;
        }
        for key in ["REMOTE_PORT", "HTTP_HOST", "HTTP_USER_AGENT", "HTTP_ACCEPT"] {
            d.del_item(key)?;
        }
        d.set_item("wsgi.version", (1, 0))?;
        d.set_item("wsgi.url_scheme", "http")?;
        d.set_item("wsgi.errors", Py::new(py, ErrorStream)?)?;
        d.set_item("wsgi.multithread", multithread)?;
        d.set_item("wsgi.multiprocess", multiprocess)?;
        d.set_item("wsgi.run_once", false)?;
        d.set_item("wsgi.input_terminated", true)?;
        d.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        d.set_item("SERVER_SOFTWARE", concat!("ferrocorn/", env!("CARGO_PKG_VERSION")))?;
        d.set_item("SCRIPT_NAME", script_name)?;
        d.set_item("SERVER_NAME", &listener.server_name)?;
        d.set_item("SERVER_PORT", &listener.server_port)?;
        Ok(EnvironBuilder {
            template: d.unbind(),
            script_name: script_name.to_owned(),
            http_keys: Mutex::new(HashMap::new()),
            is_unix: listener.server_port.is_empty(),
        })
    }

    fn http_key<'py>(&self, py: Python<'py>, name: &str) -> Bound<'py, PyString> {
        let mut cache = self.http_keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = cache.get(name) {
            return key.bind(py).clone();
        }
        let mut key = String::with_capacity(name.len() + 5);
        if name != "CONTENT-TYPE" && name != "CONTENT-LENGTH" {
            key.push_str("HTTP_");
        }
        key.extend(name.chars().map(|c| if c == '-' { '_' } else { c }));
        let key = PyString::intern(py, &key);
        if cache.len() < HTTP_KEY_CACHE_LIMIT {
            cache.insert(name.to_owned(), key.clone().unbind());
        }
        key
    }

    /// Build the environ for one request.
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        facts: RequestFacts<'py>,
    ) -> Result<Bound<'py, PyDict>, EnvironError> {
        let head = facts.head;
        let env = self.template.bind(py).copy()?;
        env.set_item(intern!(py, "REQUEST_METHOD"), method_string(py, &head.method))?;
        let protocol = match head.version {
            (1, 1) => intern!(py, "HTTP/1.1").clone(),
            (1, 0) => intern!(py, "HTTP/1.0").clone(),
            (major, minor) => PyString::new(py, &format!("HTTP/{major}.{minor}")),
        };
        env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
        env.set_item(intern!(py, "RAW_URI"), latin1(py, &head.target))?;
        env.set_item(intern!(py, "QUERY_STRING"), latin1(py, &head.query))?;
        env.set_item(intern!(py, "wsgi.input"), facts.input)?;
        if facts.https {
            env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
        }
        match facts.proxy.and_then(|p| p.source) {
            Some(source) => {
                env.set_item(intern!(py, "REMOTE_ADDR"), source.ip().to_string())?;
                env.set_item(intern!(py, "REMOTE_PORT"), source.port().to_string())?;
            }
            None => {
                env.set_item(intern!(py, "REMOTE_ADDR"), facts.remote.0.bind(py))?;
                if let Some(port) = &facts.remote.1 {
                    env.set_item(intern!(py, "REMOTE_PORT"), port.bind(py))?;
                }
            }
        }
        if let Some(proxy) = facts.proxy {
            env.set_item("PROXY_PROTOCOL", &proxy.protocol)?;
            // Gunicorn's PROXY_ADDR/PROXY_PORT are the proxy's side: the destination fields.
            if let Some(destination) = proxy.destination {
                env.set_item("PROXY_ADDR", destination.ip().to_string())?;
                env.set_item("PROXY_PORT", destination.port().to_string())?;
            }
        }
        let mut script_name: Option<Vec<u8>> = None;
        let mut path_override: Option<Vec<u8>> = None;
        for (i, (name, value)) in head.headers.iter().enumerate() {
            if name.contains('_') && (name == "SCRIPT_NAME" || name == "PATH_INFO") {
                // Only present when a trusted proxy may send it (forwarder_headers).
                if name == "SCRIPT_NAME" {
                    script_name = Some(value.clone());
                } else {
                    path_override = Some(value.clone());
                }
                continue;
            }
            if head.headers[..i].iter().any(|(n, _)| n == name) {
                continue; // joined into the first occurrence below
            }
            let key = self.http_key(py, name);
            let duplicates = head.headers[i + 1..].iter().filter(|(n, _)| n == name);
            let mut joined: Option<Vec<u8>> = None;
            for (_, more) in duplicates {
                let acc = joined.get_or_insert_with(|| value.clone());
                acc.push(b',');
                acc.extend_from_slice(more);
            }
            env.set_item(key, latin1(py, joined.as_deref().unwrap_or(value)))?;
        }
        if self.is_unix {
            self.set_server_from_host(py, &env, head, facts.https)?;
        }
        let script = match &script_name {
            Some(s) => {
                env.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, s))?;
                s.as_slice()
            }
            None => self.script_name.as_bytes(),
        };
        let path = path_override.as_deref().unwrap_or(facts.decoded_path);
        let path_info = if script.is_empty() {
            path
        } else if let Some(rest) = path.strip_prefix(script) {
            rest
        } else {
            return Err(EnvironError::ScriptNameMismatch(format!(
                "request path {:?} does not start with SCRIPT_NAME {:?}",
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(script)
            )));
        };
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, path_info))?;
        Ok(env)
    }

    /// For unix-socket listeners SERVER_NAME/PORT come from the Host header (80/443 default).
    fn set_server_from_host(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        head: &RequestHead,
        https: bool,
    ) -> PyResult<()> {
        let default_port = if https { "443" } else { "80" };
        let (name, port) =
            match head.header("HOST").map(|h| String::from_utf8_lossy(h).into_owned()) {
                Some(host) => match host
                    .rsplit_once(':')
                    .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                {
                    Some((h, p)) => (h.to_owned(), p.to_owned()),
                    None => (host, default_port.to_owned()),
                },
                None => (String::new(), String::new()),
            };
        env.set_item(intern!(py, "SERVER_NAME"), name.into_py_any(py)?)?;
        env.set_item(intern!(py, "SERVER_PORT"), port.into_py_any(py)?)?;
        Ok(())
    }
}

/// A request method as a Python string: the common ones interned (no new string per request).
/// Shared with the ASGI scope.
pub fn method_string<'py>(py: Python<'py>, method: &str) -> Bound<'py, PyString> {
    match method {
        "GET" => intern!(py, "GET").clone(),
        "POST" => intern!(py, "POST").clone(),
        "HEAD" => intern!(py, "HEAD").clone(),
        other => PyString::new(py, other),
    }
}
