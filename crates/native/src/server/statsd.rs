//! statsd output with Gunicorn's metric names: every worker sends, per request,
//! `<prefix>gunicorn.requests:1|c`, `<prefix>gunicorn.request.duration:<ms>|ms` and
//! `<prefix>gunicorn.request.status.<code>:1|c` (plus dogstatsd tags when configured) over UDP
//! or a unix datagram socket. Send errors are ignored: metrics never fail a request.

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;

use ferrocorn_shm::scoreboard::RequestRecord;

use crate::options::StatsdTarget;

enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// A connected statsd sender.
pub struct Statsd {
    socket: Socket,
    prefix: String,
    tags: String,
}

impl Statsd {
    /// Connect (UDP connect only fixes the peer); None when the address is unusable.
    pub fn connect(target: StatsdTarget) -> Option<Statsd> {
        let socket = if let Some(path) = target.address.strip_prefix("unix://") {
            let s = UnixDatagram::unbound().ok()?;
            s.connect(path).ok()?;
            s.set_nonblocking(true).ok()?;
            Socket::Unix(s)
        } else {
            let address = if target.address.contains(':') {
                target.address.clone()
            } else {
                format!("{}:8125", target.address)
            };
            let s = UdpSocket::bind(if address.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" })
                .ok()?;
            s.connect(&address).ok()?;
            s.set_nonblocking(true).ok()?;
            Socket::Udp(s)
        };
        Some(Statsd { socket, prefix: target.prefix, tags: target.tags })
    }

    fn send(&self, name: &str, value: &str, kind: &str) {
        let mut line = format!("{}{name}:{value}|{kind}", self.prefix);
        if !self.tags.is_empty() {
            line.push_str("|#");
            line.push_str(&self.tags);
        }
        let _ = match &self.socket {
            Socket::Udp(s) => s.send(line.as_bytes()),
            Socket::Unix(s) => s.send(line.as_bytes()),
        };
    }

    /// Emit the per-request metrics.
    pub fn request(&self, record: RequestRecord) {
        self.send("gunicorn.requests", "1", "c");
        self.send(
            "gunicorn.request.duration",
            &format!("{:.3}", record.micros as f64 / 1000.0),
            "ms",
        );
        self.send(&format!("gunicorn.request.status.{}", record.code), "1", "c");
    }

    /// Emit the worker-count gauge (from the master).
    pub fn workers(&self, count: usize) {
        self.send("gunicorn.workers", &count.to_string(), "g");
    }
}
