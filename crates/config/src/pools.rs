//! Worker pools by URL (`--pool '/reports/ app=reports:app worker_class=sync workers=4'`):
//! a pool's spec — its path prefix and the settings it sets, by their names — and the
//! configuration of a pool: the instance's own, with the pool's settings put over it and
//! checked by each setting's validator, so a pool inherits what it does not set. Settings of
//! the whole instance (its listeners, the master's process, the control and metrics
//! endpoints, the shared cache store) cannot be set per pool.

use std::fmt;

use crate::error::{ConfigError, ErrorKind};
use crate::resolve::{Config, Source};
use crate::settings::find;
use crate::value::Value;

/// Settings that belong to the whole instance, not to one pool.
const INSTANCE_SETTINGS: &[&str] = &[
    "bind",
    "backlog",
    "reuse_port",
    "daemon",
    "pidfile",
    "user",
    "group",
    "umask",
    "initgroups",
    "pools",
    "upstreams",
    "config",
    "proc_name",
    "control_socket",
    "control_socket_mode",
    "control_socket_disable",
    "metrics_bind",
    "cache_max_size",
    "cache_backend",
    "cache_backend_timeout",
    "worker_tmp_dir",
    "errorlog",
    "loglevel",
];

/// One `--pool` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The path prefix its requests start with (`/reports/`; `/` is the default pool).
    pub prefix: String,
    /// The app it serves (`app=`), when not the instance's.
    pub app: Option<String>,
    /// The settings it sets, by name, as written.
    pub settings: Vec<(String, String)>,
}

/// Why a `--pool` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolError {
    /// What is wrong, naming the entry and the key.
    pub problem: String,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)
    }
}

impl std::error::Error for PoolError {}

/// The form a `--pool` entry takes, for error messages.
pub const POOL_FORM: &str = "give PREFIX [app=MODULE:CALLABLE] [SETTING=VALUE ...] with settings \
     by their names, e.g. '/reports/ app=reports:app worker_class=sync workers=4 timeout=120'";

impl PoolSpec {
    /// Parse `PREFIX key=value ...`.
    pub fn parse(entry: &str) -> Result<PoolSpec, PoolError> {
        let bad = |problem: String| PoolError { problem: format!("pool {entry:?}: {problem}") };
        let mut words = entry.split_whitespace();
        let prefix = words.next().ok_or_else(|| bad("empty entry".into()))?;
        if !prefix.starts_with('/') {
            return Err(bad(format!("the prefix {prefix:?} must start with /")));
        }
        let mut spec = PoolSpec { prefix: prefix.to_owned(), app: None, settings: Vec::new() };
        for word in words {
            let (key, value) =
                word.split_once('=').ok_or_else(|| bad(format!("{word:?} is not KEY=VALUE")))?;
            if spec.settings.iter().any(|(k, _)| k == key) || (key == "app" && spec.app.is_some()) {
                return Err(bad(format!("{key} is given twice")));
            }
            if key == "app" {
                spec.app = Some(value.to_owned());
                continue;
            }
            if find(key).is_none() {
                return Err(bad(format!("unknown setting {key:?} (keys are settings' names)")));
            }
            if INSTANCE_SETTINGS.contains(&key) {
                return Err(bad(format!(
                    "{key} belongs to the whole instance and cannot be set per pool"
                )));
            }
            spec.settings.push((key.to_owned(), value.to_owned()));
        }
        Ok(spec)
    }
}

impl Config {
    /// The instance's pools, in the order given; an error names a malformed entry or two
    /// pools with one prefix.
    pub fn pools(&self) -> Result<Vec<PoolSpec>, ConfigError> {
        let mut pools: Vec<PoolSpec> = Vec::new();
        for entry in self.list("pools") {
            let spec = PoolSpec::parse(entry)
                .map_err(|e| ConfigError::new(ErrorKind::InvalidValue, Some("pools"), e.problem))?;
            if pools.iter().any(|p| p.prefix == spec.prefix) {
                return Err(ConfigError::new(
                    ErrorKind::InvalidValue,
                    Some("pools"),
                    format!("two pools have the prefix {:?}; give each prefix once", spec.prefix),
                ));
            }
            pools.push(spec);
        }
        Ok(pools)
    }

    /// This configuration with `pool`'s settings put over it (checked as the command line's
    /// would be), for the pool's workers.
    pub fn for_pool(&self, pool: &PoolSpec) -> Result<Config, ConfigError> {
        let mut config = self.clone();
        let ctx = format!("in pool {:?}", pool.prefix);
        for (name, value) in &pool.settings {
            config.put(name, Value::Str(value.clone()), Source::CommandLine, &ctx)?;
        }
        if let Some(app) = &pool.app {
            config.set_app(app.clone());
            // Its workers' process titles name its app (unless `proc_name` says otherwise).
            config.put("default_proc_name", Value::Str(app.clone()), Source::App, &ctx)?;
        }
        config.put("pools", Value::List(Vec::new()), Source::Default, &ctx)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Sources, parse_args};

    fn config(args: &[&str]) -> Config {
        let cli = parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        Config::resolve(Sources { cli, ..Sources::default() }).unwrap()
    }

    #[test]
    fn a_pool_sets_settings_by_name_and_inherits_the_rest() {
        let base = config(&[
            "-w",
            "3",
            "--timeout",
            "45",
            "--pool",
            "/reports/ app=reports:app worker_class=sync workers=4 timeout=120",
            "site:app",
        ]);
        let pools = base.pools().unwrap();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].prefix, "/reports/");
        let pool = base.for_pool(&pools[0]).unwrap();
        assert_eq!(pool.int("workers"), 4);
        assert_eq!(pool.float("timeout"), 120.0);
        assert_eq!(pool.app(), Some("reports:app"));
        assert_eq!(pool.str("default_proc_name"), "reports:app");
        assert_eq!(base.int("workers"), 3);
        assert!(pool.list("pools").is_empty());
        let inherits = base.for_pool(&PoolSpec::parse("/api/ threads=2").unwrap()).unwrap();
        assert_eq!(inherits.float("timeout"), 45.0);
        assert_eq!(inherits.app(), Some("site:app"));
    }

    #[test]
    fn bad_entries_are_named() {
        for (entry, says) in [
            ("reports/ workers=2", "must start with /"),
            ("/r/ workers", "not KEY=VALUE"),
            ("/r/ wrokers=2", "unknown setting \"wrokers\""),
            ("/r/ bind=0.0.0.0:1", "whole instance"),
            ("/r/ workers=2 workers=3", "twice"),
            ("", "empty"),
        ] {
            let e = PoolSpec::parse(entry).unwrap_err();
            assert!(e.problem.contains(says), "{entry:?}: {e}");
        }
        let base = config(&["--pool", "/a/ workers=x", "x:app"]);
        let pool = &base.pools().unwrap()[0];
        let e = base.for_pool(pool).unwrap_err();
        assert!(e.message.contains("workers") && e.message.contains("pool \"/a/\""), "{e:?}");
        let twice = config(&["--pool", "/a/ workers=1", "--pool", "/a/ workers=2", "x:app"]);
        assert!(twice.pools().unwrap_err().message.contains("two pools"));
    }
}
