//! The keep-alive pool of one balancer worker: idle connections per upstream, at most
//! `--keepalive` in all (nginx's `keepalive N`: the least recently used is closed to make
//! room), each closed once idle for `--upstream-keepalive-timeout`. A connection is taken
//! most-recent-first, so a quiet period lets the oldest ones time out; one the upstream closed
//! or wrote to while idle is dropped on the way out, never handed to a request.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferrocorn_balance::PeerId;

use crate::connection::UpstreamConn;

/// Idle connections to the upstreams of one group.
#[derive(Debug)]
pub struct Pool {
    idle: Vec<VecDeque<UpstreamConn>>,
    total: usize,
    capacity: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool for `peers` upstreams holding at most `capacity` idle connections in all.
    pub fn new(peers: usize, capacity: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: (0..peers).map(|_| VecDeque::new()).collect(),
            total: 0,
            capacity,
            idle_timeout,
        }
    }

    /// The most recently used idle connection to `peer` that can still carry a request.
    pub fn take(&mut self, peer: PeerId, now: Instant) -> Option<UpstreamConn> {
        let idle = self.idle.get_mut(peer.0)?;
        while let Some(conn) = idle.pop_back() {
            self.total -= 1;
            if now.saturating_duration_since(conn.idle_since) < self.idle_timeout
                && conn.still_usable()
            {
                return Some(conn);
            }
        }
        None
    }

    /// Keep `conn` for the next request to `peer`, closing the least recently used idle
    /// connection when the pool is full.
    pub fn put(&mut self, peer: PeerId, mut conn: UpstreamConn, now: Instant) {
        if self.capacity == 0 || peer.0 >= self.idle.len() {
            return;
        }
        self.expire(now);
        if self.total >= self.capacity {
            let oldest = self
                .idle
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.front().map(|c| (c.idle_since, i)))
                .min();
            if let Some((_, i)) = oldest {
                self.idle[i].pop_front();
                self.total -= 1;
            }
        }
        conn.idle_since = now;
        self.idle[peer.0].push_back(conn);
        self.total += 1;
    }

    /// Close the connections idle for longer than the timeout.
    pub fn expire(&mut self, now: Instant) {
        for queue in &mut self.idle {
            while queue
                .front()
                .is_some_and(|c| now.saturating_duration_since(c.idle_since) >= self.idle_timeout)
            {
                queue.pop_front();
                self.total -= 1;
            }
        }
    }

    /// Close, besides the expired ones, the idle connections their upstream closed (or wrote
    /// to) meanwhile, as nginx does when an idle upstream connection becomes readable: a dead
    /// upstream's sockets are not held until they time out.
    pub fn sweep(&mut self, now: Instant) {
        self.expire(now);
        for queue in &mut self.idle {
            queue.retain(|c| c.still_usable());
        }
        self.total = self.idle.iter().map(VecDeque::len).sum();
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.total
    }
}
