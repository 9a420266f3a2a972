//! Registry records for Gunicorn's "Server Hooks": Python callables run at lifecycle points.
//! None has a flag; the config-file layer passes them as opaque placeholders.

use crate::setting::{Setting, Support};

const NO_DIRTY: &str = "dirty arbiters are not supported by ferrocorn";

pub(super) const SETTINGS: &[Setting] = &[
    Setting::hook("on_starting").help("Called in the master as it starts, before the listeners are bound. Args: (server)."),
    Setting::hook("on_reload").help("Called in the master while handling a reload (SIGHUP), before new workers start. Args: (server)."),
    Setting::hook("when_ready").help("Called in the master once listening, before the first workers are forked. Args: (server)."),
    Setting::hook("pre_fork").help("Called in the master just before a worker is forked. Args: (server, worker)."),
    Setting::hook("post_fork").help("Called in a new worker right after fork, before it drops privileges and loads the app. Args: (server, worker)."),
    Setting::hook("post_worker_init").help("Called in a worker once the application is loaded. Args: (worker)."),
    Setting::hook("worker_int").help("Called in a worker that received SIGINT or SIGQUIT. Args: (worker)."),
    Setting::hook("worker_abort").help("Called in a worker that received SIGABRT, which is how timed-out workers are stopped. Args: (worker)."),
    Setting::hook("pre_exec").help("Called in the forked child just before a new master is exec'd (SIGUSR2). Args: (server)."),
    Setting::hook("pre_request").help("Called in a worker before each request is handled. Args: (worker, req)."),
    Setting::hook("post_request").help("Called in a worker after each request, even a failed one. Args: (worker, req, environ, resp); 2 or 3 args also accepted."),
    Setting::hook("child_exit").help("Called in the master after a worker process has been reaped. Args: (server, worker)."),
    Setting::hook("worker_exit").help("Called in a worker as it exits. Args: (server, worker)."),
    Setting::hook("nworkers_changed").help("Called in the master whenever the target worker count changes. Args: (server, new_value, old_value)."),
    Setting::hook("on_exit").help("Called in the master just before it exits. Args: (server)."),
    Setting::hook("ssl_context").support(Support::Unsupported("TLS is not supported by ferrocorn yet; terminate TLS in front of it")).help("Builds the TLS context; must return an ssl.SSLContext. Args: (config, default_ssl_context_factory)."),
    Setting::hook("on_dirty_starting").support(Support::Unsupported(NO_DIRTY)).help("Called before the dirty arbiter initialises. Args: (arbiter)."),
    Setting::hook("dirty_post_fork").support(Support::Unsupported(NO_DIRTY)).help("Called after a dirty worker is forked. Args: (arbiter, worker)."),
    Setting::hook("dirty_worker_init").support(Support::Unsupported(NO_DIRTY)).help("Called once a dirty worker has loaded its apps. Args: (worker)."),
    Setting::hook("dirty_worker_exit").support(Support::Unsupported(NO_DIRTY)).help("Called when a dirty worker exits. Args: (arbiter, worker)."),
];
