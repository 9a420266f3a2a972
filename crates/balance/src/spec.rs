//! One upstream server as configured: `ADDR [weight=N] [max_fails=N] [fail_timeout=T]
//! [max_conns=N] [backup] [down] [slow_start=T] [error_limit=N]`, nginx's `server` line inside an
//! `upstream` block plus HAProxy's `slowstart` and `error-limit`.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::time::{DurationError, parse_duration};

/// The largest `weight=` accepted. The consistent-hash ring holds 160 points per weight unit, so
/// the weight is bounded to keep the ring small; HAProxy's own limit is 256.
pub const MAX_WEIGHT: u32 = 10_000;

/// The form of a spec, quoted by errors.
pub const SPEC_FORM: &str = "ADDR [weight=N] [max_fails=N] [fail_timeout=T] [max_conns=N] [backup] [down] [slow_start=T] [error_limit=N]";

/// The form of an address, quoted by errors.
pub const ADDR_FORM: &str = "HOST:PORT, [IPv6]:PORT or unix:/path";

/// Where an upstream listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpstreamAddr {
    /// A TCP address; `host` is an IP address (IPv6 without brackets) or a name to resolve.
    Tcp {
        /// IP address or host name.
        host: String,
        /// TCP port, never 0.
        port: u16,
    },
    /// A Unix domain socket.
    Unix(PathBuf),
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            UpstreamAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            UpstreamAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl UpstreamAddr {
    /// Parses `HOST:PORT`, `[IPv6]:PORT` or `unix:/path`.
    pub fn parse(s: &str) -> Result<UpstreamAddr, SpecError> {
        let bad = |reason| SpecError::Addr { input: s.to_string(), reason };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("the socket path is empty"));
            }
            return Ok(UpstreamAddr::Unix(PathBuf::from(path)));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((v6, after)) = rest.split_once(']') else {
                return Err(bad("no closing ']'"));
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address inside the brackets"));
            }
            let Some(port) = after.strip_prefix(':') else {
                return Err(bad("the port is missing"));
            };
            (v6, port)
        } else {
            let Some((host, port)) = s.rsplit_once(':') else {
                return Err(bad("the port is missing"));
            };
            if host.contains(':') {
                return Err(bad("an IPv6 address must be in brackets"));
            }
            let host_ok = !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !host_ok {
                return Err(bad("the host is not an IP address or a host name"));
            }
            (host, port)
        };
        match port.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad("the port is not a number from 1 to 65535")),
            Ok(port) => Ok(UpstreamAddr::Tcp { host: host.to_string(), port }),
        }
    }
}

/// One upstream server and its balancing parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Where it listens.
    pub addr: UpstreamAddr,
    /// Share of requests, 1 to [`MAX_WEIGHT`] (default 1).
    pub weight: u32,
    /// Failed attempts within `fail_timeout` that take it out (default 1; 0 = no accounting).
    pub max_fails: u32,
    /// The window failures are counted in, and how long a failed server stays out (default 10 s).
    pub fail_timeout: Duration,
    /// Most requests in flight to it at once (0 = unlimited).
    pub max_conns: u32,
    /// Used only when no primary server can take the request.
    pub backup: bool,
    /// Never used.
    pub down: bool,
    /// How long its weight ramps up after it comes back (0 = off).
    pub slow_start: Duration,
    /// Consecutive 5xx answers that mark it failed as `max_fails` failures would, HAProxy's
    /// `observe layer7` with `error-limit` (0 = off).
    pub error_limit: u32,
}

impl UpstreamSpec {
    /// A spec for `addr` with every parameter at its default.
    pub fn new(addr: UpstreamAddr) -> UpstreamSpec {
        UpstreamSpec {
            addr,
            weight: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            max_conns: 0,
            backup: false,
            down: false,
            slow_start: Duration::ZERO,
            error_limit: 0,
        }
    }

    /// Parses `ADDR [weight=N] [max_fails=N] [fail_timeout=T] [max_conns=N] [backup] [down]
    /// [slow_start=T] [error_limit=N]`, parameters separated by white space, each at most once.
    pub fn parse(s: &str) -> Result<UpstreamSpec, SpecError> {
        let mut words = s.split_whitespace();
        let addr = words.next().ok_or(SpecError::Empty)?;
        let mut spec = UpstreamSpec::new(UpstreamAddr::parse(addr)?);
        let mut seen: Vec<&str> = Vec::new();
        for word in words {
            let (name, value) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (word, None),
            };
            let Some(known) = PARAMS.iter().find(|p| p.name == name) else {
                return Err(SpecError::UnknownParam { param: word.to_string() });
            };
            if seen.contains(&known.name) {
                return Err(SpecError::Duplicate { param: known.name });
            }
            seen.push(known.name);
            match (known.flag, value) {
                (true, Some(_)) => return Err(SpecError::FlagWithValue { param: known.name }),
                (false, None) => {
                    return Err(SpecError::MissingValue {
                        param: known.name,
                        expected: known.form,
                    });
                }
                _ => {}
            }
            let value = value.unwrap_or("");
            let invalid = || SpecError::InvalidValue {
                param: known.name,
                value: value.to_string(),
                expected: known.form,
            };
            let number = || value.parse::<u32>().map_err(|_| invalid());
            let duration = || {
                parse_duration(value).map_err(|source| SpecError::InvalidDuration {
                    param: known.name,
                    value: value.to_string(),
                    source,
                })
            };
            match known.name {
                "weight" => {
                    spec.weight = number()?;
                    if spec.weight == 0 || spec.weight > MAX_WEIGHT {
                        return Err(invalid());
                    }
                }
                "max_fails" => spec.max_fails = number()?,
                "fail_timeout" => spec.fail_timeout = duration()?,
                "max_conns" => spec.max_conns = number()?,
                "backup" => spec.backup = true,
                "down" => spec.down = true,
                "slow_start" => spec.slow_start = duration()?,
                "error_limit" => spec.error_limit = number()?,
                _ => unreachable!("every entry of PARAMS is handled"),
            }
        }
        Ok(spec)
    }
}

/// A known parameter: its name, whether it is a bare flag, and the form of its value.
struct Param {
    name: &'static str,
    flag: bool,
    form: &'static str,
}

const PARAMS: [Param; 8] = [
    Param { name: "weight", flag: false, form: "an integer from 1 to 10000" },
    Param { name: "max_fails", flag: false, form: "an integer >= 0 (0 = no failure accounting)" },
    Param { name: "fail_timeout", flag: false, form: "a duration such as 10s" },
    Param { name: "max_conns", flag: false, form: "an integer >= 0 (0 = unlimited)" },
    Param { name: "backup", flag: true, form: "no value" },
    Param { name: "down", flag: true, form: "no value" },
    Param { name: "slow_start", flag: false, form: "a duration such as 30s (0 = off)" },
    Param { name: "error_limit", flag: false, form: "an integer >= 0 (0 = off)" },
];

/// An upstream spec that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// Nothing was given.
    Empty,
    /// The address is malformed.
    Addr {
        /// The address as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A parameter that is not one of the known ones.
    UnknownParam {
        /// The word as given.
        param: String,
    },
    /// A parameter given twice.
    Duplicate {
        /// Its name.
        param: &'static str,
    },
    /// `backup=…` / `down=…`: a flag given a value.
    FlagWithValue {
        /// Its name.
        param: &'static str,
    },
    /// `weight` without `=N`.
    MissingValue {
        /// Its name.
        param: &'static str,
        /// The form its value takes.
        expected: &'static str,
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

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Empty => write!(f, "empty upstream spec: expected {SPEC_FORM}"),
            SpecError::Addr { input, reason } => {
                write!(f, "invalid upstream address {input:?}: {reason}; expected {ADDR_FORM}")
            }
            SpecError::UnknownParam { param } => {
                let names: Vec<&str> = PARAMS.iter().map(|p| p.name).collect();
                write!(
                    f,
                    "unknown upstream parameter {param:?}: expected one of {}",
                    names.join(", ")
                )
            }
            SpecError::Duplicate { param } => {
                write!(f, "upstream parameter {param} given twice: expected it at most once")
            }
            SpecError::FlagWithValue { param } => {
                write!(f, "upstream parameter {param} takes no value: expected just {param}")
            }
            SpecError::MissingValue { param, expected } => {
                write!(f, "upstream parameter {param} needs a value: expected {param}={expected}")
            }
            SpecError::InvalidValue { param, value, expected } => {
                write!(f, "invalid {param}={value}: expected {expected}")
            }
            SpecError::InvalidDuration { param, value, source } => {
                write!(f, "invalid {param}={value}: {source}")
            }
        }
    }
}

impl std::error::Error for SpecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpecError::InvalidDuration { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> UpstreamAddr {
        UpstreamAddr::Tcp { host: host.to_string(), port }
    }

    #[test]
    fn addresses_parse_and_display() {
        let table: &[(&str, UpstreamAddr, &str)] = &[
            ("127.0.0.1:8001", tcp("127.0.0.1", 8001), "127.0.0.1:8001"),
            ("[::1]:8001", tcp("::1", 8001), "[::1]:8001"),
            ("app.internal:80", tcp("app.internal", 80), "app.internal:80"),
            (
                "unix:/run/app.sock",
                UpstreamAddr::Unix("/run/app.sock".into()),
                "unix:/run/app.sock",
            ),
        ];
        for (input, addr, shown) in table {
            assert_eq!(&UpstreamAddr::parse(input).unwrap(), addr, "{input}");
            assert_eq!(addr.to_string(), *shown);
        }
    }

    #[test]
    fn bad_addresses_say_why() {
        let table: &[(&str, &str)] = &[
            ("127.0.0.1", "port is missing"),
            ("app", "port is missing"),
            ("[::1]", "port is missing"),
            ("::1:80", "brackets"),
            ("[zz]:80", "IPv6"),
            ("host:0", "1 to 65535"),
            ("host:99999", "1 to 65535"),
            (":80", "host"),
            ("unix:", "path is empty"),
        ];
        for (input, needle) in table {
            let e = UpstreamAddr::parse(input).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(ADDR_FORM), "{input}: {e}");
        }
    }

    #[test]
    fn defaults() {
        let s = UpstreamSpec::parse("10.0.0.1:80").unwrap();
        assert_eq!(s, UpstreamSpec::new(tcp("10.0.0.1", 80)));
        assert_eq!((s.weight, s.max_fails, s.fail_timeout), (1, 1, Duration::from_secs(10)));
    }

    #[test]
    fn every_parameter() {
        let s = UpstreamSpec::parse(
            "10.0.0.1:80 weight=5 max_fails=2 fail_timeout=30s max_conns=100 backup down slow_start=1m error_limit=10",
        )
        .unwrap();
        assert_eq!(s.weight, 5);
        assert_eq!(s.max_fails, 2);
        assert_eq!(s.fail_timeout, Duration::from_secs(30));
        assert_eq!(s.max_conns, 100);
        assert!(s.backup && s.down);
        assert_eq!(s.slow_start, Duration::from_secs(60));
        assert_eq!(s.error_limit, 10);
    }

    #[test]
    fn errors_name_the_parameter_and_the_form() {
        let table: &[(&str, &[&str])] = &[
            ("", &["empty", "ADDR [weight=N]"]),
            ("a:1 weight=x", &["weight=x", "integer from 1 to 10000"]),
            ("a:1 weight=0", &["weight=0", "integer from 1"]),
            ("a:1 weight=10001", &["weight=10001"]),
            (
                "a:1 fail_timeout=abc",
                &["fail_timeout=abc", "expected a number with an optional unit"],
            ),
            ("a:1 slow_start=5q", &["slow_start=5q"]),
            ("a:1 foo=1", &["\"foo=1\"", "weight, max_fails, fail_timeout", "error_limit"]),
            ("a:1 weight=2 weight=3", &["weight given twice"]),
            ("a:1 backup=1", &["backup takes no value"]),
            ("a:1 weight", &["weight needs a value", "weight=an integer"]),
            ("a:1 max_conns=-1", &["max_conns=-1", "integer >= 0"]),
            ("a", &["port is missing"]),
        ];
        for (input, needles) in table {
            let e = UpstreamSpec::parse(input).unwrap_err().to_string();
            for needle in *needles {
                assert!(e.contains(needle), "{input}: {e:?} lacks {needle:?}");
            }
        }
    }
}
