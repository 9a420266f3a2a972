//! ferrocorn balance's decision core: which upstream a request goes to, with nginx's `upstream`
//! semantics and HAProxy's health checks, apart from any I/O. No clock is read (every call takes
//! the time as an [`Instant`](std::time::Instant)), randomness is a seeded xorshift in the group,
//! and nothing is sent anywhere: the proxy asks, carries the answer out, and reports back.
//!
//! - [`time`]: nginx's duration syntax (`30s`, `1m30s`, `500ms`).
//! - [`spec`]: one upstream server and its parameters (`weight=`, `max_fails=`, …).
//! - [`method`]: the balancing method (`round_robin`, `least_conn`, `ip_hash`, `hash KEY
//!   [consistent]`, `random_two`).
//! - [`health`]: the active health check's spec and the per-peer rise/fall state machine.
//! - [`peer`]: peer ids, the tried set, outcomes, operator overrides, snapshots.
//! - [`group`]: the group itself: `select`, `release`, status and health reports.
//! - [`next_upstream`]: which failures send a request on to another upstream, and which count.
//!
//! The picking rules live in `round_robin`, `least_conn`, `hash` (ip_hash and hash), `ketama`
//! (consistent hash, bounded load) and `random` (random two).
//!
//! One attempt goes: `select` (the peer's in-flight count goes up), the proxy tries it,
//! `observe_status` with the response status if one came, `release` with the outcome. A retry
//! inserts the peer into its [`Tried`] set and selects again.
//!
//! ```
//! use std::time::Instant;
//! use ferrocorn_balance::{Group, Method, Outcome, SelectKey, Tried, UpstreamSpec};
//!
//! let specs = ["127.0.0.1:8001 weight=5", "127.0.0.1:8002", "127.0.0.1:8003"]
//!     .iter()
//!     .map(|s| UpstreamSpec::parse(s))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let mut group = Group::new(specs, Method::parse("round_robin")?, 42)?;
//! let now = Instant::now();
//! let mut tried = Tried::default();
//! let peer = group.select(SelectKey::None, &tried, now).expect("a peer");
//! assert_eq!(group.spec(peer).unwrap().addr.to_string(), "127.0.0.1:8001");
//! // The connection failed: count it and try another peer.
//! group.release(peer, Outcome::Failure, now);
//! tried.insert(peer);
//! let retry = group.select(SelectKey::None, &tried, now).expect("another peer");
//! assert_ne!(retry, peer);
//! group.observe_status(retry, 200, now);
//! group.release(retry, Outcome::Success, now);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod group;
mod hash;
pub mod health;
mod ketama;
mod least_conn;
pub mod method;
pub mod next_upstream;
pub mod peer;
mod random;
mod round_robin;
pub mod spec;
pub mod time;

pub use group::{Group, GroupError, SelectKey};
pub use health::{HealthCheckSpec, HealthError, HealthState, HealthTracker};
pub use method::{Method, MethodError};
pub use next_upstream::{Failure, NextUpstream, NextUpstreamError, idempotent};
pub use peer::{Admin, Outcome, PeerId, PeerState, PeerView, Tried};
pub use spec::{SpecError, UpstreamAddr, UpstreamSpec};
pub use time::{DurationError, parse_duration};
