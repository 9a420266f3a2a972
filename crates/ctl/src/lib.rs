//! Client side of ferrocorn's control socket: `ferrocorn ctl ...` (one-shot
//! commands) and `ferrocorn top` (a live view of the workers).
//!
//! The protocol: connect to a Unix stream socket, write one JSON object
//! terminated by `\n`, read one JSON line back, close. Replies are
//! `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
//!
//! The socket path is, in order: `--socket PATH`, `$FERROCORN_CONTROL_SOCKET`,
//! `$XDG_RUNTIME_DIR/gunicorn.ctl`, `~/.gunicorn/gunicorn.ctl` (Gunicorn 25+'s
//! default), and as a last resort `gunicorn.ctl` in the current directory.
//!
//! [`ctl_main`] and [`top_main`] use the real process environment and
//! terminal; [`run_ctl`] and [`run_top`] take the environment and output
//! streams explicitly, for tests and embedding.

mod cache;
mod client;
mod ctl;
mod render;
mod top;
mod top_sections;
mod upstreams;

use std::ffi::OsString;
use std::io::{self, IsTerminal};
use std::path::PathBuf;

pub use client::{ClientError, Reply, request};
pub use ctl::run_ctl;
pub use top::run_top;

/// Environment variable naming the control socket (overridden by `--socket`).
pub const SOCKET_ENV: &str = "FERROCORN_CONTROL_SOCKET";
/// File name of the control socket inside its directory.
pub const SOCKET_FILE: &str = "gunicorn.ctl";

/// The environment values that decide the default control socket path.
#[derive(Debug, Clone, Default)]
pub struct SocketEnv {
    /// `$FERROCORN_CONTROL_SOCKET`.
    pub control_socket: Option<OsString>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<OsString>,
    /// `$HOME`.
    pub home: Option<OsString>,
}

impl SocketEnv {
    /// Reads the three variables from the process environment.
    pub fn from_process() -> Self {
        SocketEnv {
            control_socket: std::env::var_os(SOCKET_ENV),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR"),
            home: std::env::var_os("HOME"),
        }
    }

    /// The socket path to use: `cli` (from `--socket`) when given, else the
    /// environment's choice. Empty values count as unset.
    pub fn resolve(&self, cli: Option<&str>) -> PathBuf {
        if let Some(p) = cli.filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        if let Some(p) = non_empty(&self.control_socket) {
            return PathBuf::from(p);
        }
        default_socket_path(self.xdg_runtime_dir.as_ref(), self.home.as_ref())
    }
}

fn non_empty(v: &Option<OsString>) -> Option<&OsString> {
    v.as_ref().filter(|s| !s.is_empty())
}

/// Gunicorn 25+'s default control socket location:
/// `$XDG_RUNTIME_DIR/gunicorn.ctl` when `XDG_RUNTIME_DIR` is set (non-empty),
/// else `$HOME/.gunicorn/gunicorn.ctl`, else `gunicorn.ctl` relative to the
/// current directory.
pub fn default_socket_path(xdg_runtime_dir: Option<&OsString>, home: Option<&OsString>) -> PathBuf {
    if let Some(dir) = xdg_runtime_dir.filter(|s| !s.is_empty()) {
        return PathBuf::from(dir).join(SOCKET_FILE);
    }
    if let Some(home) = home.filter(|s| !s.is_empty()) {
        return PathBuf::from(home).join(".gunicorn").join(SOCKET_FILE);
    }
    PathBuf::from(SOCKET_FILE)
}

/// `ferrocorn ctl ARGS...` (the arguments after the word `ctl`). Returns the
/// exit code: 0 ok, 1 failure (cannot connect, or the server said not ok),
/// 2 usage error.
pub fn ctl_main(args: Vec<String>) -> i32 {
    let env = SocketEnv::from_process();
    run_ctl(&args, &env, &mut io::stdout().lock(), &mut io::stderr().lock())
}

/// `ferrocorn top ARGS...` (the arguments after the word `top`). A
/// full-screen live view when stdout is a terminal (`q` or Ctrl-C quits),
/// plain-text frames separated by blank lines otherwise. Returns the exit
/// code: 0 ok, 1 failure, 2 usage error.
pub fn top_main(args: Vec<String>) -> i32 {
    let env = SocketEnv::from_process();
    if io::stdout().is_terminal() {
        top::run_interactive(&args, &env)
    } else {
        run_top(&args, &env, &mut io::stdout().lock(), &mut io::stderr().lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn default_path_prefers_xdg_runtime_dir() {
        let xdg = os("/run/user/1000");
        let home = os("/home/u");
        assert_eq!(
            default_socket_path(Some(&xdg), Some(&home)),
            PathBuf::from("/run/user/1000/gunicorn.ctl")
        );
    }

    #[test]
    fn default_path_falls_back_to_home() {
        let home = os("/home/u");
        assert_eq!(
            default_socket_path(None, Some(&home)),
            PathBuf::from("/home/u/.gunicorn/gunicorn.ctl")
        );
        let empty = os("");
        assert_eq!(
            default_socket_path(Some(&empty), Some(&home)),
            PathBuf::from("/home/u/.gunicorn/gunicorn.ctl")
        );
    }

    #[test]
    fn default_path_last_resort_is_relative() {
        assert_eq!(default_socket_path(None, None), PathBuf::from("gunicorn.ctl"));
    }

    #[test]
    fn resolve_precedence() {
        let env = SocketEnv {
            control_socket: Some(os("/tmp/env.ctl")),
            xdg_runtime_dir: Some(os("/run/user/1")),
            home: Some(os("/home/u")),
        };
        assert_eq!(env.resolve(Some("/tmp/cli.ctl")), PathBuf::from("/tmp/cli.ctl"));
        assert_eq!(env.resolve(None), PathBuf::from("/tmp/env.ctl"));
        let env = SocketEnv { control_socket: Some(os("")), ..env };
        assert_eq!(env.resolve(None), PathBuf::from("/run/user/1/gunicorn.ctl"));
    }
}
