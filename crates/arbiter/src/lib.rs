//! The pre-fork master ("arbiter"), in the Gunicorn model: one single-threaded process that owns
//! the listeners, forks workers, watches them through the shared-memory
//! [`Scoreboard`](ferrocorn_shm::scoreboard::Scoreboard) of `ferrocorn-shm`, and turns signals
//! into actions. It has no tokio runtime and starts no thread, so forking from it is safe;
//! everything that needs Python (forking the interpreter, hooks, config reload) is behind the
//! [`Supervisor`] trait that `ferrocorn-native` implements.
//!
//! Crate-wide `unsafe` is limited to the OS interfaces (sigaction, kill, waitpid); each block
//! carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

mod arbiter;
mod exit_code;
mod signals;

pub use arbiter::{
    Arbiter, ArbiterOptions, ArbiterView, Command, ExitReason, LogLevel, Outcome, PoolKnobs,
    Spawned, Supervisor, WorkerMeta,
};
pub use exit_code::ExitCode;
pub use signals::{Signal, SignalPipe, replay_early_signals};
