//! The result of a run: [`Report`], its JSON form (schema
//! `ferrocorn-bench/1`, documented in the crate root) and its human summary
//! (wrk-like, plus percentiles).

use std::fmt::Write as _;

use crate::stats::{ErrorCounts, Stats};

/// Schema identifier written as the `schema` key of the JSON report.
pub const SCHEMA: &str = "ferrocorn-bench/1";

/// Latency summary in microseconds (all zero when no request completed).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Smallest latency.
    pub min: u64,
    /// Mean latency.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest latency.
    pub max: u64,
    /// Standard deviation.
    pub stdev: f64,
}

/// Everything measured in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The URL as given.
    pub url: String,
    /// Request method.
    pub method: String,
    /// Connections used.
    pub connections: usize,
    /// Load threads used.
    pub threads: usize,
    /// Length of the measured window in seconds (warm-up excluded).
    pub duration_s: f64,
    /// Warm-up length in seconds (not measured).
    pub warmup_s: f64,
    /// Completed responses in the measured window (any status).
    pub requests: u64,
    /// `requests / duration_s`.
    pub rps: f64,
    /// Bytes read (response heads and bodies) in the measured window.
    pub bytes: u64,
    /// `bytes / duration_s`.
    pub transfer_bytes_per_s: f64,
    /// Latency summary.
    pub latency_us: Latency,
    /// Response counts by status code, ascending.
    pub status: Vec<(u16, u64)>,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Responses whose status is not 2xx or 3xx (also included in `status`).
    pub non_2xx_3xx: u64,
    /// Open-loop target rate (req/s), `None` for closed loop.
    pub rate: Option<f64>,
}

/// Run parameters echoed into the report.
pub(crate) struct Echo<'a> {
    pub url: &'a str,
    pub method: &'a str,
    pub connections: usize,
    pub threads: usize,
    pub warmup_s: f64,
    pub rate: Option<f64>,
}

fn round3(x: f64) -> f64 {
    if x.is_finite() { (x * 1000.0).round() / 1000.0 } else { 0.0 }
}

impl Report {
    /// Builds the report from merged stats and the measured window length.
    pub(crate) fn from_stats(echo: Echo<'_>, stats: &Stats, duration_s: f64) -> Report {
        let h = &stats.hist;
        let latency_us = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                min: h.min(),
                mean: round3(h.mean()),
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p95: h.value_at_quantile(0.95),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
                stdev: round3(h.stdev()),
            }
        };
        let status = stats.status_counts();
        let non_2xx_3xx =
            status.iter().filter(|(c, _)| !(200..400).contains(c)).map(|(_, n)| n).sum();
        let per_s = |x: u64| if duration_s > 0.0 { round3(x as f64 / duration_s) } else { 0.0 };
        Report {
            url: echo.url.to_string(),
            method: echo.method.to_string(),
            connections: echo.connections,
            threads: echo.threads,
            duration_s: round3(duration_s),
            warmup_s: round3(echo.warmup_s),
            requests: stats.requests,
            rps: per_s(stats.requests),
            bytes: stats.bytes,
            transfer_bytes_per_s: per_s(stats.bytes),
            latency_us,
            status,
            errors: stats.errors,
            non_2xx_3xx,
            rate: echo.rate,
        }
    }

    /// The JSON report: exactly one object, keys in the documented order.
    pub fn to_json(&self) -> String {
        let l = &self.latency_us;
        let e = &self.errors;
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "{{\"schema\":{},\"url\":{},\"method\":{},\"connections\":{},\"threads\":{},\
             \"duration_s\":{},\"warmup_s\":{},\"requests\":{},\"rps\":{},\"bytes\":{},\
             \"transfer_bytes_per_s\":{},\"latency_us\":{{\"min\":{},\"mean\":{},\"p50\":{},\
             \"p90\":{},\"p95\":{},\"p99\":{},\"p999\":{},\"max\":{},\"stdev\":{}}},\"status\":{{",
            json_str(SCHEMA),
            json_str(&self.url),
            json_str(&self.method),
            self.connections,
            self.threads,
            json_f64(self.duration_s),
            json_f64(self.warmup_s),
            self.requests,
            json_f64(self.rps),
            self.bytes,
            json_f64(self.transfer_bytes_per_s),
            l.min,
            json_f64(l.mean),
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            l.p999,
            l.max,
            json_f64(l.stdev),
        );
        for (i, (code, n)) in self.status.iter().enumerate() {
            let _ = write!(s, "{}\"{code}\":{n}", if i == 0 { "" } else { "," });
        }
        let _ = write!(
            s,
            "}},\"errors\":{{\"connect\":{},\"read\":{},\"write\":{},\"timeout\":{}}},\
             \"non_2xx_3xx\":{},\"rate\":{}}}",
            e.connect,
            e.read,
            e.write,
            e.timeout,
            self.non_2xx_3xx,
            self.rate.map_or("null".to_string(), json_f64),
        );
        s
    }

    /// The human summary (multi-line, ends with a newline).
    pub fn to_text(&self) -> String {
        let l = &self.latency_us;
        let mut s = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s, latency from intended send time"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(s, "{} {} ({mode})", self.method, self.url);
        let _ = writeln!(s, "  {} threads and {} connections", self.threads, self.connections);
        let _ = writeln!(
            s,
            "  Latency   min {}  mean {}  stdev {}  max {}",
            us(l.min as f64),
            us(l.mean),
            us(l.stdev),
            us(l.max as f64)
        );
        let _ = writeln!(s, "  Latency distribution");
        for (name, v) in
            [("50%", l.p50), ("90%", l.p90), ("95%", l.p95), ("99%", l.p99), ("99.9%", l.p999)]
        {
            let _ = writeln!(s, "    {name:>6}  {}", us(v as f64));
        }
        let _ = writeln!(
            s,
            "  {} requests in {:.2}s, {} read{}",
            self.requests,
            self.duration_s,
            human_bytes(self.bytes as f64),
            if self.warmup_s > 0.0 {
                format!(" (after {:.2}s warm-up)", self.warmup_s)
            } else {
                String::new()
            }
        );
        let codes: Vec<String> = self.status.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        if !codes.is_empty() {
            let _ = writeln!(s, "  Status codes: {}", codes.join(", "));
        }
        if self.non_2xx_3xx > 0 {
            let _ = writeln!(s, "  Non-2xx or 3xx responses: {}", self.non_2xx_3xx);
        }
        let e = &self.errors;
        if e.total() > 0 {
            let _ = writeln!(
                s,
                "  Socket errors: connect {}, read {}, write {}, timeout {}",
                e.connect, e.read, e.write, e.timeout
            );
        }
        let _ = writeln!(s, "Requests/sec: {:>10.2}", self.rps);
        let _ = writeln!(s, "Transfer/sec: {:>10}", human_bytes(self.transfer_bytes_per_s));
        s
    }
}

/// Formats microseconds like wrk: `812.00us`, `1.25ms`, `2.10s`.
pub(crate) fn us(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.2}us")
    } else if v < 1_000_000.0 {
        format!("{:.2}ms", v / 1000.0)
    } else {
        format!("{:.2}s", v / 1_000_000.0)
    }
}

fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", UNITS[i])
}

fn json_f64(x: f64) -> String {
    // Rust's `Display` for f64 never uses exponents, so this is valid JSON.
    if x.is_finite() { format!("{x}") } else { "0".to_string() }
}

fn json_str(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(us(812.0), "812.00us");
        assert_eq!(us(1250.0), "1.25ms");
        assert_eq!(us(2_100_000.0), "2.10s");
        assert_eq!(human_bytes(2048.0), "2.00KB");
        assert_eq!(json_str("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
        assert_eq!(json_f64(1e21), "1000000000000000000000");
    }
}
