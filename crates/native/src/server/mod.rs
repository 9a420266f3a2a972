//! Serving: the worker event loop ([`worker`]; from an asyncio loop, [`loop_driver`]), the
//! per-connection HTTP/1.1 driver ([`conn`])
//! and the socket operations they share ([`io`]).

pub mod abort;
mod accept;
mod accept_policy;
mod app_call;
mod conn;
pub mod exclusive_wake;
pub mod loop_driver;
mod pool;
mod shared;
mod shared_listener;
pub mod sibling_wake;
pub mod statsd;
mod upstreams;
pub mod worker;

pub use app_call::AppContext;
