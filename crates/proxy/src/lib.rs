//! The reverse proxy of `ferrocorn balance`, an nginx-`upstream`-like balancer in front of
//! ferrocorn (or any HTTP/1.1) app servers.
//!
//! This crate owns the proxy's HTTP handling between a client connection (whose request
//! heads `ferrocorn-http` parses) and an upstream connection:
//!
//! * [`write_upstream_head`] (`request_out`): the request head sent upstream — HTTP/1.1,
//!   kept alive, hop-by-hop headers removed, framing re-emitted — with the forwarding headers
//!   of [`ForwardContext`] (`forwarding`: `X-Forwarded-For`, `X-Real-IP`,
//!   `X-Forwarded-Proto`, `X-Forwarded-Host`, RFC 7239 `Forwarded`).
//! * [`parse_response_head`] (`response_head`): the upstream's response head, its body
//!   framing and whether the upstream connection may be reused; [`UpstreamHeadError`]
//!   (`error`) when it is unusable (answered 502).
//! * [`client_framing`] and [`write_client_head`] (`response_out`): the response head sent
//!   on to the client.
//!
//! These modules are pure: no I/O, no clock, no settings. The upstream connection pool
//! (`pool.rs`) and the forwarding loop that moves heads and bodies between the two
//! connections (`forward.rs`) are tokio code still to come in this crate.

mod error;
mod fields;
mod forwarding;
mod request_out;
mod response_head;
mod response_out;

pub use error::UpstreamHeadError;
pub use forwarding::ForwardContext;
pub use request_out::write_upstream_head;
pub use response_head::{ResponseFraming, ResponseHead, ResponseLimits, parse_response_head};
pub use response_out::{client_framing, write_client_head};
