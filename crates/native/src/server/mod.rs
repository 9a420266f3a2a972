//! Serving: the worker event loop ([`worker`]), the per-connection HTTP/1.1 driver ([`conn`])
//! and the socket operations they share ([`io`]); [`asgi_body`] streams an ASGI request body.

pub mod abort;
mod app_call;
mod asgi_body;
mod conn;
mod io;
mod pool;
pub mod statsd;
pub mod worker;

pub use app_call::{AppContext, ChunkMsg};
