//! The `ferrocorn` command line: subcommand dispatch (`bench`), Gunicorn's settings layers
//! (defaults and env, config file, `GUNICORN_CMD_ARGS`/`FERROCORN_CMD_ARGS`, argv), then
//! start-up of the server: logs, app import, listeners, and the worker loop. Returns the exit
//! code (Gunicorn's: 1 config/bind error, 2 usage error, 4 app load error).

use std::collections::HashMap;

use ferrocorn_config::{Config, ParsedArgs, Sources, Value};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::access_log::AccessLog;
use crate::listen::{BoundAddr, Listener};
use crate::logging::{self, Level, Sink, error, info};
use crate::options::ServerOptions;
use crate::server::worker;
use crate::wsgi::{ListenerEnv, WsgiApp};

/// Exit status: the app could not be loaded (Gunicorn's APP_LOAD_ERROR).
pub const EXIT_APP_LOAD: i32 = 4;
/// Exit status: bad configuration or a runtime failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status: bad command-line usage.
pub const EXIT_USAGE: i32 = 2;

/// Run the command line; `argv` excludes the program name.
pub fn run(py: Python<'_>, argv: Vec<String>) -> i32 {
    if argv.first().map(String::as_str) == Some("bench") {
        let rest = argv[1..].to_vec();
        return py.detach(|| ferrocorn_bench::main(rest));
    }
    let cli = match ferrocorn_config::parse_args(&argv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferrocorn: error: {e}");
            eprintln!("Run `ferrocorn --help` for the options.");
            return EXIT_USAGE;
        }
    };
    if cli.help {
        print!("{}", ferrocorn_config::render_help());
        return 0;
    }
    if cli.version {
        println!("ferrocorn {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let config = match resolve_config(py, cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if config.bool("print_config") {
        println!("{}", config.render());
        return 0;
    }
    let env = |key: &str| std::env::var(key).ok();
    let opts = match ServerOptions::from_config(&config, &env) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ferrocorn: error: {e}");
            return EXIT_FAILURE;
        }
    };
    serve(py, opts, config.bool("check_config"))
}

fn config_location(cli: &ParsedArgs, env_args: Option<&ParsedArgs>) -> Option<String> {
    let from = |args: &ParsedArgs| {
        args.values.iter().rev().find(|(s, _)| s.name == "config").and_then(|(_, v)| match v {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
    };
    from(cli).or_else(|| env_args.and_then(from)).or_else(|| {
        std::path::Path::new("gunicorn.conf.py").exists().then(|| "gunicorn.conf.py".to_owned())
    })
}

fn to_value(obj: &Bound<'_, PyAny>) -> Value {
    if obj.is_none() {
        Value::None
    } else if let Ok(b) = obj.extract::<bool>() {
        Value::Bool(b)
    } else if let Ok(i) = obj.extract::<i64>() {
        Value::Int(i)
    } else if let Ok(f) = obj.extract::<f64>() {
        Value::Float(f)
    } else if let Ok(s) = obj.extract::<String>() {
        Value::Str(s)
    } else if let Ok(d) = obj.cast::<PyDict>() {
        Value::Map(d.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    } else if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        Value::List(
            obj.try_iter()
                .map(|it| it.flatten().map(|v| v.to_string()).collect())
                .unwrap_or_default(),
        )
    } else if obj.is_callable() {
        Value::Str(format!(
            "<callable {}>",
            obj.getattr("__name__").map(|n| n.to_string()).unwrap_or_default()
        ))
    } else {
        Value::Str(obj.to_string())
    }
}

fn load_config_file(py: Python<'_>, location: &str) -> Result<Vec<(String, Value)>, String> {
    let loaded = py
        .import("ferrocorn._config")
        .and_then(|m| m.call_method1("load", (location,)))
        .map_err(|e| {
        let tb = crate::app::format_traceback(py, &e);
        format!("failed to read config file {location:?}:\n{}", tb.trim_end())
    })?;
    let dict = loaded.cast::<PyDict>().map_err(|_| "config loader returned no dict".to_owned())?;
    let mut values = Vec::new();
    for (key, value) in dict.iter() {
        let name = key.to_string();
        if name.chars().next().is_some_and(char::is_lowercase)
            && ferrocorn_config::find(&name).is_some()
        {
            values.push((name, to_value(&value)));
        }
    }
    Ok(values)
}

fn resolve_config(py: Python<'_>, cli: ParsedArgs) -> Result<Config, i32> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let env_args_text =
        env.get("FERROCORN_CMD_ARGS").or_else(|| env.get("GUNICORN_CMD_ARGS")).cloned();
    let cmd_args_env = match env_args_text.as_deref().map(ferrocorn_config::parse_env_args) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("ferrocorn: error in GUNICORN_CMD_ARGS/FERROCORN_CMD_ARGS: {e}");
            return Err(EXIT_USAGE);
        }
    };
    let file_path = config_location(&cli, cmd_args_env.as_ref());
    let file = match &file_path {
        Some(path) => match load_config_file(py, path) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("ferrocorn: error: {e}");
                return Err(EXIT_FAILURE);
            }
        },
        None => Vec::new(),
    };
    let config =
        Config::resolve(Sources { env, file, file_path, cmd_args_env, cli }).map_err(|e| {
            eprintln!("ferrocorn: error: {e}");
            EXIT_FAILURE
        })?;
    config.check_supported().map_err(|e| {
        eprintln!("ferrocorn: error: {e}");
        EXIT_FAILURE
    })?;
    Ok(config)
}

fn listener_env(listener: &Listener) -> ListenerEnv {
    match &listener.addr {
        BoundAddr::Tcp(addr) => {
            ListenerEnv { server_name: addr.ip().to_string(), server_port: addr.port().to_string() }
        }
        BoundAddr::Unix(_) => {
            ListenerEnv { server_name: String::new(), server_port: String::new() }
        }
    }
}

fn remove_unix_sockets(listeners: &[Listener]) {
    for listener in listeners {
        if let (BoundAddr::Unix(path), true) = (&listener.addr, listener.owns_path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn serve(py: Python<'_>, opts: ServerOptions, check_only: bool) -> i32 {
    let sink = match Sink::open(&opts.error_log, false) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "ferrocorn: error: cannot open `errorlog` (--error-logfile) {:?}: {e}",
                opts.error_log
            );
            return EXIT_FAILURE;
        }
    };
    logging::init(opts.log_level, sink);
    let access_log = match &opts.access_log {
        Some((target, format)) => match Sink::open(target, true) {
            Ok(sink) => Some(AccessLog::new(format, sink)),
            Err(e) => {
                error!("cannot open `accesslog` (--access-logfile) {target:?}: {e}");
                return EXIT_FAILURE;
            }
        },
        None => None,
    };
    if let Err(e) = crate::app::prepare(py, &opts.chdir, &opts.pythonpath, &opts.raw_env) {
        error!("cannot prepare the Python environment: {e}");
        return EXIT_FAILURE;
    }
    let script_name = std::env::var("SCRIPT_NAME").unwrap_or_default();
    if check_only {
        return match crate::app::load(py, &opts.app_spec) {
            Ok(_) => 0,
            Err(e) => {
                error!("{e}");
                EXIT_APP_LOAD
            }
        };
    }
    info!("Starting ferrocorn {}", env!("CARGO_PKG_VERSION"));
    let mut listeners = Vec::new();
    for spec in &opts.binds {
        match crate::listen::bind(spec, opts.listen) {
            Ok(l) => {
                info!("Listening at: {} ({})", l.addr, std::process::id());
                listeners.push(l);
            }
            Err(e) => {
                error!("{e}");
                remove_unix_sockets(&listeners);
                return EXIT_FAILURE;
            }
        }
    }
    info!("Using worker: sync");
    info!("Booting worker with pid: {}", std::process::id());
    let app = match crate::app::load(py, &opts.app_spec) {
        Ok(app) => app,
        Err(e) => {
            error!("Exception in worker process:\n{e}");
            error!("App failed to load.");
            remove_unix_sockets(&listeners);
            return EXIT_APP_LOAD;
        }
    };
    let envs: Vec<ListenerEnv> = listeners.iter().map(listener_env).collect();
    let wsgi = match WsgiApp::new(py, app, &envs, &script_name, opts.workers > 1, opts.sendfile) {
        Ok(w) => w,
        Err(e) => {
            error!("cannot prepare the WSGI bridge: {e}");
            return EXIT_FAILURE;
        }
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let result = py.detach(|| worker::run(opts, wsgi, &listeners, access_log));
    let code = match result {
        Ok(_) => {
            info!("Worker exiting (pid: {})", std::process::id());
            info!("Shutting down: Master");
            0
        }
        Err(e) => {
            error!("worker failed: {e}");
            EXIT_FAILURE
        }
    };
    remove_unix_sockets(&listeners);
    let _ = Level::Info;
    code
}
