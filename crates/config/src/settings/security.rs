//! Registry records for Gunicorn's "Security" section: request-parser size limits, normalised
//! the way Gunicorn's parser interprets them.

use crate::setting::{DefaultValue, Kind, Section, Setting, Validator};
use crate::validate::{Reject, pos_int};
use crate::value::Value;

const S: Section = Section::Security;

/// Largest request line Gunicorn allows; bigger limits are clamped to it.
const MAX_REQUEST_LINE: i64 = 8190;
/// Largest header count; out-of-range limits become this.
const MAX_HEADERS: i64 = 32768;
/// Header-field size used when the limit is 0.
const DEFAULT_FIELD_SIZE: i64 = 8190;

/// 0 = unlimited; values >= 8190 clamp to 8190.
fn request_line(value: Value) -> Result<Value, Reject> {
    let n = pos_int(&value, false)?;
    Ok(Value::Int(n.min(MAX_REQUEST_LINE)))
}

/// 0 or more than 32768 means 32768.
fn request_fields(value: Value) -> Result<Value, Reject> {
    let n = pos_int(&value, false)?;
    Ok(Value::Int(if n == 0 || n > MAX_HEADERS { MAX_HEADERS } else { n }))
}

/// 0 means the default 8190.
fn field_size(value: Value) -> Result<Value, Reject> {
    let n = pos_int(&value, false)?;
    Ok(Value::Int(if n == 0 { DEFAULT_FIELD_SIZE } else { n }))
}

const fn limit(
    name: &'static str,
    check: fn(Value) -> Result<Value, Reject>,
    default: i64,
) -> Setting {
    Setting::new(name, S, Kind::Int, Validator::Custom(check), DefaultValue::Int(default))
        .meta("INT")
}

pub(super) const SETTINGS: &[Setting] = &[
    limit("limit_request_line", request_line, 4094).cli(&["--limit-request-line"]).help(
        "Longest request line (method, target and version) accepted, in bytes. 0 means no limit; \
         values of 8190 or more are lowered to 8190.",
    ),
    limit("limit_request_fields", request_fields, 100)
        .cli(&["--limit-request-fields"])
        .help("Most header fields a request may carry. 0 or anything above 32768 means 32768."),
    limit("limit_request_field_size", field_size, 8190).cli(&["--limit-request-field_size"]).help(
        "Longest single header line accepted, in bytes, continuation lines included. 0 means 8190.",
    ),
];
