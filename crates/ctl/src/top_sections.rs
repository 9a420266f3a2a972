//! The parts of a `ferrocorn top` frame that only some servers have: the response cache's
//! line (hit ratio, answers per second, the store) when `--cache` is on, and the upstreams'
//! table (with each one's request rate) for `ferrocorn balance`. Both read the `cache` and
//! `upstreams` members of a `status` reply; the rates come from the caller.

use serde_json::Value;

use crate::cache::fmt_bytes;
use crate::render::{fmt_count, fmt_rate, get_f64, get_u64};
use crate::upstreams::table_lines;

/// The `X-Cache-Status` answers shown on their own; the others are summed as "other".
const OWN_COLUMNS: [&str; 2] = ["hit", "miss"];

/// The cache's line, or none when the server has no response cache. `rate_of` gives the
/// answers per second with one `X-Cache-Status` (lowercase).
pub(crate) fn cache_lines(status: &Value, rate_of: &dyn Fn(&str) -> Option<f64>) -> Vec<String> {
    let Some(cache) = status.get("cache").filter(|c| c.is_object()) else { return Vec::new() };
    let ratio =
        get_f64(cache, "hit_ratio").map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let answers = cache.get("requests").and_then(Value::as_object);
    let other: Option<f64> = answers
        .into_iter()
        .flatten()
        .filter(|(answer, _)| !OWN_COLUMNS.contains(&answer.as_str()))
        .map(|(answer, _)| rate_of(answer))
        .sum();
    let store = cache.get("store").unwrap_or(&Value::Null);
    let store = match store.get("backend").and_then(Value::as_str) {
        Some(backend) if backend != "local" => {
            format!("{backend}, {} failed operations", fmt_count(get_u64(store, "remote_errors")))
        }
        _ => format!(
            "{} entries, {} of {}",
            fmt_count(get_u64(store, "entries")),
            fmt_bytes(get_u64(store, "bytes")),
            fmt_bytes(get_u64(store, "capacity_bytes")),
        ),
    };
    vec![format!(
        "cache   hit ratio {ratio}   HIT/s {}   MISS/s {}   other/s {}   store {store}",
        fmt_rate(rate_of("hit")),
        fmt_rate(rate_of("miss")),
        fmt_rate(other),
    )]
}

/// The upstreams' table, or nothing when the server is not a load balancer. `rate_of` gives
/// the attempts per second sent to an upstream, by its name.
pub(crate) fn upstream_lines(status: &Value, rate_of: &dyn Fn(&str) -> Option<f64>) -> Vec<String> {
    match status.get("upstreams") {
        Some(Value::Array(list)) if !list.is_empty() => table_lines(status, Some(rate_of)),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn no_cache_and_no_upstreams_show_nothing() {
        let status = json!({"pid": 1, "totals": {"requests": 3}});
        assert!(cache_lines(&status, &|_| None).is_empty());
        assert!(upstream_lines(&status, &|_| None).is_empty());
    }

    #[test]
    fn the_cache_line_has_the_ratio_the_rates_and_the_store() {
        let status = json!({"cache": {
            "hit_ratio": 0.934,
            "requests": {"hit": 90, "miss": 5, "stale": 1, "bypass": 2},
            "store": {"backend": "local", "entries": 12, "bytes": 4096, "capacity_bytes": 1 << 28},
        }});
        let rates = |answer: &str| match answer {
            "hit" => Some(120.0),
            "miss" => Some(3.0),
            "stale" => Some(0.5),
            "bypass" => Some(1.0),
            _ => None,
        };
        assert_eq!(
            cache_lines(&status, &rates),
            [
                "cache   hit ratio 93.4%   HIT/s 120.0   MISS/s 3.0   other/s 1.5   store 12 entries, 4096 B of 256.0 MiB"
            ]
        );
        let first_frame = cache_lines(&status, &|_| None);
        assert!(first_frame[0].contains("HIT/s -   MISS/s -   other/s -"), "{first_frame:?}");
    }

    #[test]
    fn a_redis_store_is_named_with_its_failures() {
        let status = json!({"cache": {"requests": {"hit": 0},
            "store": {"backend": "redis://127.0.0.1:6379/0", "remote_errors": 7}}});
        let line = &cache_lines(&status, &|_| None)[0];
        assert!(line.starts_with("cache   hit ratio -   HIT/s -"), "{line}");
        assert!(line.ends_with("store redis://127.0.0.1:6379/0, 7 failed operations"), "{line}");
    }

    #[test]
    fn upstreams_get_a_rate_column() {
        let status = json!({"upstreams": [
            {"upstream": "127.0.0.1:8001", "requests": 10, "active": 1, "retries": 0,
             "failures": {"error": 0}, "states": {"up": 2}, "mean_response_ms": 1.5},
        ]});
        let lines = upstream_lines(&status, &|name| (name == "127.0.0.1:8001").then_some(42.0));
        assert!(lines[0].starts_with("UPSTREAM") && lines[0].contains("RPS"), "{lines:?}");
        assert!(lines[1].contains("up×2") && lines[1].contains("42.0"), "{lines:?}");
    }
}
