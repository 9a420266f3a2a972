//! The `ferrocorn` command line: subcommand dispatch (`bench`), Gunicorn's settings layers
//! (defaults and env, config file, `GUNICORN_CMD_ARGS`/`FERROCORN_CMD_ARGS`, argv), the
//! `--print-config`/`--check-config` modes, then hand-over to the master. Returns the exit
//! code (Gunicorn's: 1 config/bind error, 2 usage error, 3 worker boot error, 4 app load error).

use std::collections::HashMap;

use ferrocorn_config::{Config, ParsedArgs, Sources, Value};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::hooks::Hooks;
use crate::logging::{self, Sink, error};
use crate::options::ServerOptions;

/// Exit status: the app could not be loaded (Gunicorn's APP_LOAD_ERROR).
pub const EXIT_APP_LOAD: i32 = 4;
/// Exit status: bad configuration or a runtime failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status: bad command-line usage.
pub const EXIT_USAGE: i32 = 2;

/// Run the command line; `argv` excludes the program name.
pub fn run(py: Python<'_>, argv: Vec<String>) -> i32 {
    match argv.first().map(String::as_str) {
        Some("bench") => return py.detach(|| ferrocorn_bench::main(argv[1..].to_vec())),
        Some("ctl") => return py.detach(|| ferrocorn_ctl::ctl_main(argv[1..].to_vec())),
        Some("top") => return py.detach(|| ferrocorn_ctl::top_main(argv[1..].to_vec())),
        _ => {}
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
    let loaded = match load_settings(py, cli) {
        Ok(l) => l,
        Err((code, message)) => {
            eprintln!("ferrocorn: error: {message}");
            return code;
        }
    };
    let config = &loaded.config;
    if config.bool("print_config") {
        println!("{}", config.render());
        return 0;
    }
    let env = |key: &str| std::env::var(key).ok();
    let mut opts = match ServerOptions::from_config(config, &env) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ferrocorn: error: {e}");
            return EXIT_FAILURE;
        }
    };
    let hooks = match Hooks::from_globals(py, &loaded.hook_globals) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ferrocorn: error: {e}");
            return EXIT_FAILURE;
        }
    };
    if let Err(code) = init_logging(&opts) {
        return code;
    }
    match configure_python_logging(py, &loaded) {
        Ok(true) => {
            opts.python_logging = true;
            logging::init(opts.log_level, Sink::Python("gunicorn.error"));
        }
        Ok(false) => {}
        Err(message) => {
            eprintln!("ferrocorn: error: {message}");
            return EXIT_FAILURE;
        }
    }
    if config.bool("check_config") {
        return check_app(py, &opts);
    }
    crate::master::run(py, argv, loaded, opts, hooks)
}

fn init_logging(opts: &ServerOptions) -> Result<(), i32> {
    match Sink::open(&opts.error_log, false) {
        Ok(sink) => {
            logging::init(opts.log_level, sink);
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "ferrocorn: error: cannot open `errorlog` (--error-logfile) {:?}: {e}",
                opts.error_log
            );
            Err(EXIT_FAILURE)
        }
    }
}

/// Apply `logconfig_dict` / `logconfig_json` / `logconfig` through Python's logging.config.
fn configure_python_logging(py: Python<'_>, loaded: &Loaded) -> Result<bool, String> {
    let config = &loaded.config;
    let dict = loaded
        .raw_globals
        .iter()
        .find(|(n, _)| n == "logconfig_dict")
        .map(|(_, v)| v.clone_ref(py));
    let file = config.opt_str("logconfig").filter(|s| !s.is_empty());
    let json = config.opt_str("logconfig_json").filter(|s| !s.is_empty());
    if dict.as_ref().is_none_or(|d| !d.bind(py).is_truthy().unwrap_or(false))
        && file.is_none()
        && json.is_none()
    {
        return Ok(false);
    }
    py.import("ferrocorn._config")
        .and_then(|m| m.call_method1("configure_logging", (file, dict, json)))
        .and_then(|r| r.is_truthy())
        .map_err(|e| {
            format!(
                "invalid logging configuration (settings `logconfig`, `logconfig_dict`, `logconfig_json`):\n{}",
                crate::app::format_traceback(py, &e).trim_end()
            )
        })
}

fn check_app(py: Python<'_>, opts: &ServerOptions) -> i32 {
    if let Err(e) = crate::app::prepare(py, &opts.chdir, &opts.pythonpath, &opts.raw_env) {
        error!("cannot prepare the Python environment: {e}");
        return EXIT_FAILURE;
    }
    match crate::app::load(py, &opts.app_spec) {
        Ok(_) => 0,
        Err(e) => {
            error!("{e}");
            EXIT_APP_LOAD
        }
    }
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

/// The resolved configuration plus the config file's raw globals (for hooks).
pub struct Loaded {
    /// Settings after all layers.
    pub config: Config,
    /// Top-level names of the config file that are hooks, with their Python values.
    pub hook_globals: Vec<(String, Py<PyAny>)>,
    /// Config-file values that must stay Python objects (`logconfig_dict`).
    pub raw_globals: Vec<(String, Py<PyAny>)>,
}

struct ConfigFile {
    values: Vec<(String, Value)>,
    hooks: Vec<(String, Py<PyAny>)>,
    raw: Vec<(String, Py<PyAny>)>,
}

fn load_config_file(py: Python<'_>, location: &str) -> Result<ConfigFile, String> {
    let loaded = py
        .import("ferrocorn._config")
        .and_then(|m| m.call_method1("load", (location,)))
        .map_err(|e| {
        let tb = crate::app::format_traceback(py, &e);
        format!("failed to read config file {location:?}:\n{}", tb.trim_end())
    })?;
    let dict = loaded.cast::<PyDict>().map_err(|_| "config loader returned no dict".to_owned())?;
    let mut file = ConfigFile { values: Vec::new(), hooks: Vec::new(), raw: Vec::new() };
    for (key, value) in dict.iter() {
        let name = key.to_string();
        if !name.chars().next().is_some_and(char::is_lowercase)
            || ferrocorn_config::find(&name).is_none()
        {
            continue;
        }
        if crate::hooks::is_hook(&name) {
            file.hooks.push((name.clone(), value.clone().unbind()));
        }
        if name == "logconfig_dict" {
            file.raw.push((name.clone(), value.clone().unbind()));
        }
        file.values.push((name, to_value(&value)));
    }
    Ok(file)
}

/// Resolve every settings layer (env, config file, GUNICORN_CMD_ARGS/FERROCORN_CMD_ARGS,
/// argv). Errors carry the exit status and the message to print.
pub fn load_settings(py: Python<'_>, cli: ParsedArgs) -> Result<Loaded, (i32, String)> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let env_args_text =
        env.get("FERROCORN_CMD_ARGS").or_else(|| env.get("GUNICORN_CMD_ARGS")).cloned();
    let cmd_args_env = match env_args_text.as_deref().map(ferrocorn_config::parse_env_args) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            return Err((
                EXIT_USAGE,
                format!("error in GUNICORN_CMD_ARGS/FERROCORN_CMD_ARGS: {e}"),
            ));
        }
    };
    let file_path = config_location(&cli, cmd_args_env.as_ref());
    let file = match &file_path {
        Some(path) => load_config_file(py, path).map_err(|e| (EXIT_FAILURE, e))?,
        None => ConfigFile { values: Vec::new(), hooks: Vec::new(), raw: Vec::new() },
    };
    let config = Config::resolve(Sources { env, file: file.values, file_path, cmd_args_env, cli })
        .map_err(|e| (EXIT_FAILURE, e.to_string()))?;
    config.check_supported().map_err(|e| (EXIT_FAILURE, e.to_string()))?;
    Ok(Loaded { config, hook_globals: file.hooks, raw_globals: file.raw })
}
