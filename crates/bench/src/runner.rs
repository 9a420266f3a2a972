//! Running a benchmark: validates options, resolves and probes the target,
//! starts `threads` OS threads (each a current-thread tokio runtime owning its
//! share of the connections, like wrk), shows progress, joins and merges the
//! per-thread stats into a [`Report`].

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::BenchOptions;
use crate::client::run_connection;
use crate::error::BenchError;
use crate::report::{Echo, Report};
use crate::scheduler::{PaddedCounter, Plan, Tickets};
use crate::stats::Stats;
use crate::target::{
    RequestSpec, build_request, parse_header, parse_url, resolve, validate_method,
};
use ferrocorn_net::precise_timer::PreciseTimer;

fn invalid(m: &str) -> BenchError {
    BenchError::InvalidOption(m.to_string())
}

/// Runs the benchmark described by `opts` and returns its report.
pub fn run(opts: &BenchOptions) -> Result<Report, BenchError> {
    let url = parse_url(&opts.url)?;
    if opts.connections == 0 {
        return Err(invalid("connections must be at least 1"));
    }
    if opts.threads == 0 {
        return Err(invalid("threads must be at least 1"));
    }
    let threads = opts.threads.min(opts.connections);
    if opts.requests == Some(0) {
        return Err(invalid("requests must be at least 1"));
    }
    if opts.duration.is_some_and(|d| d.is_zero()) {
        return Err(invalid("duration must be positive"));
    }
    if opts.timeout.is_zero() {
        return Err(invalid("timeout must be positive"));
    }
    if let Some(r) = opts.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(invalid("rate must be a positive number of requests per second"));
    }
    validate_method(&opts.method)?;
    for (k, v) in &opts.headers {
        parse_header(&format!("{k}: {v}"))?;
    }
    let duration = match (opts.requests, opts.duration) {
        (None, None) => Some(Duration::from_secs(10)),
        (_, d) => d,
    };
    let addr = resolve(&url)?;
    // Fail fast when nothing listens there.
    std::net::TcpStream::connect_timeout(&addr, opts.timeout)
        .map_err(|source| BenchError::Connect { addr: addr.to_string(), source })?;

    let request = build_request(&RequestSpec {
        method: &opts.method,
        url: &url,
        headers: &opts.headers,
        body: opts.body.as_deref(),
        keepalive: opts.keepalive,
        http10: opts.http10,
    });
    let t0 = Instant::now();
    let warmup_end = t0 + opts.warmup;
    let plan = Arc::new(Plan {
        addr,
        request,
        head_request: opts.method.eq_ignore_ascii_case("HEAD"),
        want_close: !opts.keepalive,
        http10: opts.http10,
        timeout: opts.timeout,
        t0,
        warmup_end,
        hard_end: duration.map(|d| warmup_end + d),
        tickets: opts.requests.map(Tickets::new),
        rate: opts.rate,
        connections: opts.connections,
        progress: (0..threads).map(|_| PaddedCounter::default()).collect(),
    });

    let mut handles = Vec::with_capacity(threads);
    let mut first = 0;
    for t in 0..threads {
        let n = opts.connections / threads + usize::from(t < opts.connections % threads);
        let range = first..first + n;
        first += n;
        let plan = Arc::clone(&plan);
        let h = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || load_thread(plan, t, range))
            .map_err(|source| BenchError::Io {
                what: "cannot start a load thread".into(),
                source,
            })?;
        handles.push(h);
    }
    if opts.progress {
        crate::progress::draw_until(
            t0,
            opts.warmup,
            duration,
            opts.requests,
            || plan.progress.iter().map(|c| c.0.load(Ordering::Relaxed)).sum(),
            || handles.iter().all(|h| h.is_finished()),
        );
    }
    let mut total = Stats::new();
    for h in handles {
        let stats = h.join().map_err(|_| BenchError::Io {
            what: "load thread".into(),
            source: std::io::Error::other("panicked"),
        })??;
        total.merge(&stats);
    }
    let joined = Instant::now();
    let end = match plan.hard_end {
        Some(e) if joined >= e => e,
        _ => total.last_done.unwrap_or(joined),
    };
    let duration_s = end.saturating_duration_since(warmup_end).as_secs_f64();
    let echo = Echo {
        url: &opts.url,
        method: &opts.method,
        connections: opts.connections,
        threads,
        warmup_s: opts.warmup.as_secs_f64(),
        rate: opts.rate,
    };
    Ok(Report::from_stats(echo, &total, duration_s))
}

fn load_thread(
    plan: Arc<Plan>,
    thread: usize,
    conns: std::ops::Range<usize>,
) -> Result<Stats, BenchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|source| BenchError::Io { what: "cannot start a runtime".into(), source })?;
    let stats = Rc::new(RefCell::new(Stats::new()));
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let pacer = match plan.rate {
            Some(_) => {
                let pacer = PreciseTimer::new().map_err(|source| BenchError::Io {
                    what: "cannot make the open loop's timer".into(),
                    source,
                })?;
                tokio::task::spawn_local(pacer.clone().drive());
                Some(pacer)
            }
            None => None,
        };
        let tasks: Vec<_> = conns
            .map(|i| {
                tokio::task::spawn_local(run_connection(
                    Arc::clone(&plan),
                    i,
                    thread,
                    Rc::clone(&stats),
                    pacer.clone(),
                ))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        Ok::<(), BenchError>(())
    })?;
    drop(local);
    Ok(stats.take())
}
