//! Registry records for the response cache (`--cache` and its tuning). The values that have a
//! grammar (`--cache-valid`, `--cache-key`, `--cache-use-stale`, the bypass conditions) are
//! checked here by the same parsers the worker uses, so a bad one stops the start naming the
//! setting and the form it takes.

use ferrocorn_cache::{BACKEND_FORMS, Backend, CacheValid, KeyTemplate, UseStale};

use crate::setting::{Action, DefaultValue, Kind, Section, Setting, Validator};
use crate::validate::{Reject, parse_py_int, setting_text as text};
use crate::value::Value;

const S: Section = Section::Cache;

/// `200=300,301=3600,404=60` or `any=60`: checked by the cache's own parser.
fn valid_value(value: Value) -> Result<Value, Reject> {
    let accepted =
        "give STATUS=SECONDS pairs separated by commas, e.g. '200=300,404=60' or 'any=60'";
    let spec = text(&value, accepted)?;
    CacheValid::parse(&spec).map_err(|e| Reject::new(e.to_string(), accepted))?;
    Ok(Value::Str(spec))
}

/// A key template of nginx variables.
fn key_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give a template of nginx variables, e.g. '$scheme$host$request_uri'";
    let template = text(&value, accepted)?;
    KeyTemplate::parse(&template).map_err(|e| Reject::new(e.to_string(), accepted))?;
    Ok(Value::Str(template))
}

/// Conditions: templates separated by spaces (each one true when it renders non-empty, not `0`).
fn conditions_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give nginx variables separated by spaces, e.g. '$http_pragma $cookie_nocache'";
    let conditions = text(&value, accepted)?;
    for condition in conditions.split_whitespace() {
        KeyTemplate::parse(condition).map_err(|e| Reject::new(e.to_string(), accepted))?;
    }
    Ok(Value::Str(conditions))
}

/// `updating,error,timeout,http_500,...` or `off`.
fn use_stale_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give off or a comma-separated list of updating, error, timeout, http_500, \
                    http_502, http_503, http_504, http_403, http_404, http_429";
    let spec = text(&value, accepted)?;
    UseStale::parse(&spec).map_err(|e| Reject::new(e.to_string(), accepted))?;
    Ok(Value::Str(spec))
}

/// Methods whose responses are cached: GET, HEAD, POST.
fn methods_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give methods separated by spaces or commas, from GET, HEAD, POST";
    let spec = text(&value, accepted)?;
    let methods: Vec<String> =
        spec.split([' ', ',']).filter(|m| !m.is_empty()).map(str::to_ascii_uppercase).collect();
    if let Some(bad) = methods.iter().find(|m| !matches!(m.as_str(), "GET" | "HEAD" | "POST")) {
        return Err(Reject::new(format!("'{bad}' cannot be cached"), accepted));
    }
    if methods.is_empty() {
        return Err(Reject::new("no method given", accepted));
    }
    Ok(Value::List(methods))
}

/// Bytes, as a whole number or with a k/m/g suffix (powers of 1024), as nginx writes sizes.
fn size_value(value: Value) -> Result<Value, Reject> {
    let accepted = "give a number of bytes, optionally with k, m or g (e.g. 268435456, 256m, 1g)";
    let bytes = match &value {
        Value::Int(n) if *n > 0 => Some(*n),
        Value::Str(s) => {
            let s = s.trim().to_ascii_lowercase();
            let (digits, scale) = match s.chars().last() {
                Some('k') => (&s[..s.len() - 1], 1 << 10),
                Some('m') => (&s[..s.len() - 1], 1 << 20),
                Some('g') => (&s[..s.len() - 1], 1 << 30),
                _ => (s.as_str(), 1),
            };
            parse_py_int(digits.trim(), false).filter(|n| *n > 0).and_then(|n| n.checked_mul(scale))
        }
        _ => None,
    };
    match bytes {
        Some(n) => Ok(Value::Int(n)),
        None => Err(Reject::new(format!("{} is not a size", value.py_repr()), accepted)),
    }
}

/// `local` (the shared-memory store of this instance) or a Redis URL, checked by the parser
/// the worker connects with.
fn backend_value(value: Value) -> Result<Value, Reject> {
    let backend = text(&value, BACKEND_FORMS)?;
    match Backend::parse(&backend).map_err(|e| Reject::new(e.to_string(), BACKEND_FORMS))? {
        Backend::Local => Ok(Value::Str("local".to_owned())),
        Backend::Redis(_) => Ok(Value::Str(backend)),
    }
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting::flag("cache", S).cli(&["--cache"]).help(
        "Turn on the response cache: responses the app marks cacheable (Cache-Control, Expires, \
         X-Accel-Expires, or --cache-valid) are stored once for all workers and answered from \
         Rust without calling the app, with nginx proxy_cache's rules. Every response then \
         carries X-Cache-Status (HIT, MISS, EXPIRED, STALE, UPDATING, BYPASS).",
    ),
    Setting::new(
        "cache_backend",
        S,
        Kind::Str,
        Validator::Custom(backend_value),
        DefaultValue::Str("local"),
    )
    .cli(&["--cache-backend"])
    .meta("STORE")
    .help(
        "Where cached entries live, for the response cache and the app cache \
         (ferrocorn.cache) alike: local, a shared-memory store made by the master and \
         shared by all its workers (it survives worker restarts and HUP reloads); or Redis, \
         shared by every instance that names it: redis://[user:password@]host[:port][/db], \
         rediss://... (TLS), or redis+cluster://host:port,host:port,... (a Redis Cluster's \
         seed nodes). With Redis, each worker connects after it starts; while Redis cannot \
         be reached, requests go to the app and nothing is stored (one warning per 10 s per \
         worker), and the worker reconnects by itself. Entries not read for --cache-inactive \
         seconds expire in Redis.",
    ),
    Setting::new(
        "cache_backend_timeout",
        S,
        Kind::Float,
        Validator::PosFloat,
        DefaultValue::Float(0.25),
    )
    .cli(&["--cache-backend-timeout"])
    .meta("SECONDS")
    .help(
        "With a Redis --cache-backend, the longest a connect or a reply may take before the \
         request goes on without the cache (fractions allowed, e.g. 0.25).",
    ),
    Setting::new(
        "cache_max_size",
        S,
        Kind::Int,
        Validator::Custom(size_value),
        DefaultValue::Int(256 << 20),
    )
    .cli(&["--cache-max-size"])
    .meta("BYTES")
    .help(
        "Bytes of the cache store: stored responses (headers and bodies) and the app \
         cache's values (ferrocorn.cache, with or without --cache), e.g. 256m. The store \
         never holds more; the oldest entries make room, except that one read since it was \
         stored gets a second chance. An index of 64 bytes per KiB comes on top. Memory is \
         taken as entries fill it, not at start.",
    ),
    Setting::new(
        "cache_max_entry_size",
        S,
        Kind::Int,
        Validator::Custom(size_value),
        DefaultValue::Int(8 << 20),
    )
    .cli(&["--cache-max-entry-size"])
    .meta("BYTES")
    .help(
        "The largest response stored; a larger one is served and not stored. At most half \
         of --cache-max-size is used whatever this says.",
    ),
    Setting::new("cache_inactive", S, Kind::Float, Validator::PosFloat, DefaultValue::Float(600.0))
        .cli(&["--cache-inactive"])
        .meta("SECONDS")
        .help(
            "An entry not requested for this long is dropped, fresh or not (nginx's \
             inactive=).",
        ),
    Setting::new(
        "cache_valid",
        S,
        Kind::Str,
        Validator::Custom(valid_value),
        DefaultValue::Str(""),
    )
    .cli(&["--cache-valid"])
    .meta("STATUS=SECONDS,...")
    .help(
        "Seconds to keep responses of these statuses that say nothing of their own \
             freshness (no X-Accel-Expires, Cache-Control max-age or Expires), e.g. \
             '200=300,301=3600,404=60'; any=SECONDS for every status. Empty: such responses \
             are not stored.",
    ),
    Setting::new(
        "cache_key",
        S,
        Kind::Str,
        Validator::Custom(key_value),
        DefaultValue::Str("$scheme$host$request_uri"),
    )
    .cli(&["--cache-key"])
    .meta("TEMPLATE")
    .help(
        "What a response is filed under, in nginx variables: $scheme, $host, $request_uri, \
         $uri, $args, $request_method, $arg_NAME, $http_NAME, $cookie_NAME. Unlike nginx's \
         default, the client's Host is part of the key.",
    ),
    Setting::new(
        "cache_methods",
        S,
        Kind::List,
        Validator::Custom(methods_value),
        DefaultValue::Str("GET HEAD"),
    )
    .cli(&["--cache-methods"])
    .meta("METHODS")
    .help(
        "Request methods answered from and stored into the cache. A HEAD is answered from a \
         stored GET; a HEAD that misses goes to the app and is not stored.",
    ),
    Setting::new(
        "cache_bypass",
        S,
        Kind::Str,
        Validator::Custom(conditions_value),
        DefaultValue::Str(""),
    )
    .cli(&["--cache-bypass"])
    .meta("CONDITIONS")
    .help(
        "nginx variables separated by spaces, e.g. '$http_pragma $cookie_nocache'. When \
         one is not empty and not 0 the request is not answered from the cache (BYPASS); its \
         response may still be stored.",
    ),
    Setting::new(
        "cache_no_store",
        S,
        Kind::Str,
        Validator::Custom(conditions_value),
        DefaultValue::Str(""),
    )
    .cli(&["--cache-no-store"])
    .meta("CONDITIONS")
    .help(
        "nginx variables separated by spaces; when one is not empty and not 0 the response \
         is not stored (nginx's proxy_no_cache).",
    ),
    Setting::new("cache_lock", S, Kind::Bool, Validator::Bool, DefaultValue::Bool(true))
        .cli(&["--no-cache-lock"])
        .action(Action::StoreConst(false))
        .help(
            "Whether concurrent misses for one key, in all workers, wait for the one request \
             that fills it (one app call instead of N). On by default (nginx's \
             proxy_cache_lock is off by default; Varnish always collapses); --no-cache-lock \
             sends every miss to the app.",
        ),
    Setting::new(
        "cache_lock_timeout",
        S,
        Kind::Float,
        Validator::PosFloat,
        DefaultValue::Float(5.0),
    )
    .cli(&["--cache-lock-timeout"])
    .meta("SECONDS")
    .help(
        "How long a request waits for another one filling its key; after that it goes to the \
         app itself and its response is not stored. A filler whose worker died is not \
         waited for at all.",
    ),
    Setting::new(
        "cache_use_stale",
        S,
        Kind::Str,
        Validator::Custom(use_stale_value),
        DefaultValue::Str("off"),
    )
    .cli(&["--cache-use-stale"])
    .meta("CONDITIONS")
    .help(
        "When an expired entry is answered instead of the app's: updating (while another \
         request refreshes it), error (the app raised), timeout (the app missed --timeout), \
         http_500, http_502, http_503, http_504, http_403, http_404, http_429. A response's \
         own stale-while-revalidate and stale-if-error windows count as well.",
    ),
    Setting::flag("cache_revalidate", S).cli(&["--cache-revalidate"]).help(
        "Refresh an expired entry that has an ETag or Last-Modified with a conditional \
         request (If-None-Match, If-Modified-Since): when the app answers 304 Not Modified, \
         the stored copy is answered and kept, fresh again (X-Cache-Status: REVALIDATED), \
         as nginx's proxy_cache_revalidate.",
    ),
    Setting::flag("cache_background_update", S).cli(&["--cache-background-update"]).help(
        "With stale answers allowed while updating, answer an expired entry at once and \
         refresh it after the response is sent.",
    ),
    Setting::new(
        "cache_hit_for_miss",
        S,
        Kind::Float,
        Validator::PosFloat,
        DefaultValue::Float(120.0),
    )
    .cli(&["--cache-hit-for-miss"])
    .meta("SECONDS")
    .help(
        "How long a key whose response could not be stored is remembered as such, so that \
         requests for it go straight to the app without waiting on the cache lock (Varnish's \
         hit-for-miss). A storable response replaces the mark. 0 turns it off.",
    ),
    Setting::new(
        "cache_purge_allow",
        S,
        Kind::List,
        Validator::AddrList,
        DefaultValue::Str("127.0.0.1,::1"),
    )
    .cli(&["--cache-purge-allow"])
    .meta("ADDRESSES")
    .help(
        "Client addresses (IPs or CIDR networks, comma-separated) allowed to remove entries \
         with the PURGE method: PURGE /path removes its key and all its Vary variants, PURGE \
         /prefix* every key starting so.",
    ),
];
