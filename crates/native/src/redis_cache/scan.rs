//! Removing entries by name pattern on every Redis master (a prefix PURGE, `cache.clear()`):
//! the masters are the one server, or those a cluster lists in `CLUSTER NODES`; each is
//! scanned over its own short-lived connection (`SCAN … MATCH`) and what matches is deleted
//! with `GETDEL`, so the caller learns what it removed.

use ferrocorn_cache::RedisTarget;
use redis::{Client, RedisResult};

use super::conn::{Remote, RemoteError};

/// Names asked for per `SCAN` step.
const SCAN_COUNT: usize = 1000;

/// The masters' addresses in a `CLUSTER NODES` reply (lines `id host:port@cport[,name] flags
/// master …`); failed masters and those without an address are left out.
pub fn masters_in(cluster_nodes: &str) -> Vec<(String, u16)> {
    let mut masters = Vec::new();
    for line in cluster_nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else { continue };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| matches!(*f, "fail" | "noaddr")) {
            continue;
        }
        let addr = addr.split(['@', ',']).next().unwrap_or("");
        let Some((host, port)) = addr.rsplit_once(':') else { continue };
        let (Ok(port), false) = (port.parse::<u16>(), host.is_empty()) else { continue };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        masters.push((host.to_owned(), port));
    }
    masters
}

fn single_or_none(target: &RedisTarget) -> Option<Vec<(String, u16)>> {
    (!target.cluster).then(|| vec![target.nodes[0].clone()])
}

/// The masters to scan (async).
async fn masters(remote: &Remote) -> Result<Vec<(String, u16)>, RemoteError> {
    if let Some(single) = single_or_none(remote.target) {
        return Ok(single);
    }
    let nodes: String = remote.query("CLUSTER NODES", redis::cmd("CLUSTER").arg("NODES")).await?;
    Ok(masters_in(&nodes))
}

/// One `SCAN cursor MATCH pattern COUNT n` (the async and the blocking deletes both walk with it).
fn scan_step(cursor: u64, pattern: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(SCAN_COUNT);
    cmd
}

/// Delete, on every master, the names matching `pattern` that `keep` accepts; the values
/// deleted.
pub async fn delete_matching(
    remote: &Remote,
    pattern: &[u8],
    keep: impl Fn(&[u8]) -> bool,
) -> Result<Vec<Vec<u8>>, RemoteError> {
    let mut removed = Vec::new();
    for node in masters(remote).await? {
        let result = tokio::time::timeout(remote.timeout * 40, async {
            let client = Client::open(remote.target.node_url(&node))?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(remote.timeout))
                .set_response_timeout(Some(remote.timeout));
            let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            let mut cursor: u64 = 0;
            loop {
                let (next, names): (u64, Vec<Vec<u8>>) =
                    scan_step(cursor, pattern).query_async(&mut conn).await?;
                let names: Vec<Vec<u8>> = names.into_iter().filter(|n| keep(n)).collect();
                if !names.is_empty() {
                    let mut pipe = redis::pipe();
                    for name in &names {
                        pipe.cmd("GETDEL").arg(name);
                    }
                    let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
                    removed.extend(values.into_iter().flatten());
                }
                if next == 0 {
                    return RedisResult::Ok(());
                }
                cursor = next;
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(remote.failed("a purge", &e)),
            Err(_) => return Err(RemoteError::Unavailable),
        }
    }
    Ok(removed)
}

/// Delete, on every master, the names matching `pattern` (blocking); how many there were.
pub fn delete_matching_blocking(remote: &Remote, pattern: &[u8]) -> Result<usize, RemoteError> {
    let masters = match single_or_none(remote.target) {
        Some(single) => single,
        None => {
            let nodes: String = remote
                .blocking("CLUSTER NODES", |c| redis::cmd("CLUSTER").arg("NODES").query(c))?;
            masters_in(&nodes)
        }
    };
    let mut removed = 0;
    for node in masters {
        let result = (|| {
            let client = Client::open(remote.target.node_url(&node))?;
            let mut conn = client.get_connection_with_timeout(remote.timeout)?;
            conn.set_read_timeout(Some(remote.timeout))?;
            conn.set_write_timeout(Some(remote.timeout))?;
            let mut cursor: u64 = 0;
            loop {
                let (next, names): (u64, Vec<Vec<u8>>) =
                    scan_step(cursor, pattern).query(&mut conn)?;
                if !names.is_empty() {
                    // one DEL per name: a cluster node refuses a DEL across hash slots
                    let mut pipe = redis::pipe();
                    for name in &names {
                        pipe.cmd("DEL").arg(name);
                    }
                    let deleted: Vec<usize> = pipe.query(&mut conn)?;
                    removed += deleted.iter().sum::<usize>();
                }
                if next == 0 {
                    return RedisResult::Ok(());
                }
                cursor = next;
            }
        })();
        if let Err(e) = result {
            return Err(remote.failed("a clear", &e));
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_come_from_cluster_nodes() {
        let text = "\
07c37 127.0.0.1:30004@31004,host4 slave e7d1e 0 1 4 connected
67ed2 127.0.0.1:30002@31002 master - 0 1 2 connected 5461-10922
292f8 127.0.0.1:30003@31003 master,fail - 0 1 3 connected 10923-16383
e7d1e 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
aaaaa :0@0 master,noaddr - 0 0 0 disconnected
";
        assert_eq!(
            masters_in(text),
            vec![("127.0.0.1".to_owned(), 30002), ("127.0.0.1".to_owned(), 30001)]
        );
    }
}
