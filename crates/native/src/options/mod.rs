//! Turning the resolved [`ferrocorn_config::Config`] into the plain option structs the server
//! uses (ripgrep's "HiArgs" step). This is the only place that reads settings by name; values
//! that need more than the registry's validation (worker class, allow-lists, bind specs) are
//! checked here, and every error names the setting and the fix.

use std::time::Duration;

use ferrocorn_config::{Config, PoolSpec};
use ferrocorn_http::{HeaderMapPolicy, Limits, ProxyMode};

use crate::logging::Level;

mod balance;
mod cache;
mod worker_class;

pub use balance::BalanceOptions;
pub use cache::CacheOptions;
use ferrocorn_net::allowlist::AllowList;
use ferrocorn_net::listen::{BindSpec, ListenOptions};
pub use worker_class::WorkerClass;
use worker_class::worker_class;

/// Everything the settings decide, derived once at start, grouped by who reads it: the master
/// (`master`), a worker while it serves (`serve`, the only part the connection code sees),
/// the app loader (`app`) and the logs (`log`).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// What the master reads.
    pub master: MasterOptions,
    /// What a worker reads while serving.
    pub serve: ServeOptions,
    /// What loads the app.
    pub app: AppOptions,
    /// Where the logs go.
    pub log: LogOptions,
    /// The worker pools by URL prefix other than the one serving `/` (whose options are the
    /// ones above), in the order given.
    pub pools: Vec<PoolOptions>,
}

/// One worker pool by URL prefix (`--pool`): its own workers, app and serving options.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The path prefix its requests start with.
    pub prefix: String,
    /// Its worker count and lifecycle (its listener is made by the master).
    pub master: MasterOptions,
    /// How its workers serve.
    pub serve: ServeOptions,
    /// Its app.
    pub app: AppOptions,
}

/// A pool the `/` pool's workers forward requests to: its prefix and how to reach it.
#[derive(Debug, Clone)]
pub struct PoolRoute {
    /// The path prefix.
    pub prefix: String,
    /// The pool's private socket, as an upstream.
    pub proxy: ferrocorn_proxy::ProxyConfig,
}

/// What the master reads: listeners, worker count and lifecycle, process set-up, and the
/// endpoints it serves itself.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// Addresses to listen on.
    pub binds: Vec<BindSpec>,
    /// Socket options for every listener.
    pub listen: ListenOptions,
    /// Number of worker processes.
    pub workers: usize,
    /// Longest a worker may take to boot (zero disables).
    pub boot_timeout: Duration,
    /// Requests after which a worker retires (0 = never).
    pub max_requests: u64,
    /// Random extra requests (0..=jitter) added per worker.
    pub max_requests_jitter: u64,
    /// Detach into the background.
    pub daemon: bool,
    /// Keep stdio open in daemon mode.
    pub enable_stdio_inheritance: bool,
    /// Where to write the master's pid.
    pub pidfile: Option<String>,
    /// Switch workers to this user (name or uid).
    pub user: Option<String>,
    /// Switch workers to this group (name or gid).
    pub group: Option<String>,
    /// Process umask.
    pub umask: u32,
    /// Give workers the user's supplementary groups.
    pub initgroups: bool,
    /// Base of process titles (`proc_name`, else `default_proc_name`).
    pub proc_name: String,
    /// Address of the Prometheus endpoint.
    pub metrics_bind: Option<String>,
    /// Control socket path (None when disabled).
    pub control_socket: Option<String>,
    /// Control socket permission bits.
    pub control_socket_mode: u32,
}

/// What a worker reads while it serves: the request path's limits, timeouts and trust, and
/// how it runs the app. (The master reads `worker_class`, `timeout` and `graceful_timeout`
/// too, to boot and watch workers.)
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Parser limits and header policies.
    pub limits: Limits,
    /// Idle time allowed between keep-alive requests (zero: close after each response).
    pub keepalive: Duration,
    /// Longest time to receive a complete request head.
    pub header_timeout: Duration,
    /// Longest wait for the client while reading a body or writing a response.
    pub io_timeout: Duration,
    /// WSGI body bytes kept in memory; longer bodies are spooled to a temporary file.
    pub body_buffer_size: usize,
    /// How long in-flight requests may run after a graceful stop signal.
    pub graceful_timeout: Duration,
    /// Peers whose proxy headers (scheme, forwarder headers) are trusted.
    pub forwarded_allow: AllowList,
    /// Peers allowed to send a PROXY protocol header.
    pub proxy_allow: AllowList,
    /// Which PROXY protocol versions are accepted.
    pub proxy_mode: ProxyMode,
    /// Header → value pairs meaning "https" (names upper-cased).
    pub secure_scheme_headers: Vec<(String, String)>,
    /// Use sendfile for `wsgi.file_wrapper` responses.
    pub sendfile: bool,
    /// The raw-descriptor fast paths may be used where the client stream allows them.
    pub direct_socket_io: bool,
    /// Refuse an HTTP/1.1 request without a Host header (400).
    pub require_host: bool,
    /// How workers run the app.
    pub worker_class: WorkerClass,
    /// `worker_connections`: the most open client connections one gthread or gevent worker
    /// holds, as Gunicorn documents it (sync and asgi do not limit connections).
    pub worker_connections: usize,
    /// `timeout`: the workers' heartbeat timeout and, for the gthread, gevent and asgi
    /// classes, the per-request deadline (zero disables both).
    pub timeout: Duration,
    /// Where to send statsd metrics.
    pub statsd: Option<StatsdTarget>,
    /// ASGI `root_path`.
    pub root_path: String,
    /// The response cache (None without `--cache`).
    pub cache: Option<std::sync::Arc<CacheOptions>>,
    /// Bytes of the cache store the app cache (always) and the response cache share.
    pub cache_store_size: u64,
    /// Where both caches keep their entries (`--cache-backend`).
    pub cache_backend: ferrocorn_cache::Backend,
    /// The longest a Redis connect or reply may take (`--cache-backend-timeout`).
    pub cache_backend_timeout: std::time::Duration,
    /// The balancer's upstreams and their handling (present only for a load balancer,
    /// whose worker class is then [`WorkerClass::Balancer`]).
    pub balance: Option<std::sync::Arc<BalanceOptions>>,
    /// The other worker pools a `/` pool worker forwards to, longest prefix first (set by
    /// the master once their sockets exist; empty without pools).
    pub routes: std::sync::Arc<Vec<PoolRoute>>,
    /// A worker of a pool other than `/`: it believes the client its `/` pool names
    /// (`X-Ferrocorn-Pool-Client`) on its private socket.
    pub pool_member: bool,
}

/// What loads the app: where it is and the process environment it is imported in.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The app spec (`module:callable`).
    pub app_spec: String,
    /// Import the app in the master before forking.
    pub preload_app: bool,
    /// Directory to change into before loading the app.
    pub chdir: String,
    /// Extra `sys.path` entries.
    pub pythonpath: Vec<String>,
    /// `KEY=VALUE` pairs exported to the environment.
    pub raw_env: Vec<(String, String)>,
}

/// Where the error and access logs go, and in what form.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Access log as JSON lines.
    pub access_log_json: bool,
    /// Logs go through Python's `logging` (a logconfig setting was applied).
    pub python_logging: bool,
    /// Access log target (`-` = stdout), when enabled.
    pub access_log: Option<String>,
    /// The access log format (for a file, stdout, or Python logging).
    pub access_log_format: String,
    /// Error log target (`-` = stderr).
    pub error_log: String,
    /// Error log level.
    pub log_level: Level,
}

/// A setting whose value cannot be used; the message names the setting and the fix.
#[derive(Debug)]
pub struct OptionsError(pub String);

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// CPUs this process may use: the affinity mask and the cgroup CPU quota both count (std's
/// `available_parallelism` reads both on Linux), not the host's core count.
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn worker_count(config: &Config) -> Result<usize, OptionsError> {
    let count = match config.get("workers") {
        ferrocorn_config::Value::Str(s) if s.eq_ignore_ascii_case("auto") => 2 * usable_cpus() + 1,
        _ => usize::try_from(config.int("workers")).unwrap_or(0),
    };
    if count == 0 {
        return Err(OptionsError(
            "invalid value for `workers` (-w/--workers): must be at least 1".into(),
        ));
    }
    Ok(count)
}

fn header_map(config: &Config) -> Result<HeaderMapPolicy, OptionsError> {
    match config.str("header_map").to_ascii_lowercase().as_str() {
        "drop" => Ok(HeaderMapPolicy::Drop),
        "refuse" => Ok(HeaderMapPolicy::Refuse),
        "dangerous" => Ok(HeaderMapPolicy::Dangerous),
        other => Err(OptionsError(format!(
            "invalid value for `header_map` (--header-map): {other:?}; use drop, refuse or dangerous"
        ))),
    }
}

fn proxy_mode(config: &Config) -> Result<ProxyMode, OptionsError> {
    let value = match config.get("proxy_protocol") {
        ferrocorn_config::Value::Bool(true) => "auto".to_owned(),
        ferrocorn_config::Value::Bool(false) | ferrocorn_config::Value::None => "off".to_owned(),
        _ => config.str("proxy_protocol").to_ascii_lowercase(),
    };
    match value.as_str() {
        "off" | "false" | "" => Ok(ProxyMode::Off),
        "v1" => Ok(ProxyMode::V1),
        "v2" => Ok(ProxyMode::V2),
        "auto" | "true" => Ok(ProxyMode::Auto),
        other => Err(OptionsError(format!(
            "invalid value for `proxy_protocol` (--proxy-protocol): {other:?}; use off, v1, v2 or auto"
        ))),
    }
}

fn sendfile_enabled(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> bool {
    match config.get("sendfile") {
        ferrocorn_config::Value::Bool(b) => *b,
        _ => match env("SENDFILE") {
            Some(v) => matches!(v.to_ascii_lowercase().as_str(), "y" | "1" | "yes" | "true"),
            None => true,
        },
    }
}

fn raw_env(config: &Config) -> Result<Vec<(String, String)>, OptionsError> {
    config
        .list("raw_env")
        .iter()
        .map(|pair| {
            pair.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| {
                OptionsError(format!(
                    "invalid value for `raw_env` (-e/--env): {pair:?}; use KEY=VALUE"
                ))
            })
        })
        .collect()
}

fn id_setting(config: &Config, name: &str) -> Option<String> {
    match config.get(name) {
        ferrocorn_config::Value::Int(i) => Some(i.to_string()),
        ferrocorn_config::Value::Str(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Requests a gthread worker admits in all, running or queued for a thread.
pub const GTHREAD_QUEUED: usize = 32;

impl ServeOptions {
    /// Requests one worker may run at once: 1 for sync, `threads` for gthread,
    /// `worker_connections` for gevent and asgi. A worker running this many stops accepting.
    pub fn concurrency(&self) -> usize {
        match self.worker_class {
            WorkerClass::Sync => 1,
            WorkerClass::Gthread { threads } => threads,
            WorkerClass::Gevent | WorkerClass::Asgi { .. } | WorkerClass::Balancer => {
                self.worker_connections
            }
        }
    }

    /// Requests one worker admits at once: its concurrency, except that a gthread worker
    /// admits up to [`GTHREAD_QUEUED`] (running, or queued in Rust for the next free thread),
    /// so a thread takes them back to back instead of sleeping between requests.
    pub fn admitted(&self) -> usize {
        match self.worker_class {
            WorkerClass::Gthread { threads } => threads.max(GTHREAD_QUEUED),
            _ => self.concurrency(),
        }
    }
}

impl ServerOptions {
    /// Derive the options; `env` reads the process environment (for `SENDFILE`). With
    /// `--pool`, the options are the `/` pool's (the instance's own, or those of a pool with
    /// the prefix `/`), and each other pool's are its settings put over the instance's.
    pub fn from_config(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, OptionsError> {
        let specs = config.pools().map_err(|e| OptionsError(e.message))?;
        if specs.is_empty() {
            return Self::single(config, env);
        }
        if !config.list("upstreams").is_empty() {
            return Err(OptionsError(
                "`pools` (--pool) and `upstreams` (--upstream) cannot be combined: a balancer's \
                 workers serve no app"
                    .into(),
            ));
        }
        let front = specs.iter().find(|p| p.prefix == "/").cloned().unwrap_or(PoolSpec {
            prefix: "/".into(),
            app: None,
            settings: Vec::new(),
        });
        let in_pool = |spec: &PoolSpec| {
            config
                .for_pool(spec)
                .map_err(|e| OptionsError(e.message))
                .and_then(|c| Self::single(&c, env))
                .map_err(|e| OptionsError(format!("in pool {:?}: {}", spec.prefix, e.0)))
        };
        let mut opts = in_pool(&front)?;
        for spec in specs.iter().filter(|p| p.prefix != "/") {
            let mut pool = in_pool(spec)?;
            pool.serve.pool_member = true;
            // The `/` pool's workers answer from the cache before forwarding; a pool's own
            // workers do not cache the same responses again.
            if opts.serve.cache.is_some() {
                pool.serve.cache = None;
            }
            pool.app.preload_app = false;
            let ServerOptions { master, serve, app, .. } = pool;
            opts.pools.push(PoolOptions { prefix: spec.prefix.clone(), master, serve, app });
        }
        Ok(opts)
    }

    /// The options of one configuration without pools.
    fn single(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, OptionsError> {
        let timeout = config.float("timeout");
        let io_timeout = if timeout > 0.0 { seconds(timeout) } else { Duration::from_secs(30) };
        let balance = balance::balance_options(config, io_timeout)?;
        let worker_class = match &balance {
            Some(_) => WorkerClass::Balancer,
            None => worker_class(config)?,
        };
        let app_spec = match (&balance, config.app()) {
            (None, Some(app)) => app.to_owned(),
            (None, None) => {
                return Err(OptionsError("no application module specified: give APP (module:callable) on the command line or `wsgi_app` in the config file".into()));
            }
            (Some(_), None) => String::new(),
            (Some(_), Some(app)) => {
                return Err(OptionsError(format!(
                    "the app {app:?} and `upstreams` (--upstream) were both given: a balancer \
                     forwards every request to its upstreams and serves no app; drop one"
                )));
            }
        };
        let binds = config
            .list("bind")
            .iter()
            .map(|b| BindSpec::parse(b).map_err(|e| OptionsError(e.0)))
            .collect::<Result<Vec<_>, _>>()?;
        let log_level = Level::parse(config.str("loglevel")).ok_or_else(|| {
            OptionsError(format!(
                "invalid value for `loglevel` (--log-level): {:?}; use debug, info, warning, error or critical",
                config.str("loglevel")
            ))
        })?;
        let backlog = i32::try_from(config.int("backlog")).unwrap_or(i32::MAX);
        let limits = Limits {
            request_line: config.int("limit_request_line").max(0) as usize,
            fields: config.int("limit_request_fields").max(1) as usize,
            field_size: config.int("limit_request_field_size").max(1) as usize,
            header_map: header_map(config)?,
            forwarder_headers: config
                .list("forwarder_headers")
                .iter()
                .map(|h| h.trim().to_ascii_uppercase())
                .collect(),
            permit_obsolete_folding: config.bool("permit_obsolete_folding"),
            strip_header_spaces: config.bool("strip_header_spaces"),
            permit_unconventional_http_method: config.bool("permit_unconventional_http_method"),
            permit_unconventional_http_version: config.bool("permit_unconventional_http_version"),
            casefold_http_method: config.bool("casefold_http_method"),
        };
        Ok(ServerOptions {
            master: MasterOptions {
                binds,
                listen: ListenOptions { backlog, reuse_port: config.bool("reuse_port") },
                workers: worker_count(config)?,
                boot_timeout: seconds(config.float("boot_timeout")),
                max_requests: config.int("max_requests").max(0) as u64,
                max_requests_jitter: config.int("max_requests_jitter").max(0) as u64,
                daemon: config.bool("daemon"),
                enable_stdio_inheritance: config.bool("enable_stdio_inheritance"),
                pidfile: config.opt_str("pidfile").filter(|p| !p.is_empty()).map(str::to_owned),
                user: id_setting(config, "user"),
                group: id_setting(config, "group"),
                umask: config.int("umask").clamp(0, 0o777) as u32,
                initgroups: config.bool("initgroups"),
                proc_name: config
                    .opt_str("proc_name")
                    .or_else(|| config.opt_str("default_proc_name"))
                    .unwrap_or("ferrocorn")
                    .to_owned(),
                metrics_bind: config
                    .opt_str("metrics_bind")
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned),
                control_socket: (!config.bool("control_socket_disable"))
                    .then(|| {
                        config
                            .opt_str("control_socket")
                            .filter(|p| !p.is_empty())
                            .map(str::to_owned)
                    })
                    .flatten(),
                control_socket_mode: config.int("control_socket_mode").clamp(0, 0o777) as u32,
            },
            serve: ServeOptions {
                limits,
                keepalive: seconds(config.float("keepalive")),
                header_timeout: seconds(config.float("header_timeout")),
                io_timeout,
                body_buffer_size: usize::try_from(config.int("body_buffer_size"))
                    .unwrap_or(usize::MAX),
                graceful_timeout: seconds(config.float("graceful_timeout")),
                forwarded_allow: AllowList::parse(
                    config.list("forwarded_allow_ips"),
                    "forwarded_allow_ips",
                )
                .map_err(OptionsError)?,
                proxy_allow: AllowList::parse(config.list("proxy_allow_ips"), "proxy_allow_ips")
                    .map_err(OptionsError)?,
                proxy_mode: proxy_mode(config)?,
                secure_scheme_headers: config
                    .map("secure_scheme_headers")
                    .iter()
                    .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
                    .collect(),
                sendfile: sendfile_enabled(config, env),
                direct_socket_io: config.bool("direct_socket_io"),
                require_host: config.bool("require_host"),
                worker_class,
                worker_connections: usize::try_from(config.int("worker_connections"))
                    .unwrap_or(1000)
                    .max(1),
                timeout: seconds(timeout),
                statsd: config.opt_str("statsd_host").filter(|h| !h.is_empty()).map(|host| {
                    let prefix = config.str("statsd_prefix").trim_end_matches('.');
                    StatsdTarget {
                        address: host.to_owned(),
                        prefix: if prefix.is_empty() {
                            String::new()
                        } else {
                            format!("{prefix}.")
                        },
                        tags: config.str("dogstatsd_tags").to_owned(),
                    }
                }),
                root_path: config.str("root_path").to_owned(),
                cache: cache::cache_options(config)?.map(std::sync::Arc::new),
                cache_store_size: cache::store_size(config),
                cache_backend: cache::backend(config)?,
                cache_backend_timeout: seconds(config.float("cache_backend_timeout")),
                balance: balance.map(std::sync::Arc::new),
                routes: std::sync::Arc::new(Vec::new()),
                pool_member: false,
            },
            app: AppOptions {
                app_spec,
                preload_app: config.bool("preload_app") && worker_class != WorkerClass::Balancer,
                chdir: config.str("chdir").to_owned(),
                pythonpath: config.list("pythonpath").to_vec(),
                raw_env: raw_env(config)?,
            },
            log: LogOptions {
                access_log_json: config.bool("access_log_json"),
                python_logging: false,
                access_log_format: config.str("access_log_format").to_owned(),
                access_log: config
                    .opt_str("accesslog")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                error_log: config.opt_str("errorlog").unwrap_or("-").to_owned(),
                log_level,
            },
            pools: Vec::new(),
        })
    }
}

/// Where and how to send the workers' statsd metrics (`--statsd-host`, `--statsd-prefix`,
/// `--dogstatsd-tags`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsdTarget {
    /// `host:port` or `unix://path`.
    pub address: String,
    /// Prefix with its trailing dot (`app.`), or empty.
    pub prefix: String,
    /// Dogstatsd tags (`k:v,k:v`), or empty.
    pub tags: String,
}
