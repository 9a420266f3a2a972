//! A connection to one upstream: its socket (TCP or Unix), the bytes read from it and not yet
//! used, and how it is opened with a deadline. Host names are resolved at each connect, so an
//! upstream that moves to another address is followed without a restart.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ferrocorn_balance::UpstreamAddr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// The connect failed (refused, unreachable, no address for the name).
    Failed(io::Error),
    /// It did not complete within the connect timeout.
    TimedOut,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Failed(e) => write!(f, "connect failed: {e}"),
            ConnectError::TimedOut => f.write_str("connect timed out"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// The socket of an upstream connection.
#[derive(Debug)]
pub enum UpstreamSocket {
    /// A TCP connection (`TCP_NODELAY` set).
    Tcp(TcpStream),
    /// A Unix-socket connection.
    Unix(UnixStream),
}

/// An open connection to an upstream.
#[derive(Debug)]
pub struct UpstreamConn {
    /// The socket.
    pub socket: UpstreamSocket,
    /// Bytes read from the upstream that belong to the next response (normally none).
    pub buffered: Vec<u8>,
    /// Responses read on it so far.
    pub responses: u64,
    /// When it went back to the pool, for the idle timeout.
    pub idle_since: Instant,
}

impl UpstreamConn {
    /// Open a connection to `addr` within `limit`.
    pub async fn open(addr: &UpstreamAddr, limit: Duration) -> Result<UpstreamConn, ConnectError> {
        let connecting = async {
            match addr {
                UpstreamAddr::Tcp { host, port } => {
                    let stream = TcpStream::connect((host.as_str(), *port)).await?;
                    stream.set_nodelay(true)?;
                    Ok(UpstreamSocket::Tcp(stream))
                }
                UpstreamAddr::Unix(path) => {
                    UnixStream::connect(path).await.map(UpstreamSocket::Unix)
                }
            }
        };
        match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(socket)) => Ok(UpstreamConn {
                socket,
                buffered: Vec::new(),
                responses: 0,
                idle_since: Instant::now(),
            }),
            Ok(Err(e)) => Err(ConnectError::Failed(e)),
            Err(_) => Err(ConnectError::TimedOut),
        }
    }

    /// Whether an idle connection can still carry a request: the upstream has neither closed
    /// it nor sent anything unasked (both make it unusable). Never waits.
    pub fn still_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        let peeked = match &self.socket {
            UpstreamSocket::Tcp(s) => s.try_read(&mut probe),
            UpstreamSocket::Unix(s) => s.try_read(&mut probe),
        };
        matches!(peeked, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for UpstreamConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            UpstreamSocket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamSocket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().socket {
            UpstreamSocket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamSocket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            UpstreamSocket::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamSocket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            UpstreamSocket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamSocket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
