//! The `ferrocorn` command line: subcommand dispatch (`bench`, `ctl`, `top`; `balance` is the
//! server with upstreams instead of an app), Gunicorn's settings layers
//! (defaults and env, config file, `GUNICORN_CMD_ARGS`/`FERROCORN_CMD_ARGS`, argv), the
//! `--print-config`/`--check-config` modes, then hand-over to the master. Returns the exit
//! code (`ferrocorn_arbiter::ExitCode`: Gunicorn's values).

use ferrocorn_arbiter::ExitCode;
use pyo3::prelude::*;

use crate::hooks::Hooks;
use crate::logging::{self, Sink, error};
use crate::options::ServerOptions;
use crate::settings_load::{Loaded, load_settings};

/// Run the command line; `argv` excludes the program name.
pub fn run(py: Python<'_>, argv: Vec<String>) -> i32 {
    match argv.first().map(String::as_str) {
        Some("bench") => return py.detach(|| ferrocorn_bench::main(argv[1..].to_vec())),
        Some("ctl") => return py.detach(|| ferrocorn_ctl::ctl_main(argv[1..].to_vec())),
        Some("top") => return py.detach(|| ferrocorn_ctl::top_main(argv[1..].to_vec())),
        _ => {}
    }
    // `ferrocorn balance ...` is the server with upstreams and no app.
    let balance = argv.first().is_some_and(|a| a == "balance");
    let argv = if balance { argv[1..].to_vec() } else { argv };
    let cli = match ferrocorn_config::parse_args(&argv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferrocorn: error: {e}");
            eprintln!("Run `ferrocorn --help` for the options.");
            return ExitCode::Usage.code();
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
    if balance && config.list("upstreams").is_empty() {
        eprintln!(
            "ferrocorn: error: `ferrocorn balance` needs at least one upstream: give \
             --upstream HOST:PORT (once per upstream) or `upstreams = [...]` in the config file"
        );
        return ExitCode::Usage.code();
    }
    if config.bool("print_config") {
        println!("{}", config.render());
        return 0;
    }
    let env = |key: &str| std::env::var(key).ok();
    let mut opts = match ServerOptions::from_config(config, &env) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ferrocorn: error: {e}");
            return ExitCode::Failure.code();
        }
    };
    let hooks = match Hooks::from_globals(py, &loaded.hook_globals) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ferrocorn: error: {e}");
            return ExitCode::Failure.code();
        }
    };
    if let Err(code) = init_logging(&opts) {
        return code;
    }
    match configure_python_logging(py, &loaded) {
        Ok(true) => {
            opts.log.python_logging = true;
            logging::init(opts.log.log_level, Sink::Python("gunicorn.error"));
        }
        Ok(false) => {}
        Err(message) => {
            eprintln!("ferrocorn: error: {message}");
            return ExitCode::Failure.code();
        }
    }
    if config.bool("check_config") {
        return check_app(py, &opts);
    }
    crate::master::run(py, argv, loaded, opts, hooks)
}

fn init_logging(opts: &ServerOptions) -> Result<(), i32> {
    match Sink::open(&opts.log.error_log, false) {
        Ok(sink) => {
            logging::init(opts.log.log_level, sink);
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "ferrocorn: error: cannot open `errorlog` (--error-logfile) {:?}: {e}",
                opts.log.error_log
            );
            Err(ExitCode::Failure.code())
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
    if let Err(e) =
        crate::app::prepare(py, &opts.app.chdir, &opts.app.pythonpath, &opts.app.raw_env)
    {
        error!("cannot prepare the Python environment: {e}");
        return ExitCode::Failure.code();
    }
    match crate::app::load(py, &opts.app.app_spec) {
        Ok(_) => 0,
        Err(e) => {
            error!("{e}");
            ExitCode::AppLoad.code()
        }
    }
}
