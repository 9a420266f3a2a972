//! Sockets for the server, apart from Python: the listening sockets made from Gunicorn's bind
//! forms ([`listen`]), the [`client_stream`] a connection reads and writes through — with the
//! one capability beyond reading and writing, its raw descriptor, and a fallback for every fast
//! path that uses it — the peer [`allowlist`]s (`forwarded_allow_ips`, `proxy_allow_ips`), and
//! a [`precise_timer`] for the runtime (a `timerfd`: tokio's timer is millisecond-grained), and
//! [`bounded::timeout_if_pending`] (an operation's timeout without a timer when it is ready, over
//! [`bounded::poll_once`]).
//!
//! Tokio (for the stream types), socket2 and libc; no Python, so a Rust-only path (the cache's
//! hits, the balancer's proxy) serves over the same types. Crate-wide `unsafe` is limited to
//! socket calls tokio and socket2 do not offer (`send` with flags, `sendfile`, `pread`) and the
//! `timerfd` calls; each block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

pub mod allowlist;
pub mod bounded;
pub mod client_stream;
pub mod listen;
pub mod precise_timer;
