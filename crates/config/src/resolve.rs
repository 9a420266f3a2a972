//! Layering the sources into one `Config` (defaults, env-derived defaults, config file,
//! `GUNICORN_CMD_ARGS`, command line — lowest to highest), typed access to the result,
//! `check_supported`, and the `--print-config` rendering.

use std::collections::HashMap;

use crate::cli::ParsedArgs;
use crate::error::{ConfigError, ErrorKind};
use crate::setting::Support;
use crate::setting::check;
use crate::settings::{index_of, settings};
use crate::value::Value;

/// Everything the configuration is built from. The caller gathers it (reads the environment,
/// executes the config file, parses argv); resolution itself does no I/O.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The process environment (for `WEB_CONCURRENCY`, `PORT`, `FORWARDED_ALLOW_IPS`, `SENDFILE`, ...).
    pub env: HashMap<String, String>,
    /// Config-file assignments whose names are settings, in file order.
    pub file: Vec<(String, Value)>,
    /// Path of the config file, for messages.
    pub file_path: Option<String>,
    /// `GUNICORN_CMD_ARGS`, parsed.
    pub cmd_args_env: Option<ParsedArgs>,
    /// The command line, parsed.
    pub cli: ParsedArgs,
}

/// Which layer a resolved value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A default derived from an environment variable (e.g. `WEB_CONCURRENCY`).
    Environment,
    /// Derived from the positional APP_MODULE (`default_proc_name`).
    App,
    /// The config file.
    ConfigFile,
    /// `GUNICORN_CMD_ARGS`.
    CmdArgsEnv,
    /// The command line.
    CommandLine,
}

/// The resolved value of every setting.
#[derive(Clone, Debug)]
pub struct Config {
    values: Vec<Value>,
    sources: Vec<Source>,
    app: Option<String>,
    file_path: Option<String>,
}

impl Config {
    /// Resolves every setting from `sources`, validating each value on the way.
    pub fn resolve(sources: Sources) -> Result<Config, ConfigError> {
        let mut values = Vec::with_capacity(settings().len());
        let mut origin = Vec::with_capacity(settings().len());
        for s in settings() {
            let from_env = s.env.and_then(|var| sources.env.get(var).map(|v| (var, v)));
            let value = check(s, s.default.value(&sources.env)).map_err(|e| match from_env {
                Some((var, v)) => e.context(&format!("environment variable {var}={v:?}")),
                None => e.context("built-in default"),
            })?;
            values.push(value);
            origin.push(if from_env.is_some() { Source::Environment } else { Source::Default });
        }
        let mut config = Config {
            values,
            sources: origin,
            app: sources.cli.app.clone(),
            file_path: sources.file_path,
        };

        if let Some(app) = &config.app {
            config.put("default_proc_name", Value::Str(app.clone()), Source::App, "APP_MODULE")?;
        }
        let file_ctx = match &config.file_path {
            Some(path) => format!("in config file {path}"),
            None => "in the config file".to_owned(),
        };
        for (name, value) in sources.file {
            if index_of(&name).is_some() {
                config.put(&name, value, Source::ConfigFile, &file_ctx)?;
            }
        }
        for (layer, source, ctx) in [
            (sources.cmd_args_env, Source::CmdArgsEnv, "in GUNICORN_CMD_ARGS"),
            (Some(sources.cli), Source::CommandLine, "on the command line"),
        ] {
            for (setting, value) in layer.map(|p| p.values).unwrap_or_default() {
                config.put(setting.name, value, source, ctx)?;
            }
        }
        Ok(config)
    }

    pub(crate) fn put(
        &mut self,
        name: &str,
        value: Value,
        source: Source,
        ctx: &str,
    ) -> Result<(), ConfigError> {
        let i = index_of(name).unwrap_or_else(|| panic!("unknown setting `{name}`"));
        self.values[i] = check(&settings()[i], value).map_err(|e| e.context(ctx))?;
        self.sources[i] = source;
        Ok(())
    }

    fn index(name: &str) -> usize {
        index_of(name).unwrap_or_else(|| panic!("unknown setting `{name}`"))
    }

    fn mismatch(name: &str, value: &Value, wanted: &str) -> ! {
        panic!("setting `{name}` holds {}, not {wanted}", value.py_repr())
    }

    /// The value of a setting. Panics on an unknown name (a programming error).
    pub fn get(&self, name: &str) -> &Value {
        &self.values[Self::index(name)]
    }

    /// Which layer the value came from. Panics on an unknown name.
    pub fn source(&self, name: &str) -> Source {
        self.sources[Self::index(name)]
    }

    /// An integer setting. Panics if the value is not an int (e.g. `workers = "auto"`; check
    /// `get` first for that one).
    pub fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Value::Int(i) => *i,
            other => Self::mismatch(name, other, "an int"),
        }
    }

    /// A float setting (an int is widened). Panics on other values.
    pub fn float(&self, name: &str) -> f64 {
        match self.get(name) {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            other => Self::mismatch(name, other, "a number"),
        }
    }

    /// A boolean setting; `None` reads as `false`. Panics on other values.
    pub fn bool(&self, name: &str) -> bool {
        match self.get(name) {
            Value::Bool(b) => *b,
            Value::None => false,
            other => Self::mismatch(name, other, "a bool"),
        }
    }

    /// A string setting; `None` reads as `""`. Panics on other values.
    pub fn str(&self, name: &str) -> &str {
        self.opt_str(name).unwrap_or("")
    }

    /// A string setting that may be `None`. Panics on other values.
    pub fn opt_str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Value::Str(s) => Some(s),
            Value::None => None,
            other => Self::mismatch(name, other, "a str"),
        }
    }

    /// A list setting; `None` reads as empty. Panics on other values.
    pub fn list(&self, name: &str) -> &[String] {
        match self.get(name) {
            Value::List(l) => l,
            Value::None => &[],
            other => Self::mismatch(name, other, "a list"),
        }
    }

    /// A mapping setting; `None` reads as empty. Panics on other values.
    pub fn map(&self, name: &str) -> &[(String, String)] {
        match self.get(name) {
            Value::Map(m) => m,
            Value::None => &[],
            other => Self::mismatch(name, other, "a dict"),
        }
    }

    /// True when no source set the setting (env-derived defaults count as defaults).
    pub fn is_default(&self, name: &str) -> bool {
        matches!(self.source(name), Source::Default | Source::Environment)
    }

    /// Serve `app` instead (a pool's `app=`).
    pub(crate) fn set_app(&mut self, app: String) {
        self.app = Some(app);
    }

    /// The application to serve: the positional APP_MODULE, else the `wsgi_app` setting.
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref().or_else(|| self.opt_str("wsgi_app"))
    }

    /// Fails if any setting ferrocorn does not implement was set by a source; the message names
    /// every such setting, its flags, where it was set, and (for unsupported ones) why.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        let mut first = None;
        let mut lines = Vec::new();
        for (i, s) in settings().iter().enumerate() {
            if s.support == Support::Yes || self.is_default(s.name) {
                continue;
            }
            let place = match self.sources[i] {
                Source::ConfigFile => match &self.file_path {
                    Some(path) => format!("in config file {path}"),
                    None => "in the config file".to_owned(),
                },
                Source::CmdArgsEnv => "in GUNICORN_CMD_ARGS".to_owned(),
                Source::CommandLine => "on the command line".to_owned(),
                Source::App | Source::Default | Source::Environment => {
                    "by the application".to_owned()
                }
            };
            let head = format!("setting `{}` ({}), set {place},", s.name, s.flags_display());
            lines.push(match s.support {
                Support::Unsupported(reason) => {
                    format!("{head} cannot be used: {reason}; remove it")
                }
                _ => {
                    format!("{head} is not supported yet by ferrocorn; remove it to run without it")
                }
            });
            first.get_or_insert(s.name);
        }
        match first {
            None => Ok(()),
            Some(name) => {
                Err(ConfigError::new(ErrorKind::Unsupported, Some(name), lines.join("\n")))
            }
        }
    }

    /// `--print-config`: one `name = value` line per setting, sorted by name, names padded,
    /// values as Python's `str()` shows them (Gunicorn's format). No trailing newline.
    pub fn render(&self) -> String {
        let width = settings().iter().map(|s| s.name.len()).max().unwrap_or(0);
        let mut rows: Vec<(&str, String)> =
            settings().iter().zip(&self.values).map(|(s, v)| (s.name, v.py_str())).collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        rows.iter().map(|(k, v)| format!("{k:width$} = {v}")).collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_args, parse_env_args};

    fn args(a: &[&str]) -> ParsedArgs {
        parse_args(&a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn file(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(Sources::default()).unwrap();
        assert_eq!(c.int("workers"), 1);
        assert_eq!(c.list("bind"), list(&["127.0.0.1:8000"]));
        assert_eq!(c.list("forwarded_allow_ips"), list(&["127.0.0.1", "::1"]));
        assert_eq!(c.list("proxy_allow_ips"), list(&["127.0.0.1", "::1"]));
        assert_eq!(c.list("forwarder_headers"), list(&["SCRIPT_NAME", "PATH_INFO"]));
        assert_eq!(
            c.map("secure_scheme_headers")[1],
            ("X-FORWARDED-PROTO".to_owned(), "https".to_owned())
        );
        assert_eq!(c.float("header_timeout"), 10.0);
        assert_eq!(c.str("proxy_protocol"), "off");
        assert_eq!(c.opt_str("accesslog"), None);
        assert!(c.bool("sendfile"));
        assert!(c.is_default("workers"));
        assert_eq!(c.app(), None);
    }

    #[test]
    fn precedence_layers() {
        // default < env-derived < file < GUNICORN_CMD_ARGS < CLI
        let base = || Sources {
            env: env(&[("WEB_CONCURRENCY", "3"), ("PORT", "9000")]),
            ..Sources::default()
        };
        let c = Config::resolve(base()).unwrap();
        assert_eq!((c.int("workers"), c.source("workers")), (3, Source::Environment));
        assert!(c.is_default("workers"));
        assert_eq!(c.list("bind"), list(&["0.0.0.0:9000"]));

        let mut s = base();
        s.file = file(&[("workers", Value::Int(4)), ("bind", Value::Str("unix:/s".into()))]);
        let c = Config::resolve(s.clone()).unwrap();
        assert_eq!((c.int("workers"), c.source("workers")), (4, Source::ConfigFile));
        assert_eq!(c.list("bind"), list(&["unix:/s"]));
        assert!(!c.is_default("workers"));

        s.cmd_args_env = Some(parse_env_args("-w 5").unwrap());
        let c = Config::resolve(s.clone()).unwrap();
        assert_eq!((c.int("workers"), c.source("workers")), (5, Source::CmdArgsEnv));
        assert_eq!(c.list("bind"), list(&["unix:/s"]));

        s.cli = args(&["-w", "6", "-b", "a:1", "-b", "b:2"]);
        let c = Config::resolve(s).unwrap();
        assert_eq!((c.int("workers"), c.source("workers")), (6, Source::CommandLine));
        // the CLI list replaces the file's list wholesale
        assert_eq!(c.list("bind"), list(&["a:1", "b:2"]));
    }

    #[test]
    fn env_derived_defaults() {
        let c = Config::resolve(Sources {
            env: env(&[("FORWARDED_ALLOW_IPS", "10.0.0.0/8, *"), ("SENDFILE", "no")]),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(c.list("forwarded_allow_ips"), list(&["10.0.0.0/8", "*"]));
        assert!(!c.bool("sendfile"));
        let e =
            Config::resolve(Sources { env: env(&[("WEB_CONCURRENCY", "")]), ..Sources::default() })
                .unwrap_err();
        assert_eq!(e.setting, Some("workers"));
        assert!(e.message.contains("WEB_CONCURRENCY"), "{e}");
    }

    #[test]
    fn file_values_are_validated_and_unknown_names_ignored() {
        let ok = |pairs: &[(&str, Value)]| {
            Config::resolve(Sources { file: file(pairs), ..Sources::default() }).unwrap()
        };
        let c = ok(&[
            ("loglevel", Value::Str("DEBUG".into())),
            ("umask", Value::Str("022".into())),
            ("proxy_protocol", Value::Bool(true)),
            ("forwarded_allow_ips", Value::Str("1.2.3.4,5.6.7.8".into())),
            ("pythonpath", Value::Str("/a,/b".into())),
            ("on_starting", Value::Str("<callable>".into())),
            ("not_a_setting", Value::Int(1)),
        ]);
        assert_eq!(c.str("loglevel"), "debug");
        assert_eq!(c.int("umask"), 0o22);
        assert_eq!(c.str("proxy_protocol"), "auto");
        assert_eq!(c.list("forwarded_allow_ips"), list(&["1.2.3.4", "5.6.7.8"]));
        assert_eq!(c.list("pythonpath"), list(&["/a", "/b"]));
        assert_eq!(ok(&[("proxy_protocol", Value::Bool(false))]).str("proxy_protocol"), "off");
        assert_eq!(ok(&[("umask", Value::Str("0x12".into()))]).int("umask"), 0x12);

        let e = Config::resolve(Sources {
            file: file(&[("timeout", Value::Int(-1))]),
            file_path: Some("g.conf.py".into()),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(
            e.message.starts_with(
                "in config file g.conf.py: invalid value for `timeout` (-t/--timeout)"
            ),
            "{e}"
        );
        let e = Config::resolve(Sources {
            file: file(&[("header_map", Value::Str("x".into()))]),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(e.message.contains("drop, refuse, dangerous"), "{e}");
    }

    #[test]
    fn limits_are_clamped() {
        let c = |cli: &[&str]| {
            Config::resolve(Sources { cli: args(cli), ..Sources::default() }).unwrap()
        };
        assert_eq!(c(&["--limit-request-line", "0"]).int("limit_request_line"), 0);
        assert_eq!(c(&["--limit-request-line", "9000"]).int("limit_request_line"), 8190);
        assert_eq!(c(&["--limit-request-line", "8190"]).int("limit_request_line"), 8190);
        assert_eq!(c(&["--limit-request-line", "100"]).int("limit_request_line"), 100);
        assert_eq!(c(&["--limit-request-fields", "0"]).int("limit_request_fields"), 32768);
        assert_eq!(c(&["--limit-request-fields", "40000"]).int("limit_request_fields"), 32768);
        assert_eq!(c(&["--limit-request-fields", "50"]).int("limit_request_fields"), 50);
        assert_eq!(c(&["--limit-request-field_size", "0"]).int("limit_request_field_size"), 8190);
        assert_eq!(
            c(&["--limit-request-field_size", "20000"]).int("limit_request_field_size"),
            20000
        );
    }

    #[test]
    fn app_and_proc_name() {
        let c = Config::resolve(Sources {
            file: file(&[("wsgi_app", Value::Str("f:app".into()))]),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(c.app(), Some("f:app"));
        assert_eq!(c.str("default_proc_name"), "gunicorn");
        let c = Config::resolve(Sources {
            file: file(&[("wsgi_app", Value::Str("f:app".into()))]),
            cli: args(&["cli:app"]),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(c.app(), Some("cli:app"));
        assert_eq!(c.str("default_proc_name"), "cli:app");
    }

    #[test]
    fn check_supported_names_the_setting() {
        let c = Config::resolve(Sources::default()).unwrap();
        assert_eq!(c.check_supported(), Ok(()));

        let c =
            Config::resolve(Sources { cli: args(&["--reload", "-w", "2"]), ..Sources::default() })
                .unwrap();
        let e = c.check_supported().unwrap_err();
        assert_eq!((e.kind, e.setting), (ErrorKind::Unsupported, Some("reload")));
        assert!(e.message.contains("`reload` (--reload)"), "{e}");
        assert!(
            e.message.contains("on the command line") && e.message.contains("not supported yet"),
            "{e}"
        );

        let c = Config::resolve(Sources {
            file: file(&[("paste", Value::Str("x.ini".into()))]),
            file_path: Some("g.py".into()),
            ..Sources::default()
        })
        .unwrap();
        let e = c.check_supported().unwrap_err();
        assert!(
            e.message.contains("in config file g.py") && e.message.contains("PasteDeploy"),
            "{e}"
        );

        // Planned settings left at their (env-derived) defaults pass.
        let c = Config::resolve(Sources {
            env: env(&[("XDG_RUNTIME_DIR", "/run/u")]),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(c.str("control_socket"), "/run/u/gunicorn.ctl");
        assert_eq!(c.check_supported(), Ok(()));
    }

    #[test]
    fn print_config_render() {
        let c = Config::resolve(Sources {
            cli: args(&["-w", "3", "--access-logfile", "-"]),
            ..Sources::default()
        })
        .unwrap();
        let out = c.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), settings().len());
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
        let width = settings().iter().map(|s| s.name.len()).max().unwrap();
        assert!(lines.contains(&format!("{:width$} = 3", "workers").as_str()));
        assert!(lines.contains(&format!("{:width$} = -", "accesslog").as_str()));
        assert!(lines.contains(&format!("{:width$} = ['127.0.0.1:8000']", "bind").as_str()));
        assert!(lines.contains(&format!("{:width$} = None", "pidfile").as_str()));
        assert!(lines.contains(&format!("{:width$} = False", "preload_app").as_str()));
        assert!(lines.contains(&format!("{:width$} = 10.0", "header_timeout").as_str()));
    }

    #[test]
    #[should_panic(expected = "unknown setting `nope`")]
    fn unknown_name_panics() {
        Config::resolve(Sources::default()).unwrap().get("nope");
    }
}
