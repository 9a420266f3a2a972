//! Plain-text rendering of control-socket replies: number formatting, the
//! worker table and the `status` summary shared by `ctl` and `top`.

use serde_json::{Map, Value};

/// The restart causes in the order they are shown; unknown ones follow.
const RESTART_ORDER: [&str; 6] = ["max_requests", "timeout", "memory", "crash", "reload", "scale"];

/// Column alignment in a [`Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A simple fixed-width text table.
pub(crate) struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[(&'static str, Align)]) -> Self {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub(crate) fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Renders header and rows, two spaces between columns, no trailing
    /// whitespace.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut widths: Vec<usize> = self.headers.iter().map(|(h, _)| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let fmt_row = |cells: Vec<&str>| -> String {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let width = widths.get(i).copied().unwrap_or(0);
                let align = self.headers.get(i).map_or(Align::Left, |h| h.1);
                let pad = width.saturating_sub(cell.chars().count());
                if align == Align::Right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line.trim_end().to_owned()
        };
        let mut out = vec![fmt_row(self.headers.iter().map(|(h, _)| *h).collect())];
        for row in &self.rows {
            out.push(fmt_row(row.iter().map(String::as_str).collect()));
        }
        out
    }
}

/// Reads an unsigned integer field (accepting integral floats).
pub(crate) fn get_u64(v: &Value, key: &str) -> Option<u64> {
    let field = v.get(key)?;
    field
        .as_u64()
        .or_else(|| field.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
}

/// Reads a signed integer field.
pub(crate) fn get_i64(v: &Value, key: &str) -> Option<i64> {
    v.get(key)?.as_i64()
}

/// Reads a numeric field as `f64`; `null` and absence give `None`.
pub(crate) fn get_f64(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64()
}

/// Reads a string field.
pub(crate) fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// The `workers` array of a reply (empty when absent).
pub(crate) fn workers(v: &Value) -> &[Value] {
    v.get("workers").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Formats an optional count, `-` when missing.
pub(crate) fn fmt_count(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// Formats a latency in milliseconds, `-` when unknown.
pub(crate) fn fmt_ms(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if !ms.is_finite() => "-".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.2}"),
        Some(ms) if ms < 1000.0 => format!("{ms:.1}"),
        Some(ms) => format!("{ms:.0}"),
    }
}

/// Formats a latency with its unit, for summary lines.
pub(crate) fn fmt_ms_unit(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms.is_finite() => format!("{} ms", fmt_ms(Some(ms))),
        _ => "-".to_owned(),
    }
}

/// Formats a byte count as MiB with one decimal.
pub(crate) fn fmt_mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".to_owned(), |b| format!("{:.1}", b as f64 / (1024.0 * 1024.0)))
}

/// Formats CPU seconds.
pub(crate) fn fmt_cpu(secs: Option<f64>) -> String {
    match secs {
        Some(s) if s.is_finite() => format!("{s:.2}"),
        _ => "-".to_owned(),
    }
}

/// Formats a rate (requests per second).
pub(crate) fn fmt_rate(rps: Option<f64>) -> String {
    match rps {
        Some(r) if r.is_finite() => format!("{r:.1}"),
        _ => "-".to_owned(),
    }
}

/// Formats a duration in seconds compactly: `42s`, `3m05s`, `1h02m`, `2d03h`.
pub(crate) fn fmt_duration(secs: Option<f64>) -> String {
    let Some(secs) = secs.filter(|s| s.is_finite() && *s >= 0.0) else {
        return "-".to_owned();
    };
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `max_requests 0, timeout 0, ...` from the `restarts` object.
pub(crate) fn fmt_restarts(status: &Value) -> String {
    let Some(map) = status.get("restarts").and_then(Value::as_object) else {
        return "-".to_owned();
    };
    let cell = |map: &Map<String, Value>, key: &str| -> Option<String> {
        map.get(key).map(|v| match v.as_u64() {
            Some(n) => format!("{key} {n}"),
            None => format!("{key} {v}"),
        })
    };
    let mut parts: Vec<String> = RESTART_ORDER.iter().filter_map(|k| cell(map, k)).collect();
    parts.extend(
        map.keys().filter(|k| !RESTART_ORDER.contains(&k.as_str())).filter_map(|k| cell(map, k)),
    );
    if parts.is_empty() { "-".to_owned() } else { parts.join(", ") }
}

/// The worker table used by `ctl workers` and `ctl status`.
pub(crate) fn worker_table(workers: &[Value]) -> Vec<String> {
    use Align::{Left, Right};
    if workers.is_empty() {
        return vec!["(no workers)".to_owned()];
    }
    let mut table = Table::new(&[
        ("PID", Right),
        ("STATE", Left),
        ("AGE", Right),
        ("REQUESTS", Right),
        ("IN-FLIGHT", Right),
        ("CONNS", Right),
        ("RSS MiB", Right),
        ("CPU s", Right),
        ("P50 ms", Right),
        ("P99 ms", Right),
        ("UPTIME", Right),
    ]);
    for w in workers {
        table.push(vec![
            get_i64(w, "pid").map_or_else(|| "-".to_owned(), |p| p.to_string()),
            get_str(w, "state").unwrap_or("-").to_owned(),
            fmt_count(get_u64(w, "age")),
            fmt_count(get_u64(w, "requests")),
            fmt_count(get_u64(w, "in_flight")),
            fmt_count(get_u64(w, "open_connections")),
            fmt_mib(get_u64(w, "rss_bytes")),
            fmt_cpu(get_f64(w, "cpu_seconds")),
            fmt_ms(get_f64(w, "p50_ms")),
            fmt_ms(get_f64(w, "p99_ms")),
            fmt_duration(get_f64(w, "uptime_seconds")),
        ]);
    }
    table.lines()
}

/// The human rendering of a `status` reply: summary lines, a blank line and
/// the worker table.
pub(crate) fn status_lines(status: &Value) -> Vec<String> {
    let totals = status.get("totals").unwrap_or(&Value::Null);
    let live = workers(status).len();
    let mut lines = vec![
        format!(
            "ferrocorn {} (pid {}), up {}",
            get_str(status, "version").unwrap_or("?"),
            get_i64(status, "pid").map_or_else(|| "?".to_owned(), |p| p.to_string()),
            fmt_duration(get_f64(status, "uptime_seconds")),
        ),
        format!("workers:  {live} live / {} target", fmt_count(get_u64(status, "workers_target"))),
        format!(
            "requests: {} total, {} in flight, {} exceptions; p50 {}, p99 {}",
            fmt_count(get_u64(totals, "requests")),
            fmt_count(get_u64(totals, "in_flight")),
            fmt_count(get_u64(totals, "exceptions")),
            fmt_ms_unit(get_f64(totals, "p50_ms")),
            fmt_ms_unit(get_f64(totals, "p99_ms")),
        ),
        format!("restarts: {}", fmt_restarts(status)),
        String::new(),
    ];
    lines.extend(worker_table(workers(status)));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Some(3.25)), "3.2s");
        assert_eq!(fmt_duration(Some(42.0)), "42s");
        assert_eq!(fmt_duration(Some(185.0)), "3m05s");
        assert_eq!(fmt_duration(Some(3720.0)), "1h02m");
        assert_eq!(fmt_duration(Some(2.0 * 86400.0 + 3.0 * 3600.0)), "2d03h");
        assert_eq!(fmt_duration(None), "-");
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_ms(None), "-");
        assert_eq!(fmt_ms(Some(1.0)), "1.00");
        assert_eq!(fmt_ms(Some(25.55)), "25.6");
        assert_eq!(fmt_mib(Some(12 * 1024 * 1024 + 512 * 1024)), "12.5");
        assert_eq!(fmt_rate(Some(50.0)), "50.0");
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(&[("PID", Align::Right), ("STATE", Align::Left)]);
        t.push(vec!["12345".into(), "idle".into()]);
        t.push(vec!["7".into(), "busy".into()]);
        assert_eq!(t.lines(), vec!["  PID  STATE", "12345  idle", "    7  busy"]);
    }

    #[test]
    fn restarts_order() {
        let v: Value = serde_json::json!({"restarts": {"crash": 2, "timeout": 1, "zzz": 3}});
        assert_eq!(fmt_restarts(&v), "timeout 1, crash 2, zzz 3");
    }
}
