//! `ferrocorn bench`: an HTTP/1.x load generator as fast as wrk, honest about
//! latency.
//!
//! * Closed loop (default, like wrk): each connection sends a request, waits
//!   for the full response, records the latency (from just before the request
//!   is written, or before the connect when the request had to open a
//!   connection), and sends the next.
//! * Open loop (`--rate R`, like wrk2): connection `k` of `C` intends to send
//!   its `i`-th request at `start + (k + i*C)/R`; latency is measured from
//!   that *intended* time, so a stalled server cannot hide its stalls
//!   (no coordinated omission). A connection that falls behind sends at once.
//!   Send times are kept by a `timerfd` per load thread
//!   (`ferrocorn_net::precise_timer`), not
//!   tokio's millisecond timer, whose lateness would be measured as latency.
//!
//! Entry points: [`main`] (the `ferrocorn bench ...` command; returns the exit
//! code) and, for `ferrocorn tune`, [`run`] with [`BenchOptions`] giving a
//! [`Report`] ([`Report::to_json`] for the JSON form).
//!
//! # JSON schema `ferrocorn-bench/1`
//!
//! `--json` prints exactly one object on one line. Keys are always present, in
//! this order; new keys may only be added with a new schema version.
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `schema` | string | `"ferrocorn-bench/1"` |
//! | `url` | string | the URL as given |
//! | `method` | string | request method |
//! | `connections` | int | connections used |
//! | `threads` | int | load threads used (clamped to `connections`) |
//! | `duration_s` | float | measured window in seconds (warm-up excluded) |
//! | `warmup_s` | float | warm-up length in seconds (discarded) |
//! | `requests` | int | completed responses in the window, any status |
//! | `rps` | float | `requests / duration_s` |
//! | `bytes` | int | bytes read (heads + bodies) in the window |
//! | `transfer_bytes_per_s` | float | `bytes / duration_s` |
//! | `latency_us` | object | `min`, `mean`, `p50`, `p90`, `p95`, `p99`, `p999`, `max`, `stdev` in microseconds (`mean`, `stdev` floats, others ints; all 0 when no response completed) |
//! | `status` | object | response count by status code, e.g. `{"200": 998, "500": 2}` (codes as strings) |
//! | `errors` | object | `connect`, `read`, `write`, `timeout`: ints |
//! | `non_2xx_3xx` | int | responses with a status outside 200–399 (also in `status`) |
//! | `rate` | float or null | `--rate` target in req/s, `null` in closed loop |
//!
//! Error kinds: `connect` — the TCP connect failed or timed out; `write` —
//! sending the request failed; `read` — the connection failed or was closed
//! before the response was complete, or the response was malformed (the
//! connection is then re-established); `timeout` — no complete response
//! within `--timeout`. With `-n N`, every measured attempt takes one of the N
//! slots, so `requests + errors == N`. Requests still in flight when `-d`
//! ends are abandoned and not counted.

mod cli;
mod client;
mod error;
mod progress;
mod report;
mod response;
mod runner;
mod scheduler;
mod stats;
mod target;

use std::io::{IsTerminal, Write};
use std::time::Duration;

pub use cli::{Command, USAGE, parse as parse_args, parse_duration};
pub use error::BenchError;
pub use report::{Latency, Report, SCHEMA};
pub use runner::run;
pub use stats::ErrorCounts;

/// What to run. `Default` gives: 10 connections, 1 thread, GET, no body,
/// 10 s timeout, keep-alive, HTTP/1.1, no warm-up, closed loop, no progress;
/// with neither `requests` nor `duration` set the run lasts 10 s.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// `http://host[:port]/path?query`.
    pub url: String,
    /// Connections to keep open (at least 1).
    pub connections: usize,
    /// Load threads (clamped to `connections`).
    pub threads: usize,
    /// Stop after this many measured request attempts (`-n`).
    pub requests: Option<u64>,
    /// Stop after this long, measured after the warm-up (`-d`).
    pub duration: Option<Duration>,
    /// Request method.
    pub method: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Option<Vec<u8>>,
    /// Per-request timeout (connect + request + full response).
    pub timeout: Duration,
    /// Reuse connections (`false` = `--no-keepalive`).
    pub keepalive: bool,
    /// Send HTTP/1.0 requests.
    pub http10: bool,
    /// Load run first and discarded.
    pub warmup: Duration,
    /// Open-loop rate in requests per second.
    pub rate: Option<f64>,
    /// Draw a progress line on stdout while running.
    pub progress: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            url: String::new(),
            connections: 10,
            threads: 1,
            requests: None,
            duration: None,
            method: "GET".to_string(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(10),
            keepalive: true,
            http10: false,
            warmup: Duration::ZERO,
            rate: None,
            progress: false,
        }
    }
}

/// `ferrocorn bench ARGS...`: parses `args` (without the program name and
/// without `bench`), runs, prints the report (text or `--json`) to stdout or a
/// one-line error to stderr, and returns the exit code (0 ok, 1 run failure,
/// 2 bad input).
pub fn main(args: Vec<String>) -> i32 {
    let (mut opts, json) = match cli::parse(&args) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return 0;
        }
        Ok(Command::Run { opts, json }) => (opts, json),
        Err(e) => return fail(&e),
    };
    opts.progress = !json && std::io::stdout().is_terminal();
    match run(&opts) {
        Ok(report) => {
            let out = if json { report.to_json() + "\n" } else { report.to_text() };
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
            0
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &BenchError) -> i32 {
    eprintln!("ferrocorn bench: error: {e}");
    e.exit_code()
}
