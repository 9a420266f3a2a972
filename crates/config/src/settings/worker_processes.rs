//! Registry records for Gunicorn's "Worker Processes" section: how many workers, of what kind,
//! and how long they may take.

use crate::setting::{DefaultValue, Env, Kind, Section, Setting, Validator};
use crate::validate::{Reject, pos_int};
use crate::value::Value;

const S: Section = Section::WorkerProcesses;

/// `$WEB_CONCURRENCY` (validated like any input) when set, else 1.
fn workers_default(env: &Env) -> Value {
    env.get("WEB_CONCURRENCY").map_or(Value::Int(1), |v| Value::Str(v.clone()))
}

/// A non-negative count, or `auto` (a ferrocorn extension resolved by the server).
fn workers_value(value: Value) -> Result<Value, Reject> {
    if let Value::Str(s) = &value
        && s.trim().eq_ignore_ascii_case("auto")
    {
        return Ok(Value::Str("auto".to_owned()));
    }
    pos_int(&value, false)
        .map(Value::Int)
        .map_err(|r| Reject::new(r.problem, "give a whole number >= 0, or 'auto'"))
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting::new("workers", S, Kind::Int, Validator::Custom(workers_value), DefaultValue::Computed(workers_default))
        .cli(&["-w", "--workers"])
        .meta("INT")
        .env("WEB_CONCURRENCY")
        .default_doc("1, or $WEB_CONCURRENCY when set")
        .help(
            "Number of worker processes handling requests. `auto` (ferrocorn extension) picks a \
             number from the available CPUs.",
        ),
    Setting::string("worker_class", S, "sync")
        .cli(&["-k", "--worker-class"])
        .meta("STRING")
        .help("Kind of worker to run, e.g. `sync`, `gthread` or `asgi`, or a dotted class path."),
    Setting::pos_int("threads", S, 1)
        .cli(&["--threads"])
        .help("Threads per worker for concurrent request handling; more than 1 with `sync` means `gthread`."),
    Setting::pos_int("worker_connections", S, 1000)
        .cli(&["--worker-connections"])
        .help("Upper bound on connections a single worker holds open at once."),
    Setting::pos_int("max_requests", S, 0)
        .cli(&["--max-requests"])
        .help("Restart a worker after it has served this many requests; 0 never restarts."),
    Setting::pos_int("max_requests_jitter", S, 0)
        .cli(&["--max-requests-jitter"])
        .help("Random extra (0 to this value) added to max_requests per worker, so they do not restart together."),
    Setting::pos_int("timeout", S, 30)
        .cli(&["-t", "--timeout"])
        .help("Seconds a worker may stay unresponsive before the master kills and replaces it; 0 disables the check."),
    Setting::pos_int("graceful_timeout", S, 30)
        .cli(&["--graceful-timeout"])
        .help("Seconds workers get to finish in-flight requests after a stop or restart before being killed."),
    Setting::pos_int("keepalive", S, 2)
        .cli(&["--keep-alive"])
        .help("Seconds an idle keep-alive connection is held open waiting for the next request."),
    Setting::choice("asgi_loop", S, &["auto", "asyncio", "uvloop"], "auto")
        .cli(&["--asgi-loop"])
        .meta("STRING")
        .help("Event loop for ASGI workers: `auto` (uvloop when importable), `asyncio` or `uvloop`."),
    Setting::choice("asgi_lifespan", S, &["auto", "on", "off"], "auto")
        .cli(&["--asgi-lifespan"])
        .meta("STRING")
        .help("ASGI lifespan events: `auto` detects support, `on` requires it, `off` skips them."),
    Setting::pos_int("asgi_disconnect_grace_period", S, 3)
        .cli(&["--asgi-disconnect-grace-period"])
        .help("Seconds an ASGI request's task may keep running after its connection ended before the response was complete (the client left, or the request timed out) before it is cancelled; 0 cancels at once."),
    Setting::choice("http_parser", S, &["auto", "fast", "python"], "auto")
        .cli(&["--http-parser"])
        .meta("STRING")
        .planned()
        .help("Which Gunicorn HTTP parser implementation to use: `auto`, `fast` (C extension) or `python`."),
];
