//! `ferrocorn ctl upstreams ...`: the words of the load balancer's commands (`upstreams`,
//! `upstreams drain|down|up ADDRESS`, `upstreams weight ADDRESS N`), their requests, and the
//! table of an `upstreams` reply.

use serde_json::{Value, json};

use crate::render::{Align, Table, fmt_count, fmt_rate, get_f64, get_str, get_u64};

/// The states in the order they are shown (the server's label space).
const STATE_ORDER: [&str; 7] =
    ["up", "slow_start", "probing", "failed", "unhealthy", "draining", "down"];

/// An `upstreams` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpstreamsCommand {
    /// Show every upstream.
    List,
    /// Set an upstream's operator state: `up`, `drain` or `down`.
    Admin { upstream: String, admin: String },
    /// Give an upstream a new weight.
    Weight { upstream: String, weight: u32 },
}

impl UpstreamsCommand {
    /// The request object sent for it.
    pub(crate) fn request(&self) -> Value {
        match self {
            UpstreamsCommand::List => json!({"command": "upstreams"}),
            UpstreamsCommand::Admin { upstream, admin } => {
                json!({"command": "upstreams.set", "upstream": upstream, "admin": admin})
            }
            UpstreamsCommand::Weight { upstream, weight } => {
                json!({"command": "upstreams.set", "upstream": upstream, "weight": weight})
            }
        }
    }
}

/// The `upstreams` command from the words after `upstreams`.
pub(crate) fn parse(words: &[&String]) -> Result<UpstreamsCommand, String> {
    let words: Vec<&str> = words.iter().map(|w| w.as_str()).collect();
    match words.as_slice() {
        [] => Ok(UpstreamsCommand::List),
        [admin @ ("up" | "drain" | "down"), upstream] => Ok(UpstreamsCommand::Admin {
            upstream: (*upstream).to_owned(),
            admin: (*admin).to_owned(),
        }),
        ["weight", upstream, n] => match n.parse::<u32>() {
            Ok(weight) if (1..=10_000).contains(&weight) => {
                Ok(UpstreamsCommand::Weight { upstream: (*upstream).to_owned(), weight })
            }
            _ => Err(format!("invalid weight {n:?}: expected a whole number from 1 to 10000")),
        },
        [sub @ ("up" | "drain" | "down"), ..] => {
            Err(format!("upstreams {sub} takes one ADDRESS (as configured, e.g. 127.0.0.1:8001)"))
        }
        ["weight", ..] => Err("upstreams weight takes ADDRESS N".to_owned()),
        [other, ..] => {
            Err(format!("unknown upstreams subcommand {other:?} (up, drain, down or weight)"))
        }
    }
}

/// The table of an `upstreams` reply: one row per upstream.
pub(crate) fn list_lines(reply: &Value) -> Vec<String> {
    let mut lines = table_lines(reply, None);
    if let Some(pid) = reply.get("health_check_pid").and_then(Value::as_u64) {
        lines.push(format!("active health checks: worker {pid}"));
    }
    lines
}

/// Requests per second by an upstream's name (None: no rate yet).
pub(crate) type RateOf<'a> = &'a dyn Fn(&str) -> Option<f64>;

/// The upstreams' table, with a column of request rates when `rate_of` gives them (by the
/// upstream's name; `ferrocorn top`).
pub(crate) fn table_lines(reply: &Value, rate_of: Option<RateOf<'_>>) -> Vec<String> {
    let mut columns = vec![("UPSTREAM", Align::Left), ("STATE", Align::Left)];
    if rate_of.is_some() {
        columns.push(("RPS", Align::Right));
    }
    columns.push(("REQUESTS", Align::Right));
    let mut table = Table::new(
        &[
            columns.as_slice(),
            &[
                ("ACTIVE", Align::Right),
                ("FAILED", Align::Right),
                ("RETRIED", Align::Right),
                ("MEAN MS", Align::Right),
            ],
        ]
        .concat(),
    );
    let empty = Vec::new();
    let upstreams = reply.get("upstreams").and_then(Value::as_array).unwrap_or(&empty);
    for u in upstreams {
        let seen = u.get("states").and_then(Value::as_object);
        let states: Vec<String> = STATE_ORDER
            .iter()
            .filter_map(|state| Some((*state, seen?.get(*state)?.as_u64()?)))
            .map(|(state, n)| if n == 1 { state.to_owned() } else { format!("{state}×{n}") })
            .collect();
        let states = if states.is_empty() { "-".to_owned() } else { states.join(",") };
        let failed: u64 = u
            .get("failures")
            .and_then(Value::as_object)
            .map_or(0, |f| f.values().filter_map(Value::as_u64).sum());
        let name = get_str(u, "upstream").unwrap_or("?");
        let mut row = vec![name.to_owned(), states];
        if let Some(rate_of) = rate_of {
            row.push(fmt_rate(rate_of(name)));
        }
        row.extend([
            fmt_count(get_u64(u, "requests")),
            fmt_count(get_u64(u, "active")),
            fmt_count(Some(failed)),
            fmt_count(get_u64(u, "retries")),
            get_f64(u, "mean_response_ms").map_or("-".to_owned(), |ms| format!("{ms:.2}")),
        ]);
        table.push(row);
    }
    table.lines()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    fn parsed(w: &[&str]) -> Result<UpstreamsCommand, String> {
        let owned = words(w);
        parse(&owned.iter().collect::<Vec<_>>())
    }

    #[test]
    fn parses_the_subcommands() {
        assert_eq!(parsed(&[]), Ok(UpstreamsCommand::List));
        assert_eq!(
            parsed(&["drain", "127.0.0.1:8001"]),
            Ok(UpstreamsCommand::Admin {
                upstream: "127.0.0.1:8001".into(),
                admin: "drain".into()
            })
        );
        assert_eq!(
            parsed(&["weight", "127.0.0.1:8001", "5"]),
            Ok(UpstreamsCommand::Weight { upstream: "127.0.0.1:8001".into(), weight: 5 })
        );
        for bad in [&["drain"][..], &["weight", "a", "0"], &["frob", "a"], &["up", "a", "b"]] {
            assert!(parsed(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_table_shows_states_and_totals() {
        let reply = json!({"ok": true, "upstreams": [{
            "upstream": "127.0.0.1:8001", "requests": 10, "active": 1, "retries": 2,
            "failures": {"error": 1, "timeout": 2}, "states": {"up": 1, "failed": 1},
            "mean_response_ms": 1.5
        }]});
        let lines = list_lines(&reply);
        assert!(lines[0].starts_with("UPSTREAM"), "{lines:?}");
        assert!(lines[1].contains("127.0.0.1:8001") && lines[1].contains("up,failed"), "{lines:?}");
        assert!(lines[1].contains("1.50"), "{lines:?}");
        assert_eq!(lines.len(), 2, "no prober, no line for it");
        let mut checked = reply.clone();
        checked["health_check_pid"] = json!(4242);
        assert_eq!(list_lines(&checked).last().unwrap(), "active health checks: worker 4242");
    }
}
