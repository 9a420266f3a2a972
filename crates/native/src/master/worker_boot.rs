//! A freshly forked worker's boot, in Gunicorn's order: process title, `post_fork`, privilege
//! drop, app import (unless preloaded), `post_worker_init`, then serving until stopped, then
//! `worker_exit`. Exit statuses follow Gunicorn: 3 for a boot failure, 4 when the app cannot
//! be imported.

use std::sync::Arc;

use ferrocorn_arbiter::{ExitCode, WorkerMeta};
use ferrocorn_shm::scoreboard::SlotState;
use pyo3::prelude::*;

use super::{Master, process};
use crate::access_log::AccessLog;
use crate::logging::{Sink, error, info};
use std::sync::Mutex;

use crate::asgi::{Bridge, LoopBridge};
use crate::options::WorkerClass;
use crate::server::AppContext;
use crate::server::exclusive_wake::LoopListenerWake;
use crate::server::loop_driver::{IoStart, IoStarter, LoopDriver};
use crate::server::worker::{self, StopReason, WorkerRuntime};
use crate::server::worker::{AsgiBackend, LoopSide};
use crate::wsgi::{ListenerEnv, WsgiApp};

fn listener_env(listener: &ferrocorn_net::listen::Listener) -> ListenerEnv {
    match &listener.addr {
        ferrocorn_net::listen::BoundAddr::Tcp(addr) => {
            ListenerEnv { server_name: addr.ip().to_string(), server_port: addr.port().to_string() }
        }
        ferrocorn_net::listen::BoundAddr::Unix(_) => {
            ListenerEnv { server_name: String::new(), server_port: String::new() }
        }
    }
}

fn jittered_max_requests(max: u64, jitter: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    if jitter == 0 {
        return max;
    }
    // A small xorshift seeded from the pid and clock: workers must not all retire together.
    let mut x = u64::from(std::process::id())
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7));
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    max + x % (jitter + 1)
}

/// Register the `worker_abort` behaviour for SIGABRT (sent by the master on timeout): Python
/// runs the handler at the next bytecode boundary, even inside a stuck request.
fn install_abort_handler(
    py: Python<'_>,
    worker: &Py<crate::hooks::WorkerHandle>,
    hook: Option<Py<PyAny>>,
) -> PyResult<()> {
    let signal = py.import("signal")?;
    let handler = crate::server::abort::make_handler(py, worker.clone_ref(py), hook)?;
    signal.call_method1("signal", (signal.getattr("SIGABRT")?, handler))?;
    Ok(())
}

/// Refuse an ASGI app on a WSGI class and the reverse, naming the mismatch.
fn check_app_interface(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    class: WorkerClass,
) -> Result<(), String> {
    let inspect = py.import("inspect").map_err(|e| e.to_string())?;
    let is_coroutine = |obj: &Bound<'_, PyAny>| -> bool {
        inspect
            .call_method1("iscoroutinefunction", (obj,))
            .and_then(|r| r.is_truthy())
            .unwrap_or(false)
    };
    let asgi =
        is_coroutine(app) || app.getattr("__call__").map(|c| is_coroutine(&c)).unwrap_or(false);
    match (class, asgi) {
        (WorkerClass::Asgi { .. }, false) if crate::hooks::positional_params(py, app) == Some(2) => Err(
            "the app is a WSGI callable (environ, start_response) but the worker class is asgi; \
             serve it with -k sync or -k gthread"
                .into(),
        ),
        (WorkerClass::Sync | WorkerClass::Gthread { .. }, true) => Err(format!(
            "the app is an ASGI application (async, scope/receive/send) but the worker class is {}; \
             serve it with -k asgi (uvicorn.workers.UvicornWorker is accepted too)",
            class.name()
        )),
        _ => Ok(()),
    }
}

/// Which Python loop runs on the main thread, and how to start it.
enum LoopServe<'a> {
    /// `ferrocorn._asgi.serve(app, bridge, start_io, loop, lifespan)`.
    Asgi {
        /// The ASGI app.
        app: Py<PyAny>,
        /// `asgi_loop`.
        event_loop: &'a str,
        /// `asgi_lifespan`.
        lifespan: &'a str,
        /// `asgi_disconnect_grace_period`, seconds.
        disconnect_grace: u32,
    },
    /// `ferrocorn._gevent.serve(bridge, start_io)`.
    Gevent,
}

/// Run a class whose app lives on a Python loop (ASGI, gevent) on this (main) thread until the
/// worker's I/O stops; the loop drives that I/O itself (ASGI) or an I/O thread serves it
/// (gevent). Returns the exit status.
#[allow(clippy::too_many_arguments)]
fn run_on_loop(
    py: Python<'_>,
    master: &Master,
    pool: usize,
    opts: crate::options::ServeOptions,
    ctx: AppContext,
    access_log: Option<AccessLog>,
    runtime: WorkerRuntime,
    serve: LoopServe<'_>,
) -> std::io::Result<i32> {
    let bridge = match serve {
        LoopServe::Asgi { .. } => Bridge::drained_by_loop(),
        LoopServe::Gevent => Bridge::new()?,
    };
    let listener_wake = LoopListenerWake::new()?;
    let backend = AsgiBackend {
        listener_wake: listener_wake.clone(),
        bridge: bridge.clone(),
        root_path: opts.root_path.clone(),
        servers: match pool {
            0 => &master.listeners[..],
            _ => &master.listeners[..master.listeners.len().min(1)],
        }
        .iter()
        .map(|l| match &l.addr {
            ferrocorn_net::listen::BoundAddr::Tcp(a) => (a.ip().to_string(), Some(a.port())),
            ferrocorn_net::listen::BoundAddr::Unix(p) => (p.display().to_string(), None),
        })
        .collect(),
    };
    let listeners: Vec<ferrocorn_net::listen::Listener> = master
        .listeners_for_pool(pool)
        .iter()
        .map(|l| l.try_clone())
        .collect::<std::io::Result<_>>()?;
    let io_bridge = bridge.clone();
    let handle = Arc::new(Mutex::new(None));
    let start = match serve {
        LoopServe::Asgi { .. } => IoStart::OnLoop(Box::new(move || {
            let side = Some(LoopSide::Asgi(backend));
            let build = move || worker::build(opts, ctx, listeners, access_log, runtime, side);
            LoopDriver::start(build, io_bridge, listener_wake)
        })),
        LoopServe::Gevent => IoStart::Thread {
            main: Box::new(move || {
                let side = Some(LoopSide::Hub(io_bridge.clone()));
                let outcome = worker::run(opts, ctx, &listeners, access_log, runtime, side);
                worker::stop_the_loop(&io_bridge, &outcome);
            }),
            handle: handle.clone(),
        },
    };
    let starter = Py::new(py, IoStarter::new(start))?;
    let loop_bridge = Py::new(py, LoopBridge { inner: bridge })?;
    let served = match serve {
        LoopServe::Asgi { app, event_loop, lifespan, disconnect_grace } => {
            py.import("ferrocorn._asgi").and_then(|m| {
                m.call_method1(
                    "serve",
                    (app, loop_bridge, starter, event_loop, lifespan, disconnect_grace),
                )
            })
        }
        LoopServe::Gevent => py
            .import("ferrocorn._gevent")
            .and_then(|m| m.call_method1("serve", (loop_bridge, starter))),
    }
    .and_then(|code| code.extract::<i32>());
    let code = match served {
        Ok(code) => code,
        Err(e) => {
            crate::wsgi::log_exception(py, "The worker's event loop failed", &e);
            ExitCode::WorkerBoot.code()
        }
    };
    let thread = handle.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(thread) = thread {
        py.detach(|| {
            let _ = thread.join();
        });
    }
    Ok(code)
}

/// Boot and run a worker; returns its exit status.
pub fn run(py: Python<'_>, master: &Master, meta: WorkerMeta) -> i32 {
    let pid = std::process::id();
    let slot_index = meta.slot;
    let board = master.board.clone();
    let opts = master.options_for_pool(meta.pool);
    // What the app is told about its server (SERVER_NAME, the ASGI scope's `server`) is the
    // instance's public listeners, also in a pool reached over its private socket.
    let public = match meta.pool {
        0 => &master.listeners[..],
        _ => &master.listeners[..master.listeners.len().min(1)],
    };
    let title = match meta.pool > 0 {
        true => {
            let prefix = master.opts.pools.get(meta.pool - 1).map_or("?", |p| p.prefix.as_str());
            format!("ferrocorn: worker [{}] pool {prefix}", opts.master.proc_name)
        }
        false => format!("ferrocorn: worker [{}]", opts.master.proc_name),
    };
    process::set_title(py, &title);
    let worker = match master.worker_handle(py, &meta, Some(i64::from(pid))) {
        Ok(w) => w,
        Err(e) => {
            error!("cannot create the worker object: {e}");
            return ExitCode::WorkerBoot.code();
        }
    };
    let server = master.server.clone_ref(py);
    if master.hooks.call(py, "post_fork", (server.clone_ref(py), worker.clone_ref(py))).is_err() {
        return ExitCode::WorkerBoot.code();
    }
    if (opts.master.user.is_some() || opts.master.group.is_some())
        && let Err(e) = process::drop_privileges(
            opts.master.user.as_deref(),
            opts.master.group.as_deref(),
            opts.master.initgroups,
        )
    {
        error!("Exception in worker process: {e}");
        return ExitCode::WorkerBoot.code();
    }
    // (Set after the privilege drop, which would clear it.) A worker must not outlive its master (killed with SIGKILL, say): it then drains and exits.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a plain signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) };
    if matches!(opts.serve.worker_class, WorkerClass::Gevent) {
        // As Gunicorn's gevent worker: patch before the app is imported (a preloaded app was
        // imported unpatched in the master, as with Gunicorn). `patch` also picks the hub's
        // loop class (precise short timers, `hub_timer_wake.rs`).
        if let Err(e) = py.import("ferrocorn._gevent").and_then(|m| m.call_method0("patch")) {
            error!("cannot start the gevent worker (is gevent installed?): {e}");
            return ExitCode::WorkerBoot.code();
        }
    }
    // A load balancer's worker has no app: its requests go to its upstreams.
    let balancer = opts.serve.worker_class == WorkerClass::Balancer;
    let app = match (&master.preloaded, balancer) {
        (_, true) => None,
        (Some(app), false) if meta.pool == 0 => Some(app.clone_ref(py)),
        (_, false) => match crate::app::load(py, &opts.app.app_spec) {
            Ok(app) => Some(app),
            Err(e) => {
                error!("Exception in worker process:\n{e}");
                return ExitCode::AppLoad.code();
            }
        },
    };
    if master.hooks.call(py, "post_worker_init", (worker.clone_ref(py),)).is_err() {
        return ExitCode::WorkerBoot.code();
    }
    if let Err(e) = install_abort_handler(py, &worker, master.hooks.get(py, "worker_abort")) {
        error!("cannot install the SIGABRT handler: {e}");
    }
    if let Some(app) = &app
        && let Err(message) = check_app_interface(py, app.bind(py), opts.serve.worker_class)
    {
        error!("{message}");
        return ExitCode::AppLoad.code();
    }
    let access_log = match (&opts.log.access_log, opts.log.python_logging) {
        (_, true) => {
            // Gunicorn logs access lines whenever a logging config is in use.
            Some(
                AccessLog::new(&opts.log.access_log_format, Sink::Python("gunicorn.access"))
                    .json(opts.log.access_log_json),
            )
        }
        (Some(target), false) => match Sink::open(target, true) {
            Ok(sink) => Some(
                AccessLog::new(&opts.log.access_log_format, sink).json(opts.log.access_log_json),
            ),
            Err(e) => {
                error!("cannot open `accesslog` (--access-logfile) {target:?}: {e}");
                return ExitCode::WorkerBoot.code();
            }
        },
        (None, false) => None,
    };
    let runtime = WorkerRuntime {
        board: Arc::clone(&board),
        slot: slot_index,
        max_requests: jittered_max_requests(
            opts.master.max_requests,
            opts.master.max_requests_jitter,
        ),
    };
    board.slot(slot_index).set_state(SlotState::Idle);
    let hooks = master.hooks.clone_ref(py);
    // The app context, and the Python loop it runs on (asgi, gevent) if not the worker's own.
    let (ctx, serve) = match (app, opts.serve.worker_class) {
        (None, _) => (AppContext::new(None, hooks, worker.clone_ref(py)), None),
        (Some(app), WorkerClass::Asgi { event_loop, lifespan, disconnect_grace }) => {
            let serve = LoopServe::Asgi {
                app,
                event_loop: event_loop.name(),
                lifespan: lifespan.name(),
                disconnect_grace,
            };
            (AppContext::new(None, hooks, worker.clone_ref(py)), Some(serve))
        }
        (Some(app), _) => {
            let envs: Vec<ListenerEnv> = public.iter().map(listener_env).collect();
            let script_name = std::env::var("SCRIPT_NAME").unwrap_or_default();
            let wsgi = match WsgiApp::new(
                py,
                app,
                &envs,
                &script_name,
                opts.master.workers > 1,
                opts.serve.worker_class != WorkerClass::Sync,
                opts.serve.sendfile,
            ) {
                Ok(w) => w,
                Err(e) => {
                    error!("cannot prepare the WSGI bridge: {e}");
                    return ExitCode::WorkerBoot.code();
                }
            };
            let serve =
                matches!(opts.serve.worker_class, WorkerClass::Gevent).then_some(LoopServe::Gevent);
            (AppContext::new(Some(wsgi), hooks, worker.clone_ref(py)), serve)
        }
    };
    let result = match serve {
        Some(serve) => {
            match run_on_loop(py, master, meta.pool, opts.serve, ctx, access_log, runtime, serve) {
                Ok(code) if code != 0 => {
                    let _ = master.hooks.call(py, "worker_exit", (server, worker));
                    return code;
                }
                Ok(_) => Ok(StopReason::Graceful),
                Err(e) => Err(e),
            }
        }
        None => {
            let listeners = master.listeners_for_pool(meta.pool);
            py.detach(|| worker::run(opts.serve, ctx, listeners, access_log, runtime, None))
        }
    };
    worker.bind(py).get().set_dead();
    let code = match result {
        Ok(StopReason::Quick) => {
            let _ = master.hooks.call(py, "worker_int", (worker.clone_ref(py),));
            0
        }
        Ok(_) => 0,
        Err(e) => {
            error!("worker failed: {e}");
            ExitCode::Failure.code()
        }
    };
    let _ = master.hooks.call(py, "worker_exit", (server, worker));
    info!("Worker exiting (pid: {pid})");
    code
}
