//! Registry records for Gunicorn's "Debugging" section: reloading, tracing and config checks.

use crate::setting::{DefaultValue, Kind, Section, Setting, Validator};

const S: Section = Section::Debugging;

pub(super) const SETTINGS: &[Setting] = &[
    Setting::flag("reload", S)
        .cli(&["--reload"])
        .planned()
        .help("Development aid: restart workers whenever application source files change."),
    Setting::choice("reload_engine", S, &["auto", "poll", "inotify"], "auto")
        .cli(&["--reload-engine"])
        .meta("STRING")
        .planned()
        .help("How --reload notices changes: `auto`, `poll` (periodic scan) or `inotify`."),
    Setting::new("reload_extra_files", S, Kind::List, Validator::StrList, DefaultValue::List(&[]))
        .cli(&["--reload-extra-file"])
        .meta("FILES")
        .append()
        .planned()
        .help("More files (or glob patterns) whose changes trigger a reload. Repeatable."),
    Setting::flag("spew", S)
        .cli(&["--spew"])
        .planned()
        .help("Trace every executed Python line to stdout. Extremely noisy."),
    Setting::flag("check_config", S).cli(&["--check-config"]).help(
        "Load the configuration and the application, then exit with 0 on success or 1 on error.",
    ),
    Setting::flag("print_config", S)
        .cli(&["--print-config"])
        .help("Print every resolved setting and exit; implies --check-config."),
];
