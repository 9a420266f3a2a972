//! Registry records for settings ferrocorn adds beyond Gunicorn's. Each new one is one record.

use crate::pools::{POOL_FORM, PoolSpec};
use crate::setting::{Action, DefaultValue, Kind, Section, Setting, Validator};
use crate::validate::{Reject, checked_entries};
use crate::value::Value;

const S: Section = Section::Ferrocorn;

/// Each `--pool` entry, parsed as the master parses it.
fn pools_value(value: Value) -> Result<Value, Reject> {
    checked_entries(value, "pools", POOL_FORM, |entry| {
        PoolSpec::parse(entry).map(|_| ()).map_err(|e| e.problem)
    })
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting::new("pools", S, Kind::List, Validator::Custom(pools_value), DefaultValue::List(&[]))
        .cli(&["--pool"])
        .meta("SPEC")
        .append()
        .help(
            "A worker pool for the requests whose path starts with PREFIX, with its own app, \
             worker class and count: 'PREFIX [app=MODULE:CALLABLE] [SETTING=VALUE ...]', keys \
             being settings' names (worker_class, workers, threads, timeout, max_requests, \
             worker_connections, ...); what a pool does not set it inherits from the other \
             options. Give the flag once per pool; the longest matching prefix wins, per \
             request. Without a pool for /, the other options make the pool that serves every \
             other path. In a config file: pools = ['/reports/ workers=4', ...] or dicts \
             ({'prefix': '/reports/', 'workers': 4}).",
        ),
    Setting::new("header_timeout", S, Kind::Float, Validator::PosFloat, DefaultValue::Float(10.0))
        .cli(&["--header-timeout"])
        .meta("SECONDS")
        .help(
            "Seconds a client gets to send a complete request head (request line and headers) \
             before the connection is closed; defends against slowloris. 0 disables the limit.",
        ),
    Setting::new("boot_timeout", S, Kind::Float, Validator::PosFloat, DefaultValue::Float(120.0))
        .cli(&["--boot-timeout"])
        .meta("SECONDS")
        .help(
            "Seconds a worker may take to boot (fork to app loaded) before the master replaces \
             it; separate from --timeout so slow imports are not killed. 0 disables the limit.",
        ),
    Setting::new(
        "body_buffer_size",
        S,
        Kind::Int,
        Validator::PosInt,
        DefaultValue::Int(1024 * 1024),
    )
    .cli(&["--body-buffer-size"])
    .meta("BYTES")
    .help(
        "Bytes of a WSGI request body kept in memory; a longer body is written to an unnamed \
         temporary file in the system temp directory (TMPDIR) before the app runs, so large \
         uploads cost disk, not worker memory. The app reads it from wsgi.input either way. \
         0 spools every body.",
    ),
    Setting::opt_string("metrics_bind", S).cli(&["--metrics-bind"]).meta("ADDRESS").help(
        "Serve Prometheus metrics of the whole instance (all workers) at http://ADDRESS/metrics, \
             e.g. 127.0.0.1:9100. Off by default.",
    ),
    Setting::flag("access_log_json", S).cli(&["--access-log-json"]).help(
        "Write the access log as one JSON object per line (every atom of access_log_format \
             under a readable key) instead of the text format.",
    ),
    Setting::new("direct_socket_io", S, Kind::Bool, Validator::Bool, DefaultValue::Bool(true))
        .cli(&["--no-direct-socket-io"])
        .action(Action::StoreConst(false))
        .help(
            "Whether the fast paths that bypass the connection's writer may use the client \
             socket directly: sendfile, the last write of a response sent with its FIN, and on \
             the app's thread PEP 3333 write() and a 100-continue body read on demand. \
             --no-direct-socket-io sends every byte through the writer, as a TLS connection \
             will: write() output is sent after the app returns, and a 100-continue body is \
             read before the app is called. A diagnostic switch; the default is faster.",
        ),
    Setting::new("require_host", S, Kind::Bool, Validator::Bool, DefaultValue::Bool(true))
        .cli(&["--no-require-host"])
        .action(Action::StoreConst(false))
        .help(
            "Whether an HTTP/1.1 request without a Host header is refused with 400, as RFC 9112 \
             section 3.2 requires and nginx and uvicorn do. Gunicorn serves such requests; \
             --no-require-host does too, for clients that omit the header.",
        ),
];
