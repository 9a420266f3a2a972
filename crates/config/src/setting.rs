//! The shape of one registry record: `Setting` and the small enums describing it (`Section`,
//! `Support`, `Kind`, `Action`, `DefaultValue`, `Validator`), plus the `const` builder used by
//! the per-section files under `settings/` so each setting is written once.

use std::collections::HashMap;

use crate::error::{ConfigError, ErrorKind};
pub use crate::validate::Validator;
use crate::value::Value;

/// Gunicorn's grouping of settings (plus ferrocorn's own group); order = documentation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// Where the configuration comes from.
    ConfigFile,
    /// Listening sockets.
    ServerSocket,
    /// Worker count, type and lifecycle.
    WorkerProcesses,
    /// Request parser limits.
    Security,
    /// Development aids.
    Debugging,
    /// Process-level behaviour and proxy trust.
    ServerMechanics,
    /// Access/error logs, syslog, statsd.
    Logging,
    /// Process titles.
    ProcessNaming,
    /// Python callables run at lifecycle points.
    ServerHooks,
    /// TLS.
    Ssl,
    /// HTTP/2.
    Http2,
    /// Gunicorn's "dirty arbiter" worker pool.
    DirtyArbiters,
    /// The `gunicornc` control socket.
    Control,
    /// Settings ferrocorn adds on top of Gunicorn's.
    Ferrocorn,
    /// ferrocorn's response cache.
    Cache,
    /// `ferrocorn balance`: the load balancer in front of upstream servers.
    Balance,
}

impl Section {
    /// Every section, in documentation order.
    pub const ALL: [Section; 16] = [
        Section::ConfigFile,
        Section::ServerSocket,
        Section::WorkerProcesses,
        Section::Security,
        Section::Debugging,
        Section::ServerMechanics,
        Section::Logging,
        Section::ProcessNaming,
        Section::ServerHooks,
        Section::Ssl,
        Section::Http2,
        Section::DirtyArbiters,
        Section::Control,
        Section::Ferrocorn,
        Section::Cache,
        Section::Balance,
    ];

    /// The section's title as Gunicorn's documentation spells it.
    pub fn title(self) -> &'static str {
        match self {
            Section::ConfigFile => "Config File",
            Section::ServerSocket => "Server Socket",
            Section::WorkerProcesses => "Worker Processes",
            Section::Security => "Security",
            Section::Debugging => "Debugging",
            Section::ServerMechanics => "Server Mechanics",
            Section::Logging => "Logging",
            Section::ProcessNaming => "Process Naming",
            Section::ServerHooks => "Server Hooks",
            Section::Ssl => "SSL",
            Section::Http2 => "HTTP/2",
            Section::DirtyArbiters => "Dirty Arbiters",
            Section::Control => "Control",
            Section::Ferrocorn => "Ferrocorn",
            Section::Cache => "Response Cache",
            Section::Balance => "Load Balancer",
        }
    }
}

/// Whether ferrocorn honours a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented.
    Yes,
    /// A recognised Gunicorn setting that ferrocorn does not implement yet.
    Planned,
    /// A Gunicorn setting ferrocorn will not implement; the text says why.
    Unsupported(&'static str),
}

/// The shape of a setting's resolved value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `True`/`False`.
    Bool,
    /// Whole number.
    Int,
    /// Number of seconds with a fraction.
    Float,
    /// Text (possibly `None`).
    Str,
    /// List of strings.
    List,
    /// Mapping of string to string.
    Map,
    /// A Python callable (server hook); held as an opaque placeholder.
    Hook,
}

/// How a command-line flag of the setting consumes arguments (argparse's `action`/`nargs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `--flag VALUE`; the last occurrence wins.
    Store,
    /// `--flag VALUE`, repeatable; occurrences are collected into a list.
    Append,
    /// `--flag` with no value stores `true`.
    StoreTrue,
    /// `--flag` with no value stores this boolean (`--no-sendfile` stores `false`).
    StoreConst(bool),
    /// `--flag [VALUE]`: a bare flag stores the given text; an accepted value may follow.
    OptionalValue(&'static str),
}

/// The environment the env-derived defaults read (`Sources::env`, never the real process env).
pub type Env = HashMap<String, String>;

/// A setting's default, written as a `const`.
#[derive(Clone, Copy, Debug)]
pub enum DefaultValue {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(&'static str),
    /// A list of strings.
    List(&'static [&'static str]),
    /// A mapping.
    Map(&'static [(&'static str, &'static str)]),
    /// Computed from the environment; the result goes through the setting's validator.
    Computed(fn(&Env) -> Value),
}

impl DefaultValue {
    /// The default's value in the given environment.
    pub fn value(&self, env: &Env) -> Value {
        match *self {
            DefaultValue::None => Value::None,
            DefaultValue::Bool(b) => Value::Bool(b),
            DefaultValue::Int(i) => Value::Int(i),
            DefaultValue::Float(f) => Value::Float(f),
            DefaultValue::Str(s) => Value::Str(s.to_owned()),
            DefaultValue::List(items) => {
                Value::List(items.iter().map(|s| (*s).to_owned()).collect())
            }
            DefaultValue::Map(pairs) => {
                Value::Map(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
            }
            DefaultValue::Computed(f) => f(env),
        }
    }
}

/// One setting of the registry.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The config-file name (Gunicorn's `name`).
    pub name: &'static str,
    /// Documentation group.
    pub section: Section,
    /// Command-line flags, short ones first; empty = config file only.
    pub cli: &'static [&'static str],
    /// Placeholder shown for the flag's value in `--help`.
    pub meta: Option<&'static str>,
    /// Shape of the resolved value.
    pub kind: Kind,
    /// One-paragraph description.
    pub help: &'static str,
    /// Whether ferrocorn honours it.
    pub support: Support,
    /// Environment variable the default is derived from, if any.
    pub env: Option<&'static str>,
    /// How the CLI flag consumes arguments.
    pub action: Action,
    /// Default value.
    pub default: DefaultValue,
    /// Input check and normalisation.
    pub validator: Validator,
    /// How the default is shown in docs/help when the value alone would mislead.
    pub default_doc: Option<&'static str>,
}

impl PartialEq for Setting {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Setting {
    /// A setting with the given shape; CLI-less, supported, no help yet.
    pub const fn new(
        name: &'static str,
        section: Section,
        kind: Kind,
        validator: Validator,
        default: DefaultValue,
    ) -> Setting {
        let action = match kind {
            Kind::Bool => Action::StoreTrue,
            _ => Action::Store,
        };
        Setting {
            name,
            section,
            cli: &[],
            meta: None,
            kind,
            help: "",
            support: Support::Yes,
            env: None,
            action,
            default,
            validator,
            default_doc: None,
        }
    }

    /// A store-true flag defaulting to `False`.
    pub const fn flag(name: &'static str, section: Section) -> Setting {
        Setting::new(name, section, Kind::Bool, Validator::Bool, DefaultValue::Bool(false))
    }

    /// A non-negative integer.
    pub const fn pos_int(name: &'static str, section: Section, default: i64) -> Setting {
        Setting::new(name, section, Kind::Int, Validator::PosInt, DefaultValue::Int(default))
            .meta("INT")
    }

    /// A string with a string default.
    pub const fn string(name: &'static str, section: Section, default: &'static str) -> Setting {
        Setting::new(name, section, Kind::Str, Validator::Str, DefaultValue::Str(default))
    }

    /// A string defaulting to `None`.
    pub const fn opt_string(name: &'static str, section: Section) -> Setting {
        Setting::new(name, section, Kind::Str, Validator::Str, DefaultValue::None)
    }

    /// One of a fixed set of words.
    pub const fn choice(
        name: &'static str,
        section: Section,
        choices: &'static [&'static str],
        default: &'static str,
    ) -> Setting {
        Setting::new(
            name,
            section,
            Kind::Str,
            Validator::Choice(choices),
            DefaultValue::Str(default),
        )
    }

    /// A server hook: no CLI, any value accepted (the Python callable is kept by the caller).
    pub const fn hook(name: &'static str) -> Setting {
        Setting::new(name, Section::ServerHooks, Kind::Hook, Validator::Any, DefaultValue::None)
    }

    /// Sets the command-line flags.
    pub const fn cli(mut self, flags: &'static [&'static str]) -> Setting {
        self.cli = flags;
        self
    }

    /// Sets the `--help` placeholder for the flag's value.
    pub const fn meta(mut self, meta: &'static str) -> Setting {
        self.meta = Some(meta);
        self
    }

    /// Sets the description.
    pub const fn help(mut self, help: &'static str) -> Setting {
        self.help = help;
        self
    }

    /// Sets the support status.
    pub const fn support(mut self, support: Support) -> Setting {
        self.support = support;
        self
    }

    /// Marks the setting as recognised but not implemented yet.
    pub const fn planned(self) -> Setting {
        self.support(Support::Planned)
    }

    /// Names the environment variable the default is derived from.
    pub const fn env(mut self, var: &'static str) -> Setting {
        self.env = Some(var);
        self
    }

    /// Overrides the CLI action.
    pub const fn action(mut self, action: Action) -> Setting {
        self.action = action;
        self
    }

    /// Makes the flag repeatable, collecting values into a list.
    pub const fn append(self) -> Setting {
        self.action(Action::Append)
    }

    /// Overrides how the default is shown in docs and help.
    pub const fn default_doc(mut self, text: &'static str) -> Setting {
        self.default_doc = Some(text);
        self
    }

    /// The flags joined for messages: `-w/--workers`, or `config file only`.
    pub fn flags_display(&self) -> String {
        if self.cli.is_empty() { "config file only".to_owned() } else { self.cli.join("/") }
    }

    /// The default as documentation shows it.
    pub fn default_display(&self) -> String {
        match self.default_doc {
            Some(text) => text.to_owned(),
            None => {
                let raw = self.default.value(&Env::new());
                crate::validate::run(self.validator, raw.clone()).unwrap_or(raw).py_repr()
            }
        }
    }

    /// Whether the CLI flag reads a value argument.
    pub fn takes_value(&self) -> bool {
        matches!(self.action, Action::Store | Action::Append)
    }
}

/// Checks and normalises `value` for `setting`; a rejection names the setting and its flags.
pub fn check(setting: &'static Setting, value: Value) -> Result<Value, ConfigError> {
    crate::validate::run(setting.validator, value).map_err(|r| {
        ConfigError::new(
            ErrorKind::InvalidValue,
            Some(setting.name),
            format!(
                "invalid value for `{}` ({}): {}; {}",
                setting.name,
                setting.flags_display(),
                r.problem,
                r.accepted
            ),
        )
    })
}
