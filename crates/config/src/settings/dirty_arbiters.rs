//! Registry records for Gunicorn's "Dirty Arbiters" section (a separate pool for slow work).
//! Recognised so configurations load with a clear message, but not supported by ferrocorn.

use crate::setting::{DefaultValue, Kind, Section, Setting, Support, Validator};

const S: Section = Section::DirtyArbiters;
const NO_DIRTY: Support = Support::Unsupported("dirty arbiters are not supported by ferrocorn");

pub(super) const SETTINGS: &[Setting] = &[
    Setting::new("dirty_apps", S, Kind::List, Validator::StrList, DefaultValue::List(&[]))
        .cli(&["--dirty-app"])
        .meta("STRING")
        .append()
        .support(NO_DIRTY)
        .help("Application class for the dirty pool, module:Class or module:Class:N. Repeatable."),
    Setting::pos_int("dirty_workers", S, 0)
        .cli(&["--dirty-workers"])
        .support(NO_DIRTY)
        .help("Number of dirty worker processes; 0 turns the pool off."),
    Setting::pos_int("dirty_timeout", S, 300)
        .cli(&["--dirty-timeout"])
        .support(NO_DIRTY)
        .help("Seconds a dirty task may run; 0 means no limit."),
    Setting::pos_int("dirty_threads", S, 1)
        .cli(&["--dirty-threads"])
        .support(NO_DIRTY)
        .help("Threads in each dirty worker."),
    Setting::pos_int("dirty_graceful_timeout", S, 30)
        .cli(&["--dirty-graceful-timeout"])
        .support(NO_DIRTY)
        .help("Seconds dirty workers get to finish when shutting down."),
];
