//! `ferrocorn ctl cache ...`: the words of the response cache's commands (`cache stats`,
//! `cache purge KEY | --prefix P | --all`), their requests, and the human rendering of a
//! `cache.stats` reply.

use serde_json::{Value, json};

use crate::render::{Align, Table, fmt_count, get_f64, get_u64};

/// The `X-Cache-Status` values in the order they are shown; unknown ones follow.
const STATUS_ORDER: [&str; 7] =
    ["hit", "miss", "expired", "stale", "updating", "revalidated", "bypass"];

/// What `cache purge` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PurgeTarget {
    /// A full cache key, as `--cache-key` renders it, with its `Vary` variants.
    Key(String),
    /// Every key that starts with this.
    Prefix(String),
    /// Every cached response.
    All,
}

/// A `cache` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheCommand {
    Stats,
    Purge(PurgeTarget),
}

impl CacheCommand {
    /// The request object sent for it.
    pub(crate) fn request(&self) -> Value {
        match self {
            CacheCommand::Stats => json!({"command": "cache.stats"}),
            CacheCommand::Purge(PurgeTarget::Key(key)) => {
                json!({"command": "cache.purge", "key": key})
            }
            CacheCommand::Purge(PurgeTarget::Prefix(prefix)) => {
                json!({"command": "cache.purge", "prefix": prefix})
            }
            CacheCommand::Purge(PurgeTarget::All) => json!({"command": "cache.purge", "all": true}),
        }
    }
}

/// The options only `cache purge` takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PurgeOptions {
    pub(crate) prefix: Option<String>,
    pub(crate) all: bool,
}

impl PurgeOptions {
    fn given(&self) -> bool {
        self.prefix.is_some() || self.all
    }
}

/// The `cache` command from the words after `cache`.
pub(crate) fn parse(words: &[&String], options: PurgeOptions) -> Result<CacheCommand, String> {
    let words: Vec<&str> = words.iter().map(|w| w.as_str()).collect();
    let command = match words.as_slice() {
        ["stats"] => CacheCommand::Stats,
        ["stats", ..] => return Err("too many arguments for \"cache stats\"".to_owned()),
        ["purge", rest @ ..] => CacheCommand::Purge(purge_target(rest, options.clone())?),
        [] => return Err("missing cache subcommand (stats or purge)".to_owned()),
        [other, ..] => {
            return Err(format!("unknown cache subcommand {other:?} (stats or purge)"));
        }
    };
    if options.given() && !matches!(command, CacheCommand::Purge(_)) {
        return Err("--prefix and --all only apply to cache purge".to_owned());
    }
    Ok(command)
}

fn purge_target(keys: &[&str], options: PurgeOptions) -> Result<PurgeTarget, String> {
    match (keys, options.prefix, options.all) {
        ([key], None, false) if !key.is_empty() => Ok(PurgeTarget::Key((*key).to_owned())),
        ([], Some(prefix), false) if !prefix.is_empty() => Ok(PurgeTarget::Prefix(prefix)),
        ([], None, true) => Ok(PurgeTarget::All),
        ([], Some(_), false) => {
            Err("an empty --prefix would match every key; use --all".to_owned())
        }
        ([""], None, false) => Err("the cache KEY is empty".to_owned()),
        ([], None, false) => Err("cache purge needs a KEY, --prefix PREFIX or --all".to_owned()),
        _ => Err("cache purge takes one of KEY, --prefix PREFIX and --all".to_owned()),
    }
}

/// Bytes as MiB with one decimal, or as bytes below 1 MiB.
pub(crate) fn fmt_bytes(bytes: Option<u64>) -> String {
    match bytes {
        None => "-".to_owned(),
        Some(b) if b < 1 << 20 => format!("{b} B"),
        Some(b) => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
    }
}

/// The human rendering of a `cache.stats` reply: the store, then a table of answers by
/// `X-Cache-Status`, then the other counters.
pub(crate) fn stats_lines(stats: &Value) -> Vec<String> {
    let store = stats.get("store").unwrap_or(&Value::Null);
    let mut lines = vec![match store.get("backend").and_then(Value::as_str) {
        Some(backend) if backend != "local" => format!(
            "store:    {backend} (shared by every instance using it); {} failed operations here",
            fmt_count(get_u64(store, "remote_errors")),
        ),
        _ => format!(
            "store:    {} entries, {} of {} used; {} evictions, {} repairs",
            fmt_count(get_u64(store, "entries")),
            fmt_bytes(get_u64(store, "bytes")),
            fmt_bytes(get_u64(store, "capacity_bytes")),
            fmt_count(get_u64(store, "evictions")),
            fmt_count(get_u64(store, "repairs")),
        ),
    }];
    let ratio =
        get_f64(stats, "hit_ratio").map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    lines.push(format!("hit ratio: {ratio}"));
    lines.push(format!(
        "lock waits: {} ({:.3} s waited); stored {}, not stored {}; purges {}",
        fmt_count(get_u64(stats, "lock_waits")),
        get_f64(stats, "lock_wait_seconds").unwrap_or(0.0),
        fmt_count(get_u64(stats, "stores")),
        fmt_count(get_u64(stats, "not_stored")),
        fmt_count(get_u64(stats, "purges")),
    ));
    lines.push(String::new());
    let mut table = Table::new(&[("STATUS", Align::Left), ("RESPONSES", Align::Right)]);
    if let Some(requests) = stats.get("requests").and_then(Value::as_object) {
        let known = STATUS_ORDER.iter().copied().filter(|s| requests.contains_key(*s));
        let others = requests.keys().map(String::as_str).filter(|s| !STATUS_ORDER.contains(s));
        for status in known.chain(others) {
            let n = requests.get(status).and_then(Value::as_u64);
            table.push(vec![status.to_ascii_uppercase(), fmt_count(n)]);
        }
    }
    lines.extend(table.lines());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|s| s.to_string()).collect()
    }

    fn p(ws: &[&str], prefix: Option<&str>, all: bool) -> Result<CacheCommand, String> {
        let owned = words(ws);
        let refs: Vec<&String> = owned.iter().collect();
        parse(&refs, PurgeOptions { prefix: prefix.map(str::to_owned), all })
    }

    #[test]
    fn parses_stats_and_the_three_purges() {
        assert_eq!(p(&["stats"], None, false), Ok(CacheCommand::Stats));
        let key = "httpexample.com/a?b";
        assert_eq!(
            p(&["purge", key], None, false),
            Ok(CacheCommand::Purge(PurgeTarget::Key(key.to_owned())))
        );
        assert_eq!(
            p(&["purge"], Some("http"), false),
            Ok(CacheCommand::Purge(PurgeTarget::Prefix("http".to_owned())))
        );
        assert_eq!(p(&["purge"], None, true), Ok(CacheCommand::Purge(PurgeTarget::All)));
    }

    #[test]
    fn refuses_ambiguous_or_empty_purges() {
        for (ws, prefix, all) in [
            (&["purge"][..], None, false),
            (&["purge", "k"], Some("p"), false),
            (&["purge", "k"], None, true),
            (&["purge"], Some("p"), true),
            (&["purge", "a", "b"], None, false),
            (&["purge"], Some(""), false),
            (&["purge", ""], None, false),
            (&["stats"], None, true),
            (&["stats", "x"], None, false),
            (&[], None, false),
            (&["flush"], None, false),
        ] {
            assert!(p(ws, prefix, all).is_err(), "{ws:?} {prefix:?} {all}");
        }
    }

    #[test]
    fn requests() {
        assert_eq!(CacheCommand::Stats.request(), json!({"command": "cache.stats"}));
        let all = CacheCommand::Purge(PurgeTarget::All).request();
        assert_eq!(all, json!({"command": "cache.purge", "all": true}));
        let key = CacheCommand::Purge(PurgeTarget::Key("k".into())).request();
        assert_eq!(key, json!({"command": "cache.purge", "key": "k"}));
    }

    #[test]
    fn stats_render_as_lines_and_a_table() {
        let v = json!({"ok": true,
            "store": {"entries": 3, "bytes": 2048, "capacity_bytes": 67108864,
                      "evictions": 1, "repairs": 0},
            "requests": {"hit": 6, "miss": 2, "expired": 0, "stale": 0, "updating": 0,
                         "bypass": 1},
            "hit_ratio": 0.6666, "lock_waits": 2, "lock_wait_seconds": 0.25,
            "stores": 2, "not_stored": 0, "purges": 1});
        let lines = stats_lines(&v);
        assert_eq!(
            lines[0],
            "store:    3 entries, 2048 B of 64.0 MiB used; 1 evictions, 0 repairs"
        );
        assert_eq!(lines[1], "hit ratio: 66.7%");
        assert_eq!(lines[2], "lock waits: 2 (0.250 s waited); stored 2, not stored 0; purges 1");
        assert_eq!(lines[4], "STATUS    RESPONSES");
        assert_eq!(lines[5], "HIT               6");
        assert_eq!(lines.last().unwrap(), "BYPASS            1");
    }

    #[test]
    fn stats_of_a_redis_store_name_it() {
        let v = json!({"ok": true,
            "store": {"backend": "redis://127.0.0.1:6379/0", "remote_errors": 3},
            "requests": {"hit": 1}, "hit_ratio": 1.0});
        assert_eq!(
            stats_lines(&v)[0],
            "store:    redis://127.0.0.1:6379/0 (shared by every instance using it); 3 failed operations here"
        );
    }
}
