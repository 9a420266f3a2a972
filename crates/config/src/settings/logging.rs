//! Registry records for Gunicorn's "Logging" section: access/error logs, syslog and statsd.

use crate::setting::{DefaultValue, Kind, Section, Setting, Validator};
use crate::validate::Reject;
use crate::value::Value;

const S: Section = Section::Logging;

/// Gunicorn's built-in logger class, the only one ferrocorn provides.
const DEFAULT_LOGGER: &str = "gunicorn.glogging.Logger";

/// Where syslog lives on this platform, as Gunicorn picks it.
const SYSLOG_ADDR: &str = if cfg!(target_os = "macos") {
    "unix:///var/run/syslog"
} else if cfg!(any(target_os = "freebsd", target_os = "dragonfly")) {
    "unix:///var/run/log"
} else if cfg!(target_os = "openbsd") {
    "unix:///dev/log"
} else {
    "udp://localhost:514"
};

/// Only the built-in logger (or its alias `simple`); custom Python classes are refused.
fn logger_class_value(value: Value) -> Result<Value, Reject> {
    match &value {
        Value::Str(s) if s.trim() == DEFAULT_LOGGER || s.trim() == "simple" => {
            Ok(Value::Str(DEFAULT_LOGGER.to_owned()))
        }
        other => Err(Reject::new(
            format!(
                "{} is a custom logger class, which ferrocorn does not support",
                other.py_repr()
            ),
            "leave it unset (or give 'gunicorn.glogging.Logger')",
        )),
    }
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting::opt_string("accesslog", S)
        .cli(&["--access-logfile"])
        .meta("FILE")
        .help("File to write the access log to; `-` means stdout. Unset means no access log."),
    Setting::flag("disable_redirect_access_to_syslog", S)
        .cli(&["--disable-redirect-access-to-syslog"])
        .help("Keep access log lines out of syslog even when syslog logging is on."),
    Setting::string("access_log_format", S, r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#)
        .cli(&["--access-logformat"])
        .meta("STRING")
        .help("Layout of an access log line, built from %(atom)s placeholders such as h (remote address) and s (status)."),
    Setting::string("errorlog", S, "-")
        .cli(&["--error-logfile", "--log-file"])
        .meta("FILE")
        .help("File to write the error log to; `-` means stderr."),
    Setting::choice("loglevel", S, &["debug", "info", "warning", "error", "critical"], "info")
        .cli(&["--log-level"])
        .meta("LEVEL")
        .help("Least severe error-log messages to keep: debug, info, warning, error or critical."),
    Setting::flag("capture_output", S)
        .cli(&["--capture-output"])
        .help("Send whatever the application prints to stdout/stderr into the error log file."),
    Setting::new("logger_class", S, Kind::Str, Validator::Custom(logger_class_value), DefaultValue::Str(DEFAULT_LOGGER))
        .cli(&["--logger-class"])
        .meta("STRING")
        .help("Logger implementation. ferrocorn only provides the built-in one, so only its name is accepted."),
    Setting::opt_string("logconfig", S)
        .cli(&["--log-config"])
        .meta("FILE")
        .help("Python logging configuration file in fileConfig (ini) format."),
    Setting::new("logconfig_dict", S, Kind::Map, Validator::Any, DefaultValue::Map(&[]))
        .help("Python logging configuration as a dictConfig dictionary; wins over the other logconfig settings."),
    Setting::opt_string("logconfig_json", S)
        .cli(&["--log-config-json"])
        .meta("FILE")
        .help("JSON file holding a dictConfig logging configuration."),
    Setting::string("syslog_addr", S, SYSLOG_ADDR)
        .cli(&["--log-syslog-to"])
        .meta("SYSLOG_ADDR")
        .planned()
        .default_doc("'udp://localhost:514' (macOS and BSDs: the local syslog socket)")
        .help("Syslog destination: unix://PATH[#stream|#dgram], udp://HOST:PORT or tcp://HOST:PORT."),
    Setting::flag("syslog", S)
        .cli(&["--log-syslog"])
        .planned()
        .help("Also send log messages to syslog."),
    Setting::opt_string("syslog_prefix", S)
        .cli(&["--log-syslog-prefix"])
        .meta("SYSLOG_PREFIX")
        .planned()
        .help("Program name used in syslog messages (after `gunicorn.`)."),
    Setting::string("syslog_facility", S, "user")
        .cli(&["--log-syslog-facility"])
        .meta("SYSLOG_FACILITY")
        .planned()
        .help("Syslog facility name to log under."),
    Setting::flag("enable_stdio_inheritance", S)
        .cli(&["-R", "--enable-stdio-inheritance"])
        .help("Keep stdin/stdout/stderr attached when daemonizing."),
    Setting::opt_string("statsd_host", S)
        .cli(&["--statsd-host"])
        .meta("STATSD_ADDR")
        .help("StatsD server to send metrics to, as HOST:PORT (port 8125 if omitted) or unix://PATH."),
    Setting::string("dogstatsd_tags", S, "")
        .cli(&["--dogstatsd-tags"])
        .meta("DOGSTATSD_TAGS")
        .help("Comma-separated key:value tags added to every metric, DogStatsD style."),
    Setting::string("statsd_prefix", S, "")
        .cli(&["--statsd-prefix"])
        .meta("STATSD_PREFIX")
        .help("Prefix put before every metric name."),
    Setting::flag("enable_backlog_metric", S)
        .cli(&["--enable-backlog-metric"])
        .planned()
        .help("Report the listen-queue length as a metric (Linux)."),
];
