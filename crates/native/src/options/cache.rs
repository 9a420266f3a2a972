//! The response cache's options, from the `cache_*` settings: parsed once at start with the
//! cache crate's own parsers (the registry already refused what they refuse, so a failure
//! here names the setting the same way).

use std::time::Duration;

use ferrocorn_cache::{Backend, CacheValid, Conditions, KeyTemplate, LookupRules, UseStale};
use ferrocorn_config::Config;
use ferrocorn_net::allowlist::AllowList;

use super::{OptionsError, seconds};

/// What the response cache does (present only with `--cache`).
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// The largest response stored.
    pub max_entry_size: u64,
    /// `--cache-valid`.
    pub valid: CacheValid,
    /// `--cache-key`.
    pub key: KeyTemplate,
    /// Methods answered from and stored into the cache.
    pub methods: Vec<String>,
    /// `--cache-bypass`.
    pub bypass: Conditions,
    /// `--cache-no-store`.
    pub no_store: Conditions,
    /// Inactivity, stale use and the lock, as a lookup weighs them.
    pub rules: LookupRules,
    /// How long a request waits for another filling its key.
    pub lock_timeout: Duration,
    /// `--cache-revalidate`: refresh an expired entry with a conditional request.
    pub revalidate: bool,
    /// How long an uncacheable key is remembered (0: not at all).
    pub hit_for_miss: i64,
    /// Who may send PURGE.
    pub purge_allow: AllowList,
}

impl CacheOptions {
    /// Whether the key, or a condition, reads the decoded path.
    pub fn reads_decoded_path(&self) -> bool {
        self.key.reads_decoded_path()
            || self.bypass.reads_decoded_path()
            || self.no_store.reads_decoded_path()
    }

    /// Whether the key, or a condition, reads the client's address.
    pub fn reads_remote_addr(&self) -> bool {
        self.key.reads_remote_addr()
            || self.bypass.reads_remote_addr()
            || self.no_store.reads_remote_addr()
    }
}

fn bad(setting: &str, problem: impl std::fmt::Display) -> OptionsError {
    OptionsError(format!("Invalid value for {setting}: {problem}"))
}

/// Bytes of the shared store's ring (`cache_max_size`), used by the app cache with or without
/// `--cache`.
pub(super) fn store_size(config: &Config) -> u64 {
    config.int("cache_max_size").max(4096) as u64
}

/// Where the caches keep their entries (`cache_backend`).
pub(super) fn backend(config: &Config) -> Result<Backend, OptionsError> {
    Backend::parse(config.str("cache_backend")).map_err(|e| bad("cache_backend", e))
}

/// The cache's options, or None without `--cache`.
pub(super) fn cache_options(config: &Config) -> Result<Option<CacheOptions>, OptionsError> {
    if !config.bool("cache") {
        return Ok(None);
    }
    let use_stale =
        UseStale::parse(config.str("cache_use_stale")).map_err(|e| bad("cache_use_stale", e))?;
    Ok(Some(CacheOptions {
        max_entry_size: config.int("cache_max_entry_size").max(0) as u64,
        valid: CacheValid::parse(config.str("cache_valid")).map_err(|e| bad("cache_valid", e))?,
        key: KeyTemplate::parse(config.str("cache_key")).map_err(|e| bad("cache_key", e))?,
        methods: config.list("cache_methods").to_vec(),
        bypass: Conditions::parse(config.str("cache_bypass"))
            .map_err(|e| bad("cache_bypass", e))?,
        no_store: Conditions::parse(config.str("cache_no_store"))
            .map_err(|e| bad("cache_no_store", e))?,
        rules: LookupRules {
            inactive: config.float("cache_inactive").max(0.0) as i64,
            use_stale,
            lock: config.bool("cache_lock"),
            background_update: config.bool("cache_background_update"),
        },
        lock_timeout: seconds(config.float("cache_lock_timeout")),
        revalidate: config.bool("cache_revalidate"),
        hit_for_miss: config.float("cache_hit_for_miss").max(0.0) as i64,
        purge_allow: AllowList::parse(config.list("cache_purge_allow"), "cache_purge_allow")
            .map_err(OptionsError)?,
    }))
}
