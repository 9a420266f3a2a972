//! End-to-end tests of `ferrocorn-bench` against an in-process test server
//! (tokio on 127.0.0.1:0 in a background thread, hand-written responses) that
//! counts the requests and connections it receives. Loopback only; every test
//! is bounded in requests and time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrocorn_bench::{BenchError, BenchOptions, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy)]
enum Behavior {
    /// 200 with a 5-byte body.
    Ok,
    /// 500 for every 3rd request (by arrival order), 200 otherwise.
    Every3rd500,
    /// Every `n`th request gets half a response, then the connection is dropped.
    DropEvery(u64),
    /// 200 with a chunked body.
    Chunked,
    /// Reads requests, never answers.
    Silent,
}

struct TestServer {
    port: u16,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    body_bytes: Arc<AtomicU64>,
}

impl TestServer {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/t?x=1", self.port)
    }
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn start(behavior: Behavior) -> TestServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let body_bytes = Arc::new(AtomicU64::new(0));
    let (r, c, b) = (requests.clone(), connections.clone(), body_bytes.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, b) = (r.clone(), b.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Read one request head (+ Content-Length body).
                        let head_end = loop {
                            if let Some(p) = find(&buf, b"\r\n\r\n") {
                                break p + 4;
                            }
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let body_len: usize =
                            header_value(&head, "content-length").map_or(0, |v| v.parse().unwrap());
                        while buf.len() < head_end + body_len {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + body_len);
                        b.fetch_add(body_len as u64, Ordering::SeqCst);
                        let k = r.fetch_add(1, Ordering::SeqCst) + 1;
                        let close = header_value(&head, "connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                            || (head.starts_with("GET / HTTP/1.0") || head.contains(" HTTP/1.0\r\n"))
                                && !header_value(&head, "connection")
                                    .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive"));
                        let resp: &[u8] = match behavior {
                            Behavior::Ok => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                            Behavior::Every3rd500 if k % 3 == 0 => {
                                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nerr"
                            }
                            Behavior::Every3rd500 => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                            Behavior::DropEvery(n) if k % n == 0 => {
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial").await;
                                return;
                            }
                            Behavior::DropEvery(_) => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                            Behavior::Chunked => {
                                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
                            }
                            Behavior::Silent => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            }
                        };
                        if s.write_all(resp).await.is_err() {
                            return;
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
    });
    TestServer { port, requests, connections, body_bytes }
}

fn opts(url: String) -> BenchOptions {
    BenchOptions { url, connections: 8, threads: 2, ..BenchOptions::default() }
}

#[test]
fn exactly_n_requests_arrive() {
    let srv = start(Behavior::Ok);
    let r = run(&BenchOptions { requests: Some(500), ..opts(srv.url()) }).unwrap();
    assert_eq!(srv.requests(), 500);
    assert_eq!(r.requests, 500);
    assert_eq!(r.status, vec![(200, 500)]);
    assert_eq!(r.errors.total(), 0);
    assert_eq!(r.non_2xx_3xx, 0);
    // "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" is 43 bytes.
    assert_eq!(r.bytes, 500 * 43);
    assert!(r.latency_us.min > 0 && r.latency_us.min <= r.latency_us.p50);
    assert!(r.latency_us.p50 <= r.latency_us.p99 && r.latency_us.p99 <= r.latency_us.max);
    assert!(r.rps > 0.0 && r.duration_s > 0.0);
    // 8 connections (+1 fail-fast probe), all kept alive.
    assert!(srv.connections() <= 9, "{}", srv.connections());
}

#[test]
fn status_counts_with_500s() {
    let srv = start(Behavior::Every3rd500);
    let r = run(&BenchOptions { requests: Some(300), ..opts(srv.url()) }).unwrap();
    assert_eq!(srv.requests(), 300);
    assert_eq!(r.requests, 300);
    assert_eq!(r.status, vec![(200, 200), (500, 100)]);
    assert_eq!(r.non_2xx_3xx, 100);
    assert_eq!(r.errors.total(), 0, "500s are not errors");
}

#[test]
fn dropped_connections_are_read_errors() {
    let srv = start(Behavior::DropEvery(10));
    let r = run(&BenchOptions { requests: Some(300), ..opts(srv.url()) }).unwrap();
    assert_eq!(srv.requests(), 300);
    assert_eq!(r.errors.read, 30);
    assert_eq!((r.errors.connect, r.errors.write, r.errors.timeout), (0, 0, 0));
    assert_eq!(r.requests, 270);
    assert_eq!(r.status, vec![(200, 270)]);
    // Each drop forces a reconnect (except a drop on a connection's last request).
    assert!(srv.connections() >= 30 + 8 - 8, "{}", srv.connections());
}

#[test]
fn rate_is_held() {
    let srv = start(Behavior::Ok);
    let r = run(&BenchOptions {
        rate: Some(200.0),
        duration: Some(Duration::from_secs(2)),
        ..opts(srv.url())
    })
    .unwrap();
    assert!((360..=440).contains(&r.requests), "{} requests at --rate 200 for 2s", r.requests);
    assert!((360..=440).contains(&srv.requests()), "server saw {}", srv.requests());
    assert!((180.0..=220.0).contains(&r.rps), "rps {}", r.rps);
    assert_eq!(r.rate, Some(200.0));
    assert!(r.to_json().ends_with(",\"rate\":200}"));
}

#[test]
fn chunked_post_and_no_keepalive() {
    let srv = start(Behavior::Chunked);
    let r = run(&BenchOptions {
        requests: Some(40),
        method: "POST".into(),
        body: Some(b"0123456789".to_vec()),
        headers: vec![("X-Test".into(), "1".into())],
        keepalive: false,
        ..opts(srv.url())
    })
    .unwrap();
    assert_eq!(srv.requests(), 40);
    assert_eq!(srv.body_bytes.load(Ordering::SeqCst), 400);
    assert_eq!(r.status, vec![(200, 40)]);
    assert_eq!(r.errors.total(), 0);
    // One connection per request, plus the probe.
    assert_eq!(srv.connections(), 41);
}

#[test]
fn http10_closes_unless_kept_alive() {
    let srv = start(Behavior::Ok);
    let r = run(&BenchOptions { requests: Some(30), http10: true, ..opts(srv.url()) }).unwrap();
    assert_eq!(srv.requests(), 30);
    assert_eq!(r.status, vec![(200, 30)]);
    assert_eq!(r.errors.total(), 0);
}

#[test]
fn timeouts_are_counted() {
    let srv = start(Behavior::Silent);
    let t = Instant::now();
    let r = run(&BenchOptions {
        requests: Some(4),
        connections: 2,
        timeout: Duration::from_millis(200),
        ..opts(srv.url())
    })
    .unwrap();
    assert_eq!(r.errors.timeout, 4);
    assert_eq!(r.requests, 0);
    assert_eq!(r.latency_us.p50, 0);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn warmup_is_discarded() {
    let srv = start(Behavior::Ok);
    let r = run(&BenchOptions {
        rate: Some(100.0),
        duration: Some(Duration::from_millis(1000)),
        warmup: Duration::from_millis(500),
        ..opts(srv.url())
    })
    .unwrap();
    assert!((85..=110).contains(&r.requests), "{}", r.requests);
    assert!(srv.requests() >= r.requests + 40, "server {} report {}", srv.requests(), r.requests);
    assert!((r.duration_s - 1.0).abs() < 0.05, "{}", r.duration_s);
    assert_eq!(r.warmup_s, 0.5);
}

#[test]
fn duration_mode_stops_on_time() {
    let srv = start(Behavior::Ok);
    let t = Instant::now();
    let r = run(&BenchOptions { duration: Some(Duration::from_millis(500)), ..opts(srv.url()) })
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(r.requests > 0);
    assert!((r.duration_s - 0.5).abs() < 0.05, "{}", r.duration_s);
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(ks: &[&str]) -> BTreeSet<String> {
    ks.iter().map(|s| s.to_string()).collect()
}

#[test]
fn json_schema_is_stable() {
    let srv = start(Behavior::Every3rd500);
    let r = run(&BenchOptions { requests: Some(30), ..opts(srv.url()) }).unwrap();
    let json = r.to_json();
    assert!(!json.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        keys(&v),
        set(&[
            "schema",
            "url",
            "method",
            "connections",
            "threads",
            "duration_s",
            "warmup_s",
            "requests",
            "rps",
            "bytes",
            "transfer_bytes_per_s",
            "latency_us",
            "status",
            "errors",
            "non_2xx_3xx",
            "rate",
        ])
    );
    assert_eq!(
        keys(&v["latency_us"]),
        set(&["min", "mean", "p50", "p90", "p95", "p99", "p999", "max", "stdev"])
    );
    assert_eq!(keys(&v["errors"]), set(&["connect", "read", "write", "timeout"]));
    assert_eq!(v["schema"], "ferrocorn-bench/1");
    assert_eq!(v["url"], srv.url());
    assert_eq!(v["requests"], 30);
    assert_eq!(v["status"]["200"], 20);
    assert_eq!(v["status"]["500"], 10);
    assert_eq!(v["non_2xx_3xx"], 10);
    assert!(v["rate"].is_null());
    assert!(v["rps"].is_number() && v["latency_us"]["mean"].is_number());
    for k in ["min", "p50", "p90", "p95", "p99", "p999", "max"] {
        assert!(v["latency_us"][k].is_u64(), "{k}");
    }
    // Key order is part of the schema too.
    let order: Vec<usize> = [
        "\"schema\"",
        "\"url\"",
        "\"connections\"",
        "\"duration_s\"",
        "\"requests\"",
        "\"rps\"",
        "\"latency_us\"",
        "\"status\"",
        "\"errors\"",
        "\"non_2xx_3xx\"",
        "\"rate\"",
    ]
    .iter()
    .map(|k| json.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{json}");
}

fn main_code(args: &[&str]) -> i32 {
    ferrocorn_bench::main(args.iter().map(|s| s.to_string()).collect())
}

#[test]
fn bad_input_fails_with_nonzero_exit() {
    assert_eq!(main_code(&["not-a-url"]), 2);
    assert_eq!(main_code(&["https://127.0.0.1:1/"]), 2);
    assert_eq!(main_code(&[]), 2);
    assert_eq!(main_code(&["-c", "0", "http://127.0.0.1:1/"]), 2);
    assert_eq!(main_code(&["-c", "x", "http://127.0.0.1:1/"]), 2);
    assert_eq!(main_code(&["--frobnicate", "http://127.0.0.1:1/"]), 2);
    assert_eq!(main_code(&["--body-file", "/nonexistent/file", "http://127.0.0.1:1/"]), 1);
    assert_eq!(main_code(&["--help"]), 0);
    let e =
        run(&BenchOptions { connections: 0, ..opts("http://127.0.0.1:1/".into()) }).unwrap_err();
    assert!(matches!(e, BenchError::InvalidOption(_)), "{e}");
    assert_eq!(
        run(&opts("https://x/".into())).unwrap_err().to_string(),
        "https is not supported yet"
    );
}

#[test]
fn refused_port_fails_fast() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    let t = Instant::now();
    assert_eq!(main_code(&["-n", "10", &url]), 1);
    let e = run(&opts(url)).unwrap_err();
    assert!(matches!(e, BenchError::Connect { .. }), "{e}");
    assert!(!e.to_string().contains('\n'));
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn threads_are_clamped_to_connections() {
    let srv = start(Behavior::Ok);
    let r =
        run(&BenchOptions { requests: Some(20), connections: 2, threads: 8, ..opts(srv.url()) })
            .unwrap();
    assert_eq!(r.threads, 2);
    assert_eq!(srv.requests(), 20);
}
