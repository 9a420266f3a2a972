//! Active health checks: the check's spec (`GET /healthz interval=2s timeout=1s fall=3 rise=2
//! expect=200-399 host=NAME`) and the per-peer state machine fed by its results, HAProxy's
//! `fall`/`rise` counting with an `Unknown` start that the first result settles.

use std::fmt;
use std::time::Duration;

use crate::time::{DurationError, parse_duration};

/// The form of a health check spec, quoted by errors.
pub const HEALTH_FORM: &str =
    "[METHOD] [/path] [interval=T] [timeout=T] [fall=N] [rise=N] [expect=LO-HI] [host=NAME]";

/// How to probe every peer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// HTTP method (default `GET`).
    pub method: String,
    /// Request target (default `/`).
    pub path: String,
    /// Time between checks of one peer (default 2 s).
    pub interval: Duration,
    /// Time a check may take before it counts as failed (default 1 s).
    pub timeout: Duration,
    /// Consecutive failures that take an up peer down (default 3).
    pub fall: u32,
    /// Consecutive passes that bring a down peer up (default 2).
    pub rise: u32,
    /// Statuses that pass, inclusive (default 200-399).
    pub expect: (u16, u16),
    /// `Host` header to send (default: the peer's address).
    pub host: Option<String>,
}

impl Default for HealthCheckSpec {
    fn default() -> HealthCheckSpec {
        HealthCheckSpec {
            method: "GET".to_string(),
            path: "/".to_string(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            expect: (200, 399),
            host: None,
        }
    }
}

impl HealthCheckSpec {
    /// Parses `[METHOD] [/path] [interval=T] [timeout=T] [fall=N] [rise=N] [expect=LO-HI]
    /// [host=NAME]`; `expect=200` stands for `200-200`.
    pub fn parse(s: &str) -> Result<HealthCheckSpec, HealthError> {
        let mut spec = HealthCheckSpec::default();
        let mut words = s.split_whitespace().peekable();
        if let Some(method) = words.next_if(|w| !w.contains('=') && !w.starts_with('/')) {
            if !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(HealthError::Method { value: method.to_string() });
            }
            spec.method = method.to_string();
        }
        if let Some(path) = words.next_if(|w| w.starts_with('/')) {
            spec.path = path.to_string();
        }
        let mut seen: Vec<&str> = Vec::new();
        for word in words {
            let Some((name, value)) = word.split_once('=') else {
                return Err(HealthError::UnknownParam { param: word.to_string() });
            };
            let Some(name) = PARAMS.iter().copied().find(|p| *p == name) else {
                return Err(HealthError::UnknownParam { param: word.to_string() });
            };
            if seen.contains(&name) {
                return Err(HealthError::Duplicate { param: name });
            }
            seen.push(name);
            let invalid = |expected| HealthError::InvalidValue {
                param: name,
                value: value.to_string(),
                expected,
            };
            let duration = || match parse_duration(value) {
                Ok(d) if d.is_zero() => Err(invalid("a duration above zero, e.g. 2s")),
                Ok(d) => Ok(d),
                Err(source) => Err(HealthError::InvalidDuration {
                    param: name,
                    value: value.to_string(),
                    source,
                }),
            };
            let count = || match value.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(invalid("an integer >= 1")),
            };
            match name {
                "interval" => spec.interval = duration()?,
                "timeout" => spec.timeout = duration()?,
                "fall" => spec.fall = count()?,
                "rise" => spec.rise = count()?,
                "expect" => {
                    spec.expect = parse_expect(value)
                        .ok_or_else(|| invalid("a status or range within 100-599, e.g. 200-399"))?;
                }
                "host" if !value.is_empty() => spec.host = Some(value.to_string()),
                "host" => return Err(invalid("a host name")),
                _ => unreachable!("every entry of PARAMS is handled"),
            }
        }
        Ok(spec)
    }

    /// Whether a response status passes the check.
    pub fn passes(&self, status: u16) -> bool {
        (self.expect.0..=self.expect.1).contains(&status)
    }
}

const PARAMS: [&str; 6] = ["interval", "timeout", "fall", "rise", "expect", "host"];

fn parse_expect(value: &str) -> Option<(u16, u16)> {
    let (lo, hi) = value.split_once('-').unwrap_or((value, value));
    let (lo, hi) = (lo.parse::<u16>().ok()?, hi.parse::<u16>().ok()?);
    (100 <= lo && lo <= hi && hi <= 599).then_some((lo, hi))
}

/// A health check spec that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthError {
    /// The method is not an upper-case HTTP token.
    Method {
        /// The word as given.
        value: String,
    },
    /// A word that is not one of the known parameters.
    UnknownParam {
        /// The word as given.
        param: String,
    },
    /// A parameter given twice.
    Duplicate {
        /// Its name.
        param: &'static str,
    },
    /// A value of the wrong form or out of range.
    InvalidValue {
        /// The parameter's name.
        param: &'static str,
        /// The value as given.
        value: String,
        /// The form it must take.
        expected: &'static str,
    },
    /// A duration parameter whose value is not a duration.
    InvalidDuration {
        /// The parameter's name.
        param: &'static str,
        /// The value as given.
        value: String,
        /// Why it is not a duration.
        source: DurationError,
    },
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthError::Method { value } => write!(
                f,
                "invalid health check method {value:?}: expected an upper-case HTTP method such as GET or HEAD; form {HEALTH_FORM}"
            ),
            HealthError::UnknownParam { param } => {
                write!(f, "unknown health check parameter {param:?}: expected {HEALTH_FORM}")
            }
            HealthError::Duplicate { param } => {
                write!(f, "health check parameter {param} given twice: expected it at most once")
            }
            HealthError::InvalidValue { param, value, expected } => {
                write!(f, "invalid {param}={value}: expected {expected}")
            }
            HealthError::InvalidDuration { param, value, source } => {
                write!(f, "invalid {param}={value}: {source}")
            }
        }
    }
}

impl std::error::Error for HealthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HealthError::InvalidDuration { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What the active checks say about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HealthState {
    /// No check result yet.
    #[default]
    Unknown,
    /// Passing.
    Up,
    /// Failing.
    Down,
}

/// One peer's health: its state and the run of results that disagree with it.
///
/// From `Unknown`, the first result decides at once (pass: `Up`, fail: `Down`), so a proxy can
/// run one round of checks before serving. From `Up`, `fall` consecutive failures make it
/// `Down`; from `Down`, `rise` consecutive passes make it `Up`. A result that agrees with the
/// state resets the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthTracker {
    state: HealthState,
    streak: u32,
}

impl HealthTracker {
    /// A tracker in the `Unknown` state.
    pub fn new() -> HealthTracker {
        HealthTracker::default()
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Consecutive results so far that disagree with the state.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Takes `state` as decided by another checker (the instance's one prober, which counts
    /// `fall` and `rise` itself); returns the new state when it changed. `Unknown` is ignored:
    /// a checker that has not decided yet says nothing.
    pub fn adopt(&mut self, state: HealthState) -> Option<HealthState> {
        if state == HealthState::Unknown || state == self.state {
            return None;
        }
        self.state = state;
        self.streak = 0;
        Some(state)
    }

    /// Records one check result; returns the new state when it changed.
    pub fn observe(&mut self, passed: bool, rise: u32, fall: u32) -> Option<HealthState> {
        let target = if passed { HealthState::Up } else { HealthState::Down };
        if self.state == target {
            self.streak = 0;
            return None;
        }
        let needed = match self.state {
            HealthState::Unknown => 1,
            HealthState::Up => fall.max(1),
            HealthState::Down => rise.max(1),
        };
        self.streak += 1;
        if self.streak < needed {
            return None;
        }
        self.state = target;
        self.streak = 0;
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_spec_and_defaults() {
        let s = HealthCheckSpec::parse(
            "HEAD /healthz interval=5s timeout=500ms fall=4 rise=1 expect=200 host=app.local",
        )
        .unwrap();
        assert_eq!((s.method.as_str(), s.path.as_str()), ("HEAD", "/healthz"));
        assert_eq!((s.interval, s.timeout), (Duration::from_secs(5), Duration::from_millis(500)));
        assert_eq!((s.fall, s.rise, s.expect), (4, 1, (200, 200)));
        assert_eq!(s.host.as_deref(), Some("app.local"));
        assert_eq!(HealthCheckSpec::parse("").unwrap(), HealthCheckSpec::default());
        let p = HealthCheckSpec::parse("/ping expect=200-299").unwrap();
        assert_eq!((p.method.as_str(), p.path.as_str(), p.expect), ("GET", "/ping", (200, 299)));
        assert!(p.passes(204) && !p.passes(301));
    }

    #[test]
    fn errors_name_the_parameter() {
        let table: &[(&str, &str)] = &[
            ("get /", "\"get\""),
            ("GET / interval=abc", "interval=abc"),
            ("GET / timeout=0", "timeout=0"),
            ("GET / fall=0", "fall=0"),
            ("GET / rise=x", "rise=x"),
            ("GET / expect=399-200", "expect=399-200"),
            ("GET / expect=99", "expect=99"),
            ("GET / port=80", "\"port=80\""),
            ("GET / fall=2 fall=3", "fall given twice"),
            ("GET / extra", "\"extra\""),
        ];
        for (input, needle) in table {
            let e = HealthCheckSpec::parse(input).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("expected"), "{input}: {e}");
        }
    }

    #[test]
    fn an_adopted_verdict_replaces_the_state_and_the_run() {
        let mut t = HealthTracker::new();
        assert_eq!(t.adopt(HealthState::Unknown), None);
        assert_eq!(t.adopt(HealthState::Up), Some(HealthState::Up));
        t.observe(false, 2, 3);
        assert_eq!(t.streak(), 1);
        assert_eq!(t.adopt(HealthState::Up), None, "the same verdict changes nothing");
        assert_eq!(t.adopt(HealthState::Down), Some(HealthState::Down));
        assert_eq!((t.state(), t.streak()), (HealthState::Down, 0));
        assert_eq!(t.adopt(HealthState::Unknown), None);
        assert_eq!(t.state(), HealthState::Down);
    }

    #[test]
    fn first_result_decides() {
        let mut t = HealthTracker::new();
        assert_eq!(t.observe(true, 2, 3), Some(HealthState::Up));
        let mut t = HealthTracker::new();
        assert_eq!(t.observe(false, 2, 3), Some(HealthState::Down));
    }

    #[test]
    fn fall_and_rise_count_consecutive_results() {
        use HealthState::{Down, Up};
        let mut t = HealthTracker::new();
        t.observe(true, 2, 3);
        // (passed, state after)
        let steps: &[(bool, HealthState)] = &[
            (false, Up),
            (false, Up),
            (true, Up), // agreeing result resets the run of failures
            (false, Up),
            (false, Up),
            (false, Down), // third in a row
            (true, Down),
            (false, Down), // resets the run of passes
            (true, Down),
            (true, Up),
        ];
        for (i, (passed, state)) in steps.iter().enumerate() {
            t.observe(*passed, 2, 3);
            assert_eq!(t.state(), *state, "step {i}");
        }
    }
}
