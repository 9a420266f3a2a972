//! systemd integration: socket activation (`LISTEN_PID`/`LISTEN_FDS`), listeners inherited
//! from a re-executed master (`GUNICORN_FD`), and `sd_notify` readiness (`NOTIFY_SOCKET`).

use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Descriptors passed by systemd socket activation, if they are meant for this process.
/// The variables are removed so children do not adopt them again.
pub fn activation_fds() -> Vec<RawFd> {
    let pid_matches = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
    if !pid_matches || count <= 0 {
        return Vec::new();
    }
    // SAFETY: the master is single-threaded here (before any fork or runtime), so no other
    // thread reads the environment concurrently.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
    }
    (3..3 + count).collect()
}

/// Descriptors handed over by the master that re-executed us (USR2).
pub fn inherited_fds() -> Vec<RawFd> {
    match std::env::var("GUNICORN_FD") {
        Ok(list) => list.split(',').filter_map(|fd| fd.trim().parse().ok()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Send a state line (`READY=1`, `STOPPING=1`, ...) to systemd when `NOTIFY_SOCKET` is set.
pub fn notify(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else { return };
    let Ok(socket) = UnixDatagram::unbound() else { return };
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    if let Ok(addr) = addr {
        let _ = socket.send_to_addr(state.as_bytes(), &addr);
    }
}
