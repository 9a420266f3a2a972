//! `ferrocorn top`: polls `status` every interval and shows a header plus one
//! row per worker, with request rates computed from the deltas between
//! refreshes. Full-screen (crossterm raw mode + alternate screen) on a
//! terminal, plain-text frames otherwise.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, style, terminal};
use serde_json::{Value, json};

use crate::SocketEnv;
use crate::client::{ClientError, request};
use crate::render::{
    self, Align, Table, fmt_count, fmt_cpu, fmt_duration, fmt_mib, fmt_ms, fmt_ms_unit, fmt_rate,
    fmt_restarts, get_f64, get_i64, get_str, get_u64,
};
use crate::top_sections;

const USAGE: &str = "\
usage: ferrocorn top [--socket PATH] [--interval SECONDS] [--iterations N]

Live view of a running ferrocorn server. Press q (or Ctrl-C) to quit.

options:
  --socket PATH         control socket (default: $FERROCORN_CONTROL_SOCKET,
                        $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl)
  --interval SECONDS    refresh interval (default 1)
  --iterations N        stop after N refreshes
  -h, --help            show this help
";

/// Parsed `top` arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopArgs {
    pub(crate) socket: Option<String>,
    pub(crate) interval: Duration,
    pub(crate) iterations: Option<u64>,
}

fn parse(args: &[String]) -> Result<Option<TopArgs>, String> {
    let mut parsed = TopArgs { socket: None, interval: Duration::from_secs(1), iterations: None };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(None);
        }
        if !matches!(name, "--socket" | "--interval" | "--iterations") {
            return Err(if name.starts_with('-') {
                format!("unknown option {name:?}")
            } else {
                format!("unexpected argument {name:?}")
            });
        }
        let value = match inline.or_else(|| iter.next().cloned()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value")),
        };
        match name {
            "--socket" => parsed.socket = Some(value),
            "--interval" => match value.parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 && s <= 86400.0 => {
                    parsed.interval = Duration::from_secs_f64(s);
                }
                _ => return Err(format!("invalid --interval {value:?}: expected seconds > 0")),
            },
            _ => match value.parse::<u64>() {
                Ok(n) if n >= 1 => parsed.iterations = Some(n),
                _ => {
                    return Err(format!(
                        "invalid --iterations {value:?}: expected a positive integer"
                    ));
                }
            },
        }
    }
    Ok(Some(parsed))
}

/// A counter `top` shows a rate of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Counted {
    /// All requests.
    Total,
    /// One worker's requests, by pid.
    Worker(i64),
    /// The response cache's answers with one `X-Cache-Status` (lowercase).
    Cache(String),
    /// Attempts sent to one upstream, by its name.
    Upstream(String),
}

/// One observation, kept to compute rates at the next refresh.
struct Sample {
    server_pid: Option<i64>,
    uptime: Option<f64>,
    at: Instant,
    counts: HashMap<Counted, u64>,
}

impl Sample {
    /// The counters of a `status` reply.
    fn counts(status: &Value) -> HashMap<Counted, u64> {
        let totals = status.get("totals").unwrap_or(&Value::Null);
        let mut counts: HashMap<Counted, u64> = HashMap::new();
        if let Some(n) = get_u64(totals, "requests") {
            counts.insert(Counted::Total, n);
        }
        for w in render::workers(status) {
            if let (Some(pid), Some(n)) = (get_i64(w, "pid"), get_u64(w, "requests")) {
                counts.insert(Counted::Worker(pid), n);
            }
        }
        let cache = status.pointer("/cache/requests").and_then(Value::as_object);
        for (answer, n) in cache.into_iter().flatten() {
            if let Some(n) = n.as_u64() {
                counts.insert(Counted::Cache(answer.clone()), n);
            }
        }
        let upstreams = status.get("upstreams").and_then(Value::as_array);
        for u in upstreams.into_iter().flatten() {
            if let (Some(name), Some(n)) = (get_str(u, "upstream"), get_u64(u, "requests")) {
                counts.insert(Counted::Upstream(name.to_owned()), n);
            }
        }
        counts
    }
}

/// Rate computation between refreshes.
#[derive(Default)]
struct Rates {
    prev: Option<Sample>,
}

/// Rates derived from one status reply (none on the first, or after the server changed).
#[derive(Default)]
struct FrameRates {
    per_second: HashMap<Counted, f64>,
}

impl FrameRates {
    fn of(&self, counted: &Counted) -> Option<f64> {
        self.per_second.get(counted).copied()
    }
}

impl Rates {
    fn update(&mut self, status: &Value, now: Instant) -> FrameRates {
        let sample = Sample {
            server_pid: get_i64(status, "pid"),
            uptime: get_f64(status, "uptime_seconds"),
            at: now,
            counts: Sample::counts(status),
        };
        let mut rates = FrameRates::default();
        if let Some(prev) = self.prev.as_ref().filter(|p| p.server_pid == sample.server_pid) {
            // Prefer the server's own clock (uptime) so the rate matches the
            // interval in which the counts were taken; fall back to ours.
            let elapsed = match (prev.uptime, sample.uptime) {
                (Some(a), Some(b)) if b > a => b - a,
                _ => sample.at.duration_since(prev.at).as_secs_f64(),
            };
            if elapsed > 0.0 {
                for (counted, now_count) in &sample.counts {
                    if let Some(before) = prev.counts.get(counted) {
                        let rate = now_count.saturating_sub(*before) as f64 / elapsed;
                        rates.per_second.insert(counted.clone(), rate);
                    }
                }
            }
        }
        self.prev = Some(sample);
        rates
    }
}

/// Renders one frame (without the interactive hint line).
fn frame_lines(status: &Value, rates: &FrameRates) -> Vec<String> {
    let totals = status.get("totals").unwrap_or(&Value::Null);
    let workers = render::workers(status);
    let mut lines = vec![
        format!(
            "ferrocorn {}  pid {}  up {}",
            get_str(status, "version").unwrap_or("?"),
            get_i64(status, "pid").map_or_else(|| "?".to_owned(), |p| p.to_string()),
            fmt_duration(get_f64(status, "uptime_seconds")),
        ),
        format!(
            "workers {} target / {} live   requests {}   rps {}   p50 {}   p99 {}",
            fmt_count(get_u64(status, "workers_target")),
            workers.len(),
            fmt_count(get_u64(totals, "requests")),
            fmt_rate(rates.of(&Counted::Total)),
            fmt_ms_unit(get_f64(totals, "p50_ms")),
            fmt_ms_unit(get_f64(totals, "p99_ms")),
        ),
        format!(
            "in flight {}   exceptions {}   restarts: {}",
            fmt_count(get_u64(totals, "in_flight")),
            fmt_count(get_u64(totals, "exceptions")),
            fmt_restarts(status),
        ),
    ];
    lines.extend(top_sections::cache_lines(status, &|answer| {
        rates.of(&Counted::Cache(answer.to_owned()))
    }));
    lines.push(String::new());
    let upstream_lines =
        top_sections::upstream_lines(status, &|name| rates.of(&Counted::Upstream(name.to_owned())));
    if !upstream_lines.is_empty() {
        lines.extend(upstream_lines);
        lines.push(String::new());
    }
    if workers.is_empty() {
        lines.push("(no workers)".to_owned());
        return lines;
    }
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("PID", Right),
        ("STATE", Left),
        ("REQUESTS", Right),
        ("RPS", Right),
        ("P50 ms", Right),
        ("P99 ms", Right),
        ("RSS MiB", Right),
        ("CPU s", Right),
        ("AGE", Right),
        ("UPTIME", Right),
    ]);
    for w in workers {
        let pid = get_i64(w, "pid");
        table.push(vec![
            pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            get_str(w, "state").unwrap_or("-").to_owned(),
            fmt_count(get_u64(w, "requests")),
            fmt_rate(pid.and_then(|p| rates.of(&Counted::Worker(p)))),
            fmt_ms(get_f64(w, "p50_ms")),
            fmt_ms(get_f64(w, "p99_ms")),
            fmt_mib(get_u64(w, "rss_bytes")),
            fmt_cpu(get_f64(w, "cpu_seconds")),
            fmt_count(get_u64(w, "age")),
            fmt_duration(get_f64(w, "uptime_seconds")),
        ]);
    }
    lines.extend(table.lines());
    lines
}

/// Why polling stopped.
enum PollError {
    /// Could not reach the server, or a bad reply.
    Client(ClientError),
    /// The server answered `ok:false`.
    Server(String),
}

fn poll(path: &Path) -> Result<Value, PollError> {
    let reply = request(path, &json!({"command": "status"})).map_err(PollError::Client)?;
    if reply.is_ok() { Ok(reply.value) } else { Err(PollError::Server(reply.error_message())) }
}

/// The one-line message for a polling failure; `had_frame` says whether the
/// server had answered before (so the socket went away mid-run).
fn poll_error_message(e: &PollError, had_frame: bool) -> String {
    match e {
        PollError::Server(msg) => format!("ferrocorn top: server error: {msg}"),
        PollError::Client(e) if had_frame => format!(
            "ferrocorn top: lost the control socket {}: {}; the server may have stopped",
            e.path().display(),
            e.cause()
        ),
        PollError::Client(e) => format!("ferrocorn top: {e}"),
    }
}

fn parse_or_exit(
    args: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<TopArgs, i32> {
    match parse(args) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => {
            let _ = out.write_all(USAGE.as_bytes());
            Err(0)
        }
        Err(msg) => {
            let _ = writeln!(err, "ferrocorn top: {msg}\n\n{USAGE}");
            Err(2)
        }
    }
}

/// Runs `ferrocorn top` in plain-text mode: each refresh writes one frame to
/// `out`, frames separated by a blank line, no escape codes. Runs until
/// `--iterations` is reached (forever without it), or until the server goes
/// away (exit 1). Returns the exit code: 0 ok, 1 failure, 2 usage error.
pub fn run_top(args: &[String], env: &SocketEnv, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let args = match parse_or_exit(args, out, err) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let path = env.resolve(args.socket.as_deref());
    let mut rates = Rates::default();
    let mut frames: u64 = 0;
    loop {
        let status = match poll(&path) {
            Ok(v) => v,
            Err(e) => {
                let _ = writeln!(err, "{}", poll_error_message(&e, frames > 0));
                return 1;
            }
        };
        let frame_rates = rates.update(&status, Instant::now());
        let mut text = String::new();
        if frames > 0 {
            text.push('\n');
        }
        for line in frame_lines(&status, &frame_rates) {
            text.push_str(&line);
            text.push('\n');
        }
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return 0;
            }
            let _ = writeln!(err, "ferrocorn top: write error: {e}");
            return 1;
        }
        frames += 1;
        if args.iterations.is_some_and(|n| frames >= n) {
            return 0;
        }
        std::thread::sleep(args.interval);
    }
}

/// Raw mode + alternate screen + hidden cursor for as long as it lives;
/// dropping it (also on error or panic unwinding) restores the terminal.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Draws `lines` on the alternate screen, clipped to the terminal size.
/// Overwrites in place (no full clear) to avoid flicker.
fn draw(lines: &[String]) -> io::Result<()> {
    let (cols, rows) = match terminal::size() {
        Ok((c, r)) if c > 0 && r > 0 => (usize::from(c), usize::from(r)),
        _ => (usize::MAX, usize::MAX),
    };
    let mut stdout = io::stdout().lock();
    let mut row: u16 = 0;
    for line in lines.iter().take(rows) {
        let clipped: String = line.chars().take(cols).collect();
        queue!(
            stdout,
            cursor::MoveTo(0, row),
            style::Print(clipped),
            terminal::Clear(terminal::ClearType::UntilNewLine)
        )?;
        row = row.saturating_add(1);
    }
    if row < u16::try_from(rows).unwrap_or(u16::MAX) {
        queue!(
            stdout,
            cursor::MoveTo(0, row),
            terminal::Clear(terminal::ClearType::FromCursorDown)
        )?;
    }
    stdout.flush()
}

/// Waits up to `timeout` for a quit key; `Ok(true)` means quit.
fn wait_for_quit(timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || !event::poll(remaining)? {
            return Ok(false);
        }
        if let Event::Key(key) = event::read()? {
            if key.kind == KeyEventKind::Release {
                continue;
            }
            let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C'));
            if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc)
            {
                return Ok(true);
            }
        }
    }
}

enum Outcome {
    Done,
    Failed(String),
}

fn interactive_loop(args: &TopArgs, path: &Path) -> io::Result<Outcome> {
    let mut rates = Rates::default();
    let mut frames: u64 = 0;
    loop {
        let status = match poll(path) {
            Ok(v) => v,
            Err(e) => return Ok(Outcome::Failed(poll_error_message(&e, frames > 0))),
        };
        let frame_rates = rates.update(&status, Instant::now());
        let mut lines = frame_lines(&status, &frame_rates);
        lines.push(String::new());
        lines.push(format!(
            "socket {}  refresh {:.1}s  press q to quit",
            path.display(),
            args.interval.as_secs_f64()
        ));
        draw(&lines)?;
        frames += 1;
        if args.iterations.is_some_and(|n| frames >= n) {
            return Ok(Outcome::Done);
        }
        if wait_for_quit(args.interval)? {
            return Ok(Outcome::Done);
        }
    }
}

/// Runs `ferrocorn top` full-screen on the terminal.
pub(crate) fn run_interactive(args: &[String], env: &SocketEnv) -> i32 {
    let args = match parse_or_exit(args, &mut io::stdout(), &mut io::stderr()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let path = env.resolve(args.socket.as_deref());
    // Fail before touching the terminal when the server is not there at all.
    if let Err(e) = poll(&path) {
        eprintln!("{}", poll_error_message(&e, false));
        return 1;
    }
    let outcome = match TerminalGuard::enter() {
        Ok(guard) => {
            let result = interactive_loop(&args, &path);
            drop(guard);
            result
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Outcome::Done) => 0,
        Ok(Outcome::Failed(msg)) => {
            eprintln!("{msg}");
            1
        }
        Err(e) => {
            eprintln!("ferrocorn top: terminal error: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn parses_args() {
        let a =
            parse(&s(&["--interval", "0.5", "--iterations=3", "--socket", "/x"])).unwrap().unwrap();
        assert_eq!(a.interval, Duration::from_millis(500));
        assert_eq!(a.iterations, Some(3));
        assert_eq!(a.socket.as_deref(), Some("/x"));
        let d = parse(&[]).unwrap().unwrap();
        assert_eq!(d.interval, Duration::from_secs(1));
        assert_eq!(d.iterations, None);
        assert!(parse(&s(&["-h"])).unwrap().is_none());
        for bad in [
            &["--interval", "0"][..],
            &["--interval", "x"],
            &["--iterations", "0"],
            &["--iterations"],
            &["--frob"],
            &["extra"],
        ] {
            assert!(parse(&s(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rates_use_server_uptime_and_reset_on_new_pid() {
        let st = |uptime: f64, reqs: u64, wpid: i64| {
            json!({"pid": 1, "uptime_seconds": uptime, "totals": {"requests": reqs},
                   "workers": [{"pid": wpid, "requests": reqs}]})
        };
        let mut r = Rates::default();
        let t0 = Instant::now();
        let first = r.update(&st(10.0, 100, 7), t0);
        assert!(first.per_second.is_empty());
        let second = r.update(&st(12.0, 200, 7), t0);
        assert_eq!(second.of(&Counted::Total), Some(50.0));
        assert_eq!(second.of(&Counted::Worker(7)), Some(50.0));
        let third = r.update(&st(13.0, 210, 8), t0);
        assert_eq!(third.of(&Counted::Total), Some(10.0));
        assert_eq!(third.of(&Counted::Worker(8)), None);
        let other_server = json!({"pid": 2, "uptime_seconds": 14.0, "totals": {"requests": 5}});
        assert!(r.update(&other_server, t0).per_second.is_empty());
    }

    #[test]
    fn cache_answers_and_upstreams_get_rates() {
        let st = |uptime: f64, hits: u64, sent: u64| {
            json!({"pid": 1, "uptime_seconds": uptime, "totals": {"requests": hits},
                   "cache": {"requests": {"hit": hits, "miss": 4}},
                   "upstreams": [{"upstream": "127.0.0.1:8001", "requests": sent}]})
        };
        let mut r = Rates::default();
        let t0 = Instant::now();
        r.update(&st(1.0, 10, 100), t0);
        let rates = r.update(&st(3.0, 30, 160), t0);
        assert_eq!(rates.of(&Counted::Cache("hit".into())), Some(10.0));
        assert_eq!(rates.of(&Counted::Cache("miss".into())), Some(0.0));
        assert_eq!(rates.of(&Counted::Upstream("127.0.0.1:8001".into())), Some(30.0));
    }
}
