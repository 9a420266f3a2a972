//! Registry records for Gunicorn's "Server Mechanics" section: process behaviour, proxy trust
//! and HTTP parsing leniency switches.

use crate::setting::{Action, DefaultValue, Env, Kind, Section, Setting, Support, Validator};
use crate::validate::{Reject, pos_int, run};
use crate::value::Value;

const S: Section = Section::ServerMechanics;

const NO_PASTE: &str = "PasteDeploy is not supported by ferrocorn; point it at the WSGI callable as module:variable instead";

/// `$SENDFILE` decides when set (y/1/yes/true = on, anything else = off); otherwise on.
fn sendfile_default(env: &Env) -> Value {
    match env.get("SENDFILE") {
        Some(v) => {
            Value::Bool(matches!(v.to_ascii_lowercase().as_str(), "y" | "1" | "yes" | "true"))
        }
        None => Value::Bool(true),
    }
}

/// `$FORWARDED_ALLOW_IPS` when set, else loopback.
fn forwarded_allow_default(env: &Env) -> Value {
    Value::Str(
        env.get("FORWARDED_ALLOW_IPS").cloned().unwrap_or_else(|| "127.0.0.1,::1".to_owned()),
    )
}

/// A user or group: a numeric id (kept as int) or a name (kept as str).
fn id_or_name(value: Value) -> Result<Value, Reject> {
    match value {
        Value::None => Ok(Value::None),
        Value::Str(s) if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) => {
            pos_int(&Value::Str(s), false).map(Value::Int)
        }
        Value::Str(s) if !s.trim().is_empty() => Ok(Value::Str(s.trim().to_owned())),
        Value::Int(i) if i >= 0 => Ok(Value::Int(i)),
        other => Err(Reject::new(
            format!("{} is not a name or a numeric id", other.py_repr()),
            "give a name or a numeric id",
        )),
    }
}

/// A list of `KEY=VALUE` strings.
fn env_list(value: Value) -> Result<Value, Reject> {
    let list = run(Validator::StrList, value)?;
    if let Value::List(items) = &list
        && let Some(bad) = items.iter().find(|s| !s.contains('='))
    {
        return Err(Reject::new(
            format!("{} has no '='", Value::Str(bad.clone()).py_repr()),
            "give KEY=VALUE",
        ));
    }
    Ok(list)
}

/// `off`/`v1`/`v2`/`auto`, with Gunicorn's aliases (booleans: true = auto, false = off).
fn proxy_protocol_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give one of: off, v1, v2, auto (a bare --proxy-protocol means auto)";
    let mode = match &value {
        Value::None => "off",
        Value::Bool(b) => {
            if *b {
                "auto"
            } else {
                "off"
            }
        }
        Value::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "false" | "off" | "0" | "none" => "off",
            "true" | "auto" | "1" => "auto",
            "v1" => "v1",
            "v2" => "v2",
            _ => {
                return Err(Reject::new(
                    format!("{} is not a PROXY protocol mode", value.py_repr()),
                    accepted,
                ));
            }
        },
        other => {
            return Err(Reject::new(
                format!("{} is a {}, not a mode", other.py_repr(), other.type_name()),
                accepted,
            ));
        }
    };
    Ok(Value::Str(mode.to_owned()))
}

/// Only `http`; Gunicorn's `uwsgi` is refused with the reason.
fn protocol_value(value: Value) -> Result<Value, Reject> {
    match &value {
        Value::Str(s) if s.trim().eq_ignore_ascii_case("http") => Ok(Value::Str("http".to_owned())),
        Value::Str(s) if s.trim().eq_ignore_ascii_case("uwsgi") => Err(Reject::new(
            "the uWSGI binary protocol is not supported by ferrocorn",
            "give 'http' and have the front proxy speak HTTP (e.g. nginx proxy_pass instead of uwsgi_pass)",
        )),
        other => {
            Err(Reject::new(format!("{} is not a known protocol", other.py_repr()), "give 'http'"))
        }
    }
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting::flag("preload_app", S)
        .cli(&["--preload"])
        .help("Import the application once in the master before forking workers, sharing memory and speeding boot."),
    Setting::new("sendfile", S, Kind::Bool, Validator::Bool, DefaultValue::Computed(sendfile_default))
        .cli(&["--no-sendfile"])
        .action(Action::StoreConst(false))
        .env("SENDFILE")
        .default_doc("True, or from $SENDFILE when set (y/1/yes/true = on, anything else = off)")
        .help("Whether file responses may be sent with sendfile(); --no-sendfile turns it off."),
    Setting::flag("reuse_port", S)
        .cli(&["--reuse-port"])
        .help("Set SO_REUSEPORT on listening sockets so several processes can bind the same address."),
    Setting::opt_string("chdir", S)
        .cli(&["--chdir"])
        .default_doc("(the current directory)")
        .help("Directory to change into before loading the application."),
    Setting::flag("daemon", S)
        .cli(&["-D", "--daemon"])
        .help("Detach from the terminal and run in the background."),
    Setting::new("raw_env", S, Kind::List, Validator::Custom(env_list), DefaultValue::List(&[]))
        .cli(&["-e", "--env"])
        .meta("ENV")
        .append()
        .help("Environment variable to set in the server, as KEY=VALUE. Repeatable."),
    Setting::opt_string("pidfile", S)
        .cli(&["-p", "--pid"])
        .meta("FILE")
        .help("File to write the master's process id to."),
    Setting::opt_string("worker_tmp_dir", S)
        .cli(&["--worker-tmp-dir"])
        .meta("DIR")
        .help("Accepted for compatibility and ignored: ferrocorn workers heartbeat through shared memory, not files, so there is no disk to stall on."),
    Setting::new("user", S, Kind::Str, Validator::Custom(id_or_name), DefaultValue::None)
        .cli(&["-u", "--user"])
        .meta("USER")
        .default_doc("(the effective user of the server)")
        .help("Switch worker processes to this user, by name or numeric id."),
    Setting::new("group", S, Kind::Str, Validator::Custom(id_or_name), DefaultValue::None)
        .cli(&["-g", "--group"])
        .meta("GROUP")
        .default_doc("(the effective group of the server)")
        .help("Switch worker processes to this group, by name or numeric id."),
    Setting::new("umask", S, Kind::Int, Validator::OctalInt, DefaultValue::Int(0))
        .cli(&["-m", "--umask"])
        .meta("INT")
        .help("File-mode creation mask for the server, e.g. 0o22; a leading 0 means octal."),
    Setting::flag("initgroups", S)
        .cli(&["--initgroups"])
        .help("Give workers the supplementary groups of the user they switch to."),
    Setting::opt_string("tmp_upload_dir", S)
        .meta("DIR")
        .help("Accepted for compatibility and ignored; Gunicorn does not use it either."),
    Setting::new(
        "secure_scheme_headers",
        S,
        Kind::Map,
        Validator::Map,
        DefaultValue::Map(&[
            ("X-FORWARDED-PROTOCOL", "ssl"),
            ("X-FORWARDED-PROTO", "https"),
            ("X-FORWARDED-SSL", "on"),
        ]),
    )
    .help(
        "Header/value pairs that, sent by a trusted proxy, mark a request as HTTPS. Only peers in \
         forwarded_allow_ips are believed.",
    ),
    Setting::new("forwarded_allow_ips", S, Kind::List, Validator::AddrList, DefaultValue::Computed(forwarded_allow_default))
        .cli(&["--forwarded-allow-ips"])
        .meta("STRING")
        .env("FORWARDED_ALLOW_IPS")
        .default_doc("['127.0.0.1', '::1'], or $FORWARDED_ALLOW_IPS when set")
        .help(
            "Comma-separated proxy addresses or CIDR networks whose forwarding headers are \
             trusted; `*` trusts everyone. Unix-socket peers are always trusted.",
        ),
    Setting::new("pythonpath", S, Kind::List, Validator::CommaList, DefaultValue::None)
        .cli(&["--pythonpath"])
        .meta("STRING")
        .help("Comma-separated directories to put in front of the Python import path."),
    Setting::opt_string("paste", S)
        .cli(&["--paste", "--paster"])
        .meta("STRING")
        .support(Support::Unsupported(NO_PASTE))
        .help("Load the application from a PasteDeploy ini file."),
    Setting::new("proxy_protocol", S, Kind::Str, Validator::Custom(proxy_protocol_value), DefaultValue::Str("off"))
        .cli(&["--proxy-protocol"])
        .meta("MODE")
        .action(Action::OptionalValue("auto"))
        .help(
            "Expect a PROXY protocol header from the peer: `off`, `v1`, `v2` or `auto` (either); \
             the bare flag means `auto`.",
        ),
    Setting::new("proxy_allow_ips", S, Kind::List, Validator::AddrList, DefaultValue::Str("127.0.0.1,::1"))
        .cli(&["--proxy-allow-from"])
        .meta("STRING")
        .help("Comma-separated addresses or CIDR networks allowed to send a PROXY header; `*` allows all."),
    Setting::new("protocol", S, Kind::Str, Validator::Custom(protocol_value), DefaultValue::Str("http"))
        .cli(&["--protocol"])
        .meta("STRING")
        .help("Wire protocol spoken on the listeners. Only `http`; Gunicorn's `uwsgi` is not supported."),
    Setting::new("uwsgi_allow_ips", S, Kind::List, Validator::AddrList, DefaultValue::Str("127.0.0.1,::1"))
        .cli(&["--uwsgi-allow-from"])
        .meta("STRING")
        .support(Support::Unsupported("the uWSGI protocol is not supported by ferrocorn, so this has no effect"))
        .help("Peers allowed to talk the uWSGI binary protocol."),
    Setting::new("raw_paste_global_conf", S, Kind::List, Validator::StrList, DefaultValue::List(&[]))
        .cli(&["--paste-global"])
        .meta("CONF")
        .append()
        .support(Support::Unsupported(NO_PASTE))
        .help("Global variables for a PasteDeploy configuration, as key=value. Repeatable."),
    Setting::flag("permit_obsolete_folding", S)
        .cli(&["--permit-obsolete-folding"])
        .help("Accept header values continued on indented lines (obsolete line folding) instead of answering 400."),
    Setting::flag("strip_header_spaces", S)
        .cli(&["--strip-header-spaces"])
        .help("Tolerate whitespace between a header name and its colon. Risky: enables request smuggling."),
    Setting::flag("permit_unconventional_http_method", S)
        .cli(&["--permit-unconventional-http-method"])
        .help("Accept request methods that are lowercase, very short or long, or contain unusual characters."),
    Setting::flag("permit_unconventional_http_version", S)
        .cli(&["--permit-unconventional-http-version"])
        .help("Accept HTTP versions other than 1.0 and 1.1 in the request line."),
    Setting::flag("casefold_http_method", S)
        .cli(&["--casefold-http-method"])
        .help("Uppercase request methods before passing them on (legacy behaviour)."),
    Setting::new("forwarder_headers", S, Kind::List, Validator::CommaList, DefaultValue::Str("SCRIPT_NAME,PATH_INFO"))
        .cli(&["--forwarder-headers"])
        .meta("STRING")
        .help("Comma-separated header names containing underscores that trusted proxies may still set."),
    Setting::choice("header_map", S, &["drop", "refuse", "dangerous"], "drop")
        .cli(&["--header-map"])
        .meta("STRING")
        .help(
            "What to do with header names containing `_`: `drop` them, `refuse` the request, or \
             `dangerous`ly map them like `-`.",
        ),
    Setting::string("root_path", S, "")
        .cli(&["--root-path"])
        .meta("STRING")
        .help("Mount prefix passed to ASGI applications as the scope's root_path."),
];
