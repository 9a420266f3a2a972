//! The client stream the connection driver reads and writes through, for TCP and unix streams
//! alike (TLS will be a third), and its one capability beyond `AsyncRead`/`AsyncWrite`: the
//! raw descriptor, for the fast paths that bypass the stream — `sendfile`, the last write
//! before a close (which lets the kernel send the FIN with the response), and, on the app's
//! side, PEP 3333's `write()` and a deferred `100-continue` body. A stream that transforms or
//! observes its bytes (TLS, a cache capturing a response) reports no descriptor, and each path
//! here falls back to writing through the stream.

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixStream};

/// A connected client stream.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin {
    /// The socket's descriptor when bytes written to it reach the client unchanged and
    /// unobserved, so the raw-descriptor fast paths are allowed; None for a stream that
    /// transforms or observes them.
    fn direct_fd(&self) -> Option<RawFd>;
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

/// `ClientStream` for a tokio socket type, with its last-write flags.
macro_rules! socket_client_stream {
    ($stream:ty, $last_write_flags:expr) => {
        impl ClientStream for $stream {
            const LAST_WRITE_FLAGS: libc::c_int = $last_write_flags;
            fn direct_fd(&self) -> Option<RawFd> {
                Some(self.as_raw_fd())
            }
            async fn wait_writable(&self) -> std::io::Result<()> {
                self.writable().await
            }
            fn try_write_io<R>(
                &self,
                f: impl FnOnce() -> std::io::Result<R>,
            ) -> std::io::Result<R> {
                self.try_io(Interest::WRITABLE, f)
            }
        }
    };
}

socket_client_stream!(TcpStream, libc::MSG_MORE);
socket_client_stream!(UnixStream, 0);

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
/// `direct`: the descriptor when the fast path is allowed; else an ordinary write.
pub async fn write_last<S: ClientStream>(
    stream: &mut S,
    direct: Option<RawFd>,
    mut buf: &[u8],
) -> std::io::Result<()> {
    let Some(fd) = direct else { return stream.write_all(buf).await };
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

/// Send `length` bytes of `file_fd` starting at `offset`: with `sendfile(2)` when `direct`
/// allows it, else read from the file and written through the stream. Returns the bytes sent
/// (fewer only when the file turned out shorter).
pub async fn send_file<S: ClientStream>(
    stream: &mut S,
    direct: Option<RawFd>,
    file_fd: RawFd,
    offset: u64,
    length: u64,
) -> std::io::Result<u64> {
    let Some(socket_fd) = direct else {
        return copy_file(stream, file_fd, offset, length).await;
    };
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

/// Bytes read from the file per write when `sendfile` is not allowed.
const COPY_CHUNK: usize = 64 * 1024;

/// `send_file` through the stream: `pread(2)` a piece, write it, until `length` bytes or the
/// file's end. (A regular file's read does not wait on the network; it runs on the loop.)
async fn copy_file<S: ClientStream>(
    stream: &mut S,
    file_fd: RawFd,
    offset: u64,
    length: u64,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; COPY_CHUNK.min(length as usize)];
    let mut sent = 0u64;
    while sent < length {
        let want = (length - sent).min(buf.len() as u64) as usize;
        let at = (offset + sent) as libc::off_t;
        // SAFETY: `buf` is a live, writable buffer of at least `want` bytes; `file_fd` is kept
        // open by the caller for the duration of the call.
        let n = unsafe { libc::pread(file_fd, buf.as_mut_ptr().cast(), want, at) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n as usize]).await?;
        sent += n as u64;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    //! Each fast path against its fallback over a real socket pair: the client reads the same
    //! bytes whether the descriptor is used or the stream is written through.
    use super::*;
    use std::io::{Read, Write};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// Run `send` on the server end of a socket pair; return what the client end received.
    fn received(send: impl AsyncFnOnce(&mut UnixStream)) -> Vec<u8> {
        let (server, mut client) = std::os::unix::net::UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        runtime().block_on(async move {
            let mut server = UnixStream::from_std(server).unwrap();
            send(&mut server).await;
        });
        reader.join().unwrap()
    }

    fn file_of(bytes: &[u8]) -> std::fs::File {
        let mut file = tempfile_in_tmp();
        file.write_all(bytes).unwrap();
        file
    }

    fn tempfile_in_tmp() -> std::fs::File {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ferrocorn-io-test-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn a_file_reads_the_same_with_sendfile_and_through_the_stream() {
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let file = file_of(&content);
        let fd = file.as_raw_fd();
        for direct in [true, false] {
            let got = received(async |s: &mut UnixStream| {
                let allowed = if direct { s.direct_fd() } else { None };
                let n = send_file(s, allowed, fd, 1000, 150_000).await.unwrap();
                assert_eq!(n, 150_000);
            });
            assert_eq!(got, &content[1000..151_000], "direct={direct}");
        }
    }

    #[test]
    fn a_file_shorter_than_promised_stops_at_its_end_on_both_paths() {
        let file = file_of(b"0123456789");
        let fd = file.as_raw_fd();
        for direct in [true, false] {
            let got = received(async |s: &mut UnixStream| {
                let allowed = if direct { s.direct_fd() } else { None };
                assert_eq!(send_file(s, allowed, fd, 4, 100).await.unwrap(), 6);
            });
            assert_eq!(got, b"456789", "direct={direct}");
        }
    }

    #[test]
    fn the_last_write_sends_everything_on_both_paths() {
        let body = vec![b'x'; 300_000];
        for direct in [true, false] {
            let got = received(async |s: &mut UnixStream| {
                let allowed = if direct { s.direct_fd() } else { None };
                write_last(s, allowed, &body).await.unwrap();
            });
            assert_eq!(got.len(), body.len(), "direct={direct}");
        }
    }
}
