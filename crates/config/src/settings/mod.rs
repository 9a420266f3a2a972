//! The registry: every setting, assembled from one file per section, and lookup by name.

mod balance;
mod cache;
mod config_file;
mod control;
mod debugging;
mod dirty_arbiters;
mod ferrocorn;
mod http2;
mod logging;
mod process_naming;
mod security;
mod server_hooks;
mod server_mechanics;
mod server_socket;
mod ssl;
mod worker_processes;

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::setting::Setting;

/// Every setting, grouped by section in documentation order.
pub fn settings() -> &'static [Setting] {
    static ALL: OnceLock<Vec<Setting>> = OnceLock::new();
    ALL.get_or_init(|| {
        [
            config_file::SETTINGS,
            server_socket::SETTINGS,
            worker_processes::SETTINGS,
            security::SETTINGS,
            debugging::SETTINGS,
            server_mechanics::SETTINGS,
            logging::SETTINGS,
            process_naming::SETTINGS,
            server_hooks::SETTINGS,
            ssl::SETTINGS,
            http2::SETTINGS,
            dirty_arbiters::SETTINGS,
            control::SETTINGS,
            ferrocorn::SETTINGS,
            cache::SETTINGS,
            balance::SETTINGS,
        ]
        .concat()
    })
}

/// Position of a setting in `settings()`.
pub(crate) fn index_of(name: &str) -> Option<usize> {
    static INDEX: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    INDEX
        .get_or_init(|| settings().iter().enumerate().map(|(i, s)| (s.name, i)).collect())
        .get(name)
        .copied()
}

/// The setting called `name` (its config-file name), if any.
pub fn find(name: &str) -> Option<&'static Setting> {
    index_of(name).map(|i| &settings()[i])
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::setting::check;
    use crate::setting::{Env, Kind, Section, Support};

    #[test]
    fn names_and_flags_are_unique_and_help_is_present() {
        let mut names = HashSet::new();
        let mut flags = HashSet::new();
        for s in settings() {
            assert!(names.insert(s.name), "duplicate name {}", s.name);
            assert!(!s.help.trim().is_empty(), "{} has no help", s.name);
            for f in s.cli {
                assert!(flags.insert(*f), "duplicate flag {f}");
                assert!(
                    f.starts_with("--") || (f.len() == 2 && f.starts_with('-')),
                    "odd flag {f}"
                );
            }
        }
        for reserved in ["-h", "--help", "-v", "--version"] {
            assert!(!flags.contains(reserved));
        }
    }

    #[test]
    fn covers_every_gunicorn_setting() {
        // All 119 Gunicorn settings at HEAD (incl. http2_cleartext), plus ferrocorn's own.
        let gunicorn = settings()
            .iter()
            .filter(|s| {
                !matches!(s.section, Section::Ferrocorn | Section::Cache | Section::Balance)
            })
            .count();
        assert_eq!(gunicorn, 119);
        for name in [
            "bind",
            "limit_request_field_size",
            "dirty_worker_exit",
            "control_socket_disable",
            "ssl_context",
        ] {
            assert!(find(name).is_some(), "{name}");
        }
        assert!(find("nope").is_none());
    }

    #[test]
    fn every_default_passes_its_validator() {
        for s in settings() {
            let v = s.default.value(&Env::new());
            assert!(check(s, v).is_ok(), "default of {} rejected", s.name);
        }
    }

    #[test]
    fn hooks_have_no_cli_and_only_gunicorns_hooks_are_supported() {
        for s in settings().iter().filter(|s| s.kind == Kind::Hook) {
            assert_eq!(s.section, Section::ServerHooks);
            assert!(s.cli.is_empty());
            let unsupported = s.name.contains("dirty") || s.name == "ssl_context";
            assert_eq!(s.support == Support::Yes, !unsupported, "{}", s.name);
        }
    }
}
