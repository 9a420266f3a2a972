//! The socket operations the connection driver needs beyond `AsyncRead`/`AsyncWrite`, for TCP
//! and unix streams alike: the raw descriptor (for the deferred-body reader), `sendfile`, and
//! the last write before a close, which lets the kernel send the FIN with the response.

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

/// A connected client stream.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + AsRawFd {
    /// Wait until the socket is writable.
    fn wait_writable(&self) -> impl std::future::Future<Output = std::io::Result<()>>;
    /// Run a non-blocking write-side operation, clearing readiness on `WouldBlock`.
    fn try_write_io<R>(&self, f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R>;
    /// `send(2)` flags for a write that the connection's close follows at once: TCP's
    /// `MSG_MORE` holds a partly filled last segment until the close, which sends it with the
    /// FIN (one packet fewer each way, and a client that reads the response and its end in one
    /// wake-up).
    const LAST_WRITE_FLAGS: libc::c_int;
}

impl ClientStream for TcpStream {
    const LAST_WRITE_FLAGS: libc::c_int = libc::MSG_MORE;
    async fn wait_writable(&self) -> std::io::Result<()> {
        self.writable().await
    }
    fn try_write_io<R>(&self, f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }
}

impl ClientStream for UnixStream {
    const LAST_WRITE_FLAGS: libc::c_int = 0;
    async fn wait_writable(&self) -> std::io::Result<()> {
        self.writable().await
    }
    fn try_write_io<R>(&self, f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }
}

/// Run the non-blocking write-side operation `op` until it succeeds, waiting for the socket to
/// become writable whenever it would block.
async fn when_writable<S: ClientStream, R>(
    stream: &S,
    mut op: impl FnMut() -> std::io::Result<R>,
) -> std::io::Result<R> {
    loop {
        match stream.try_write_io(&mut op) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.wait_writable().await?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// Write all of `buf` as the connection's last bytes: the caller closes (or half-closes) the
/// socket right after, which flushes what [`ClientStream::LAST_WRITE_FLAGS`] held back.
pub async fn write_last<S: ClientStream>(stream: &S, mut buf: &[u8]) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    let flags = S::LAST_WRITE_FLAGS | libc::MSG_NOSIGNAL;
    while !buf.is_empty() {
        let n = when_writable(stream, || {
            // SAFETY: `fd` is the socket `stream` owns, open for the call; `buf` is a live
            // slice of `buf.len()` readable bytes.
            let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
            if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
        })
        .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Send `length` bytes of `file_fd` starting at `offset` with `sendfile(2)`. Returns the bytes
/// sent (fewer only when the file turned out shorter).
pub async fn send_file<S: ClientStream>(
    stream: &S,
    file_fd: RawFd,
    offset: u64,
    length: u64,
) -> std::io::Result<u64> {
    let socket_fd = stream.as_raw_fd();
    let mut off = offset as libc::off_t;
    let mut sent = 0u64;
    while sent < length {
        let want = (length - sent).min(1 << 30) as usize;
        let n = when_writable(stream, || {
            // SAFETY: both descriptors are open for the duration of the call (the socket is owned
            // by `stream`, the file by the app's FileWrapper which the caller keeps alive), and
            // `off` is a valid in/out offset.
            let n = unsafe { libc::sendfile(socket_fd, file_fd, &mut off, want) };
            if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as u64) }
        })
        .await?;
        if n == 0 {
            break;
        }
        sent += n;
    }
    Ok(sent)
}
