//! Registry records for Gunicorn's "Control" section: the `gunicornc` control socket.

use crate::setting::{DefaultValue, Env, Kind, Section, Setting, Validator};
use crate::value::Value;

const S: Section = Section::Control;

/// `$XDG_RUNTIME_DIR/gunicorn.ctl`, else `$HOME/.gunicorn/gunicorn.ctl`.
fn control_socket_default(env: &Env) -> Value {
    let nonempty = |k: &str| env.get(k).filter(|v| !v.is_empty());
    if let Some(dir) = nonempty("XDG_RUNTIME_DIR") {
        Value::Str(format!("{}/gunicorn.ctl", dir.trim_end_matches('/')))
    } else if let Some(home) = nonempty("HOME") {
        Value::Str(format!("{}/.gunicorn/gunicorn.ctl", home.trim_end_matches('/')))
    } else {
        Value::None
    }
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting::new(
        "control_socket",
        S,
        Kind::Str,
        Validator::Str,
        DefaultValue::Computed(control_socket_default),
    )
    .cli(&["--control-socket"])
    .meta("PATH")
    .env("XDG_RUNTIME_DIR")
    .default_doc("$XDG_RUNTIME_DIR/gunicorn.ctl, else ~/.gunicorn/gunicorn.ctl")
    .help("Unix socket where the master accepts management commands (`ferrocorn ctl`, `ferrocorn top`)."),
    Setting::new(
        "control_socket_mode",
        S,
        Kind::Int,
        Validator::OctalInt,
        DefaultValue::Int(0o600),
    )
    .cli(&["--control-socket-mode"])
    .meta("INT")
    .default_doc("0o600")
    .help("Permission bits of the control socket, e.g. 0o600."),
    Setting::flag("control_socket_disable", S)
        .cli(&["--no-control-socket"])
        .help("Do not create the control socket."),
];
