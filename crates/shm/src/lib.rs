//! Shared memory for a pre-fork server: `MAP_SHARED | MAP_ANONYMOUS` mappings made by the master
//! before the first fork and inherited by every worker, and the tables laid over them — the
//! worker [`scoreboard`] (one slot per worker: state, heartbeat, request counters) and the
//! app-metrics [`series`] table (`Counter`/`Gauge`/`Histogram` series every worker adds into), and
//! the [`cache_store`] every worker's caches share, and the load balancer's [`upstream_board`].
//! Everything in them is written with atomics only: no lock a SIGKILLed process could leave held.
//!
//! Only libc (and `ferrocorn-metrics`, whose fixed label spaces size the counters): no runtime,
//! no thread, no Python, so the master, the workers and later shared stores can all use it.
//! Crate-wide `unsafe` is limited to mapping memory and viewing it as tables; each block carries
//! a `// SAFETY:` comment.
#![allow(unsafe_code)]

pub mod cache_store;
mod mapping;
pub mod scoreboard;
pub mod series;
pub mod upstream_board;

pub use mapping::{map_shared_zeroed, monotonic_ms};
