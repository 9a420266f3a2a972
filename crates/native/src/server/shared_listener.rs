//! A listening socket shared with the sibling workers, as one worker watches it: how the
//! worker learns that a connection is waiting, and taking one (with the connection's first
//! read). It is watched for readiness, not accepted on blindly: the worker decides whether to
//! take a waiting connection (`accept.rs`). (A sync worker that passed the check, then ran a
//! long request while parked in `accept`, used to take the connection that arrived meanwhile,
//! and its requests waited behind the long ones.)
//!
//! Three ways to watch it, best first (`exclusive_wake.rs` tells why):
//! - in the runtime's epoll with exclusive wake-ups (sync, gthread, gevent): an arrival wakes
//!   one worker that is waiting for a connection;
//! - in the asyncio loop's epoll with exclusive wake-ups (ASGI, whose runtime's epoll is
//!   nested in the loop's): the loop reports it as its own descriptor's readiness
//!   ([`LoopListenerWake`]), and the worker looks at the listener then;
//! - in the runtime's epoll, shared (where neither can be set up): every watching worker is
//!   woken, and the policy picks one.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};

use super::exclusive_wake::{ExclusiveWake, LoopListenerWake};
use ferrocorn_net::listen::Listener;

/// How a worker watches its listeners.
pub(super) enum Watching {
    /// In the runtime's epoll, with exclusive wake-ups where they can be set up.
    Runtime,
    /// In the asyncio loop's epoll, through this wake (else as [`Watching::Runtime`] without
    /// exclusive wake-ups: they cannot reach a thread that waits in another epoll).
    AsyncioLoop(Arc<LoopListenerWake>),
}

/// One listener as this worker watches it.
pub(super) struct SharedListener {
    /// Declared before `watch`: dropped first, while the socket and the runtime's
    /// registration still exist.
    exclusive: Option<ExclusiveWake>,
    watch: Watch,
    unix: bool,
}

enum Watch {
    /// Registered with the runtime.
    Runtime(AsyncFd<Socket>),
    /// Registered in the asyncio loop's epoll by `exclusive` only (or not yet: see
    /// [`SharedListener::new`]).
    AsyncioLoop {
        socket: Socket,
        wake: Arc<LoopListenerWake>,
        /// The loop reported a connection and no accept has found the queue empty since.
        maybe_ready: bool,
    },
    /// Moving from the loop's epoll to the runtime's (for a moment, never awaited).
    Moving,
}

/// A connection may be waiting: what [`SharedListener::readiness`] hands to the accept.
pub(super) enum Readiness<'a> {
    Runtime(AsyncFdReadyGuard<'a, Socket>, bool),
    AsyncioLoop(&'a Socket, &'a mut bool, bool),
}

impl SharedListener {
    /// Watch `listener` (the worker's own duplicate of the shared socket).
    pub(super) fn new(listener: Listener, watching: &Watching) -> std::io::Result<Self> {
        let unix = matches!(listener.addr, ferrocorn_net::listen::BoundAddr::Unix(_));
        let socket = listener.socket;
        socket.set_nonblocking(true)?;
        if let Watching::AsyncioLoop(wake) = watching {
            // uvloop adds a descriptor to its epoll only at its next poll, so the loop's
            // registration of the wake's descriptor may not exist yet: then the listener joins
            // the loop's epoll at the loop's first report (the descriptor is made readable
            // once for that), or is watched by the runtime if it still cannot.
            let exclusive = ExclusiveWake::join_loop(socket.as_raw_fd(), wake);
            let watch = Watch::AsyncioLoop { socket, wake: wake.clone(), maybe_ready: true };
            return Ok(SharedListener { exclusive, watch, unix });
        }
        let (exclusive, watch) = Self::watch_from_runtime(socket)?;
        Ok(SharedListener { exclusive, watch, unix })
    }

    /// Register `socket` with the runtime, with exclusive wake-ups if they can be set up.
    fn watch_from_runtime(socket: Socket) -> std::io::Result<(Option<ExclusiveWake>, Watch)> {
        // SAFETY: `socket` is an open descriptor (the worker's duplicate of the listener) that
        // the AsyncFd owns from here on; `Socket::as_raw_fd` always returns that same descriptor.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
        Ok((ExclusiveWake::take_over(socket.as_raw_fd()), Watch::Runtime(socket)))
    }

    /// Whether an arrival wakes one waiting worker (which should then take the connection)
    /// rather than every worker watching.
    pub(super) fn exclusive(&self) -> bool {
        self.exclusive.is_some() || matches!(self.watch, Watch::AsyncioLoop { .. })
    }

    /// Join or leave the listener's wait queue (exclusive wake-ups only; otherwise every
    /// watching worker is woken and decides then).
    pub(super) fn set_waiting(&mut self, waiting: bool) {
        if let Some(exclusive) = &mut self.exclusive {
            exclusive.set_waiting(waiting);
        }
    }

    /// Wait until a connection may be waiting.
    pub(super) async fn readiness(&mut self) -> std::io::Result<Readiness<'_>> {
        let mut fall_back = false;
        if let Watch::AsyncioLoop { socket, wake, maybe_ready } = &mut self.watch {
            if self.exclusive.is_none() {
                // Not in the loop's epoll yet: join it if the loop has registered the wake's
                // descriptor by now. Once the loop has reported that descriptor (readable from
                // the start), it has registered it: if its epoll still cannot be found, the
                // runtime watches the listener instead.
                self.exclusive = ExclusiveWake::join_loop(socket.as_raw_fd(), wake);
                match &mut self.exclusive {
                    Some(exclusive) => exclusive.set_waiting(true),
                    None => fall_back = wake.loop_has_reported(),
                }
            }
            if !fall_back && !*maybe_ready {
                // No report can come in between: the loop reports on the thread that runs
                // this task, between drives of the runtime.
                wake.reported().await;
                *maybe_ready = true;
            }
        }
        if fall_back {
            crate::logging::debug!("the asyncio loop's epoll was not found");
            self.fall_back_to_runtime()?;
        }
        let unix = self.unix;
        match &mut self.watch {
            Watch::Runtime(socket) => Ok(Readiness::Runtime(socket.readable().await?, unix)),
            Watch::AsyncioLoop { socket, maybe_ready, .. } => {
                Ok(Readiness::AsyncioLoop(socket, maybe_ready, unix))
            }
            Watch::Moving => Err(std::io::Error::other("the listener could not be watched")),
        }
    }

    /// The loop's epoll cannot take the listener: the runtime watches it, every watching
    /// worker woken by an arrival.
    fn fall_back_to_runtime(&mut self) -> std::io::Result<()> {
        if let Watch::AsyncioLoop { socket, .. } = std::mem::replace(&mut self.watch, Watch::Moving)
        {
            // SAFETY: as in `watch_from_runtime`: the AsyncFd owns the open descriptor.
            let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
            self.watch = Watch::Runtime(socket);
        }
        Ok(())
    }
}

impl Readiness<'_> {
    /// Take a waiting connection, if there still is one (`Ok(None)`: a sibling was quicker).
    pub(super) fn try_accept(self) -> std::io::Result<Option<Accepted>> {
        // Non-blocking from the start: no fcntl calls per connection.
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let (accepted, unix) = match self {
            Readiness::Runtime(mut ready, unix) => {
                match ready.try_io(|fd| fd.get_ref().accept4(flags)) {
                    Ok(accepted) => (accepted?, unix),
                    Err(_would_block) => return Ok(None),
                }
            }
            Readiness::AsyncioLoop(socket, maybe_ready, unix) => match socket.accept4(flags) {
                Ok(accepted) => (accepted, unix),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    *maybe_ready = false;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            },
        };
        let (socket, addr) = accepted;
        let received = read_waiting(&socket);
        let stream = if unix {
            let stream = std::os::unix::net::UnixStream::from(socket);
            AcceptedStream::Unix(tokio::net::UnixStream::from_std(stream)?)
        } else {
            let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(socket))?;
            AcceptedStream::Tcp(stream, addr.as_socket())
        };
        Ok(Some(Accepted { stream, received }))
    }
}

/// What the client sent with its connection so far (usually its whole first request), read
/// without waiting: the connection's first read, done here so the worker knows whether a
/// request came before it decides on the next connection. Empty when nothing came yet, or when
/// the socket failed (its next read says how).
fn read_waiting(socket: &Socket) -> Vec<u8> {
    let mut received = Vec::with_capacity(super::conn::READ_CHUNK);
    if let Ok(n) = socket.recv(received.spare_capacity_mut()) {
        // SAFETY: `recv` initialized the first `n` bytes of the spare capacity it was given.
        unsafe { received.set_len(n) };
    }
    received
}

/// A connection just accepted, with what its client had sent by then.
pub(super) struct Accepted {
    pub(super) stream: AcceptedStream,
    pub(super) received: Vec<u8>,
}

/// The accepted socket, registered with the runtime.
pub(super) enum AcceptedStream {
    /// A TCP connection and the peer's address.
    Tcp(tokio::net::TcpStream, Option<std::net::SocketAddr>),
    Unix(tokio::net::UnixStream),
}
