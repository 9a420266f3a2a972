//! Gunicorn's server hooks: the callables a config file defines (`on_starting`, `pre_fork`,
//! `post_request`, ...), checked for arity when loaded, and the `server`, `worker`, `req` and
//! `resp` objects they receive, with the attributes real configs touch (`server.cfg`,
//! `server.log`, `server.pid`, `server.num_workers`, `worker.pid`, `worker.age`,
//! `worker.alive`, `worker.log`, `req.method`, `req.path`, `req.headers`, ...).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use ferrocorn_config::{Config, Value};
use pyo3::BoundObject;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::logging::{self, Level};

/// The hooks Gunicorn defines, with the positional-argument counts it accepts.
const HOOK_ARITY: &[(&str, &[usize])] = &[
    ("on_starting", &[1]),
    ("on_reload", &[1]),
    ("when_ready", &[1]),
    ("pre_fork", &[2]),
    ("post_fork", &[2]),
    ("post_worker_init", &[1]),
    ("worker_int", &[1]),
    ("worker_abort", &[1]),
    ("pre_exec", &[1]),
    ("pre_request", &[2]),
    ("post_request", &[2, 3, 4]),
    ("child_exit", &[2]),
    ("worker_exit", &[2]),
    ("nworkers_changed", &[3]),
    ("on_exit", &[1]),
];

/// True when `name` is a server hook ferrocorn runs.
pub fn is_hook(name: &str) -> bool {
    HOOK_ARITY.iter().any(|(n, _)| *n == name)
}

/// Positional parameters of a callable (None with *args or when it cannot be inspected).
pub fn positional_params(py: Python<'_>, callable: &Bound<'_, PyAny>) -> Option<usize> {
    positional_count(py, callable)
}

fn positional_count(py: Python<'_>, callable: &Bound<'_, PyAny>) -> Option<usize> {
    let inspect = py.import("inspect").ok()?;
    let signature = inspect.call_method1("signature", (callable,)).ok()?;
    let params = signature.getattr("parameters").ok()?.call_method0("values").ok()?;
    let mut count = 0;
    for p in params.try_iter().ok()? {
        let kind: String = p.ok()?.getattr("kind").ok()?.getattr("name").ok()?.extract().ok()?;
        match kind.as_str() {
            "POSITIONAL_ONLY" | "POSITIONAL_OR_KEYWORD" => count += 1,
            "VAR_POSITIONAL" => return None,
            _ => {}
        }
    }
    Some(count)
}

/// The hook callables from the config file.
#[derive(Default)]
pub struct Hooks {
    callables: HashMap<&'static str, Py<PyAny>>,
    /// How many of `(worker, req, environ, resp)` `post_request` takes (Gunicorn adapts it to
    /// 2, 3 or 4 parameters), worked out once: `inspect.signature` per request cost ~20 µs.
    post_request_args: usize,
}

impl Hooks {
    /// Keep the hooks found among the config file's globals; a hook with the wrong number of
    /// parameters is an error naming it.
    pub fn from_globals(py: Python<'_>, globals: &[(String, Py<PyAny>)]) -> Result<Hooks, String> {
        let mut callables = HashMap::new();
        let mut post_request_args = 4;
        for (name, value) in globals {
            let Some((hook, arities)) = HOOK_ARITY.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let value = value.bind(py);
            if value.is_none() {
                continue;
            }
            if !value.is_callable() {
                return Err(format!(
                    "invalid value for `{hook}` in the config file: it must be a function"
                ));
            }
            let positional = positional_count(py, value);
            if let Some(n) = positional
                && !arities.contains(&n)
            {
                let want: Vec<String> = arities.iter().map(|a| a.to_string()).collect();
                return Err(format!(
                    "invalid value for `{hook}` in the config file: it takes {n} argument(s) but must take {}",
                    want.join(" or ")
                ));
            }
            if *hook == "post_request" {
                post_request_args = positional.unwrap_or(4).min(4);
            }
            callables.insert(*hook, value.clone().unbind());
        }
        Ok(Hooks { callables, post_request_args })
    }

    /// Whether the config file defines `name`.
    pub fn has(&self, name: &str) -> bool {
        self.callables.contains_key(name)
    }

    /// Call hook `name` if defined. Errors are logged with their traceback and returned.
    pub fn call<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        args: impl IntoPyObject<'py, Target = PyTuple>,
    ) -> PyResult<()> {
        let Some(hook) = self.callables.get(name) else { return Ok(()) };
        let args: Bound<'py, PyTuple> = args.into_pyobject(py).map_err(Into::into)?.into_bound();
        let hook = hook.bind(py);
        let result = if name == "post_request" {
            hook.call1(args.get_slice(0, self.post_request_args.min(args.len())))
        } else {
            hook.call1(args)
        };
        result.map(|_| ()).inspect_err(|e| {
            crate::wsgi::log_exception(py, &format!("Exception in {name} hook"), e);
        })
    }
}

/// `server.log` / `worker.log`: the error log with Python logging's method names.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct Logger;

fn render(msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> String {
    if args.is_empty() {
        return msg.to_string();
    }
    let formatted = if args.len() == 1 { msg.rem(args.get_item(0).ok()) } else { msg.rem(args) };
    formatted.map(|s| s.to_string()).unwrap_or_else(|_| msg.to_string())
}

#[pymethods]
impl Logger {
    #[pyo3(signature = (msg, *args, **_kwargs))]
    fn debug(
        &self,
        msg: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        logging::log(Level::Debug, &render(msg, args));
    }
    #[pyo3(signature = (msg, *args, **_kwargs))]
    fn info(
        &self,
        msg: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        logging::log(Level::Info, &render(msg, args));
    }
    #[pyo3(signature = (msg, *args, **_kwargs))]
    fn warning(
        &self,
        msg: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        logging::log(Level::Warning, &render(msg, args));
    }
    #[pyo3(signature = (msg, *args, **_kwargs))]
    fn warn(
        &self,
        msg: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        logging::log(Level::Warning, &render(msg, args));
    }
    #[pyo3(signature = (msg, *args, **_kwargs))]
    fn error(
        &self,
        msg: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        logging::log(Level::Error, &render(msg, args));
    }
    #[pyo3(signature = (msg, *args, **_kwargs))]
    fn critical(
        &self,
        msg: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        logging::log(Level::Critical, &render(msg, args));
    }
    #[pyo3(signature = (msg, *args, **_kwargs))]
    fn exception(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        let tb = py
            .import("traceback")
            .and_then(|t| t.call_method0("format_exc"))
            .map(|s| s.to_string())
            .unwrap_or_default();
        logging::log(Level::Error, &format!("{}\n{}", render(msg, args), tb.trim_end()));
    }
    /// Reopen log files (USR1).
    fn reopen_files(&self) {
        let _ = logging::reopen();
    }
}

fn value_to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::None => py.None(),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
        Value::Str(s) => s.into_pyobject(py)?.into_any().unbind(),
        Value::List(l) => PyList::new(py, l)?.into_any().unbind(),
        Value::Map(m) => {
            let d = PyDict::new(py);
            for (k, v) in m {
                d.set_item(k, v)?;
            }
            d.into_any().unbind()
        }
    })
}

/// `server.cfg` / `worker.cfg`: read-only attribute access to every resolved setting.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct ConfigView {
    values: Py<PyDict>,
}

impl ConfigView {
    /// Snapshot the resolved configuration.
    pub fn new(py: Python<'_>, config: &Config) -> PyResult<Py<ConfigView>> {
        let values = PyDict::new(py);
        for setting in ferrocorn_config::settings() {
            if is_hook(setting.name) {
                continue;
            }
            values.set_item(setting.name, value_to_py(py, config.get(setting.name))?)?;
        }
        Py::new(py, ConfigView { values: values.unbind() })
    }
}

#[pymethods]
impl ConfigView {
    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        match self.values.bind(py).get_item(name)? {
            Some(v) => Ok(v.unbind()),
            None => Err(pyo3::exceptions::PyAttributeError::new_err(format!(
                "no setting named {name:?}"
            ))),
        }
    }

    /// All settings as a dict.
    #[getter]
    fn settings(&self, py: Python<'_>) -> Py<PyDict> {
        self.values.clone_ref(py)
    }
}

/// Shared, mutable facts about the master that `server` exposes.
#[derive(Debug, Default)]
pub struct MasterState {
    /// Current target worker count.
    pub num_workers: AtomicUsize,
    /// Master pid.
    pub pid: AtomicI64,
}

/// The `server` object (Gunicorn's Arbiter) passed to master-side hooks.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct Server {
    state: Arc<MasterState>,
    /// Resolved settings.
    #[pyo3(get)]
    pub cfg: Py<ConfigView>,
    /// The error log.
    #[pyo3(get)]
    pub log: Py<Logger>,
    /// Bound addresses as strings.
    #[pyo3(get)]
    pub address: Py<PyList>,
    /// The process title base.
    #[pyo3(get)]
    pub proc_name: String,
}

impl Server {
    /// A server object over `state`.
    pub fn new(
        py: Python<'_>,
        state: Arc<MasterState>,
        cfg: Py<ConfigView>,
        address: Vec<String>,
        proc_name: String,
    ) -> PyResult<Py<Server>> {
        let log = Py::new(py, Logger)?;
        let address = PyList::new(py, address)?.unbind();
        Py::new(py, Server { state, cfg, log, address, proc_name })
    }
}

#[pymethods]
impl Server {
    #[getter]
    fn pid(&self) -> i64 {
        self.state.pid.load(Ordering::Relaxed)
    }
    #[getter]
    fn num_workers(&self) -> usize {
        self.state.num_workers.load(Ordering::Relaxed)
    }
}

/// The `worker` object passed to hooks.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct WorkerHandle {
    pid: AtomicI64,
    alive: AtomicBool,
    requests: AtomicI64,
    /// Spawn order.
    #[pyo3(get)]
    pub age: u32,
    /// The master's pid.
    #[pyo3(get)]
    pub ppid: i64,
    /// The error log.
    #[pyo3(get)]
    pub log: Py<Logger>,
    /// Resolved settings.
    #[pyo3(get)]
    pub cfg: Py<ConfigView>,
    /// Request quota (0 = none).
    #[pyo3(get)]
    pub max_requests: u64,
    /// Heartbeat timeout in seconds.
    #[pyo3(get)]
    pub timeout: f64,
    /// The URL prefix of the worker pool it belongs to (`/` without `--pool`).
    #[pyo3(get)]
    pub pool: String,
}

/// What a worker object says about how its worker serves.
pub struct WorkerServing {
    /// Request quota (0 = none).
    pub max_requests: u64,
    /// Heartbeat timeout in seconds.
    pub timeout: f64,
    /// The URL prefix of its worker pool.
    pub pool: String,
}

impl WorkerHandle {
    /// A worker object; `pid` is None before the fork (printed as `[booting]`).
    pub fn new(
        py: Python<'_>,
        pid: Option<i64>,
        age: u32,
        ppid: i64,
        cfg: Py<ConfigView>,
        serving: WorkerServing,
    ) -> PyResult<Py<WorkerHandle>> {
        let WorkerServing { max_requests, timeout, pool } = serving;
        Py::new(
            py,
            WorkerHandle {
                pid: AtomicI64::new(pid.unwrap_or(-1)),
                alive: AtomicBool::new(true),
                requests: AtomicI64::new(0),
                age,
                ppid,
                log: Py::new(py, Logger)?,
                cfg,
                max_requests,
                timeout,
                pool,
            },
        )
    }

    /// Record the pid once known.
    pub fn set_pid(&self, pid: i64) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// Mark the worker as stopping (`worker.alive` becomes False).
    pub fn set_dead(&self) {
        self.alive.store(false, Ordering::Relaxed);
    }

    /// Update the request count (`worker.nr`).
    pub fn set_requests(&self, n: u64) {
        self.requests.store(n as i64, Ordering::Relaxed);
    }
}

#[pymethods]
impl WorkerHandle {
    #[getter]
    fn pid(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let pid = self.pid.load(Ordering::Relaxed);
        Ok(if pid < 0 {
            "[booting]".into_pyobject(py)?.into_any().unbind()
        } else {
            pid.into_pyobject(py)?.into_any().unbind()
        })
    }
    #[getter]
    fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
    #[getter]
    fn nr(&self) -> i64 {
        self.requests.load(Ordering::Relaxed)
    }
    fn __repr__(&self) -> String {
        format!("<Worker {}>", self.pid.load(Ordering::Relaxed))
    }
}

/// The `req` object passed to `pre_request` / `post_request`.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct Request {
    /// Method.
    #[pyo3(get)]
    pub method: String,
    /// Raw target.
    #[pyo3(get)]
    pub uri: String,
    /// Decoded path.
    #[pyo3(get)]
    pub path: String,
    /// Query string.
    #[pyo3(get)]
    pub query: String,
    /// Fragment.
    #[pyo3(get)]
    pub fragment: String,
    /// `(major, minor)`.
    #[pyo3(get)]
    pub version: (u8, u8),
    /// `[(NAME, value)]` with upper-case names, as Gunicorn stores them.
    #[pyo3(get)]
    pub headers: Vec<(String, String)>,
    /// `http` or `https`.
    #[pyo3(get)]
    pub scheme: String,
    /// Peer address.
    #[pyo3(get)]
    pub remote_addr: String,
}

#[pymethods]
impl Request {
    fn __repr__(&self) -> String {
        format!("<Request {} {}>", self.method, self.uri)
    }
}

/// The `resp` object passed to `post_request`.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct Response {
    /// Status line, e.g. `200 OK`.
    #[pyo3(get)]
    pub status: String,
    /// Status code.
    #[pyo3(get)]
    pub status_code: u16,
    /// Response headers as sent by the app.
    #[pyo3(get)]
    pub headers: Vec<(String, String)>,
    /// Body bytes sent.
    #[pyo3(get)]
    pub sent: u64,
}

impl Hooks {
    /// A copy sharing the same callables (for another owner in this process).
    pub fn clone_ref(&self, py: Python<'_>) -> Hooks {
        Hooks {
            callables: self.callables.iter().map(|(k, v)| (*k, v.clone_ref(py))).collect(),
            post_request_args: self.post_request_args,
        }
    }

    /// The callable for `name`, if defined.
    pub fn get(&self, py: Python<'_>, name: &str) -> Option<Py<PyAny>> {
        self.callables.get(name).map(|h| h.clone_ref(py))
    }
}
