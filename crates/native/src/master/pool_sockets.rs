//! The private sockets of the worker pools by URL (`--pool`): one unix socket per pool other
//! than `/`, in a directory only this user can enter, made by the master before the first
//! fork. A pool's workers accept on it; the `/` pool's workers forward the requests for its
//! prefix to it (the routes, longest prefix first), keeping their client connection, so one
//! keep-alive connection can carry requests for several pools. Removed when the master stops.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use ferrocorn_balance::{Method, NextUpstream, UpstreamAddr, UpstreamSpec};
use ferrocorn_net::listen::{self, BindSpec, Listener};
use ferrocorn_proxy::ProxyConfig;

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
    /// Bind a socket for each pool of `opts` (None without pools).
    pub fn bind(opts: &ServerOptions) -> Result<Option<PoolSockets>, String> {
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
