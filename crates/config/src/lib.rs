//! ferrocorn's settings registry. Every Gunicorn setting (and ferrocorn's own) is written once,
//! in `settings/<section>.rs`; from that one list this crate derives the command-line parser
//! (`parse_args`, `parse_env_args` for `GUNICORN_CMD_ARGS`), validation of config-file values,
//! layering of all sources into a `Config`, `--help`, `--print-config`, and `docs/settings.md`.
//!
//! ```
//! use ferrocorn_config::{Config, Sources, parse_args};
//! let cli = parse_args(&["-w".to_owned(), "4".to_owned(), "app:app".to_owned()]).unwrap();
//! let config = Config::resolve(Sources { cli, ..Sources::default() }).unwrap();
//! assert_eq!(config.int("workers"), 4);
//! assert_eq!(config.app(), Some("app:app"));
//! ```

mod cli;
mod error;
mod help;
mod markdown;
mod pools;
mod resolve;
mod setting;
mod settings;
mod shlex;
mod validate;
mod value;

pub use cli::{ParsedArgs, parse_args, parse_env_args};
pub use error::{ConfigError, ErrorKind};
pub use help::render_help;
pub use markdown::render_settings_markdown;
pub use pools::{POOL_FORM, PoolError, PoolSpec};
pub use resolve::{Config, Source, Sources};
pub use setting::{Action, DefaultValue, Env, Kind, Section, Setting, Support, Validator};
pub use settings::{find, settings};
pub use validate::Reject;
pub use value::Value;
