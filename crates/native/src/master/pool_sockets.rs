//! The private sockets of the worker pools by URL (`--pool`): one unix socket per pool other
//! than `/`, in a directory only this user can enter, made by the master before the first
//! fork. A pool's workers accept on it; the `/` pool's workers forward the requests for its
//! prefix to it (the routes, longest prefix first), keeping their client connection, so one
//! keep-alive connection can carry requests for several pools. Removed when the master stops.
//! Also what a worker of a pool boots with: its options and its listener.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrocorn_balance::{Method, NextUpstream, UpstreamAddr, UpstreamSpec};
use ferrocorn_net::listen::{self, BindSpec, Listener};
use ferrocorn_proxy::ProxyConfig;

use super::Master;
use crate::logging::info;
use crate::options::{PoolRoute, ServerOptions};

/// Idle connections a `/` pool worker keeps to each other pool.
const POOL_KEEPALIVE: usize = 64;

/// The pools' sockets.
pub struct PoolSockets {
    dir: PathBuf,
    /// One listener per pool other than `/`, in pool order.
    pub listeners: Vec<Listener>,
}

impl PoolSockets {
    /// Bind a socket for each pool of `opts` and give the `/` pool its routes to them (None
    /// without pools); logs the pools.
    pub fn prepare(opts: &mut ServerOptions) -> Result<Option<PoolSockets>, String> {
        let sockets = Self::bind(opts)?;
        if let Some(sockets) = &sockets {
            opts.serve.routes = Arc::new(sockets.routes(opts));
            for pool in &opts.pools {
                let class = pool.serve.worker_class.name();
                let (prefix, workers, app) =
                    (&pool.prefix, pool.master.workers, &pool.app.app_spec);
                info!("Worker pool {prefix}: {workers} {class} worker(s) for {app}");
            }
        }
        super::control::set_pool_prefixes(opts.pools.iter().map(|p| p.prefix.clone()).collect());
        Ok(sockets)
    }

    /// A reload: the same prefixes (a change needs a restart), routes for the new options.
    pub fn reload(
        sockets: Option<&PoolSockets>,
        running: &ServerOptions,
        reloaded: &mut ServerOptions,
    ) -> Result<(), String> {
        let prefixes = |o: &ServerOptions| o.pools.iter().map(|p| p.prefix.clone()).collect();
        let (old, new): (Vec<String>, Vec<String>) = (prefixes(running), prefixes(reloaded));
        if old != new {
            return Err(format!(
                "the worker pools' prefixes changed ({old:?} -> {new:?}); restart the server \
                 to change them (a reload can change a pool's settings)"
            ));
        }
        if let Some(sockets) = sockets {
            reloaded.serve.routes = Arc::new(sockets.routes(reloaded));
        }
        Ok(())
    }

    /// Bind a socket for each pool of `opts` (None without pools).
    fn bind(opts: &ServerOptions) -> Result<Option<PoolSockets>, String> {
        if opts.pools.is_empty() {
            return Ok(None);
        }
        let dir = std::env::temp_dir().join(format!("ferrocorn-pools-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                format!("cannot make the worker pools' directory {}: {e}", dir.display())
            })?;
        let mut listeners = Vec::with_capacity(opts.pools.len());
        for index in 1..=opts.pools.len() {
            let spec = BindSpec::Unix(dir.join(format!("{index}.sock")));
            let listener = listen::bind(&spec, opts.master.listen, &mut |_| {})
                .map_err(|e| format!("cannot make a worker pool's socket: {}", e.0))?;
            listeners.push(listener);
        }
        Ok(Some(PoolSockets { dir, listeners }))
    }

    /// How the `/` pool's workers reach each other pool, longest prefix first.
    pub fn routes(&self, opts: &ServerOptions) -> Vec<PoolRoute> {
        let mut routes: Vec<PoolRoute> = opts
            .pools
            .iter()
            .enumerate()
            .map(|(i, pool)| {
                let path = self.dir.join(format!("{}.sock", i + 1));
                let mut upstream = UpstreamSpec::new(UpstreamAddr::Unix(path));
                upstream.max_fails = 0;
                // The pool's own deadline answers a stuck request (504); the hop waits a
                // little longer than it.
                let timeout = match pool.serve.timeout.is_zero() {
                    true => Duration::from_secs(24 * 3600),
                    false => pool.serve.timeout + Duration::from_secs(30),
                };
                PoolRoute {
                    prefix: pool.prefix.clone(),
                    proxy: ProxyConfig {
                        upstreams: vec![upstream],
                        method: Method::RoundRobin,
                        keepalive: POOL_KEEPALIVE,
                        // The pool's workers close idle connections after their keep-alive.
                        keepalive_timeout: pool
                            .serve
                            .keepalive
                            .saturating_sub(Duration::from_millis(250)),
                        connect_timeout: Duration::from_secs(5),
                        timeout,
                        client_timeout: opts.serve.io_timeout,
                        next_upstream: NextUpstream::parse("error timeout").unwrap_or_default(),
                        next_upstream_tries: 0,
                        next_upstream_timeout: Duration::ZERO,
                        health_check: None,
                    },
                }
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        routes
    }

    /// Remove the sockets and their directory.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Master {
    /// The options a worker of `pool` runs with (0: the `/` pool's, the instance's own).
    pub(in crate::master) fn options_for_pool(&self, pool: usize) -> ServerOptions {
        let mut opts = self.opts.clone();
        if let Some(p) = pool.checked_sub(1).and_then(|i| self.opts.pools.get(i)) {
            opts.master = p.master.clone();
            opts.serve = p.serve.clone();
            opts.app = p.app.clone();
        }
        opts
    }

    /// The listeners a worker of `pool` accepts on: the instance's, or the pool's socket.
    pub(in crate::master) fn listeners_for_pool(&self, pool: usize) -> &[Listener] {
        match (pool.checked_sub(1), &self.pool_sockets) {
            (Some(i), Some(sockets)) if i < sockets.listeners.len() => &sockets.listeners[i..i + 1],
            _ => &self.listeners,
        }
    }
}
