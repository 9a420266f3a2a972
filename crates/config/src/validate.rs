//! Turning raw input into a setting's normalised `Value`: CLI strings and Python-typed
//! config-file values go through the same `Validator`, whose rejection becomes a `ConfigError`
//! naming the setting, its flags, the bad value and what is accepted.

use std::net::IpAddr;

use crate::value::Value;

/// Why a validator refused a value: what is wrong, and what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// What is wrong with the value, quoting it (`'abc' is not an integer`).
    pub problem: String,
    /// What to give instead (`give a whole number >= 0`).
    pub accepted: String,
}

impl Reject {
    /// Builds a rejection.
    pub fn new(problem: impl Into<String>, accepted: impl Into<String>) -> Self {
        Reject { problem: problem.into(), accepted: accepted.into() }
    }
}

/// How raw input (a CLI string or a Python-typed config-file value) is checked and normalised.
#[derive(Clone, Copy, Debug)]
pub enum Validator {
    /// `True`/`False`, or the strings `true`/`false` (any case).
    Bool,
    /// Python `int(x, 0)`, must be >= 0 (Gunicorn's `validate_pos_int`).
    PosInt,
    /// Like `PosInt`, but a leading `0` means octal (`022`), as Gunicorn's `auto_int`.
    OctalInt,
    /// A number >= 0, fractions allowed.
    PosFloat,
    /// Text, surrounding whitespace stripped; `None` allowed.
    Str,
    /// A list of strings, or one string meaning a one-item list.
    StrList,
    /// A comma-separated string (or a list), split into a list.
    CommaList,
    /// Like `CommaList`, each item an IP address, a CIDR network, or `*`.
    AddrList,
    /// A mapping of string to string.
    Map,
    /// One of these words (case-insensitive, stored lowercase).
    Choice(&'static [&'static str]),
    /// Anything (hooks and opaque Python objects).
    Any,
    /// A setting-specific check.
    Custom(fn(Value) -> Result<Value, Reject>),
}

/// Runs one validator.
pub fn run(validator: Validator, value: Value) -> Result<Value, Reject> {
    match validator {
        Validator::Bool => bool_value(value),
        Validator::PosInt => pos_int(&value, false).map(Value::Int),
        Validator::OctalInt => pos_int(&value, true).map(Value::Int),
        Validator::PosFloat => pos_float(&value).map(Value::Float),
        Validator::Str => string(value),
        Validator::StrList => str_list(value),
        Validator::CommaList => comma_list(value).map(Value::List),
        Validator::AddrList => addr_list(value),
        Validator::Map => match value {
            Value::Map(m) => Ok(Value::Map(m)),
            other => Err(Reject::new(
                format!("{} is a {}, not a dict", other.py_repr(), other.type_name()),
                "give a dict of string keys to string values",
            )),
        },
        Validator::Choice(choices) => choice(value, choices).map(Value::Str),
        Validator::Any => Ok(value),
        Validator::Custom(f) => f(value),
    }
}

fn bool_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give True or False (or the strings 'true'/'false')";
    match value {
        Value::None => Ok(Value::None),
        Value::Bool(b) => Ok(Value::Bool(b)),
        Value::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => {
                Err(Reject::new(format!("{} is not a boolean", Value::Str(s).py_repr()), accepted))
            }
        },
        other => Err(Reject::new(
            format!("{} is a {}, not a boolean", other.py_repr(), other.type_name()),
            accepted,
        )),
    }
}

/// Python `int(text, 0)`; with `octal_zero`, a leading `0` followed by a digit means octal
/// (Gunicorn's `auto_int`).
pub fn parse_py_int(text: &str, octal_zero: bool) -> Option<i64> {
    let t = text.trim();
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = rest.to_ascii_lowercase();
    let (radix, digits, after_prefix) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, true)
    } else if octal_zero
        && lower.len() > 1
        && lower.starts_with('0')
        && lower.as_bytes()[1].is_ascii_digit()
    {
        (8, &lower[1..], false)
    } else {
        (10, lower.as_str(), false)
    };
    // Underscores only between digits (or right after a base prefix), as Python allows.
    let body = if after_prefix { digits.strip_prefix('_').unwrap_or(digits) } else { digits };
    if body.is_empty() || body.starts_with('_') || body.ends_with('_') || body.contains("__") {
        return None;
    }
    let clean: String = body.chars().filter(|c| *c != '_').collect();
    if radix == 10 && clean.len() > 1 && clean.starts_with('0') && clean.chars().any(|c| c != '0') {
        return None; // Python rejects "010" with base 0
    }
    let magnitude = i64::from_str_radix(&clean, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

const INT_ACCEPTED: &str = "give a whole number >= 0 (decimal, or with a 0x/0o/0b prefix)";
const OCTAL_ACCEPTED: &str =
    "give a whole number >= 0; a leading 0 or 0o means octal (e.g. 022 or 0o22), 0x hex";

/// A non-negative integer from an int, a bool, or a string.
pub fn pos_int(value: &Value, octal_zero: bool) -> Result<i64, Reject> {
    let accepted = if octal_zero { OCTAL_ACCEPTED } else { INT_ACCEPTED };
    let n = match value {
        Value::Int(i) => *i,
        Value::Bool(b) => i64::from(*b),
        Value::Str(s) => parse_py_int(s, octal_zero).ok_or_else(|| {
            Reject::new(format!("{} is not an integer", value.py_repr()), accepted)
        })?,
        other => {
            return Err(Reject::new(
                format!("{} is a {}, not an integer", other.py_repr(), other.type_name()),
                accepted,
            ));
        }
    };
    if n < 0 {
        return Err(Reject::new(format!("{n} is negative"), accepted));
    }
    Ok(n)
}

/// A finite number >= 0 from an int, a float, or a string.
pub fn pos_float(value: &Value) -> Result<f64, Reject> {
    let accepted = "give a number >= 0, e.g. 10 or 2.5";
    let f = match value {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| Reject::new(format!("{} is not a number", value.py_repr()), accepted))?,
        other => {
            return Err(Reject::new(
                format!("{} is a {}, not a number", other.py_repr(), other.type_name()),
                accepted,
            ));
        }
    };
    if !f.is_finite() || f < 0.0 {
        return Err(Reject::new(format!("{} is out of range", value.py_repr()), accepted));
    }
    Ok(f)
}

fn string(value: Value) -> Result<Value, Reject> {
    match value {
        Value::None => Ok(Value::None),
        Value::Str(s) => Ok(Value::Str(s.trim().to_owned())),
        other => Err(Reject::new(
            format!("{} is a {}, not a string", other.py_repr(), other.type_name()),
            "give a string",
        )),
    }
}

fn str_list(value: Value) -> Result<Value, Reject> {
    match value {
        Value::None => Ok(Value::List(Vec::new())),
        Value::Str(s) if s.is_empty() => Ok(Value::List(Vec::new())),
        Value::Str(s) => Ok(Value::List(vec![s.trim().to_owned()])),
        Value::List(items) => Ok(Value::List(items.iter().map(|s| s.trim().to_owned()).collect())),
        other => Err(Reject::new(
            format!("{} is a {}, not a list", other.py_repr(), other.type_name()),
            "give a string or a list of strings",
        )),
    }
}

/// A comma-separated string (or a list) split into trimmed, non-empty items.
pub fn comma_list(value: Value) -> Result<Vec<String>, Reject> {
    let items: Vec<String> = match value {
        Value::None => Vec::new(),
        Value::Str(s) => {
            s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
        Value::List(items) => {
            items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
        other => {
            return Err(Reject::new(
                format!("{} is a {}, not a string", other.py_repr(), other.type_name()),
                "give a comma-separated string such as 'a,b' (or a list of strings)",
            ));
        }
    };
    Ok(items)
}

fn addr_list(value: Value) -> Result<Value, Reject> {
    let accepted = "give comma-separated IP addresses or CIDR networks \
                    (e.g. '127.0.0.1,::1,10.0.0.0/8'), or '*' to trust every peer";
    let items = comma_list(value).map_err(|r| Reject::new(r.problem, accepted))?;
    for item in &items {
        if item != "*" && !is_ip_or_network(item) {
            return Err(Reject::new(
                format!(
                    "{} is not an IP address or CIDR network",
                    Value::Str(item.clone()).py_repr()
                ),
                accepted,
            ));
        }
    }
    Ok(Value::List(items))
}

/// `ipaddress.ip_network(text)` in strict mode: an address, or a network with no host bits set.
pub fn is_ip_or_network(text: &str) -> bool {
    let Some((addr, prefix)) = text.split_once('/') else {
        return text.parse::<IpAddr>().is_ok();
    };
    let (Ok(addr), Ok(prefix)) = (addr.parse::<IpAddr>(), prefix.parse::<u32>()) else {
        return false;
    };
    match addr {
        IpAddr::V4(a) => prefix <= 32 && u32::from(a).checked_shl(prefix).unwrap_or(0) == 0,
        IpAddr::V6(a) => prefix <= 128 && u128::from(a).checked_shl(prefix).unwrap_or(0) == 0,
    }
}

fn choice(value: Value, choices: &[&str]) -> Result<String, Reject> {
    let accepted = format!("give one of: {}", choices.join(", "));
    match value {
        Value::Str(s) => {
            let word = s.trim().to_ascii_lowercase();
            if choices.contains(&word.as_str()) {
                Ok(word)
            } else {
                Err(Reject::new(
                    format!("{} is not a known choice", Value::Str(s).py_repr()),
                    accepted,
                ))
            }
        }
        other => Err(Reject::new(
            format!("{} is a {}, not a string", other.py_repr(), other.type_name()),
            accepted,
        )),
    }
}

/// The text of a string-valued setting (a list is joined with spaces), or a rejection naming
/// the `accepted` form.
pub(crate) fn setting_text(value: &Value, accepted: &str) -> Result<String, Reject> {
    match value {
        Value::None => Ok(String::new()),
        Value::Str(s) => Ok(s.trim().to_owned()),
        Value::List(items) => Ok(items.join(" ")),
        other => Err(Reject::new(
            format!("{} is a {}, not text", other.py_repr(), other.type_name()),
            accepted.to_owned(),
        )),
    }
}

/// A list setting whose every entry has a grammar (`--upstream`, `--pool`): each entry,
/// trimmed, passes `check` (whose error names the problem), or the value is rejected naming
/// the entry and the `accepted` form. `what` names the entries (`upstreams`).
pub(crate) fn checked_entries(
    value: Value,
    what: &str,
    accepted: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Value, Reject> {
    let entries = match value {
        Value::None => Vec::new(),
        Value::Str(s) => vec![s.trim().to_owned()],
        Value::List(items) => items.into_iter().map(|s| s.trim().to_owned()).collect(),
        other => {
            return Err(Reject::new(
                format!("{} is a {}, not a list of {what}", other.py_repr(), other.type_name()),
                accepted.to_owned(),
            ));
        }
    };
    for entry in &entries {
        check(entry).map_err(|problem| Reject::new(problem, accepted.to_owned()))?;
    }
    Ok(Value::List(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_int_rules() {
        assert_eq!(parse_py_int("42", false), Some(42));
        assert_eq!(parse_py_int(" 0x10 ", false), Some(16));
        assert_eq!(parse_py_int("0o10", false), Some(8));
        assert_eq!(parse_py_int("0b101", false), Some(5));
        assert_eq!(parse_py_int("1_000", false), Some(1000));
        assert_eq!(parse_py_int("010", false), None);
        assert_eq!(parse_py_int("00", false), Some(0));
        assert_eq!(parse_py_int("010", true), Some(8));
        assert_eq!(parse_py_int("022", true), Some(18));
        assert_eq!(parse_py_int("abc", false), None);
        assert_eq!(parse_py_int("-3", false), Some(-3));
    }

    #[test]
    fn networks() {
        assert!(is_ip_or_network("127.0.0.1"));
        assert!(is_ip_or_network("::1"));
        assert!(is_ip_or_network("10.0.0.0/8"));
        assert!(is_ip_or_network("fd00::/8"));
        assert!(!is_ip_or_network("192.168.1.1/24"));
        assert!(!is_ip_or_network("localhost"));
        assert!(!is_ip_or_network("10.0.0.0/33"));
    }

    #[test]
    fn bools_and_lists() {
        assert_eq!(run(Validator::Bool, Value::Str("TRUE".into())), Ok(Value::Bool(true)));
        assert!(run(Validator::Bool, Value::Int(1)).is_err());
        assert_eq!(
            run(Validator::CommaList, Value::Str("a, b,,c".into())),
            Ok(Value::List(vec!["a".into(), "b".into(), "c".into()]))
        );
        assert_eq!(
            run(Validator::StrList, Value::Str("x".into())),
            Ok(Value::List(vec!["x".into()]))
        );
        assert!(run(Validator::PosInt, Value::Int(-1)).is_err());
        assert_eq!(run(Validator::PosInt, Value::Bool(true)), Ok(Value::Int(1)));
    }
}
