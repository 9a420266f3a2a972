//! nginx's time syntax for the balancer's settings (`fail_timeout=10s`, `slow_start=1m30s`,
//! `interval=500ms`): a number with a unit, several such parts from the largest unit down, and a
//! bare trailing number counted in seconds.

use std::fmt;
use std::time::Duration;

/// The units accepted, largest first, with their length in milliseconds. A unit may appear once
/// and only after every larger one (`1h30m`, not `30m1h`), as nginx requires.
const UNITS: [(&str, u64); 8] = [
    ("y", 365 * 86_400_000),
    ("M", 30 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// The form a duration must take, quoted by every error.
pub const DURATION_FORM: &str = "a number with an optional unit (ms, s, m, h, d, w, M, y), e.g. 30s, 500ms, 1m30s; a bare number is seconds";

/// A duration that does not follow nginx's time syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?} ({}): expected {DURATION_FORM}", self.input, self.reason)
    }
}

impl std::error::Error for DurationError {}

/// Parses nginx's time forms: `30s`, `1m`, `500ms`, `2h`, `1d`, `1m30s`, `1h 30m`, and a bare
/// number (`10`) meaning seconds. Parts go from the largest unit down, each unit once.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError { input: s.to_string(), reason };
    let bytes = s.trim().as_bytes();
    if bytes.is_empty() {
        return Err(err("empty"));
    }
    let mut total_ms: u64 = 0;
    let mut next_unit = 0; // index into UNITS of the largest unit still allowed
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(err("a unit without a number before it"));
        }
        let value: u64 = s.trim()[start..i].parse().map_err(|_| err("number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s.trim()[unit_start..i];
        let scale = if unit.is_empty() {
            // A bare number: seconds, and it must be the last part.
            if i < bytes.len() && !bytes[i..].iter().all(|b| *b == b' ') {
                return Err(err("a bare number must be the last part"));
            }
            if next_unit > 7 {
                return Err(err("seconds after milliseconds"));
            }
            next_unit = UNITS.len();
            1_000
        } else {
            let Some(pos) = UNITS.iter().position(|(name, _)| *name == unit) else {
                return Err(err("unknown unit"));
            };
            if pos < next_unit {
                return Err(err("units must go from the largest down, each once"));
            }
            next_unit = pos + 1;
            UNITS[pos].1
        };
        let part = value.checked_mul(scale).ok_or_else(|| err("too large"))?;
        total_ms = total_ms.checked_add(part).ok_or_else(|| err("too large"))?;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let table: &[(&str, u64)] = &[
            ("30s", 30_000),
            ("1m", 60_000),
            ("500ms", 500),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("10", 10_000),
            ("0", 0),
            ("1m30s", 90_000),
            ("1m30", 90_000),
            ("1h 30m", 5_400_000),
            ("1s500ms", 1_500),
            ("1w", 604_800_000),
            ("1M", 2_592_000_000),
            ("1y", 31_536_000_000),
            (" 5s ", 5_000),
        ];
        for (input, ms) in table {
            assert_eq!(parse_duration(input), Ok(Duration::from_millis(*ms)), "{input}");
        }
    }

    #[test]
    fn rejected_forms() {
        for input in [
            "",
            "abc",
            "s",
            "10x",
            "30m1h",
            "1s1s",
            "1.5s",
            "-1s",
            "10 5",
            "5ms3",
            "99999999999999999999",
        ] {
            let e = parse_duration(input).unwrap_err();
            assert_eq!(e.input, input);
            assert!(e.to_string().contains("expected a number with an optional unit"), "{e}");
        }
    }
}
