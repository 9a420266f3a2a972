//! Serving: the worker event loop ([`worker`]), the per-connection HTTP/1.1 driver ([`conn`])
//! and the socket operations they share ([`io`]).

mod conn;
mod io;
pub mod worker;
