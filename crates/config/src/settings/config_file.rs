//! Registry records for Gunicorn's "Config File" section: where configuration comes from.

use crate::setting::{Section, Setting};

const S: Section = Section::ConfigFile;

pub(super) const SETTINGS: &[Setting] = &[
    Setting::string("config", S, "./gunicorn.conf.py")
        .cli(&["-c", "--config"])
        .meta("CONFIG")
        .help(
            "Configuration file to read: a path, `file:PATH`, or `python:MODULE`. Only honoured on \
             the command line or in GUNICORN_CMD_ARGS; without it ./gunicorn.conf.py is read if \
             present.",
        ),
    Setting::opt_string("wsgi_app", S).meta("STRING").help(
        "Application to serve, written `module:variable`, for when no APP_MODULE is given on the \
         command line.",
    ),
];
