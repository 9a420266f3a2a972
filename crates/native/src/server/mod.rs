//! Serving: the worker event loop ([`worker`]), the per-connection HTTP/1.1 driver ([`conn`])
//! and the socket operations they share ([`io`]).

pub mod abort;
mod conn;
mod io;
pub mod statsd;
pub mod worker;
