//! Listening sockets: parse Gunicorn's bind forms (`HOST:PORT`, `[v6]:PORT`, `HOST`, `:PORT`,
//! `tcp://…`, `unix:PATH`, `unix://PATH`, `fd://N`), create them with `SO_REUSEADDR`
//! (+ `SO_REUSEPORT` when asked), non-blocking, and describe them for logging and the environ.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A parsed `bind` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSpec {
    /// A TCP host and port (host still unresolved).
    Tcp(String, u16),
    /// A unix-domain socket path.
    Unix(PathBuf),
    /// An already-open listening descriptor.
    Fd(RawFd),
}

/// Why a bind entry could not be used.
#[derive(Debug)]
pub struct BindError(pub String);

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl BindSpec {
    /// Parse one bind string the way Gunicorn does (empty host → 0.0.0.0, no port → 8000).
    pub fn parse(text: &str) -> Result<BindSpec, BindError> {
        let bad =
            |why: &str| BindError(format!("invalid value for `bind` (-b/--bind): {text:?}: {why}"));
        if let Some(path) = text.strip_prefix("unix://").or_else(|| text.strip_prefix("unix:")) {
            if path.is_empty() {
                return Err(bad("missing socket path after unix:"));
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = text.strip_prefix("fd://") {
            return fd.parse::<RawFd>().map(BindSpec::Fd).map_err(|_| bad("fd:// needs a number"));
        }
        let text_no_scheme = text.strip_prefix("tcp://").unwrap_or(text);
        if let Some(rest) = text_no_scheme.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad("port must be 0..=65535"))?,
                None if after.is_empty() => 8000,
                None => return Err(bad("expected ':PORT' after ']'")),
            };
            return Ok(BindSpec::Tcp(host.to_owned(), port));
        }
        match text_no_scheme.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse::<u16>().map_err(|_| bad("port must be 0..=65535"))?;
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                Ok(BindSpec::Tcp(host.to_owned(), port))
            }
            None if text_no_scheme.is_empty() => Err(bad("empty address")),
            None => Ok(BindSpec::Tcp(text_no_scheme.to_owned(), 8000)),
        }
    }
}

/// What a listener is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    /// TCP address (the real port when 0 was asked for).
    Tcp(SocketAddr),
    /// Unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundAddr::Tcp(addr) => write!(f, "http://{addr}"),
            BoundAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// An open, listening, non-blocking socket.
#[derive(Debug)]
pub struct Listener {
    /// The socket itself.
    pub socket: Socket,
    /// What it is bound to.
    pub addr: BoundAddr,
    /// Whether ferrocorn created the path (and so removes it on exit).
    pub owns_path: bool,
}

impl Listener {
    /// Another handle on the same socket (for a thread that owns its own copy).
    pub fn try_clone(&self) -> std::io::Result<Listener> {
        Ok(Listener { socket: self.socket.try_clone()?, addr: self.addr.clone(), owns_path: false })
    }
}

/// Options applied to every listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// `listen()` backlog.
    pub backlog: i32,
    /// Set `SO_REUSEPORT`.
    pub reuse_port: bool,
}

fn tcp_listener(addr: SocketAddr, opts: ListenOptions) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Inherited by every accepted connection (Linux), so workers need no call per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn unix_listener(path: &std::path::Path, opts: ListenOptions) -> Result<Socket, BindError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        } else {
            return Err(BindError(format!(
                "cannot bind unix:{}: the path exists and is not a socket",
                path.display()
            )));
        }
    }
    let fail = |e: std::io::Error| BindError(format!("cannot bind unix:{}: {e}", path.display()));
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
    socket.bind(&SockAddr::unix(path).map_err(fail)?).map_err(fail)?;
    socket.listen(opts.backlog).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    Ok(socket)
}

fn adopt_fd(fd: RawFd) -> Result<Listener, BindError> {
    // SAFETY: fstat on an arbitrary integer is harmless; it fails with EBADF when `fd` is not open.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is a valid out-pointer for fstat.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(BindError(format!("fd://{fd} is not an open file descriptor")));
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this process to own
    // (systemd socket activation, `fd://` or a re-exec); nothing else in the process wraps it.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let local = socket.local_addr().map_err(|e| BindError(format!("fd://{fd}: {e}")))?;
    socket.set_nonblocking(true).map_err(|e| BindError(format!("fd://{fd}: {e}")))?;
    let addr = match local.as_socket() {
        Some(addr) => {
            // Accepted connections inherit it (as from the listeners bound here), so workers
            // need no call per connection.
            socket.set_tcp_nodelay(true).map_err(|e| BindError(format!("fd://{fd}: {e}")))?;
            BoundAddr::Tcp(addr)
        }
        None => BoundAddr::Unix(local.as_pathname().map(PathBuf::from).unwrap_or_default()),
    };
    Ok(Listener { socket, addr, owns_path: false })
}

/// Create the listener for one bind entry. TCP binds are retried like Gunicorn's (5 tries,
/// 1 s apart) when the address is in use; `in_use` is told of each retry (to log it).
pub fn bind(
    spec: &BindSpec,
    opts: ListenOptions,
    in_use: &mut dyn FnMut(SocketAddr),
) -> Result<Listener, BindError> {
    match spec {
        BindSpec::Fd(fd) => adopt_fd(*fd),
        BindSpec::Unix(path) => Ok(Listener {
            socket: unix_listener(path, opts)?,
            addr: BoundAddr::Unix(path.clone()),
            owns_path: true,
        }),
        BindSpec::Tcp(host, port) => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| BindError(format!("cannot resolve bind host {host:?}: {e}")))?
                .next()
                .ok_or_else(|| BindError(format!("bind host {host:?} has no address")))?;
            let mut attempt = 0;
            loop {
                match tcp_listener(addr, opts) {
                    Ok(socket) => {
                        let real =
                            socket.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(addr);
                        return Ok(Listener {
                            socket,
                            addr: BoundAddr::Tcp(real),
                            owns_path: false,
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 4 => {
                        in_use(addr);
                        attempt += 1;
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                    Err(e) => return Err(BindError(format!("cannot bind {addr}: {e}"))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gunicorn_bind_forms() {
        assert_eq!(
            BindSpec::parse("127.0.0.1:8000").unwrap(),
            BindSpec::Tcp("127.0.0.1".into(), 8000)
        );
        assert_eq!(BindSpec::parse("[::1]:9").unwrap(), BindSpec::Tcp("::1".into(), 9));
        assert_eq!(BindSpec::parse("[::1]").unwrap(), BindSpec::Tcp("::1".into(), 8000));
        assert_eq!(BindSpec::parse(":80").unwrap(), BindSpec::Tcp("0.0.0.0".into(), 80));
        assert_eq!(BindSpec::parse("localhost").unwrap(), BindSpec::Tcp("localhost".into(), 8000));
        assert_eq!(BindSpec::parse("tcp://h:1").unwrap(), BindSpec::Tcp("h".into(), 1));
        assert_eq!(BindSpec::parse("unix:/tmp/s").unwrap(), BindSpec::Unix("/tmp/s".into()));
        assert_eq!(BindSpec::parse("unix:///tmp/s").unwrap(), BindSpec::Unix("/tmp/s".into()));
        assert_eq!(BindSpec::parse("fd://3").unwrap(), BindSpec::Fd(3));
        assert!(BindSpec::parse("h:notaport").is_err());
        assert!(BindSpec::parse("fd://x").is_err());
    }

    #[test]
    fn binds_ephemeral_port_and_unix_path() {
        let opts = ListenOptions { backlog: 16, reuse_port: false };
        let tcp = bind(&BindSpec::Tcp("127.0.0.1".into(), 0), opts, &mut |_| {}).unwrap();
        match tcp.addr {
            BoundAddr::Tcp(a) => assert_ne!(a.port(), 0),
            _ => panic!("expected tcp"),
        }
        let dir = std::env::temp_dir().join(format!("ferrocorn-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let unix = bind(&BindSpec::Unix(path.clone()), opts, &mut |_| {}).unwrap();
        assert_eq!(unix.addr, BoundAddr::Unix(path.clone()));
        // A stale socket file is replaced, a regular file is refused.
        drop(unix);
        assert!(bind(&BindSpec::Unix(path.clone()), opts, &mut |_| {}).is_ok());
        let file = dir.join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(bind(&BindSpec::Unix(file), opts, &mut |_| {}).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn accepted_tcp_connections_have_nodelay_from_the_listener() {
        let opts = ListenOptions { backlog: 16, reuse_port: false };
        let tcp = bind(&BindSpec::Tcp("127.0.0.1".into(), 0), opts, &mut |_| {}).unwrap();
        let BoundAddr::Tcp(addr) = tcp.addr else { panic!("expected tcp") };
        let _client = std::net::TcpStream::connect(addr).unwrap();
        tcp.socket.set_nonblocking(false).unwrap();
        let (accepted, _) = tcp.socket.accept().unwrap();
        assert!(accepted.tcp_nodelay().unwrap(), "workers rely on the listener's TCP_NODELAY");
    }
}
