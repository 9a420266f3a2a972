//! `Value`: the dynamically typed value a setting holds, and its Python-style rendering
//! (as Gunicorn's `--print-config` shows it).

use std::fmt::Write as _;

/// A setting value, shaped like the Python value Gunicorn would hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Python `None`: not set / no value.
    None,
    /// Python `bool`.
    Bool(bool),
    /// Python `int`.
    Int(i64),
    /// Python `float`.
    Float(f64),
    /// Python `str`.
    Str(String),
    /// Python `list` of `str`.
    List(Vec<String>),
    /// Python `dict` of `str` to `str`, in insertion order.
    Map(Vec<(String, String)>),
}

impl Value {
    /// Python `str(value)`: strings bare, containers with `repr` of their items
    /// (this is how `--print-config` prints a value).
    pub fn py_str(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            other => other.py_repr(),
        }
    }

    /// Python `repr(value)`.
    pub fn py_repr(&self) -> String {
        match self {
            Value::None => "None".to_owned(),
            Value::Bool(true) => "True".to_owned(),
            Value::Bool(false) => "False".to_owned(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => py_float(*f),
            Value::Str(s) => py_repr_str(s),
            Value::List(items) => {
                let inner: Vec<String> = items.iter().map(|s| py_repr_str(s)).collect();
                format!("[{}]", inner.join(", "))
            }
            Value::Map(pairs) => {
                let inner: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr_str(v)))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
    }

    /// A short name of the value's Python type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Map(_) => "dict",
        }
    }
}

/// Python's `repr(float)`: always shows a decimal point for whole numbers.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        "nan".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "inf".to_owned() } else { "-inf".to_owned() }
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Python's `repr(str)`: single quotes unless the text contains `'` but no `"`.
pub(crate) fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_reprs() {
        assert_eq!(Value::None.py_repr(), "None");
        assert_eq!(Value::Bool(true).py_str(), "True");
        assert_eq!(Value::Float(10.0).py_repr(), "10.0");
        assert_eq!(Value::Float(0.25).py_repr(), "0.25");
        assert_eq!(Value::Str("-".into()).py_str(), "-");
        assert_eq!(Value::Str("it's".into()).py_repr(), "\"it's\"");
        assert_eq!(Value::List(vec!["a".into(), "b".into()]).py_str(), "['a', 'b']");
        assert_eq!(Value::Map(vec![("K".into(), "v".into())]).py_str(), "{'K': 'v'}");
    }
}
