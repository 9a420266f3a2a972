//! Registry records for Gunicorn's "HTTP/2" section.

use crate::setting::{DefaultValue, Kind, Section, Setting, Validator};
use crate::validate::{Reject, comma_list, pos_int};
use crate::value::Value;

const S: Section = Section::Http2;

/// Comma list of h1/h2/h3 in preference order, no repeats; empty means `h1`.
fn protocols_value(value: Value) -> Result<Value, Reject> {
    let accepted =
        "give a comma-separated list of h1, h2, h3 in order of preference, without repeats";
    let items: Vec<String> = comma_list(value)?.iter().map(|s| s.to_ascii_lowercase()).collect();
    if items.is_empty() {
        return Ok(Value::List(vec!["h1".to_owned()]));
    }
    for (i, p) in items.iter().enumerate() {
        if !matches!(p.as_str(), "h1" | "h2" | "h3") {
            return Err(Reject::new(format!("'{p}' is not a known protocol"), accepted));
        }
        if items[..i].contains(p) {
            return Err(Reject::new(format!("'{p}' is listed twice"), accepted));
        }
    }
    Ok(Value::List(items))
}

/// off / prior-knowledge / upgrade / both; a boolean means prior-knowledge or off.
fn cleartext_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give one of: off, prior-knowledge, upgrade, both";
    match &value {
        Value::None | Value::Bool(false) => Ok(Value::Str("off".to_owned())),
        Value::Bool(true) => Ok(Value::Str("prior-knowledge".to_owned())),
        Value::Str(s) => {
            let mode = s.trim().to_ascii_lowercase();
            if matches!(mode.as_str(), "off" | "prior-knowledge" | "upgrade" | "both") {
                Ok(Value::Str(mode))
            } else {
                Err(Reject::new(format!("{} is not a known mode", value.py_repr()), accepted))
            }
        }
        other => Err(Reject::new(
            format!("{} is a {}, not a mode", other.py_repr(), other.type_name()),
            accepted,
        )),
    }
}

/// 16384 ..= 16777215 (RFC 9113).
fn frame_size_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give a whole number from 16384 to 16777215";
    let n = pos_int(&value, false).map_err(|r| Reject::new(r.problem, accepted))?;
    if !(16384..=16_777_215).contains(&n) {
        return Err(Reject::new(format!("{n} is out of range"), accepted));
    }
    Ok(Value::Int(n))
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting::new("http_protocols", S, Kind::List, Validator::Custom(protocols_value), DefaultValue::Str("h1"))
        .cli(&["--http-protocols"])
        .meta("STRING")
        .planned()
        .help("Comma-separated protocols to offer, most preferred first: h1, h2 (needs TLS), h3 (reserved)."),
    Setting::new("http2_cleartext", S, Kind::Str, Validator::Custom(cleartext_value), DefaultValue::Str("off"))
        .cli(&["--http2-cleartext"])
        .meta("STRING")
        .planned()
        .help("HTTP/2 without TLS for trusted peers: off, prior-knowledge, upgrade, or both."),
    Setting::pos_int("http2_max_concurrent_streams", S, 100)
        .cli(&["--http2-max-concurrent-streams"])
        .planned()
        .help("Most streams a client may have open at once on one HTTP/2 connection."),
    Setting::pos_int("http2_initial_window_size", S, 65535)
        .cli(&["--http2-initial-window-size"])
        .planned()
        .help("Initial HTTP/2 flow-control window, in bytes."),
    Setting::new("http2_max_frame_size", S, Kind::Int, Validator::Custom(frame_size_value), DefaultValue::Int(16384))
        .cli(&["--http2-max-frame-size"])
        .meta("INT")
        .planned()
        .help("Largest HTTP/2 frame payload accepted, 16384 to 16777215 bytes."),
    Setting::pos_int("http2_max_header_list_size", S, 65536)
        .cli(&["--http2-max-header-list-size"])
        .planned()
        .help("Largest decoded header block accepted on HTTP/2, in bytes."),
];
