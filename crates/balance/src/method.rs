//! The balancing method of a group, nginx's `upstream` method directives: `round_robin` (the
//! default), `least_conn`, `ip_hash`, `hash KEY [consistent]` with HAProxy's bounded load
//! (`balance_factor=N`), and `random_two` (nginx's `random two least_conn`).

use std::fmt;

/// The form of a method, quoted by errors.
pub const METHOD_FORM: &str = "round_robin, least_conn, ip_hash, hash KEY, hash KEY consistent, hash KEY consistent balance_factor=N (N > 100), or random_two";

/// How a group picks a peer for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// Smooth weighted round robin (nginx's default).
    RoundRobin,
    /// Fewest requests in flight relative to weight; ties by weighted round robin.
    LeastConn,
    /// The client address's first three IPv4 octets (or whole IPv6 address) pick the peer.
    IpHash,
    /// A key rendered per request picks the peer.
    Hash {
        /// The key template (nginx variables), kept verbatim; the caller renders it.
        key: String,
        /// Ketama consistent hashing instead of nginx's modulo hash.
        consistent: bool,
        /// Bounded load (HAProxy `hash-balance-factor`), in percent of the average load; only
        /// with `consistent`, always > 100.
        balance_factor: Option<u32>,
    },
    /// Two weighted random picks, the one with fewer requests in flight wins.
    RandomTwo,
}

impl Method {
    /// Parses a method: `round_robin`, `least_conn`, `ip_hash`, `hash KEY`, `hash KEY
    /// consistent`, `hash KEY consistent balance_factor=150`, `random_two` (also `random two`
    /// and `random two least_conn`).
    pub fn parse(s: &str) -> Result<Method, MethodError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["round_robin"] => Ok(Method::RoundRobin),
            ["least_conn"] => Ok(Method::LeastConn),
            ["ip_hash"] => Ok(Method::IpHash),
            ["random_two"] | ["random", "two"] | ["random", "two", "least_conn"] => {
                Ok(Method::RandomTwo)
            }
            ["random", ..] => Err(MethodError::UnsupportedRandom { input: s.to_string() }),
            ["hash"] => Err(MethodError::MissingKey),
            ["hash", key, rest @ ..] => parse_hash(key, rest),
            [] => Err(MethodError::Unknown { input: String::new() }),
            _ => Err(MethodError::Unknown { input: s.to_string() }),
        }
    }

    /// Whether `backup` peers may be used with this method (nginx refuses them with the hash,
    /// ip_hash and random methods).
    pub fn allows_backup(&self) -> bool {
        matches!(self, Method::RoundRobin | Method::LeastConn)
    }
}

fn parse_hash(key: &str, rest: &[&str]) -> Result<Method, MethodError> {
    let mut consistent = false;
    let mut balance_factor = None;
    for word in rest {
        if *word == "consistent" {
            if consistent {
                return Err(MethodError::Duplicate { param: "consistent" });
            }
            consistent = true;
        } else if let Some(value) = word.strip_prefix("balance_factor=") {
            if balance_factor.is_some() {
                return Err(MethodError::Duplicate { param: "balance_factor" });
            }
            match value.parse::<u32>() {
                Ok(n) if n > 100 => balance_factor = Some(n),
                _ => return Err(MethodError::BalanceFactor { value: value.to_string() }),
            }
        } else {
            return Err(MethodError::UnknownParam { param: word.to_string() });
        }
    }
    if balance_factor.is_some() && !consistent {
        return Err(MethodError::BalanceFactorWithoutConsistent);
    }
    Ok(Method::Hash { key: key.to_string(), consistent, balance_factor })
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::RoundRobin => f.write_str("round_robin"),
            Method::LeastConn => f.write_str("least_conn"),
            Method::IpHash => f.write_str("ip_hash"),
            Method::RandomTwo => f.write_str("random_two"),
            Method::Hash { key, consistent, balance_factor } => {
                write!(f, "hash {key}")?;
                if *consistent {
                    f.write_str(" consistent")?;
                }
                if let Some(n) = balance_factor {
                    write!(f, " balance_factor={n}")?;
                }
                Ok(())
            }
        }
    }
}

/// A method that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodError {
    /// Not one of the methods.
    Unknown {
        /// The text as given.
        input: String,
    },
    /// `random` without `two`: plain random is not offered.
    UnsupportedRandom {
        /// The text as given.
        input: String,
    },
    /// `hash` without a key.
    MissingKey,
    /// A word after `hash KEY` that is neither `consistent` nor `balance_factor=N`.
    UnknownParam {
        /// The word as given.
        param: String,
    },
    /// `consistent` or `balance_factor` given twice.
    Duplicate {
        /// Its name.
        param: &'static str,
    },
    /// `balance_factor=` not an integer above 100.
    BalanceFactor {
        /// The value as given.
        value: String,
    },
    /// `balance_factor=` on a hash that is not `consistent`.
    BalanceFactorWithoutConsistent,
}

impl fmt::Display for MethodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodError::Unknown { input } => {
                write!(f, "unknown balancing method {input:?}: expected {METHOD_FORM}")
            }
            MethodError::UnsupportedRandom { input } => write!(
                f,
                "balancing method {input:?} is not supported: expected random_two (random two least_conn)"
            ),
            MethodError::MissingKey => {
                write!(f, "balancing method hash needs a key: expected hash KEY [consistent]")
            }
            MethodError::UnknownParam { param } => write!(
                f,
                "unknown hash parameter {param:?}: expected consistent or balance_factor=N (N > 100)"
            ),
            MethodError::Duplicate { param } => {
                write!(f, "hash parameter {param} given twice: expected it at most once")
            }
            MethodError::BalanceFactor { value } => {
                write!(f, "invalid balance_factor={value}: expected an integer above 100, e.g. 150")
            }
            MethodError::BalanceFactorWithoutConsistent => write!(
                f,
                "balance_factor needs consistent hashing: expected hash KEY consistent balance_factor=N"
            ),
        }
    }
}

impl std::error::Error for MethodError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(key: &str, consistent: bool, balance_factor: Option<u32>) -> Method {
        Method::Hash { key: key.to_string(), consistent, balance_factor }
    }

    #[test]
    fn accepted_methods_and_display() {
        let table: &[(&str, Method, &str)] = &[
            ("round_robin", Method::RoundRobin, "round_robin"),
            ("least_conn", Method::LeastConn, "least_conn"),
            ("ip_hash", Method::IpHash, "ip_hash"),
            ("random_two", Method::RandomTwo, "random_two"),
            ("random two", Method::RandomTwo, "random_two"),
            ("random two least_conn", Method::RandomTwo, "random_two"),
            ("hash $request_uri", hash("$request_uri", false, None), "hash $request_uri"),
            ("hash $uri consistent", hash("$uri", true, None), "hash $uri consistent"),
            (
                "hash $uri consistent balance_factor=150",
                hash("$uri", true, Some(150)),
                "hash $uri consistent balance_factor=150",
            ),
            ("hash $uri balance_factor=125 consistent", hash("$uri", true, Some(125)), ""),
        ];
        for (input, method, shown) in table {
            assert_eq!(&Method::parse(input).unwrap(), method, "{input}");
            if !shown.is_empty() {
                assert_eq!(method.to_string(), *shown);
            }
        }
    }

    #[test]
    fn errors_name_the_parameter() {
        let table: &[(&str, &str)] = &[
            ("", "expected round_robin"),
            ("fastest", "\"fastest\""),
            ("random", "random_two"),
            ("hash", "needs a key"),
            ("hash $uri balance_factor=150", "balance_factor needs consistent"),
            ("hash $uri consistent balance_factor=100", "balance_factor=100"),
            ("hash $uri consistent balance_factor=x", "balance_factor=x"),
            ("hash $uri consistent consistent", "consistent given twice"),
            ("hash $uri sticky", "\"sticky\""),
        ];
        for (input, needle) in table {
            let e = Method::parse(input).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("expected"), "{input}: {e}");
        }
    }

    #[test]
    fn backup_only_with_round_robin_and_least_conn() {
        assert!(Method::RoundRobin.allows_backup());
        assert!(Method::LeastConn.allows_backup());
        assert!(!Method::IpHash.allows_backup());
        assert!(!Method::RandomTwo.allows_backup());
        assert!(!hash("$uri", true, None).allows_backup());
    }
}
