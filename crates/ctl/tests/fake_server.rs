//! Tests `ferrocorn ctl` and `ferrocorn top` against a fake control server: a
//! std `UnixListener` in a temporary directory, answering canned JSON lines
//! and recording the requests it received.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrocorn_ctl::{SocketEnv, run_ctl, run_top};
use serde_json::{Value, json};

/// Longest a fake server lives, so a broken test cannot hang.
const SERVER_LIFETIME: Duration = Duration::from_secs(20);

/// A unique temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "fctl-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fake control server.
struct FakeServer {
    dir: TempDir,
    path: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Serves `replies` in order (the last one repeats); after
    /// `max_connections` connections the socket is closed and removed.
    fn start(replies: Vec<String>, max_connections: Option<usize>) -> Self {
        let dir = TempDir::new();
        let path = dir.0.join("gunicorn.ctl");
        let listener = UnixListener::bind(&path).expect("bind fake control socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop, path) = (requests.clone(), stop.clone(), path.clone());
            std::thread::spawn(move || {
                serve(listener, &path, &replies, max_connections, &requests, &stop)
            })
        };
        FakeServer { dir, path, requests, stop, thread: Some(thread) }
    }

    fn one(reply: &str) -> Self {
        Self::start(vec![reply.to_owned()], None)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn socket_arg(&self) -> String {
        self.path.to_str().unwrap().to_owned()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: UnixListener,
    path: &Path,
    replies: &[String],
    max_connections: Option<usize>,
    requests: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) {
    let deadline = Instant::now() + SERVER_LIFETIME;
    let mut served = 0;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        if max_connections.is_some_and(|m| served >= m) {
            break;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                requests.lock().unwrap().push(line);
                let reply = &replies[served.min(replies.len() - 1)];
                let mut stream = stream;
                let _ = stream.write_all(format!("{reply}\n").as_bytes());
                served += 1;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(path);
}

/// Runs `ctl` with `args`; returns (exit code, stdout, stderr).
fn ctl(args: &[&str]) -> (i32, String, String) {
    ctl_env(args, &SocketEnv::default())
}

fn ctl_env(args: &[&str], env: &SocketEnv) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_ctl(&args, env, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn top(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_top(&args, &SocketEnv::default(), &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn worker(pid: i64, state: &str, requests: u64) -> Value {
    json!({"pid": pid, "state": state, "age": pid % 10, "uptime_seconds": 3.2,
           "requests": requests, "in_flight": 0, "open_connections": 3,
           "rss_bytes": 12_582_912, "cpu_seconds": 0.5, "p50_ms": 1.0, "p99_ms": null})
}

fn status(uptime: f64, workers: &[(i64, &str, u64)]) -> String {
    let ws: Vec<Value> = workers.iter().map(|(p, s, r)| worker(*p, s, *r)).collect();
    let total: u64 = workers.iter().map(|w| w.2).sum();
    json!({"ok": true, "pid": 4242, "version": "0.1.0", "uptime_seconds": uptime,
           "workers_target": 2, "workers": ws,
           "totals": {"requests": total, "in_flight": 1, "exceptions": 0,
                      "p50_ms": 1.0, "p99_ms": 2.5},
           "restarts": {"max_requests": 0, "timeout": 0, "memory": 0, "crash": 1,
                        "reload": 0, "scale": 0}})
    .to_string()
}

#[test]
fn each_command_sends_the_right_json_line() {
    let cases: &[(&[&str], Value)] = &[
        (&["status"], json!({"command": "status"})),
        (&["workers"], json!({"command": "workers"})),
        (&["workers", "add", "3"], json!({"command": "workers.add", "count": 3})),
        (&["workers", "remove", "2"], json!({"command": "workers.remove", "count": 2})),
        (&["reload"], json!({"command": "reload"})),
        (&["reopen-logs"], json!({"command": "reopen-logs"})),
        (&["shutdown"], json!({"command": "shutdown", "graceful": false})),
        (&["shutdown", "--graceful"], json!({"command": "shutdown", "graceful": true})),
        (&["cache", "stats"], json!({"command": "cache.stats"})),
        (&["cache", "purge", "http/a?b"], json!({"command": "cache.purge", "key": "http/a?b"})),
        (
            &["cache", "purge", "--prefix", "http/"],
            json!({"command": "cache.purge", "prefix": "http/"}),
        ),
        (&["cache", "purge", "--all"], json!({"command": "cache.purge", "all": true})),
    ];
    let server = FakeServer::one(r#"{"ok":true,"message":"done"}"#);
    for (args, _) in cases {
        let mut full = vec!["--socket", &server.path.to_str().unwrap()];
        full.extend_from_slice(args);
        let (code, _, err) = ctl(&full);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let got = server.requests();
    assert_eq!(got.len(), cases.len());
    for (line, (args, want)) in got.iter().zip(cases) {
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line:?}");
        let parsed: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(&parsed, want, "{args:?}");
    }
}

#[test]
fn cache_stats_render_and_cache_off_is_an_error() {
    let reply = json!({"ok": true,
        "store": {"entries": 2, "bytes": 4096, "capacity_bytes": 1048576, "evictions": 0,
                  "repairs": 0},
        "requests": {"hit": 1, "miss": 2, "expired": 0, "stale": 0, "updating": 0, "bypass": 0},
        "hit_ratio": 0.3333, "lock_waits": 0, "lock_wait_seconds": 0.0, "stores": 2,
        "not_stored": 0, "purges": 0});
    let server = FakeServer::one(&reply.to_string());
    let (code, out, _) = ctl(&["--socket", &server.socket_arg(), "cache", "stats"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("store:    2 entries, 4096 B of 1.0 MiB used"), "{out}");
    assert!(out.contains("hit ratio: 33.3%") && out.contains("\nMISS "), "{out}");
    let off = r#"{"ok":false,"error":"the response cache is off (start with --cache)"}"#;
    let server = FakeServer::one(off);
    let (code, _, err) = ctl(&["--socket", &server.socket_arg(), "cache", "purge", "--all"]);
    assert_eq!(code, 1);
    assert!(err.contains("the response cache is off (start with --cache)"), "{err}");
}

#[test]
fn simple_commands_print_the_server_message() {
    let server = FakeServer::one(r#"{"ok":true,"message":"reloading"}"#);
    let (code, out, _) = ctl(&["--socket", &server.socket_arg(), "reload"]);
    assert_eq!((code, out.as_str()), (0, "reloading\n"));
}

#[test]
fn json_flag_prints_the_reply_verbatim() {
    let reply = r#"{"ok": true,  "workers": [{"pid": 7, "state": "idle"}], "extra": 1.50}"#;
    let server = FakeServer::one(reply);
    let (code, out, err) = ctl(&["--json", "--socket", &server.socket_arg(), "workers"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{reply}\n"));
}

#[test]
fn human_workers_table_lists_pids_and_states() {
    let ws = vec![worker(1111, "idle", 100), worker(2222, "busy", 7)];
    let server = FakeServer::one(&json!({"ok": true, "workers": ws}).to_string());
    let (code, out, err) = ctl(&["workers", "--socket", &server.socket_arg()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for col in ["PID", "STATE", "AGE", "REQUESTS", "IN-FLIGHT", "RSS MiB", "CPU s", "P50", "P99"] {
        assert!(lines[0].contains(col), "{col} missing in {:?}", lines[0]);
    }
    assert!(lines[1].contains("1111") && lines[1].contains("idle") && lines[1].contains("100"));
    assert!(lines[1].contains("12.0") && lines[1].contains("0.50") && lines[1].contains("1.00"));
    assert!(lines[2].contains("2222") && lines[2].contains("busy"));
    assert!(!out.contains('\x1b'));
}

#[test]
fn human_status_has_summary_and_table() {
    let server = FakeServer::one(&status(125.0, &[(1111, "idle", 100), (2222, "booting", 0)]));
    let (code, out, err) = ctl(&["status", "--socket", &server.socket_arg()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ferrocorn 0.1.0 (pid 4242), up 2m05s"), "{out}");
    assert!(out.contains("2 live / 2 target"), "{out}");
    assert!(out.contains("100 total"), "{out}");
    assert!(out.contains("p99 2.50 ms"), "{out}");
    assert!(out.contains("crash 1"), "{out}");
    assert!(out.contains("1111") && out.contains("booting"), "{out}");
}

#[test]
fn socket_path_comes_from_env_when_not_given() {
    let server = FakeServer::one(r#"{"ok":true,"message":"ok"}"#);
    let env = SocketEnv {
        control_socket: None,
        xdg_runtime_dir: Some(OsString::from(server.dir.0.as_os_str())),
        home: Some(OsString::from("/nonexistent")),
    };
    let (code, _, err) = ctl_env(&["reload"], &env);
    assert_eq!(code, 0, "{err}");
    let env = SocketEnv {
        control_socket: Some(OsString::from(server.path.as_os_str())),
        xdg_runtime_dir: None,
        home: None,
    };
    let (code, _, err) = ctl_env(&["reload"], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn no_server_exits_1_naming_the_path() {
    let dir = TempDir::new();
    let path = dir.0.join("nothing.ctl");
    let (code, out, err) = ctl(&["--socket", path.to_str().unwrap(), "status"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(err.contains("--socket") && err.contains("--no-control-socket"), "{err}");
}

#[test]
fn server_error_exits_1_with_its_message() {
    let server = FakeServer::one(r#"{"ok":false,"error":"cannot remove the last worker"}"#);
    let (code, out, err) = ctl(&["--socket", &server.socket_arg(), "workers", "remove", "1"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("cannot remove the last worker"), "{err}");
}

#[test]
fn garbage_reply_exits_1() {
    let server = FakeServer::one("this is not json");
    let (code, _, err) = ctl(&["--socket", &server.socket_arg(), "status"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid reply"), "{err}");
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &[][..],
        &["bogus"],
        &["workers", "add", "zero"],
        &["status", "--nope"],
        &["reload", "--graceful"],
    ] {
        let (code, out, err) = ctl(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty() && err.contains("usage:"), "{args:?}: {err}");
    }
    let (code, out, _) = ctl(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("usage:"));
    let (code, _, _) = top(&["--interval", "-1"]);
    assert_eq!(code, 2);
}

#[test]
fn top_prints_plain_frames_with_rates_from_deltas() {
    let server = FakeServer::start(
        vec![
            status(10.0, &[(1111, "idle", 100), (2222, "busy", 50)]),
            status(11.0, &[(1111, "busy", 160), (2222, "idle", 70)]),
        ],
        None,
    );
    let started = Instant::now();
    let (code, out, err) =
        top(&["--socket", &server.socket_arg(), "--iterations", "2", "--interval", "0.1"]);
    assert_eq!(code, 0, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!out.contains('\x1b'), "escape codes in {out:?}");
    // Frames start with the header line and are separated by a blank line.
    let frames: Vec<&str> = out.split("ferrocorn 0.1.0  pid 4242").skip(1).collect();
    assert_eq!(frames.len(), 2, "{out}");
    for f in &frames {
        assert!(f.contains("1111") && f.contains("2222"), "{f}");
        assert!(f.contains("restarts:") && f.contains("crash 1"), "{f}");
    }
    assert!(frames[0].contains("rps -"), "{}", frames[0]);
    // 230 - 150 requests over 1 s of server uptime.
    assert!(frames[1].contains("rps 80.0"), "{}", frames[1]);
    let row = |frame: &str, pid: &str| -> Vec<String> {
        let line = frame.lines().find(|l| l.trim_start().starts_with(pid)).unwrap();
        line.split_whitespace().map(str::to_owned).collect()
    };
    // PID STATE REQUESTS RPS ...
    assert_eq!(row(frames[0], "1111")[3], "-");
    assert_eq!(row(frames[1], "1111")[2..4], ["160", "60.0"]);
    assert_eq!(row(frames[1], "2222")[2..4], ["70", "20.0"]);
    // A blank line separates consecutive frames.
    assert!(out.contains("\n\nferrocorn 0.1.0  pid 4242"), "{out}");
    assert_eq!(server.requests().len(), 2);
    for r in server.requests() {
        assert_eq!(r, "{\"command\":\"status\"}\n");
    }
}

#[test]
fn top_exits_1_when_the_socket_goes_away() {
    let server = FakeServer::start(vec![status(1.0, &[(1111, "idle", 1)])], Some(1));
    let (code, out, err) =
        top(&["--socket", &server.socket_arg(), "--iterations", "5", "--interval", "0.05"]);
    assert_eq!(code, 1);
    assert!(out.contains("1111"), "{out}");
    assert!(err.contains("lost the control socket"), "{err}");
    assert!(err.contains(&server.socket_arg()), "{err}");
}

#[test]
fn top_without_server_exits_1() {
    let dir = TempDir::new();
    let path = dir.0.join("gone.ctl");
    let (code, out, err) = top(&["--socket", path.to_str().unwrap(), "--iterations", "1"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains(path.to_str().unwrap()) && err.contains("--no-control-socket"));
}
