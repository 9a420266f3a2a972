//! Gunicorn's settings layers resolved into one configuration: defaults and environment, the
//! config file (run by the Python loader, `_config.py`, whose globals become settings and
//! hooks), `GUNICORN_CMD_ARGS`/`FERROCORN_CMD_ARGS`, then argv. Used by the command line at
//! start-up and by the master when HUP reloads the configuration.

use std::collections::HashMap;

use ferrocorn_arbiter::ExitCode;
use ferrocorn_config::{Config, ParsedArgs, Sources, Value};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

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

/// One item of a list setting as text. A dict becomes the `PREFIX key=value ...` form of a
/// `pools` entry (`{'prefix': '/reports/', 'workers': 4}` is `/reports/ workers=4`).
fn list_item(item: &Bound<'_, PyAny>) -> String {
    let Ok(dict) = item.cast::<PyDict>() else { return item.to_string() };
    let mut words = Vec::new();
    if let Ok(Some(prefix)) = dict.get_item("prefix") {
        words.push(prefix.to_string());
    }
    for (key, value) in dict.iter() {
        let key = key.to_string();
        if key != "prefix" {
            words.push(format!("{key}={value}"));
        }
    }
    words.join(" ")
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
                .map(|it| it.flatten().map(|v| list_item(&v)).collect())
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
                ExitCode::Usage.code(),
                format!("error in GUNICORN_CMD_ARGS/FERROCORN_CMD_ARGS: {e}"),
            ));
        }
    };
    let file_path = config_location(&cli, cmd_args_env.as_ref());
    let file = match &file_path {
        Some(path) => load_config_file(py, path).map_err(|e| (ExitCode::Failure.code(), e))?,
        None => ConfigFile { values: Vec::new(), hooks: Vec::new(), raw: Vec::new() },
    };
    let config = Config::resolve(Sources { env, file: file.values, file_path, cmd_args_env, cli })
        .map_err(|e| (ExitCode::Failure.code(), e.to_string()))?;
    config.check_supported().map_err(|e| (ExitCode::Failure.code(), e.to_string()))?;
    Ok(Loaded { config, hook_globals: file.hooks, raw_globals: file.raw })
}
