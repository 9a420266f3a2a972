//! What a balancer worker is told at start: the upstreams, the method, the pool, the
//! timeouts, when a request goes on to another upstream, and the active health check. Built
//! by the settings layer from the registry's values (already validated there).

use std::time::Duration;

use ferrocorn_balance::{HealthCheckSpec, Method, NextUpstream, UpstreamSpec};

/// The balancer's configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream servers, in the order given (their ids are their positions).
    pub upstreams: Vec<UpstreamSpec>,
    /// How one is chosen.
    pub method: Method,
    /// Idle upstream connections a worker keeps (`--keepalive`).
    pub keepalive: usize,
    /// How long an idle upstream connection is kept.
    pub keepalive_timeout: Duration,
    /// Longest wait for a connection to an upstream.
    pub connect_timeout: Duration,
    /// Longest wait between two reads or two writes on an upstream connection.
    pub timeout: Duration,
    /// Longest wait between two reads or two writes on the client connection while a
    /// request is proxied.
    pub client_timeout: Duration,
    /// When a request goes on to another upstream.
    pub next_upstream: NextUpstream,
    /// Most upstreams one request is tried on (0: no limit).
    pub next_upstream_tries: usize,
    /// No further upstream is tried once a request has taken this long (zero: no limit).
    pub next_upstream_timeout: Duration,
    /// The active health check, if any.
    pub health_check: Option<HealthCheckSpec>,
}
