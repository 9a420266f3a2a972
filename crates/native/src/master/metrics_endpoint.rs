//! The Prometheus endpoint, served by the master's own loop (no thread, no runtime): a
//! non-blocking TCP listener polled with the signal pipe; each scrape is answered with short
//! socket timeouts so a stuck client cannot hold the master for long.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use ferrocorn_metrics::{Format, Snapshot};

/// The listening endpoint.
pub struct MetricsEndpoint {
    listener: TcpListener,
}

impl MetricsEndpoint {
    /// Bind `address` (`HOST:PORT`).
    pub fn bind(address: &str) -> Result<MetricsEndpoint, String> {
        let addr = address
            .to_socket_addrs()
            .map_err(|e| format!("invalid value for `metrics_bind` (--metrics-bind) {address:?}: {e}; use HOST:PORT"))?
            .next()
            .ok_or_else(|| format!("`metrics_bind` {address:?} resolves to no address"))?;
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("cannot bind `metrics_bind` (--metrics-bind) {addr}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(MetricsEndpoint { listener })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> String {
        self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }

    /// Answer every pending scrape; `snapshot` is built once per request.
    pub fn serve_pending(&self, snapshot: &mut dyn FnMut() -> Snapshot) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = answer(stream, snapshot) {
                crate::logging::debug!("metrics request failed: {e}");
            }
        }
    }
}

fn answer(mut stream: TcpStream, snapshot: &mut dyn FnMut() -> Snapshot) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.trim().to_owned());
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = if method != "GET" && method != "HEAD" {
        ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET /metrics\n".to_owned())
    } else if path == "/metrics" {
        let format = Format::from_accept(accept.as_deref());
        ("200 OK", format.content_type(), ferrocorn_metrics::encode(&snapshot(), format))
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "metrics are at /metrics\n".to_owned())
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nServer: ferrocorn\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response)
}
