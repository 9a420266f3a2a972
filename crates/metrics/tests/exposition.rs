//! The encoders through the public API, and (when installed) real parsers: `promtool check
//! metrics` for Prometheus text, Python's `prometheus_client` for both formats. A missing tool
//! skips its check with a note on stderr.

use std::io::Write as _;
use std::process::{Command, Stdio};

use ferrocorn_metrics::{
    CacheStoreCounts, Format, Snapshot, Totals, UserMetric, UserMetricKind, WorkerSnapshot,
    catalogue, duration_bucket, encode, method_index, status_index,
};

fn busy_totals(seed: u64) -> Totals {
    let mut t = Totals::default();
    for (i, (method, code)) in
        [("GET", 200), ("GET", 304), ("POST", 201), ("PUT", 418), ("BREW", 599), ("HEAD", 200)]
            .into_iter()
            .enumerate()
    {
        let n = seed * (i as u64 + 1);
        t.requests[method_index(method)][status_index(code)] += n;
        for k in 0..n {
            let micros = 300 + k * 7_919 * (i as u64 + 1);
            t.duration_buckets[duration_bucket(micros)] += 1;
            t.duration_sum_micros += micros;
        }
    }
    t.request_bytes = seed * 1_000;
    t.response_bytes = seed * 50_000;
    t.exceptions = seed / 3;
    t.connections = seed * 4;
    t.cache.requests = [seed * 5, seed, seed / 2, 1, 0, 0, seed / 4];
    t.cache.lock_waits = seed / 5;
    t.cache.lock_wait_micros = seed * 1_234;
    t.cache.stores = seed;
    t.cache.purges = seed / 7;
    t
}

fn worker(pid: i32, state: &str, seed: u64) -> WorkerSnapshot {
    WorkerSnapshot {
        pid,
        state: state.to_owned(),
        age: pid as u32,
        uptime_seconds: 3600.25,
        in_flight: seed % 3,
        open_connections: seed % 5,
        rss_bytes: 40_000_000 + seed,
        cpu_seconds: seed as f64 / 7.0,
        totals: busy_totals(seed),
        pool: 0,
        requests: seed,
    }
}

fn snapshot() -> Snapshot {
    let series = |name: &str, kind, labels: &[(&str, &str)], value| UserMetric {
        name: name.to_owned(),
        help: format!("App metric {name} with \"quotes\" and a \\ backslash."),
        kind,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        value,
        buckets: Vec::new(),
        sum: 0.0,
    };
    let mut hist = series("app_job_seconds", UserMetricKind::Histogram, &[("queue", "a\"b")], 0.0);
    hist.buckets = vec![(0.5, 3), (2.0, 1), (f64::INFINITY, 2)];
    hist.sum = 31.5;
    let mut hist2 = series("app_job_seconds", UserMetricKind::Histogram, &[("queue", "x")], 0.0);
    hist2.buckets = vec![(0.5, 0), (2.0, 0)];
    Snapshot {
        version: "0.1.0-dev+\"git\"".to_owned(),
        start_time_seconds: 1_722_000_000.123,
        workers_target: 4,
        workers: vec![
            worker(4101, "idle", 17),
            worker(4102, "busy", 5),
            worker(4103, "booting", 0),
            worker(4104, "retiring", 40),
        ],
        retired: busy_totals(11),
        restarts: vec![("max_requests".to_owned(), 3), ("timeout".to_owned(), 1)],
        listeners: vec![
            ("127.0.0.1:8000".to_owned(), 2),
            ("unix:/tmp/a b\\c\n.sock".to_owned(), 0),
        ],
        user: vec![
            series("app_logins", UserMetricKind::Counter, &[("result", "ok")], 12.0),
            series("app_logins", UserMetricKind::Counter, &[("result", "line\nbreak")], 1.0),
            series("app_cache_entries", UserMetricKind::Gauge, &[], 1e-7),
            hist,
            hist2,
        ],
        cache_store: Some(CacheStoreCounts {
            entries: 40,
            bytes: 123_456,
            capacity: 64 << 20,
            evictions: 7,
            repairs: 1,
        }),
        master_cache_purges: 2,
        upstreams: Vec::new(),
        pools: Vec::new(),
    }
}

fn tool_exists(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `program args` with `input` on stdin; returns (success, stdout + stderr).
fn run(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn promtool_accepts_prometheus_text_without_lint_complaints() {
    if !tool_exists("promtool", "--version") {
        eprintln!("promtool not installed; skipped");
        return;
    }
    for snap in [snapshot(), Snapshot::default()] {
        let text = encode(&snap, Format::Prometheus);
        let (ok, out) = run("promtool", &["check", "metrics"], &text);
        assert!(ok && out.trim().is_empty(), "promtool: {out}\n---\n{text}");
    }
}

const PY_CHECK: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as prom
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
text = sys.stdin.read()
fmt = sys.argv[1]
families = list((prom if fmt == "prometheus" else om)(text))
for f in families:
    assert f.documentation, f.name
    print(f.name, f.type, len(f.samples))
"#;

#[test]
fn python_prometheus_client_parses_both_formats() {
    if !tool_exists("python3", "--version")
        || !run("python3", &["-c", "import prometheus_client"], "").0
    {
        eprintln!("python3 with prometheus_client not installed; skipped");
        return;
    }
    for (format, arg) in [(Format::Prometheus, "prometheus"), (Format::OpenMetrics, "openmetrics")]
    {
        let text = encode(&snapshot(), format);
        let (ok, out) = run("python3", &["-c", PY_CHECK, arg], &text);
        assert!(ok, "{arg}: {out}\n---\n{text}");
        assert_eq!(out.lines().count(), catalogue().len() + 3, "{arg}: {out}");
        assert!(out.contains("ferrocorn_requests counter"), "{out}");
        assert!(out.contains("ferrocorn_request_duration_seconds histogram"), "{out}");
        assert!(out.contains("app_logins counter 2"), "{out}");
        // 2 series x (3 finite/+Inf buckets + sum + count).
        assert!(out.contains("app_job_seconds histogram 10"), "{out}");
        let build = if format == Format::OpenMetrics {
            "ferrocorn_build info"
        } else {
            "ferrocorn_build_info gauge"
        };
        assert!(out.contains(build), "{out}");
        // Families without samples (an idle server) parse too.
        let (ok, out) =
            run("python3", &["-c", PY_CHECK, arg], &encode(&Snapshot::default(), format));
        assert!(ok, "{arg} (empty snapshot): {out}");
    }
}

#[test]
fn counters_never_go_backwards_when_a_worker_exits() {
    let before = snapshot();
    let mut after = before.clone();
    let gone = after.workers.remove(0);
    after.retired.add(&gone.totals);
    let count = |s: &Snapshot| {
        encode(s, Format::Prometheus)
            .lines()
            .find_map(|l| {
                l.strip_prefix("ferrocorn_request_duration_seconds_count ").map(str::to_owned)
            })
            .unwrap()
    };
    assert_eq!(count(&before), count(&after));
    let requests = |s: &Snapshot| {
        encode(s, Format::Prometheus)
            .lines()
            .filter(|l| l.starts_with("ferrocorn_requests_total{"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(requests(&before), requests(&after));
}
