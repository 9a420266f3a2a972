//! The pre-fork master ("arbiter"), in the Gunicorn model: one single-threaded process that owns
//! the listeners, forks workers, watches them through a shared-memory [`Scoreboard`], and turns
//! signals into actions. It has no tokio runtime and starts no thread, so forking from it is
//! safe; everything that needs Python (forking the interpreter, hooks, config reload) is behind
//! the [`Supervisor`] trait that `ferrocorn-native` implements.
//!
//! Crate-wide `unsafe` is limited to the OS interfaces (mmap, sigaction, kill, waitpid); each
//! block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

mod arbiter;
mod exit_code;
mod scoreboard;
mod signals;

pub use arbiter::{
    Arbiter, ArbiterOptions, ArbiterView, Command, ExitReason, LogLevel, Outcome, Spawned,
    Supervisor, WorkerMeta,
};
pub use exit_code::ExitCode;
pub use scoreboard::{
    AcceptRecheck, Counters, MasterArea, RequestRecord, RestartReason, Scoreboard, Slot, SlotState,
    map_shared_zeroed, monotonic_ms,
};
pub use signals::{Signal, SignalPipe, replay_early_signals};
