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
//! These modules are pure: no I/O, no clock, no settings. The I/O is tokio code over them,
//! with the selection policy in `ferrocorn-balance`:
//!
//! * [`Balancer`] (`balancer`): one worker's upstream group, pool and settings, and one
//!   request carried through them — choose, send, go on to another upstream when
//!   `--next-upstream` allows, relay the response or open a tunnel (101).
//! * `exchange`: one attempt's bytes — the request body held for a retry or streamed, the
//!   wait for the response head, the relay of the body with the client's framing.
//! * `connection` ([`UpstreamConn`]) and `pool` ([`Pool`]): upstream connections and the
//!   keep-alive pool (`--keepalive`).
//! * `health_check`: the active health check (`--health-check`).
//! * `config` ([`ProxyConfig`]): what a balancer worker is told at start.

mod balancer;
mod config;
mod connection;
mod error;
mod exchange;
mod fields;
mod forwarding;
mod health_check;
mod pool;
mod request_out;
mod response_head;
mod response_out;

pub use balancer::{Balancer, BodyTee, Delivery, Forwarded, Observer, Proxied, ProxyRequest};
pub use config::ProxyConfig;
pub use connection::{ConnectError, UpstreamConn};
pub use exchange::{ClientError, REPLAY_LIMIT, Relayed};
pub use health_check::{CheckFailure, HealthReport, check_once, check_round};
pub use pool::Pool;

pub use error::UpstreamHeadError;
pub use forwarding::{ForwardContext, POOL_CLIENT_HEADER};
pub use request_out::write_upstream_head;
pub use response_head::{ResponseFraming, ResponseHead, ResponseLimits, parse_response_head};
pub use response_out::{client_framing, write_client_head};
