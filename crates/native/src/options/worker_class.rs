//! The worker class setting (`-k`/`--worker-class`, with `threads`, `asgi_loop`,
//! `asgi_lifespan`): Gunicorn's class names and aliases mapped to how a worker runs the app.

use ferrocorn_config::Config;

use super::OptionsError;

/// How a worker runs the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerClass {
    /// One request at a time, on the worker's event-loop thread.
    Sync,
    /// `threads` Python threads per worker, which also take turns serving the sockets.
    Gthread {
        /// Python threads per worker.
        threads: usize,
    },
    /// WSGI in greenlets on a gevent hub on the main thread, sockets on an I/O thread.
    Gevent,
    /// ASGI on an asyncio loop on the worker's main thread, which also serves the sockets.
    Asgi {
        /// `asgi_loop`: auto, asyncio or uvloop.
        event_loop: AsgiLoop,
        /// `asgi_lifespan`: auto, on or off.
        lifespan: AsgiLifespan,
        /// `asgi_disconnect_grace_period`, seconds.
        disconnect_grace: u32,
    },
    /// A load balancer's worker (`ferrocorn balance`): no app; every request goes to an
    /// upstream, up to `worker_connections` at once, all in Rust.
    Balancer,
}

/// Which asyncio loop the ASGI class uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsgiLoop {
    /// uvloop when installed, else asyncio.
    Auto,
    /// The standard library loop.
    Asyncio,
    /// uvloop (required).
    Uvloop,
}

/// Whether the ASGI class runs the lifespan protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsgiLifespan {
    /// Run it; an app that does not support it is served without.
    Auto,
    /// Run it; failure stops the worker.
    On,
    /// Do not run it.
    Off,
}

impl AsgiLoop {
    /// The setting's value.
    pub fn name(self) -> &'static str {
        match self {
            AsgiLoop::Auto => "auto",
            AsgiLoop::Asyncio => "asyncio",
            AsgiLoop::Uvloop => "uvloop",
        }
    }
}

impl AsgiLifespan {
    /// The setting's value.
    pub fn name(self) -> &'static str {
        match self {
            AsgiLifespan::Auto => "auto",
            AsgiLifespan::On => "on",
            AsgiLifespan::Off => "off",
        }
    }
}

impl WorkerClass {
    /// Gunicorn's name for the class.
    pub fn name(self) -> &'static str {
        match self {
            WorkerClass::Sync => "sync",
            WorkerClass::Gthread { .. } => "gthread",
            WorkerClass::Gevent => "gevent",
            WorkerClass::Asgi { .. } => "asgi",
            WorkerClass::Balancer => "balancer",
        }
    }
}

pub(super) fn worker_class(config: &Config) -> Result<WorkerClass, OptionsError> {
    let class = config.str("worker_class");
    let threads = usize::try_from(config.int("threads")).unwrap_or(1).max(1);
    let normalized = class.rsplit('.').next().unwrap_or(class).to_ascii_lowercase();
    match normalized.as_str() {
        // As in Gunicorn, sync with more than one thread means gthread.
        "sync" | "syncworker" if threads <= 1 => Ok(WorkerClass::Sync),
        "sync" | "syncworker" | "gthread" | "threadworker" => Ok(WorkerClass::Gthread { threads }),
        "gevent" | "ggevent" | "geventworker" | "gevent_wsgi" | "gevent_pywsgi"
        | "geventpywsgiworker" => Ok(WorkerClass::Gevent),
        "asgi" | "asgiworker" | "uvicornworker" | "uvicornh11worker" => Ok(WorkerClass::Asgi {
            event_loop: match config.str("asgi_loop") {
                "asyncio" => AsgiLoop::Asyncio,
                "uvloop" => AsgiLoop::Uvloop,
                _ => AsgiLoop::Auto,
            },
            lifespan: match config.str("asgi_lifespan") {
                "on" => AsgiLifespan::On,
                "off" => AsgiLifespan::Off,
                _ => AsgiLifespan::Auto,
            },
            disconnect_grace: config.int("asgi_disconnect_grace_period").try_into().unwrap_or(0),
        }),
        "eventlet" | "eventletworker" => Err(OptionsError(
            "`worker_class` eventlet is not supported (Gunicorn removed it in 26.0); use -k gevent"
                .into(),
        )),
        _ => Err(OptionsError(format!(
            "`worker_class` (-k/--worker-class) {class:?} is not supported yet by ferrocorn; available: sync, gthread, gevent, asgi"
        ))),
    }
}
