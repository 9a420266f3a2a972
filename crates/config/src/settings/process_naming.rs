//! Registry records for Gunicorn's "Process Naming" section: process titles.

use crate::setting::{Section, Setting};

const S: Section = Section::ProcessNaming;

pub(super) const SETTINGS: &[Setting] = &[
    Setting::opt_string("proc_name", S)
        .cli(&["-n", "--name"])
        .meta("STRING")
        .help("Name shown in process titles (ps, top); defaults to default_proc_name."),
    Setting::string("default_proc_name", S, "gunicorn")
        .help("Fallback process-title name; set to the APP_MODULE given on the command line."),
];
