//! The load balancer's control commands, answered by the master from the shared table:
//! `upstreams` (each upstream's counters, the states its workers see it in, and which worker
//! runs the active health checks) and
//! `upstreams.set` (drain, down or up an upstream, or give it a new weight, without a reload:
//! the workers apply it before their next request).

use ferrocorn_metrics::{Snapshot, UPSTREAM_FAILURES, UPSTREAM_STATES};
use ferrocorn_shm::upstream_board::Override;
use serde_json::{Value, json};

/// The `upstreams` reply.
pub fn list(snapshot: &Snapshot) -> Value {
    if crate::upstream_board::board().is_none() {
        return json!({"ok": false, "error": "this instance is not a load balancer (no upstreams)"});
    }
    let upstreams: Vec<Value> = snapshot
        .upstreams
        .iter()
        .map(|u| {
            let failures: serde_json::Map<String, Value> = UPSTREAM_FAILURES
                .iter()
                .zip(u.failures)
                .map(|(r, n)| ((*r).into(), n.into()))
                .collect();
            let states: serde_json::Map<String, Value> = UPSTREAM_STATES
                .iter()
                .zip(u.states)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| ((*s).into(), n.into()))
                .collect();
            let answered: u64 = u.duration_buckets.iter().sum();
            let mean_ms =
                (answered > 0).then(|| u.duration_sum_micros as f64 / answered as f64 / 1e3);
            json!({
                "upstream": u.name,
                "requests": u.requests,
                "active": u.active,
                "retries": u.retries,
                "failures": failures,
                "states": states,
                "mean_response_ms": mean_ms,
            })
        })
        .collect();
    // the worker running the active health checks for the instance, when there are any
    let prober =
        crate::upstream_board::board().and_then(|b| b.prober(ferrocorn_shm::monotonic_ms()));
    json!({"ok": true, "upstreams": upstreams, "health_check_pid": prober})
}

/// The `upstreams.set` reply: `upstream` (its address as configured), and `admin` (`up`,
/// `drain`, `down`) and/or `weight`.
pub fn set(request: &Value, snapshot: &Snapshot) -> Value {
    let Some(board) = crate::upstream_board::board() else {
        return json!({"ok": false, "error": "this instance is not a load balancer (no upstreams)"});
    };
    let Some(name) = request.get("upstream").and_then(Value::as_str) else {
        return json!({"ok": false, "error": "upstreams.set needs \"upstream\": an address as configured"});
    };
    let Some(index) = snapshot.upstreams.iter().position(|u| u.name == name) else {
        let known: Vec<&str> = snapshot.upstreams.iter().map(|u| u.name.as_str()).collect();
        return json!({"ok": false, "error": format!("no upstream {name:?}; the upstreams are {known:?}")});
    };
    let admin = match request.get("admin").and_then(Value::as_str) {
        None => None,
        Some("up") => Some(1),
        Some("drain") => Some(2),
        Some("down") => Some(3),
        Some(other) => {
            return json!({"ok": false, "error": format!("admin {other:?}: use up, drain or down")});
        }
    };
    let weight = match request.get("weight") {
        None => None,
        Some(w) => match w.as_u64().filter(|w| (1..=10_000).contains(w)) {
            Some(w) => Some(w as u32),
            None => {
                return json!({"ok": false, "error": "weight must be a whole number from 1 to 10000"});
            }
        },
    };
    if admin.is_none() && weight.is_none() {
        return json!({"ok": false, "error": "give admin (up, drain, down) or weight"});
    }
    let mut change = board.override_of(index);
    if let Some(admin) = admin {
        change.admin = admin;
    }
    if let Some(weight) = weight {
        change.weight = weight;
    }
    board.set_override(index, Override { admin: change.admin, weight: change.weight });
    let what = match (admin, weight) {
        (Some(_), Some(w)) => {
            format!("{} with weight {w}", request["admin"].as_str().unwrap_or(""))
        }
        (Some(_), None) => request["admin"].as_str().unwrap_or("").to_owned(),
        (None, Some(w)) => format!("weight {w}"),
        (None, None) => String::new(),
    };
    json!({"ok": true, "message": format!("upstream {name}: {what}")})
}
