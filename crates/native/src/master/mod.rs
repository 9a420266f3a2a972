//! The master process on the Python side of the boundary: start-up in Gunicorn's order
//! (daemonize, umask, preload, pid file, `on_starting`, listeners, `when_ready`), the
//! [`Supervisor`] the Rust arbiter calls back into (fork, hooks, HUP reload, USR2 re-exec), and
//! a forked worker's boot (`post_fork`, privilege drop, app import, `post_worker_init`).

mod cache_control;
mod control;
mod fork;
mod metrics_endpoint;
mod observe;
mod pool_sockets;
mod process;
mod redis_purge;
mod systemd;
mod upstream_control;
mod worker_boot;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferrocorn_arbiter::{
    Arbiter, ArbiterOptions, ArbiterView, Command, ExitCode, ExitReason, LogLevel, Outcome,
    PoolKnobs, Spawned, Supervisor, WorkerMeta,
};
use ferrocorn_shm::scoreboard::Scoreboard;
use pyo3::prelude::*;

use crate::hooks::{ConfigView, Hooks, MasterState, Server, WorkerHandle};
use crate::logging::{self, Level, error, info, warning};
use crate::options::ServerOptions;
use crate::settings_load::Loaded;
use ferrocorn_net::listen::{self, BoundAddr, Listener};

pub use fork::{Forked, fork_interpreter};
pub use process::set_title;

/// Most workers one master can run (scoreboard size).
const MAX_WORKERS: usize = 1024;

/// Everything the master owns while it runs.
pub struct Master {
    argv: Vec<String>,
    loaded: Loaded,
    opts: ServerOptions,
    hooks: Hooks,
    listeners: Vec<Listener>,
    /// The worker pools' private sockets (None without `--pool`).
    pool_sockets: Option<pool_sockets::PoolSockets>,
    board: Arc<Scoreboard>,
    state: Arc<MasterState>,
    server: Py<Server>,
    preloaded: Option<Py<PyAny>>,
    pidfile: Option<String>,
    reexec_parent: Option<i32>,
    reexec_child: Option<i32>,
    /// Values `raw_env` overrode at start (None: was unset), restored on HUP.
    original_env: Vec<(String, Option<String>)>,
    metrics: Option<metrics_endpoint::MetricsEndpoint>,
    control: Option<control::ControlSocket>,
    statsd: Option<crate::server::statsd::Statsd>,
    start_time: f64,
}

fn arbiter_options(opts: &ServerOptions) -> ArbiterOptions {
    ArbiterOptions {
        workers: opts.master.workers,
        timeout: opts.serve.timeout,
        boot_timeout: opts.master.boot_timeout,
        graceful_timeout: opts.serve.graceful_timeout,
        daemon: opts.master.daemon,
        pools: opts
            .pools
            .iter()
            .map(|p| PoolKnobs { workers: p.master.workers, timeout: p.serve.timeout })
            .collect(),
    }
}

fn log_level(level: LogLevel) -> Level {
    match level {
        LogLevel::Debug => Level::Debug,
        LogLevel::Info => Level::Info,
        LogLevel::Warning => Level::Warning,
        LogLevel::Error => Level::Error,
        LogLevel::Critical => Level::Critical,
    }
}

fn bind_all(opts: &ServerOptions) -> Result<Vec<Listener>, String> {
    let inherited: Vec<i32> = {
        let mut fds = systemd::activation_fds();
        if fds.is_empty() {
            fds = systemd::inherited_fds();
        }
        fds
    };
    if !inherited.is_empty() {
        return inherited
            .into_iter()
            .map(|fd| {
                listen::bind(&listen::BindSpec::Fd(fd), opts.master.listen, &mut log_in_use)
                    .map_err(|e| e.0)
            })
            .collect();
    }
    let mut listeners = Vec::new();
    for spec in &opts.master.binds {
        listeners.push(listen::bind(spec, opts.master.listen, &mut log_in_use).map_err(|e| e.0)?);
    }
    Ok(listeners)
}

fn remove_unix_sockets(listeners: &[Listener]) {
    for listener in listeners {
        if let (BoundAddr::Unix(path), true) = (&listener.addr, listener.owns_path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Start the master and run until it stops; in forked workers, run the worker. Returns the
/// process exit status.
pub fn run(
    py: Python<'_>,
    argv: Vec<String>,
    loaded: Loaded,
    opts: ServerOptions,
    hooks: Hooks,
) -> i32 {
    if opts.master.daemon {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            warning!(
                "Warning: daemon mode with NOTIFY_SOCKET set; systemd expects the process to stay in the foreground"
            );
        }
        if let Err(e) = fork::daemonize(py, opts.master.enable_stdio_inheritance) {
            error!("cannot daemonize: {e}");
            return ExitCode::Failure.code();
        }
    }
    process::set_umask(opts.master.umask);
    // Modules the workers need after a privilege drop (the interpreter's own files may not be
    // readable by the new user), imported once here and inherited.
    for module in ["ast", "traceback", "inspect", "signal", "json", "logging"] {
        let _ = py.import(module);
    }
    let original_env: Vec<(String, Option<String>)> =
        opts.app.raw_env.iter().map(|(k, _)| (k.clone(), std::env::var(k).ok())).collect();
    if let Err(e) =
        crate::app::prepare(py, &opts.app.chdir, &opts.app.pythonpath, &opts.app.raw_env)
    {
        error!("cannot prepare the Python environment: {e}");
        return ExitCode::Failure.code();
    }
    let preloaded = if opts.app.preload_app {
        match crate::app::load(py, &opts.app.app_spec) {
            Ok(app) => Some(app),
            Err(e) => {
                error!("{e}");
                return ExitCode::AppLoad.code();
            }
        }
    } else {
        None
    };
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let reexec_parent = std::env::var("GUNICORN_PID")
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p == parent);
    let pidfile = opts
        .master
        .pidfile
        .as_ref()
        .map(|p| if reexec_parent.is_some() { format!("{p}.2") } else { p.clone() });
    let pid = std::process::id();
    if let Some(path) = &pidfile
        && let Err(e) = process::write_pidfile(path, pid)
    {
        error!("cannot write the pid file {path:?} (setting `pidfile`, -p/--pid): {e}");
        return ExitCode::Failure.code();
    }
    let state = Arc::new(MasterState::default());
    state.pid.store(i64::from(pid), Ordering::Relaxed);
    state.num_workers.store(opts.master.workers, Ordering::Relaxed);
    let cfg = match ConfigView::new(py, &loaded.config) {
        Ok(c) => c,
        Err(e) => {
            error!("cannot expose the configuration to hooks: {e}");
            return ExitCode::Failure.code();
        }
    };
    let title_base = opts.master.proc_name.clone();
    let server = match Server::new(py, state.clone(), cfg, Vec::new(), title_base.clone()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot create the server object: {e}");
            return ExitCode::Failure.code();
        }
    };
    info!("Starting ferrocorn {}", env!("CARGO_PKG_VERSION"));
    let _ = hooks.call(py, "on_starting", (server.clone_ref(py),));
    let listeners = match bind_all(&opts) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            if let Some(path) = &pidfile {
                process::remove_pidfile(path, pid);
            }
            return ExitCode::Failure.code();
        }
    };
    let mut opts = opts;
    let pool_sockets = match pool_sockets::PoolSockets::prepare(&mut opts) {
        Ok(p) => p,
        Err(e) => {
            error!("{e}");
            return ExitCode::Failure.code();
        }
    };
    // SAFETY: still single-threaded (no fork, no runtime yet); nothing reads the environment
    // concurrently. Workers and later re-execs must not adopt these descriptors again.
    unsafe {
        std::env::remove_var("GUNICORN_FD");
        std::env::remove_var("GUNICORN_PID");
    }
    let metrics = match opts
        .master
        .metrics_bind
        .as_deref()
        .map(metrics_endpoint::MetricsEndpoint::bind)
        .transpose()
    {
        Ok(m) => m,
        Err(e) => {
            error!("{e}");
            return ExitCode::Failure.code();
        }
    };
    if let Some(m) = &metrics {
        info!("Metrics at: http://{}/metrics", m.local_addr());
    }
    let control = match &opts.master.control_socket {
        Some(path) => match control::ControlSocket::bind(path, opts.master.control_socket_mode) {
            Ok(c) => Some(c),
            Err(e) => {
                warning!("{e}; running without a control socket");
                None
            }
        },
        None => None,
    };
    let addresses: Vec<String> = listeners.iter().map(|l| l.addr.to_string()).collect();
    for (listener, address) in listeners.iter().zip(&addresses) {
        info!("Listening at: {address} ({pid})");
        let _ = listener;
    }
    if let Ok(list) = server.getattr(py, "address") {
        for a in &addresses {
            let _ = list.call_method1(py, "append", (a,));
        }
    }
    info!("Using worker: {}", opts.serve.worker_class.name());
    let suffix = if reexec_parent.is_some() { ".2" } else { "" };
    process::set_title(py, &format!("ferrocorn: master [{title_base}]{suffix}"));
    systemd::notify("READY=1");
    let _ = hooks.call(py, "when_ready", (server.clone_ref(py),));
    if let Err(e) = crate::user_metrics::init() {
        warning!("cannot map the app-metrics table: {e}");
    }
    if let Err(e) = crate::server::sibling_wake::init() {
        warning!(
            "cannot make the workers' accept wake-up (bursts of connections accept slower): {e}"
        );
    }
    if let Err(e) = crate::shared_cache::init(
        opts.serve.cache_store_size,
        opts.serve.cache.is_some(),
        &opts.serve.cache_backend,
        opts.serve.cache_backend_timeout,
    ) {
        error!("cannot map the cache store's {} bytes: {e}", opts.serve.cache_store_size);
        return ExitCode::Failure.code();
    }
    let statsd = opts.serve.statsd.clone().and_then(crate::server::statsd::Statsd::connect);
    let start_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let board = match Scoreboard::new(MAX_WORKERS) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            error!("cannot map the scoreboard: {e}");
            return ExitCode::Failure.code();
        }
    };
    if let Err(e) = crate::upstream_board::init(upstream_names(&opts), MAX_WORKERS) {
        error!("cannot map the load balancer's table: {e}");
        return ExitCode::Failure.code();
    }
    let mut arbiter = match Arbiter::new(arbiter_options(&opts), board.clone()) {
        Ok(a) => a,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::Failure.code();
        }
    };
    let mut master = Master {
        argv,
        loaded,
        opts,
        hooks,
        listeners,
        pool_sockets,
        board,
        state,
        server,
        preloaded,
        pidfile,
        reexec_parent,
        reexec_child: None,
        original_env,
        metrics,
        control,
        statsd,
        start_time,
    };
    let outcome = py.detach(|| arbiter.run(&mut master));
    drop(arbiter);
    match outcome {
        Outcome::Exit(code) => master.finish(py, code),
        Outcome::Worker(meta) => {
            // The master's endpoints are not the worker's: close them without unlinking.
            if let Some(c) = master.control.take() {
                c.abandon();
            }
            master.metrics = None;
            worker_boot::run(py, &master, meta)
        }
    }
}

impl Master {
    fn finish(self, py: Python<'_>, code: i32) -> i32 {
        info!("Shutting down: Master");
        let _ = self.hooks.call(py, "on_exit", (self.server.clone_ref(py),));
        if let Some(path) = &self.pidfile {
            process::remove_pidfile(path, std::process::id());
        }
        if self.reexec_parent.is_none() && !self.is_reexec_child_alive() {
            remove_unix_sockets(&self.listeners);
            if let Some(sockets) = &self.pool_sockets {
                sockets.remove();
            }
        }
        if let Some(reason) = ExitCode::halt_reason(code) {
            error!("Reason: {reason}");
        }
        code
    }

    /// A new master started by USR2 still runs (it shares our unix sockets).
    fn is_reexec_child_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        self.reexec_child.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
    }

    fn worker_handle(
        &self,
        py: Python<'_>,
        meta: &WorkerMeta,
        pid: Option<i64>,
    ) -> PyResult<Py<WorkerHandle>> {
        let cfg = self.server.bind(py).get().cfg.clone_ref(py);
        let opts = self.options_for_pool(meta.pool);
        let pool = meta.pool.checked_sub(1).and_then(|i| self.opts.pools.get(i));
        WorkerHandle::new(
            py,
            pid,
            meta.age,
            i64::from(std::process::id()),
            cfg,
            crate::hooks::WorkerServing {
                max_requests: opts.master.max_requests,
                timeout: opts.serve.timeout.as_secs_f64(),
                pool: pool.map_or_else(|| "/".to_owned(), |p| p.prefix.clone()),
            },
        )
    }

    /// HUP: undo the previous `raw_env` (restoring what it overrode), then export the new one,
    /// in `os.environ` (and so the process environment) as Gunicorn does.
    fn reapply_raw_env(&mut self, py: Python<'_>, raw_env: &[(String, String)]) -> PyResult<()> {
        let environ = py.import("os")?.getattr("environ")?;
        for (key, original) in &self.original_env {
            match original {
                Some(value) => environ.set_item(key, value)?,
                None => {
                    if environ.contains(key)? {
                        environ.del_item(key)?;
                    }
                }
            }
        }
        let mut originals = Vec::new();
        for (key, value) in raw_env {
            let before = self
                .original_env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| std::env::var(key).ok());
            originals.push((key.clone(), before));
            environ.set_item(key, value)?;
        }
        self.original_env = originals;
        Ok(())
    }

    /// Promote a re-executed master once the old one is gone (its pid file loses `.2`).
    fn maybe_promote(&mut self) {
        let Some(parent) = self.reexec_parent else { return };
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } == parent {
            return;
        }
        self.reexec_parent = None;
        info!("Old master (pid:{parent}) is gone; this master takes over");
        if let (Some(current), Some(base)) = (&self.pidfile, &self.opts.master.pidfile)
            && current != base
        {
            let _ = std::fs::rename(current, base);
            self.pidfile = Some(base.clone());
        }
        Python::attach(|py| {
            set_title(py, &format!("ferrocorn: master [{}]", self.opts.master.proc_name))
        });
    }
}

impl Supervisor for Master {
    fn spawn(&mut self, meta: &WorkerMeta) -> std::io::Result<Spawned> {
        Python::attach(|py| {
            if let Ok(worker) = self.worker_handle(py, meta, None) {
                let _ = self.hooks.call(py, "pre_fork", (self.server.clone_ref(py), worker));
            }
            match fork_interpreter(py)? {
                Forked::Parent(pid) => {
                    info!("Booting worker with pid: {pid}");
                    Ok(Spawned::Parent(pid))
                }
                Forked::Child => Ok(Spawned::Child),
            }
        })
    }

    fn child_exited(&mut self, meta: &WorkerMeta, _reason: ExitReason) {
        if !self.hooks.has("child_exit") {
            return;
        }
        Python::attach(|py| {
            if let Ok(worker) = self.worker_handle(py, meta, Some(i64::from(meta.pid))) {
                worker.bind(py).get().set_dead();
                let _ = self.hooks.call(py, "child_exit", (self.server.clone_ref(py), worker));
            }
        });
    }

    fn workers_changed(&mut self, new: usize, old: Option<usize>) {
        self.state.num_workers.store(new, Ordering::Relaxed);
        if let Some(statsd) = &self.statsd {
            statsd.workers(new);
        }
        if self.hooks.has("nworkers_changed") {
            Python::attach(|py| {
                let _ =
                    self.hooks.call(py, "nworkers_changed", (self.server.clone_ref(py), new, old));
            });
        }
    }

    fn reload(&mut self) -> Result<ArbiterOptions, String> {
        Python::attach(|py| {
            let cli = ferrocorn_config::parse_args(&self.argv).map_err(|e| e.to_string())?;
            let loaded = crate::settings_load::load_settings(py, cli).map_err(|(_, msg)| msg)?;
            let env = |key: &str| std::env::var(key).ok();
            let mut opts = ServerOptions::from_config(&loaded.config, &env).map_err(|e| e.0)?;
            pool_sockets::PoolSockets::reload(self.pool_sockets.as_ref(), &self.opts, &mut opts)?;
            let hooks = Hooks::from_globals(py, &loaded.hook_globals)?;
            let (size, announce) = (opts.serve.cache_store_size, opts.serve.cache.is_some());
            let backend = (&opts.serve.cache_backend, opts.serve.cache_backend_timeout);
            crate::shared_cache::init(size, announce, backend.0, backend.1)
                .map_err(|e| format!("cannot map the cache store: {e}"))?;
            crate::upstream_board::init(upstream_names(&opts), MAX_WORKERS)
                .map_err(|e| format!("cannot map the load balancer's table: {e}"))?;
            self.reapply_raw_env(py, &opts.app.raw_env)
                .map_err(|e| format!("cannot apply `raw_env`: {e}"))?;
            if opts.master.binds != self.opts.master.binds {
                let fresh = bind_all(&opts)?;
                for l in &fresh {
                    info!("Listening at: {} ({})", l.addr, std::process::id());
                }
                remove_unix_sockets(&self.listeners);
                self.listeners = fresh;
            }
            let _ = logging::reopen();
            if let Ok(cfg) = ConfigView::new(py, &loaded.config) {
                let addresses: Vec<String> =
                    self.listeners.iter().map(|l| l.addr.to_string()).collect();
                if let Ok(server) = Server::new(
                    py,
                    self.state.clone(),
                    cfg,
                    addresses,
                    opts.master.proc_name.clone(),
                ) {
                    self.server = server;
                }
            }
            if self.preloaded.is_some() {
                // Gunicorn keeps the preloaded app across HUP; ferrocorn re-imports it, so a
                // reload really picks up new code.
                crate::app::forget_app_modules(py, &opts.app.app_spec);
                match crate::app::load(py, &opts.app.app_spec) {
                    Ok(app) => self.preloaded = Some(app),
                    Err(e) => return Err(format!("cannot reload the app: {e}")),
                }
            }
            self.hooks = hooks;
            self.opts = opts;
            self.loaded = loaded;
            let _ = self.hooks.call(py, "on_reload", (self.server.clone_ref(py),));
            Ok(arbiter_options(&self.opts))
        })
    }

    fn reopen_logs(&mut self) {
        if let Err(e) = logging::reopen() {
            warning!("cannot reopen the error log: {e}");
        }
    }

    fn reexec(&mut self) -> std::io::Result<i32> {
        Python::attach(|py| {
            let master_pid = std::process::id();
            match fork_interpreter(py)? {
                Forked::Parent(pid) => {
                    info!("Re-executing the master (new master pid: {pid})");
                    self.reexec_child = Some(pid);
                    Ok(pid)
                }
                Forked::Child => {
                    let _ = self.hooks.call(py, "pre_exec", (self.server.clone_ref(py),));
                    let fds: Vec<String> = self
                        .listeners
                        .iter()
                        .map(|l| {
                            let fd = l.socket.as_raw_fd();
                            // SAFETY: clearing FD_CLOEXEC on our own listener so exec keeps it.
                            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
                            fd.to_string()
                        })
                        .collect();
                    let result = exec_new_master(py, &fds.join(","), master_pid);
                    error!("cannot exec the new master: {result:?}");
                    // SAFETY: the forked child must not return into the master's loop.
                    unsafe { libc::_exit(1) }
                }
            }
        })
    }

    fn stopping(&mut self) {
        systemd::notify("STOPPING=1");
    }

    fn tick(&mut self) {
        self.maybe_promote();
    }

    fn watched_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.metrics.iter().map(|m| m.fd()).chain(self.control.iter().map(|c| c.fd())).collect()
    }

    fn fd_ready(&mut self, fd: std::os::fd::RawFd, view: &ArbiterView) -> Option<Command> {
        let (board, listeners, start) = (self.board.clone(), &self.listeners, self.start_time);
        let target = view.workers_target;
        let prefixes: Vec<String> = std::iter::once("/".to_owned())
            .chain(self.opts.pools.iter().map(|p| p.prefix.clone()))
            .collect();
        let mut snapshot = || observe::snapshot(&board, listeners, target, start, &prefixes);
        if let Some(m) = self.metrics.as_ref().filter(|m| m.fd() == fd) {
            m.serve_pending(&mut snapshot);
            return None;
        }
        let cache = match (crate::shared_cache::store(), crate::redis_cache::target()) {
            _ if self.opts.serve.cache.is_none() => None,
            (Some(store), _) => {
                Some(cache_control::CacheControl::Local { store, master: board.master() })
            }
            (None, Some(target)) => {
                Some(cache_control::CacheControl::Redis { target, board: &board })
            }
            (None, None) => None,
        };
        match self.control.as_ref().filter(|c| c.fd() == fd) {
            Some(c) => c.serve_one(&mut snapshot, cache, std::process::id()),
            None => None,
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        logging::log(log_level(level), message);
    }
}

fn exec_new_master(py: Python<'_>, fds: &str, master_pid: u32) -> PyResult<()> {
    let os = py.import("os")?;
    let sys = py.import("sys")?;
    let environ = os.getattr("environ")?;
    environ.set_item("GUNICORN_FD", fds)?;
    environ.set_item("GUNICORN_PID", master_pid.to_string())?;
    let executable = sys.getattr("executable")?;
    let argv = sys.getattr("orig_argv")?;
    os.call_method1("execv", (executable, argv))?;
    Ok(())
}

/// Log a bind retry as Gunicorn does.
fn log_in_use(addr: std::net::SocketAddr) {
    error!("Connection in use: {addr}");
    error!("Retrying in 1 second.");
}

/// The configured upstreams' names (empty unless the instance is a balancer).
fn upstream_names(opts: &ServerOptions) -> Vec<String> {
    let upstreams = opts.serve.balance.as_ref().map(|b| b.proxy.upstreams.as_slice());
    upstreams.unwrap_or_default().iter().map(|u| u.addr.to_string()).collect()
}
