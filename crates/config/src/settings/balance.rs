//! Registry records for `ferrocorn balance`, the load balancer: the upstream servers, how one
//! is chosen, the keep-alive pool to them, when a request goes on to another one, their
//! timeouts and the active health check. Each value with a grammar is checked here by the
//! parser the balancer uses (`ferrocorn-balance`), so a bad one stops the start naming the
//! setting and the form it takes.

use ferrocorn_balance::{HealthCheckSpec, Method, NextUpstream, UpstreamSpec};
use ferrocorn_cache::KeyTemplate;

use crate::setting::{DefaultValue, Kind, Section, Setting, Validator};
use crate::validate::{Reject, checked_entries, setting_text as text};
use crate::value::Value;

const S: Section = Section::Balance;

const UPSTREAM_FORM: &str = "give ADDRESS [weight=N] [max_fails=N] [fail_timeout=TIME] \
     [max_conns=N] [backup] [down] [slow_start=TIME] [error_limit=N], e.g. \
     '127.0.0.1:8002 weight=2 max_fails=3 fail_timeout=30s'";

/// Each `--upstream` entry, parsed as the balancer parses it.
fn upstreams_value(value: Value) -> Result<Value, Reject> {
    checked_entries(value, "upstreams", UPSTREAM_FORM, |entry| {
        UpstreamSpec::parse(entry).map(|_| ()).map_err(|e| format!("{entry:?}: {e}"))
    })
}

/// A balancing method; a hash key is checked as a template of nginx variables.
fn method_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give round_robin, least_conn, ip_hash, random_two, 'hash KEY', \
                    'hash KEY consistent' or 'hash KEY consistent balance_factor=150'";
    let spec = text(&value, accepted)?;
    let method = Method::parse(&spec).map_err(|e| Reject::new(e.to_string(), accepted))?;
    if let Method::Hash { key, .. } = &method {
        KeyTemplate::parse(key).map_err(|e| Reject::new(e.to_string(), accepted))?;
    }
    Ok(Value::Str(spec))
}

/// Which failures send a request on to another upstream.
fn next_upstream_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give off or words from error, timeout, invalid_header, http_500, \
                    http_502, http_503, http_504, http_429, non_idempotent";
    let spec = text(&value, accepted)?;
    NextUpstream::parse(&spec).map_err(|e| Reject::new(e.to_string(), accepted))?;
    Ok(Value::Str(spec))
}

/// An active health check, or empty for none.
fn health_check_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give [METHOD] [PATH] [interval=TIME] [timeout=TIME] [fall=N] [rise=N] \
                    [expect=STATUS or LOW-HIGH] [host=NAME], e.g. \
                    'GET /healthz interval=2s timeout=1s fall=3 rise=2 expect=200-399'";
    let spec = text(&value, accepted)?;
    if !spec.is_empty() {
        HealthCheckSpec::parse(&spec).map_err(|e| Reject::new(e.to_string(), accepted))?;
    }
    Ok(Value::Str(spec))
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting::new(
        "upstreams",
        S,
        Kind::List,
        Validator::Custom(upstreams_value),
        DefaultValue::List(&[]),
    )
    .cli(&["--upstream"])
    .meta("SPEC")
    .append()
    .help(
        "An upstream server to balance over (`ferrocorn balance`), with nginx's parameters: \
         ADDRESS (HOST:PORT, [IPV6]:PORT or unix:PATH) [weight=N] [max_fails=N] \
         [fail_timeout=TIME] [max_conns=N] [backup] [down] [slow_start=TIME] \
         [error_limit=N]. Give the flag once per upstream. Setting any makes this instance \
         a load balancer: it serves no app of its own.",
    ),
    Setting::new(
        "balance_method",
        S,
        Kind::Str,
        Validator::Custom(method_value),
        DefaultValue::Str("round_robin"),
    )
    .cli(&["--method", "--balance-method"])
    .meta("METHOD")
    .help(
        "How an upstream is chosen: round_robin (smooth, by weight, as nginx), least_conn, \
         ip_hash (the client's /24), random_two (the less busy of two random picks), \
         'hash KEY' with KEY a template of nginx variables ($request_uri, $remote_addr, \
         $http_NAME, $cookie_NAME, $arg_NAME, ...), 'hash KEY consistent' (ketama ring: a \
         server leaving moves only its own keys), and 'hash KEY consistent \
         balance_factor=150' (no server takes more than 1.5x the average load).",
    ),
    Setting::new("upstream_keepalive", S, Kind::Int, Validator::PosInt, DefaultValue::Int(64))
        .cli(&["--keepalive", "--upstream-keepalive"])
        .meta("N")
        .help(
            "Idle connections to the upstreams each balancer worker keeps open for the next \
         requests (nginx's keepalive N; 0 closes each after its response).",
        ),
    Setting::new(
        "upstream_keepalive_timeout",
        S,
        Kind::Float,
        Validator::PosFloat,
        DefaultValue::Float(60.0),
    )
    .cli(&["--upstream-keepalive-timeout"])
    .meta("SECONDS")
    .help(
        "An idle upstream connection kept longer than this is closed. Keep it below the \
         upstreams' own keep-alive timeout.",
    ),
    Setting::new(
        "upstream_connect_timeout",
        S,
        Kind::Float,
        Validator::PosFloat,
        DefaultValue::Float(5.0),
    )
    .cli(&["--upstream-connect-timeout"])
    .meta("SECONDS")
    .help("Longest wait for a connection to an upstream (a timeout: the next one is tried)."),
    Setting::new(
        "upstream_timeout",
        S,
        Kind::Float,
        Validator::PosFloat,
        DefaultValue::Float(60.0),
    )
    .cli(&["--upstream-timeout"])
    .meta("SECONDS")
    .help(
        "Longest wait for an upstream between two reads or two writes: its response head, \
         each part of its body, and room to send the request (nginx's proxy_read_timeout \
         and proxy_send_timeout). Past it the client gets 504 if nothing was sent yet.",
    ),
    Setting::new(
        "next_upstream",
        S,
        Kind::Str,
        Validator::Custom(next_upstream_value),
        DefaultValue::Str("error timeout"),
    )
    .cli(&["--next-upstream"])
    .meta("CASES")
    .help(
        "When a request goes on to another upstream, as nginx's proxy_next_upstream: error \
         and timeout (connecting, sending, or waiting for the response head), \
         invalid_header, http_500, http_502, http_503, http_504, http_429; off for never. \
         Only while nothing was sent to the client; a request that is not idempotent \
         (POST, PATCH, LOCK) is not sent twice unless non_idempotent is listed. The http_ \
         cases listed also count as failures for max_fails.",
    ),
    Setting::pos_int("next_upstream_tries", S, 0)
        .cli(&["--next-upstream-tries"])
        .help("Most upstreams one request is tried on (0: no limit but the number of upstreams)."),
    Setting::new(
        "next_upstream_timeout",
        S,
        Kind::Float,
        Validator::PosFloat,
        DefaultValue::Float(0.0),
    )
    .cli(&["--next-upstream-timeout"])
    .meta("SECONDS")
    .help("No further upstream is tried once a request has taken this long (0: no limit)."),
    Setting::new(
        "health_check",
        S,
        Kind::Str,
        Validator::Custom(health_check_value),
        DefaultValue::Str(""),
    )
    .cli(&["--health-check"])
    .meta("CHECK")
    .help(
        "An active health check of every upstream, as HAProxy's: [METHOD] [PATH] \
         [interval=TIME] [timeout=TIME] [fall=N] [rise=N] [expect=STATUS or LOW-HIGH] \
         [host=NAME], e.g. 'GET /healthz interval=2s timeout=1s fall=3 rise=2 \
         expect=200-399'. The first round runs before the balancer accepts connections; \
         an upstream failing fall checks in a row gets no requests until it passes rise in \
         a row. Combined with the passive max_fails accounting.",
    ),
];
