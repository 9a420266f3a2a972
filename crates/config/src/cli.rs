//! Command-line parsing with argparse's rules (`--flag value`, `--flag=value`, `-fVALUE`,
//! clustered short switches, unique-prefix abbreviations, `--`), for both argv and
//! `GUNICORN_CMD_ARGS`. Values are validated as they are read.

use std::sync::OnceLock;

use crate::error::{ConfigError, ErrorKind};
use crate::setting::check;
use crate::setting::{Action, Setting};
use crate::settings::settings;
use crate::shlex::{SplitError, split};
use crate::validate::run;
use crate::value::Value;

/// The result of parsing one argument list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedArgs {
    /// Settings given, each once, in order of first appearance, with validated values
    /// (repeatable flags collected into one list).
    pub values: Vec<(&'static Setting, Value)>,
    /// The positional APP_MODULE, if given.
    pub app: Option<String>,
    /// `-h/--help` was given.
    pub help: bool,
    /// `-v/--version` was given.
    pub version: bool,
}

impl ParsedArgs {
    /// The value given for the setting called `name`, if it was given.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(s, _)| s.name == name).map(|(_, v)| v)
    }

    fn set(&mut self, setting: &'static Setting, value: Value) {
        match self.values.iter_mut().find(|(s, _)| s.name == setting.name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((setting, value)),
        }
    }

    fn append(&mut self, setting: &'static Setting, value: Value) {
        let Value::List(new) = value else { return self.set(setting, value) };
        match self.values.iter_mut().find(|(s, _)| s.name == setting.name) {
            Some((_, Value::List(list))) => list.extend(new),
            _ => self.set(setting, Value::List(new)),
        }
    }
}

/// What a flag does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Opt {
    Set(&'static Setting),
    Help,
    Version,
}

/// Every flag with its meaning; `-h/--help` and `-v/--version` included.
fn options() -> &'static [(&'static str, Opt)] {
    static OPTIONS: OnceLock<Vec<(&'static str, Opt)>> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut all = vec![
            ("-h", Opt::Help),
            ("--help", Opt::Help),
            ("-v", Opt::Version),
            ("--version", Opt::Version),
        ];
        for s in settings() {
            all.extend(s.cli.iter().map(|f| (*f, Opt::Set(s))));
        }
        all
    })
}

/// Parses argv (without the program name).
pub fn parse_args(args: &[String]) -> Result<ParsedArgs, ConfigError> {
    let mut out = ParsedArgs::default();
    let mut i = 0;
    let mut only_positionals = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_positionals || !looks_like_option(arg) {
            positional(&mut out, arg)?;
        } else if arg == "--" {
            only_positionals = true;
        } else if arg.starts_with("--") {
            let (name, explicit) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (arg.as_str(), None),
            };
            let (flag, opt) = lookup_long(name)?;
            apply(&mut out, flag, opt, explicit, args, &mut i)?;
        } else {
            short_cluster(&mut out, arg, args, &mut i)?;
        }
    }
    Ok(out)
}

/// Splits `GUNICORN_CMD_ARGS` like a POSIX shell, then parses it as arguments.
pub fn parse_env_args(text: &str) -> Result<ParsedArgs, ConfigError> {
    let words = split(text).map_err(|e| {
        let problem = match e {
            SplitError::NoClosingQuotation => "a quote is never closed",
            SplitError::NoEscapedCharacter => "it ends with a lone backslash",
        };
        ConfigError::new(
            ErrorKind::Syntax,
            None,
            format!("cannot split GUNICORN_CMD_ARGS ({text:?}): {problem}; fix the shell quoting"),
        )
    })?;
    parse_args(&words).map_err(|e| e.context("in GUNICORN_CMD_ARGS"))
}

/// argparse's test: starts with `-`, is not just `-`, and is not a negative number.
fn looks_like_option(arg: &str) -> bool {
    arg.len() > 1 && arg.starts_with('-') && arg[1..].parse::<f64>().is_err()
}

fn positional(out: &mut ParsedArgs, arg: &str) -> Result<(), ConfigError> {
    if let Some(app) = &out.app {
        return Err(ConfigError::new(
            ErrorKind::ExtraArgument,
            None,
            format!(
                "unexpected extra argument '{arg}' (APP_MODULE is already '{app}'); give exactly one \
                 APP_MODULE"
            ),
        ));
    }
    out.app = Some(arg.to_owned());
    Ok(())
}

/// An exact long flag, or the one that a unique prefix abbreviates.
fn lookup_long(name: &str) -> Result<(&'static str, Opt), ConfigError> {
    if let Some(&(flag, opt)) = options().iter().find(|(f, _)| *f == name) {
        return Ok((flag, opt));
    }
    let matches: Vec<&(&'static str, Opt)> =
        options().iter().filter(|(f, _)| f.starts_with("--") && f.starts_with(name)).collect();
    match matches.as_slice() {
        [] => Err(unknown(name)),
        [first, rest @ ..] if rest.iter().all(|(_, o)| *o == first.1) => Ok(**first),
        _ => {
            let names: Vec<&str> = matches.iter().map(|(f, _)| *f).collect();
            Err(ConfigError::new(
                ErrorKind::AmbiguousOption,
                None,
                format!(
                    "ambiguous option {name}: it could match {}; write more of the name",
                    names.join(", ")
                ),
            ))
        }
    }
}

fn unknown(name: &str) -> ConfigError {
    let best = options()
        .iter()
        .filter(|(f, _)| f.starts_with("--") == name.starts_with("--"))
        .map(|(f, _)| (levenshtein(name, f), *f))
        .min();
    let hint = match best {
        Some((d, flag)) if name.starts_with("--") && d <= (name.len() / 3).max(2) => {
            format!("; did you mean {flag}?")
        }
        _ => "; run with --help to list the options".to_owned(),
    };
    ConfigError::new(ErrorKind::UnknownOption, None, format!("unknown option {name}{hint}"))
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// `-DR`, `-w4`, `-w=4`, `-b ADDR`: switches may be clustered; a value-taking letter takes the rest.
fn short_cluster(
    out: &mut ParsedArgs,
    arg: &str,
    args: &[String],
    i: &mut usize,
) -> Result<(), ConfigError> {
    let mut rest = &arg[1..];
    while let Some(c) = rest.chars().next() {
        let flag_len = c.len_utf8();
        let flag = format!("-{c}");
        let tail = &rest[flag_len..];
        let Some(&(flag, opt)) = options().iter().find(|(f, _)| *f == flag) else {
            return Err(unknown(&flag));
        };
        let consumes = matches!(opt, Opt::Set(s) if s.takes_value() || matches!(s.action, Action::OptionalValue(_)));
        if consumes || tail.starts_with('=') {
            let explicit = if tail.is_empty() {
                None
            } else {
                Some(tail.strip_prefix('=').unwrap_or(tail).to_owned())
            };
            return apply(out, flag, opt, explicit, args, i);
        }
        apply(out, flag, opt, None, args, i)?;
        rest = tail;
    }
    Ok(())
}

/// Applies one flag occurrence; `explicit` is a value attached with `=` (or to a short flag).
fn apply(
    out: &mut ParsedArgs,
    flag: &str,
    opt: Opt,
    explicit: Option<String>,
    args: &[String],
    i: &mut usize,
) -> Result<(), ConfigError> {
    let setting = match opt {
        Opt::Help | Opt::Version => {
            if explicit.is_some() {
                return Err(no_value_expected(flag, None));
            }
            if opt == Opt::Help {
                out.help = true;
            } else {
                out.version = true;
            }
            return Ok(());
        }
        Opt::Set(s) => s,
    };
    match setting.action {
        Action::StoreTrue | Action::StoreConst(_) => {
            if explicit.is_some() {
                return Err(no_value_expected(flag, Some(setting)));
            }
            let stored = !matches!(setting.action, Action::StoreConst(false));
            out.set(setting, Value::Bool(stored));
        }
        Action::Store | Action::Append => {
            let raw = match explicit {
                Some(v) => v,
                None => match args.get(*i) {
                    Some(next) if !looks_like_option(next) => {
                        *i += 1;
                        next.clone()
                    }
                    _ => {
                        return Err(ConfigError::new(
                            ErrorKind::MissingValue,
                            Some(setting.name),
                            format!(
                                "option {flag} (`{}`) expects a value: {flag} {}",
                                setting.name,
                                setting.meta.unwrap_or("VALUE")
                            ),
                        ));
                    }
                },
            };
            let value = check(setting, Value::Str(raw))?;
            if setting.action == Action::Append {
                out.append(setting, value);
            } else {
                out.set(setting, value);
            }
        }
        Action::OptionalValue(bare) => {
            let raw = match explicit {
                Some(v) => v,
                None => match args.get(*i) {
                    // Take the next word only when it is a valid value, so `--proxy-protocol app:app` works.
                    Some(next)
                        if !looks_like_option(next)
                            && run(setting.validator, Value::Str(next.clone())).is_ok() =>
                    {
                        *i += 1;
                        next.clone()
                    }
                    _ => bare.to_owned(),
                },
            };
            let value = check(setting, Value::Str(raw))?;
            out.set(setting, value);
        }
    }
    Ok(())
}

fn no_value_expected(flag: &str, setting: Option<&'static Setting>) -> ConfigError {
    ConfigError::new(
        ErrorKind::UnexpectedValue,
        setting.map(|s| s.name),
        format!("option {flag} takes no value; give {flag} alone"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ParsedArgs, ConfigError> {
        parse_args(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    fn int(p: &ParsedArgs, name: &str) -> i64 {
        match p.get(name) {
            Some(Value::Int(i)) => *i,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn strs(v: &[&str]) -> Value {
        Value::List(v.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn value_forms() {
        assert_eq!(int(&parse(&["--workers=3"]).unwrap(), "workers"), 3);
        assert_eq!(int(&parse(&["--workers", "3"]).unwrap(), "workers"), 3);
        assert_eq!(int(&parse(&["-w4"]).unwrap(), "workers"), 4);
        assert_eq!(int(&parse(&["-w", "5"]).unwrap(), "workers"), 5);
        assert_eq!(int(&parse(&["-w=6"]).unwrap(), "workers"), 6);
        assert_eq!(int(&parse(&["--timeout", "0x10"]).unwrap(), "timeout"), 16);
        let p = parse(&["-bunix:/tmp/s", "app:app"]).unwrap();
        assert_eq!(p.get("bind"), Some(&strs(&["unix:/tmp/s"])));
        assert_eq!(p.app.as_deref(), Some("app:app"));
        assert_eq!(
            parse(&["--error-logfile", "-"]).unwrap().get("errorlog"),
            Some(&Value::Str("-".into()))
        );
        assert_eq!(
            int(
                &parse(&["--limit-request-field_size", "100"]).unwrap(),
                "limit_request_field_size"
            ),
            100
        );
        assert_eq!(
            parse(&["-w", "auto"]).unwrap().get("workers"),
            Some(&Value::Str("auto".into()))
        );
    }

    #[test]
    fn switches_and_clusters() {
        let p = parse(&["--preload", "-DR", "--no-sendfile"]).unwrap();
        assert_eq!(p.get("preload_app"), Some(&Value::Bool(true)));
        assert_eq!(p.get("daemon"), Some(&Value::Bool(true)));
        assert_eq!(p.get("enable_stdio_inheritance"), Some(&Value::Bool(true)));
        assert_eq!(p.get("sendfile"), Some(&Value::Bool(false)));
        assert_eq!(int(&parse(&["-Dw2"]).unwrap(), "workers"), 2);
        let e = parse(&["--preload=yes"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnexpectedValue);
        assert!(e.message.contains("--preload"), "{e}");
        let p = parse(&["-h", "--version"]).unwrap();
        assert!(p.help && p.version);
    }

    #[test]
    fn repeatable_bind_collects() {
        let p = parse(&["-b", "a:1", "--bind=b:2", "-bc:3"]).unwrap();
        assert_eq!(p.get("bind"), Some(&strs(&["a:1", "b:2", "c:3"])));
        let p = parse(&["-e", "A=1", "--env", "B=2"]).unwrap();
        assert_eq!(p.get("raw_env"), Some(&strs(&["A=1", "B=2"])));
    }

    #[test]
    fn last_single_value_wins() {
        assert_eq!(int(&parse(&["-w", "2", "-w", "7"]).unwrap(), "workers"), 7);
    }

    #[test]
    fn unique_prefix_and_ambiguity() {
        assert_eq!(int(&parse(&["--backl", "10"]).unwrap(), "backlog"), 10);
        assert_eq!(int(&parse(&["--graceful=5"]).unwrap(), "graceful_timeout"), 5);
        assert_eq!(parse(&["--prel"]).unwrap().get("preload_app"), Some(&Value::Bool(true)));
        let e = parse(&["--work", "3"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AmbiguousOption);
        assert!(e.message.contains("--workers") && e.message.contains("--worker-class"), "{e}");
        assert!(parse(&["--help"]).unwrap().help);
        assert!(parse(&["--vers"]).unwrap().version);
    }

    #[test]
    fn unknown_options() {
        let e = parse(&["--wokers", "3"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownOption);
        assert!(e.message.starts_with("unknown option --wokers"), "{e}");
        assert!(e.message.contains("did you mean --workers?"), "{e}");
        let e = parse(&["--zzzzzzzzzzzz"]).unwrap_err();
        assert!(e.message.contains("--help"), "{e}");
        assert_eq!(parse(&["-X"]).unwrap_err().kind, ErrorKind::UnknownOption);
    }

    #[test]
    fn double_dash_and_positionals() {
        let p = parse(&["-w", "2", "--", "-weird:app"]).unwrap();
        assert_eq!(p.app.as_deref(), Some("-weird:app"));
        let p = parse(&["app:app", "-w", "2"]).unwrap();
        assert_eq!((p.app.as_deref(), int(&p, "workers")), (Some("app:app"), 2));
        let e = parse(&["a:app", "b:app"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ExtraArgument);
        assert!(e.message.contains("'b:app'"), "{e}");
    }

    #[test]
    fn missing_value() {
        let e = parse(&["--bind"]).unwrap_err();
        assert_eq!((e.kind, e.setting), (ErrorKind::MissingValue, Some("bind")));
        assert_eq!(parse(&["-w", "--preload"]).unwrap_err().kind, ErrorKind::MissingValue);
    }

    #[test]
    fn proxy_protocol_bare_or_valued() {
        let pp = |args: &[&str]| parse(args).unwrap().get("proxy_protocol").cloned();
        assert_eq!(pp(&["--proxy-protocol"]), Some(Value::Str("auto".into())));
        assert_eq!(pp(&["--proxy-protocol", "v2"]), Some(Value::Str("v2".into())));
        assert_eq!(pp(&["--proxy-protocol=V1"]), Some(Value::Str("v1".into())));
        assert_eq!(pp(&["--proxy-protocol", "off"]), Some(Value::Str("off".into())));
        let p = parse(&["--proxy-protocol", "app:app"]).unwrap();
        assert_eq!(
            (p.get("proxy_protocol").cloned(), p.app),
            (Some(Value::Str("auto".into())), Some("app:app".into()))
        );
        assert!(parse(&["--proxy-protocol=v3"]).is_err());
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let e = parse(&["-w", "abc"]).unwrap_err();
        assert_eq!((e.kind, e.setting), (ErrorKind::InvalidValue, Some("workers")));
        assert!(
            e.message.contains("`workers` (-w/--workers)") && e.message.contains("'abc'"),
            "{e}"
        );
        let e = parse(&["--log-level", "loud"]).unwrap_err();
        assert!(e.message.contains("debug, info, warning, error, critical"), "{e}");
        let e = parse(&["--protocol", "uwsgi"]).unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
    }

    #[test]
    fn env_args() {
        let p =
            parse_env_args("-w 3 --bind '0.0.0.0:80' --access-logformat '%(h)s \"%(r)s\"' app:x")
                .unwrap();
        assert_eq!(int(&p, "workers"), 3);
        assert_eq!(p.get("access_log_format"), Some(&Value::Str("%(h)s \"%(r)s\"".into())));
        assert_eq!(p.app.as_deref(), Some("app:x"));
        let e = parse_env_args("--workers 'x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Syntax);
        let e = parse_env_args("--workers x").unwrap_err();
        assert!(e.message.starts_with("in GUNICORN_CMD_ARGS: invalid value for `workers`"), "{e}");
    }
}
