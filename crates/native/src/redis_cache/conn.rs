//! This process's connections to the Redis backend, made on first use after the fork (never in
//! the master's runtime-less loop): one multiplexed async connection (or cluster connection)
//! for the worker's tokio runtime, and a small pool of blocking ones for the app cache, which
//! Python calls from app threads. Every connect and reply is bounded by the configured timeout
//! (`--cache-backend-timeout`, 250 ms by default); a failure to reach
//! Redis drops the connection, pauses Redis for this process ([`Health`]), counts an error and
//! logs at most one warning per interval; the next operation after the pause reconnects.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrocorn_cache::RedisTarget;
use redis::aio::{ConnectionLike as AsyncConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionLike, FromRedisValue, Pipeline, RedisError,
    RedisFuture, RedisResult, Value,
};

use super::ERRORS;
use super::health::Health;
use crate::logging::{info, warning};

/// Blocking connections kept for reuse.
const POOL: usize = 8;

/// Why an operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    /// Redis could not be reached (or is paused after a failure).
    Unavailable,
    /// Redis refused the command (the message).
    Refused(String),
}

/// An async connection: one server's or a cluster's.
#[derive(Clone)]
pub enum AsyncConn {
    /// One server.
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl AsyncConnectionLike for AsyncConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AsyncConn::Single(c) => c.req_packed_command(cmd),
            AsyncConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AsyncConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            AsyncConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AsyncConn::Single(c) => c.get_db(),
            AsyncConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A blocking connection: one server's or a cluster's.
pub enum SyncConn {
    /// One server.
    Single(redis::Connection),
    /// A Redis Cluster.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl SyncConn {
    /// The connection as redis-rs's commands take it.
    pub fn get(&mut self) -> &mut dyn ConnectionLike {
        match self {
            SyncConn::Single(c) => c,
            SyncConn::Cluster(c) => c.as_mut(),
        }
    }
}

/// The backend as this process reaches it.
pub struct Remote {
    /// Where it is.
    pub target: &'static RedisTarget,
    /// The longest a connect or a reply may take.
    pub timeout: Duration,
    health: Health,
    /// The pid whose connections these are (a pool inherited over a fork is not used).
    pid: u32,
    async_conn: Mutex<Option<AsyncConn>>,
    pool: Mutex<Vec<SyncConn>>,
}

/// Whether `error` means Redis could not be reached (rather than refusing a command).
fn is_unreachable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
        || error.is_cluster_error()
}

fn now_ms() -> u64 {
    ferrocorn_shm::monotonic_ms()
}

impl Remote {
    /// The backend at `target`, not connected yet, with operations bounded by `timeout`.
    pub fn new(target: &'static RedisTarget, timeout: Duration) -> Remote {
        Remote {
            target,
            timeout,
            health: Health::new(),
            pid: std::process::id(),
            async_conn: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
        }
    }

    /// Whether these connections belong to this process.
    pub fn owned_here(&self) -> bool {
        self.pid == std::process::id()
    }

    /// An operation reached Redis.
    fn reached(&self) {
        if self.health.reached() {
            info!("Cache backend {} is reachable again", self.target.display());
        }
    }

    /// Count `error`; when it means Redis is unreachable, pause it and drop the connections.
    pub fn failed(&self, what: &str, error: &RedisError) -> RemoteError {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        if is_unreachable(error) {
            self.async_conn.lock().unwrap_or_else(|p| p.into_inner()).take();
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
            if self.health.unreachable(now) {
                warning!(
                    "Cache backend {} unreachable ({what}: {error}); requests go to the app \
                     and nothing is cached until it is back",
                    self.target.display()
                );
            }
            RemoteError::Unavailable
        } else {
            if self.health.warning_due(now) {
                warning!("Cache backend {} refused {what}: {error}", self.target.display());
            }
            RemoteError::Refused(error.to_string())
        }
    }

    fn timed_out(&self, what: &str) -> RemoteError {
        let error = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} ms", self.timeout.as_millis()),
        ));
        self.failed(what, &error)
    }

    fn node_urls(&self) -> Vec<String> {
        self.target.nodes.iter().map(|n| self.target.node_url(n)).collect()
    }

    async fn connect_async(&self) -> RedisResult<AsyncConn> {
        if self.target.cluster {
            let client = ClusterClientBuilder::new(self.node_urls())
                .connection_timeout(self.timeout)
                .response_timeout(self.timeout)
                .retries(2)
                .build()?;
            Ok(AsyncConn::Cluster(client.get_async_connection().await?))
        } else {
            let client = Client::open(self.target.node_url(&self.target.nodes[0]))?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout));
            Ok(AsyncConn::Single(
                client.get_multiplexed_async_connection_with_config(&config).await?,
            ))
        }
    }

    /// The async connection, made now if there is none (on the worker's runtime).
    pub async fn async_conn(&self, what: &str) -> Result<AsyncConn, RemoteError> {
        if !self.health.allows(now_ms()) {
            return Err(RemoteError::Unavailable);
        }
        if let Some(conn) = self.async_conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(conn);
        }
        let conn = match tokio::time::timeout(self.timeout * 2, self.connect_async()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(self.failed(what, &e)),
            Err(_) => return Err(self.timed_out(what)),
        };
        let mut slot = self.async_conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(slot.get_or_insert(conn).clone())
    }

    /// Run `cmd` on the async connection.
    pub async fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T, RemoteError> {
        let mut conn = self.async_conn(what).await?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => {
                self.reached();
                Ok(value)
            }
            Ok(Err(e)) => Err(self.failed(what, &e)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// Run `pipe` on the async connection.
    pub async fn query_pipe<T: FromRedisValue>(
        &self,
        what: &str,
        pipe: &Pipeline,
    ) -> Result<T, RemoteError> {
        let mut conn = self.async_conn(what).await?;
        match tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => {
                self.reached();
                Ok(value)
            }
            Ok(Err(e)) => Err(self.failed(what, &e)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    fn connect_blocking(&self) -> RedisResult<SyncConn> {
        if self.target.cluster {
            let client = ClusterClientBuilder::new(self.node_urls()).retries(2).build()?;
            let config = ClusterConfig::new()
                .set_connection_timeout(self.timeout)
                .set_response_timeout(self.timeout);
            Ok(SyncConn::Cluster(Box::new(client.get_connection_with_config(config)?)))
        } else {
            let client = Client::open(self.target.node_url(&self.target.nodes[0]))?;
            let conn = client.get_connection_with_timeout(self.timeout)?;
            conn.set_read_timeout(Some(self.timeout))?;
            conn.set_write_timeout(Some(self.timeout))?;
            Ok(SyncConn::Single(conn))
        }
    }

    /// Run `op` on a blocking connection from the pool (made now if none is idle). Call it
    /// with the GIL released.
    pub fn blocking<T>(
        &self,
        what: &str,
        op: impl FnOnce(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T, RemoteError> {
        if !self.health.allows(now_ms()) {
            return Err(RemoteError::Unavailable);
        }
        let idle = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect_blocking().map_err(|e| self.failed(what, &e))?,
        };
        match op(conn.get()) {
            Ok(value) => {
                self.reached();
                let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < POOL {
                    pool.push(conn);
                }
                Ok(value)
            }
            Err(e) => {
                let error = self.failed(what, &e);
                if error != RemoteError::Unavailable {
                    let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
                    if pool.len() < POOL {
                        pool.push(conn);
                    }
                }
                Err(error)
            }
        }
    }
}
