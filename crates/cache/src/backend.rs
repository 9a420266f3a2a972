//! `--cache-backend`: where cached entries live, parsed once (by the settings registry to refuse
//! a bad value at start, and by the worker to connect). `local` is the instance's shared-memory
//! store; a Redis URL names one server (`redis://`, `rediss://` with TLS) or the seed nodes of a
//! Redis Cluster (`redis+cluster://host:port,host:port,…`, `rediss+cluster://…`). Pure: no
//! name is resolved and nothing connects here.

use std::fmt;

/// Where cached entries live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The instance's shared-memory store.
    Local,
    /// A Redis server or cluster.
    Redis(RedisTarget),
}

/// A Redis deployment, as `--cache-backend` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// TLS (`rediss`).
    pub tls: bool,
    /// A Redis Cluster: `nodes` are seeds, the rest is discovered.
    pub cluster: bool,
    /// `(host, port)` of the server, or of each seed node.
    pub nodes: Vec<(String, u16)>,
    /// The database number (0 for a cluster, which has only that one).
    pub db: i64,
    /// ACL user name, when given.
    pub username: Option<String>,
    /// Password, when given.
    pub password: Option<String>,
}

/// Why a `--cache-backend` value is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError(pub String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

/// The forms `--cache-backend` takes, for error messages.
pub const BACKEND_FORMS: &str = "give local, redis://[user:password@]host[:port][/db], \
     rediss://… (TLS), or redis+cluster://host:port,host:port,… (a Redis Cluster's seed nodes)";

const DEFAULT_PORT: u16 = 6379;

impl Backend {
    /// Parse a `--cache-backend` value.
    pub fn parse(text: &str) -> Result<Backend, BackendError> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("local") {
            return Ok(Backend::Local);
        }
        let bad = |why: &str| BackendError(format!("'{text}' is not a cache backend: {why}"));
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (tls, cluster) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            _ => return Err(bad("unknown scheme")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, pass)) => (non_empty(user), non_empty(pass)),
                None => (non_empty(info), None),
            },
        };
        let mut nodes = Vec::new();
        for host in hosts.split(',') {
            nodes.push(parse_host_port(host).map_err(|why| bad(&why))?);
        }
        if nodes.len() > 1 && !cluster {
            return Err(bad("several hosts are a cluster: use redis+cluster://"));
        }
        let db = parse_db(path).map_err(|why| bad(&why))?;
        if cluster && db != 0 {
            return Err(bad("a Redis Cluster has only database 0"));
        }
        Ok(Backend::Redis(RedisTarget { tls, cluster, nodes, db, username, password }))
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("an unclosed [ in a host")?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    if host.contains(|c: char| c.is_whitespace() || "/@[]".contains(c)) {
        return Err(format!("'{host}' is not a host name"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("'{p}' is not a port"))?,
    };
    Ok((host.to_owned(), port))
}

/// The path's database number: empty or `/` is 0.
fn parse_db(path: &str) -> Result<i64, String> {
    if path.starts_with(['?', '#']) {
        return Err("query parameters are not supported".to_owned());
    }
    let db = path.trim_start_matches('/');
    if db.is_empty() {
        return Ok(0);
    }
    db.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("'{db}' is not a database number"))
}

impl RedisTarget {
    /// A `redis://` (or `rediss://`) URL for one node, with the credentials and database, as
    /// Redis clients take it.
    pub fn node_url(&self, (host, port): &(String, u16)) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match (&self.username, &self.password) {
            (None, None) => String::new(),
            (user, pass) => format!(
                "{}{}@",
                user.as_deref().unwrap_or(""),
                pass.as_deref().map(|p| format!(":{p}")).unwrap_or_default()
            ),
        };
        let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        format!("{scheme}://{auth}{host}:{port}/{}", self.db)
    }

    /// The target as logs name it (no password).
    pub fn display(&self) -> String {
        let scheme = match (self.tls, self.cluster) {
            (false, false) => "redis",
            (true, false) => "rediss",
            (false, true) => "redis+cluster",
            (true, true) => "rediss+cluster",
        };
        let hosts: Vec<String> = self.nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        let db = if self.cluster { String::new() } else { format!("/{}", self.db) };
        format!("{scheme}://{}{db}", hosts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(text: &str) -> RedisTarget {
        match Backend::parse(text) {
            Ok(Backend::Redis(t)) => t,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn local_is_the_default() {
        assert_eq!(Backend::parse(""), Ok(Backend::Local));
        assert_eq!(Backend::parse(" LOCAL "), Ok(Backend::Local));
    }

    #[test]
    fn a_single_server() {
        let t = redis("redis://127.0.0.1:6380/2");
        assert_eq!((t.tls, t.cluster, t.db), (false, false, 2));
        assert_eq!(t.nodes, vec![("127.0.0.1".to_owned(), 6380)]);
        assert_eq!(t.node_url(&t.nodes[0]), "redis://127.0.0.1:6380/2");
        let t = redis("rediss://user:secret@cache.example");
        assert!(t.tls);
        assert_eq!(t.nodes, vec![("cache.example".to_owned(), 6379)]);
        assert_eq!(t.node_url(&t.nodes[0]), "rediss://user:secret@cache.example:6379/0");
        assert_eq!(t.display(), "rediss://cache.example:6379/0");
        let t = redis("redis://:pw@[::1]:7000/");
        assert_eq!(t.nodes, vec![("::1".to_owned(), 7000)]);
        assert_eq!(t.node_url(&t.nodes[0]), "redis://:pw@[::1]:7000/0");
    }

    #[test]
    fn a_cluster() {
        let t = redis("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,h3");
        assert!(t.cluster && !t.tls);
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.nodes[2], ("h3".to_owned(), 6379));
        assert_eq!(t.display(), "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,h3:6379");
    }

    #[test]
    fn bad_values_say_why() {
        for bad in [
            "redis://:notaport",
            "redis://host:0",
            "redis://host:99999",
            "redis://",
            "memcached://host",
            "host:6379",
            "redis://a:1,b:2",
            "redis://host/x",
            "redis://host?db=1",
            "redis+cluster://a:1/3",
            "redis://[::1",
        ] {
            let err = Backend::parse(bad).expect_err(bad);
            assert!(err.0.contains("is not a cache backend"), "{bad}: {err}");
        }
    }
}
