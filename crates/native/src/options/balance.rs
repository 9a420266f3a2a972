//! The balancer's options, from the `Load Balancer` settings (`--upstream`, `--method`,
//! `--keepalive`, the upstream timeouts, `--next-upstream*`, `--health-check`): parsed once at
//! start with `ferrocorn-balance`'s parsers (the registry already refused what they refuse,
//! so a failure here names the setting the same way). Present only when upstreams are given:
//! the instance is then a load balancer and serves no app.

use ferrocorn_balance::{HealthCheckSpec, Method, NextUpstream, UpstreamSpec};
use ferrocorn_cache::KeyTemplate;
use ferrocorn_config::Config;
use ferrocorn_proxy::ProxyConfig;

use super::{OptionsError, seconds};

/// What a balancer worker needs.
#[derive(Debug, Clone)]
pub struct BalanceOptions {
    /// The proxy's configuration.
    pub proxy: ProxyConfig,
    /// The key of `hash KEY`, parsed (rendered per request).
    pub hash_key: Option<KeyTemplate>,
}

fn bad(setting: &str, problem: impl std::fmt::Display) -> OptionsError {
    OptionsError(format!("Invalid value for {setting}: {problem}"))
}

/// The balancer's options, or None when no upstream is configured.
pub(super) fn balance_options(
    config: &Config,
    client_timeout: std::time::Duration,
) -> Result<Option<BalanceOptions>, OptionsError> {
    let specs = config.list("upstreams");
    if specs.is_empty() {
        return Ok(None);
    }
    let upstreams = specs
        .iter()
        .map(|s| UpstreamSpec::parse(s).map_err(|e| bad("upstreams", format!("{s:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let method =
        Method::parse(config.str("balance_method")).map_err(|e| bad("balance_method", e))?;
    let hash_key = match &method {
        Method::Hash { key, .. } => {
            Some(KeyTemplate::parse(key).map_err(|e| bad("balance_method", e))?)
        }
        _ => None,
    };
    let health = config.str("health_check");
    let health_check = match health.trim().is_empty() {
        true => None,
        false => Some(HealthCheckSpec::parse(health).map_err(|e| bad("health_check", e))?),
    };
    let proxy = ProxyConfig {
        upstreams,
        method,
        keepalive: usize::try_from(config.int("upstream_keepalive")).unwrap_or(0),
        keepalive_timeout: seconds(config.float("upstream_keepalive_timeout")),
        connect_timeout: seconds(config.float("upstream_connect_timeout")),
        timeout: seconds(config.float("upstream_timeout")),
        client_timeout,
        next_upstream: NextUpstream::parse(config.str("next_upstream"))
            .map_err(|e| bad("next_upstream", e))?,
        next_upstream_tries: usize::try_from(config.int("next_upstream_tries")).unwrap_or(0),
        next_upstream_timeout: seconds(config.float("next_upstream_timeout")),
        health_check,
    };
    // The group refuses what nginx refuses (no upstream, backup with a hash method).
    ferrocorn_balance::Group::new(proxy.upstreams.clone(), proxy.method.clone(), 0)
        .map_err(|e| bad("upstreams", e))?;
    Ok(Some(BalanceOptions { proxy, hash_key }))
}
