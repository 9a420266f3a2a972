//! The live progress line (drawn only when stdout is a terminal and the output
//! is not JSON): one line redrawn with `\r` every 250 ms by the main thread
//! while the load threads run.

use std::io::Write;
use std::time::{Duration, Instant};

/// Width of the bar in characters.
const WIDTH: usize = 30;

/// Builds one progress line. `elapsed` counts from the start of the load,
/// `done` is completed measured requests so far.
pub fn line(
    elapsed: Duration,
    warmup: Duration,
    duration: Option<Duration>,
    requests: Option<u64>,
    done: u64,
) -> String {
    if elapsed < warmup {
        return format!("warming up {:.1}s/{:.1}s", elapsed.as_secs_f64(), warmup.as_secs_f64());
    }
    let measured = (elapsed - warmup).as_secs_f64();
    let frac_t = duration.map(|d| measured / d.as_secs_f64().max(1e-9));
    let frac_n = requests.map(|n| done as f64 / (n.max(1) as f64));
    let frac = frac_t.into_iter().chain(frac_n).fold(0.0f64, f64::max).clamp(0.0, 1.0);
    let filled = (frac * WIDTH as f64) as usize;
    let bar: String = (0..WIDTH)
        .map(|i| {
            if i < filled {
                '='
            } else if i == filled {
                '>'
            } else {
                ' '
            }
        })
        .collect();
    let rps = if measured > 0.0 { done as f64 / measured } else { 0.0 };
    let target = match (requests, duration) {
        (Some(n), _) => format!("{done}/{n} req"),
        (None, Some(d)) => format!("{done} req, {measured:.1}s/{:.1}s", d.as_secs_f64()),
        (None, None) => format!("{done} req"),
    };
    format!("[{bar}] {:>3.0}%  {target}  {rps:.0} req/s", frac * 100.0)
}

/// Draws progress on stdout until `finished()` is true.
pub fn draw_until(
    t0: Instant,
    warmup: Duration,
    duration: Option<Duration>,
    requests: Option<u64>,
    done: impl Fn() -> u64,
    finished: impl Fn() -> bool,
) {
    let mut out = std::io::stdout();
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    while !finished() {
        if last_draw.elapsed() >= Duration::from_millis(250) {
            last_draw = Instant::now();
            let l = line(t0.elapsed(), warmup, duration, requests, done());
            let _ = write!(out, "\r\x1b[2K{l}");
            let _ = out.flush();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = write!(out, "\r\x1b[2K");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let s = |e| {
            line(
                Duration::from_secs(e),
                Duration::from_secs(1),
                Some(Duration::from_secs(4)),
                None,
                100,
            )
        };
        assert_eq!(s(0), "warming up 0.0s/1.0s");
        assert!(s(3).contains(" 50%"), "{}", s(3));
        assert!(s(3).contains("100 req, 2.0s/4.0s"));
        let n = line(Duration::from_secs(1), Duration::ZERO, None, Some(400), 100);
        assert!(n.contains(" 25%") && n.contains("100/400 req"), "{n}");
    }
}
