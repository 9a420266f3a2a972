//! Registry records for Gunicorn's "Server Socket" section: what to listen on.

use crate::setting::{DefaultValue, Env, Kind, Section, Setting, Validator};
use crate::value::Value;

const S: Section = Section::ServerSocket;

/// `['0.0.0.0:$PORT']` when `PORT` is in the environment, else `['127.0.0.1:8000']`.
fn bind_default(env: &Env) -> Value {
    let addr = match env.get("PORT") {
        Some(port) => format!("0.0.0.0:{port}"),
        None => "127.0.0.1:8000".to_owned(),
    };
    Value::List(vec![addr])
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting::new("bind", S, Kind::List, Validator::StrList, DefaultValue::Computed(bind_default))
        .cli(&["-b", "--bind"])
        .meta("ADDRESS")
        .append()
        .env("PORT")
        .default_doc("['127.0.0.1:8000'], or ['0.0.0.0:$PORT'] when PORT is set")
        .help(
            "Address to listen on: HOST, HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N. Give the \
             flag several times to listen on several addresses.",
        ),
    Setting::pos_int("backlog", S, 2048)
        .cli(&["--backlog"])
        .help("Length of the kernel queue of connections waiting to be accepted, per listener."),
];
