//! The master's loop: spawn and reap workers, act on signals, kill workers whose heartbeat is
//! stale (SIGABRT, then SIGKILL) or that never finish booting, replace retiring workers before
//! they leave, roll workers over on reload, and stop gracefully or quickly. Gunicorn's
//! semantics and log lines; no threads, no async runtime. Workers belong to pools (worker
//! pools by URL): pool 0 is the one serving `/` (what TTIN/TTOU and `nworkers_changed` act
//! on), each pool with its own count and timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocorn_shm::scoreboard::{Scoreboard, SlotState};

use crate::signals::{Signal, SignalPipe, kill};

mod exits;

/// Consecutive workers dying before they finish booting that stop the server.
const MAX_BOOT_FAILURES: u32 = 5;

/// The knobs the loop needs (re-read on HUP).
#[derive(Debug, Clone, PartialEq)]
pub struct ArbiterOptions {
    /// Desired number of workers.
    pub workers: usize,
    /// Heartbeat timeout (zero disables).
    pub timeout: Duration,
    /// Longest a worker may take to boot (zero disables).
    pub boot_timeout: Duration,
    /// Grace period for stopping workers.
    pub graceful_timeout: Duration,
    /// Running daemonized (WINCH only acts then, as in Gunicorn).
    pub daemon: bool,
    /// The other worker pools (pools 1.., by URL prefix): their counts and timeouts.
    pub pools: Vec<PoolKnobs>,
}

/// What the loop needs to know of one extra worker pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolKnobs {
    /// Desired number of its workers.
    pub workers: usize,
    /// Its heartbeat timeout (zero disables).
    pub timeout: Duration,
}

/// Identity of one worker, handed to the supervisor's hooks and to the worker itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerMeta {
    /// Scoreboard slot index.
    pub slot: usize,
    /// Spawn order (Gunicorn's `worker.age`).
    pub age: u32,
    /// Config generation (bumped by HUP).
    pub generation: u64,
    /// Process id (0 before the fork).
    pub pid: i32,
    /// The worker pool it belongs to (0: the one serving `/`).
    pub pool: usize,
}

/// Result of asking the supervisor to fork.
#[derive(Debug)]
pub enum Spawned {
    /// In the master: the new worker's pid.
    Parent(i32),
    /// In the new worker process.
    Child,
}

/// How the arbiter's `run` ended for this process.
#[derive(Debug)]
pub enum Outcome {
    /// The master stops with this exit status.
    Exit(i32),
    /// This process is a freshly forked worker: serve as `WorkerMeta` says.
    Worker(WorkerMeta),
}

/// Why a worker process ended, as reported by `waitpid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Exited with this status code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Log levels for the supervisor's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warning,
    /// Error.
    Error,
    /// Critical.
    Critical,
}

/// An action requested through the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Like HUP.
    Reload,
    /// Like USR1.
    ReopenLogs,
    /// Like TTIN, `count` times, in `pool`.
    AddWorkers {
        /// Workers to add.
        count: usize,
        /// The pool (0: the one serving `/`).
        pool: usize,
    },
    /// Like TTOU, `count` times, in `pool` (never below one worker).
    RemoveWorkers {
        /// Workers to remove.
        count: usize,
        /// The pool (0: the one serving `/`).
        pool: usize,
    },
    /// Like TERM (`graceful`) or QUIT.
    Shutdown {
        /// Let in-flight requests finish.
        graceful: bool,
    },
}

/// Everything the arbiter cannot do without Python or the rest of the server.
pub trait Supervisor {
    /// Fork a worker (running `pre_fork` in the master and `post_fork` in the child).
    fn spawn(&mut self, worker: &WorkerMeta) -> std::io::Result<Spawned>;
    /// A worker was reaped (`child_exit` hook).
    fn child_exited(&mut self, worker: &WorkerMeta, reason: ExitReason);
    /// The desired worker count changed (`nworkers_changed` hook); `old` is None at start.
    fn workers_changed(&mut self, new: usize, old: Option<usize>);
    /// HUP: re-read the configuration and reload what can be reloaded (`on_reload` hook).
    fn reload(&mut self) -> Result<ArbiterOptions, String>;
    /// USR1: reopen log files.
    fn reopen_logs(&mut self);
    /// USR2: start a new master that inherits the listeners; returns its pid.
    fn reexec(&mut self) -> std::io::Result<i32>;
    /// The server is stopping: close listeners, notify systemd.
    fn stopping(&mut self);
    /// Called once per loop turn (about every half second).
    fn tick(&mut self) {}
    /// Extra descriptors the loop should wait on (metrics endpoint, control socket).
    fn watched_fds(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }
    /// One of [`Supervisor::watched_fds`] is readable; may ask for an action.
    fn fd_ready(&mut self, _fd: std::os::fd::RawFd, _view: &ArbiterView) -> Option<Command> {
        None
    }
    /// Write a log line.
    fn log(&self, level: LogLevel, message: &str);
}

#[derive(Debug)]
struct Worker {
    meta: WorkerMeta,
    aborted_at: Option<Instant>,
    term_sent: bool,
    booted: bool,
}

/// What the supervisor may read about the master when answering a request.
#[derive(Debug, Clone, Copy)]
pub struct ArbiterView {
    /// Target worker count, over every pool.
    pub workers_target: usize,
    /// Worker pools.
    pub pools: usize,
}

/// The master's state.
pub struct Arbiter {
    opts: ArbiterOptions,
    board: Arc<Scoreboard>,
    signals: SignalPipe,
    workers: Vec<Worker>,
    /// Desired workers per pool.
    num_workers: Vec<usize>,
    generation: u64,
    next_age: u32,
    boot_failures: u32,
    reexec_pid: Option<i32>,
    halting: bool,
}

enum Stop {
    Graceful,
    Quick,
}

impl Arbiter {
    /// A master for `opts`, with its scoreboard and signal handlers installed.
    pub fn new(opts: ArbiterOptions, board: Arc<Scoreboard>) -> std::io::Result<Arbiter> {
        Ok(Arbiter {
            num_workers: pool_counts(&opts),
            opts,
            board,
            signals: SignalPipe::install()?,
            workers: Vec::new(),
            generation: 0,
            next_age: 0,
            boot_failures: 0,
            reexec_pid: None,
            halting: false,
        })
    }

    /// The shared scoreboard.
    pub fn board(&self) -> &Arc<Scoreboard> {
        &self.board
    }

    /// Run until the server stops (in the master) or a worker was forked (in the child).
    pub fn run(&mut self, sup: &mut dyn Supervisor) -> Outcome {
        sup.workers_changed(self.num_workers[0], None);
        loop {
            if let Some(outcome) = self.manage_workers(sup) {
                return outcome;
            }
            let watched = sup.watched_fds();
            let (signals, ready) = self.signals.wait(Duration::from_millis(500), &watched);
            for signal in signals {
                if signal != Signal::Chld {
                    sup.log(LogLevel::Info, &format!("Handling signal: {}", signal.name()));
                }
                if let Some(outcome) = self.handle_signal(signal, sup) {
                    return outcome;
                }
            }
            for fd in ready {
                let view = ArbiterView {
                    workers_target: self.num_workers.iter().sum(),
                    pools: self.num_workers.len(),
                };
                if let Some(command) = sup.fd_ready(fd, &view)
                    && let Some(outcome) = self.handle_command(command, sup)
                {
                    return outcome;
                }
            }
            if let Some(code) = self.reap(sup) {
                return self.halt(sup, Stop::Graceful, code);
            }
            self.murder_workers(sup);
            sup.tick();
        }
    }

    fn handle_signal(&mut self, signal: Signal, sup: &mut dyn Supervisor) -> Option<Outcome> {
        match signal {
            Signal::Chld => {}
            Signal::Term => return Some(self.halt(sup, Stop::Graceful, 0)),
            Signal::Int | Signal::Quit => return Some(self.halt(sup, Stop::Quick, 0)),
            Signal::Hup => self.reload(sup),
            Signal::Ttin => self.set_num_workers(sup, 0, self.num_workers[0] + 1),
            Signal::Ttou => {
                if self.num_workers[0] > 1 {
                    self.set_num_workers(sup, 0, self.num_workers[0] - 1);
                }
            }
            Signal::Usr1 => {
                sup.reopen_logs();
                self.signal_all(libc::SIGUSR1);
            }
            Signal::Usr2 => {
                if self.reexec_pid.is_some() {
                    sup.log(
                        LogLevel::Warning,
                        "USR2 ignored: a re-executed master is already running",
                    );
                } else {
                    match sup.reexec() {
                        Ok(pid) => self.reexec_pid = Some(pid),
                        Err(e) => {
                            sup.log(LogLevel::Error, &format!("cannot re-exec the master: {e}"))
                        }
                    }
                }
            }
            Signal::Winch => {
                if self.opts.daemon {
                    sup.log(LogLevel::Info, "graceful stop of workers");
                    for pool in 0..self.num_workers.len() {
                        self.set_num_workers(sup, pool, 0);
                    }
                } else {
                    sup.log(LogLevel::Debug, "SIGWINCH ignored. Not daemonized");
                }
            }
        }
        None
    }

    fn handle_command(&mut self, command: Command, sup: &mut dyn Supervisor) -> Option<Outcome> {
        sup.log(LogLevel::Info, &format!("Control command: {command:?}"));
        match command {
            Command::Reload => self.handle_signal(Signal::Hup, sup),
            Command::ReopenLogs => self.handle_signal(Signal::Usr1, sup),
            Command::AddWorkers { count, pool } if pool < self.num_workers.len() => {
                self.set_num_workers(sup, pool, self.num_workers[pool] + count);
                None
            }
            Command::RemoveWorkers { count, pool } if pool < self.num_workers.len() => {
                let left = self.num_workers[pool].saturating_sub(count).max(1);
                self.set_num_workers(sup, pool, left);
                None
            }
            Command::AddWorkers { .. } | Command::RemoveWorkers { .. } => None,
            Command::Shutdown { graceful: true } => Some(self.halt(sup, Stop::Graceful, 0)),
            Command::Shutdown { graceful: false } => Some(self.halt(sup, Stop::Quick, 0)),
        }
    }

    /// Set the desired count of `pool`; `nworkers_changed` hears about the `/` pool's.
    fn set_num_workers(&mut self, sup: &mut dyn Supervisor, pool: usize, new: usize) {
        let old = std::mem::replace(&mut self.num_workers[pool], new);
        if pool == 0 {
            sup.workers_changed(new, Some(old));
        }
    }

    fn reload(&mut self, sup: &mut dyn Supervisor) {
        match sup.reload() {
            Ok(opts) => {
                self.generation += 1;
                let old = self.num_workers[0];
                self.num_workers = pool_counts(&opts);
                self.opts = opts;
                if old != self.num_workers[0] {
                    sup.workers_changed(self.num_workers[0], Some(old));
                }
            }
            Err(e) => sup.log(
                LogLevel::Error,
                &format!("reload failed, keeping the running configuration: {e}"),
            ),
        }
    }

    fn signal_all(&self, signal: libc::c_int) {
        for w in &self.workers {
            if w.meta.pid > 0 {
                let _ = kill(w.meta.pid, signal);
            }
        }
    }

    fn state(&self, w: &Worker) -> SlotState {
        self.board.slot(w.meta.slot).state()
    }

    /// A worker that counts toward the desired number: current generation, not told to stop,
    /// not retiring on its own.
    fn is_live(&self, w: &Worker) -> bool {
        !w.term_sent
            && w.aborted_at.is_none()
            && w.meta.generation == self.generation
            && self.state(w) != SlotState::Retiring
    }

    fn manage_workers(&mut self, sup: &mut dyn Supervisor) -> Option<Outcome> {
        for w in &mut self.workers {
            let state = self.board.slot(w.meta.slot).state();
            if !w.booted && matches!(state, SlotState::Idle | SlotState::Busy) {
                w.booted = true;
                self.boot_failures = 0;
            }
        }
        for pool in 0..self.num_workers.len() {
            if let Some(outcome) = self.manage_pool(sup, pool) {
                return Some(outcome);
            }
        }
        // Workers of a pool the last reload removed leave once the `/` pool serves.
        let pools = self.num_workers.len();
        if self.ready_in(0) >= self.num_workers[0] {
            for i in 0..self.workers.len() {
                if self.workers[i].meta.pool >= pools && !self.workers[i].term_sent {
                    self.stop_worker(i, libc::SIGTERM);
                }
            }
        }
        None
    }

    /// Workers of the current generation in `pool` that booted and count toward its number.
    fn ready_in(&self, pool: usize) -> usize {
        self.workers
            .iter()
            .filter(|w| {
                w.meta.pool == pool
                    && w.meta.generation == self.generation
                    && w.booted
                    && self.is_live(w)
            })
            .count()
    }

    /// Bring `pool` to its desired number: stop the oldest extra workers, let old-generation
    /// ones leave once enough new ones serve, spawn what is missing.
    fn manage_pool(&mut self, sup: &mut dyn Supervisor, pool: usize) -> Option<Outcome> {
        let wanted = self.num_workers[pool];
        let live: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].meta.pool == pool && self.is_live(&self.workers[i]))
            .collect();
        if live.len() > wanted {
            let mut by_age: Vec<usize> = live.clone();
            by_age.sort_by_key(|&i| self.workers[i].meta.age);
            for &i in by_age.iter().take(live.len() - wanted) {
                self.stop_worker(i, libc::SIGTERM);
            }
        }
        if self.ready_in(pool) >= wanted {
            for i in 0..self.workers.len() {
                let w = &self.workers[i];
                if w.meta.pool == pool && w.meta.generation != self.generation && !w.term_sent {
                    self.stop_worker(i, libc::SIGTERM);
                }
            }
        }
        let missing = wanted.saturating_sub(live.len().min(wanted));
        for _ in 0..missing {
            if let Some(outcome) = self.spawn_worker(sup, pool) {
                return Some(outcome);
            }
        }
        None
    }

    fn stop_worker(&mut self, index: usize, signal: libc::c_int) {
        let w = &mut self.workers[index];
        w.term_sent = true;
        if w.meta.pid > 0 {
            let _ = kill(w.meta.pid, signal);
        }
    }

    fn spawn_worker(&mut self, sup: &mut dyn Supervisor, pool: usize) -> Option<Outcome> {
        self.next_age += 1;
        let Some(slot) = self.board.claim(self.generation, self.next_age, pool) else {
            sup.log(LogLevel::Error, "no free scoreboard slot for a new worker");
            return None;
        };
        let mut meta =
            WorkerMeta { slot, age: self.next_age, generation: self.generation, pid: 0, pool };
        // Signals stay blocked across the fork: the child must not run the master's handlers
        // (a TERM meant for the new worker would land in the master's pipe) before it resets them.
        let blocked = crate::signals::block_all();
        let spawned = sup.spawn(&meta);
        if matches!(spawned, Ok(Spawned::Child)) {
            self.signals.reset_in_child();
        }
        crate::signals::restore(blocked);
        match spawned {
            Ok(Spawned::Parent(pid)) => {
                meta.pid = pid;
                self.board.set_pid(slot, pid);
                self.workers.push(Worker {
                    meta,
                    aborted_at: None,
                    term_sent: false,
                    booted: false,
                });
                None
            }
            Ok(Spawned::Child) => {
                // SAFETY: getpid has no preconditions.
                meta.pid = unsafe { libc::getpid() };
                self.board.set_pid(slot, meta.pid);
                Some(Outcome::Worker(meta))
            }
            Err(e) => {
                self.board.release(slot);
                sup.log(LogLevel::Error, &format!("cannot fork a worker: {e}"));
                None
            }
        }
    }

    fn halt(&mut self, sup: &mut dyn Supervisor, how: Stop, code: i32) -> Outcome {
        self.halting = true;
        sup.stopping();
        let (signal, limit) = match how {
            Stop::Graceful => (libc::SIGTERM, self.opts.graceful_timeout),
            Stop::Quick => (
                libc::SIGQUIT,
                self.opts
                    .graceful_timeout
                    .min(Duration::from_secs(2))
                    .max(Duration::from_millis(200)),
            ),
        };
        self.signal_all(signal);
        let deadline = Instant::now() + limit;
        let mut escalated = matches!(how, Stop::Quick);
        while !self.workers.is_empty() && Instant::now() < deadline {
            for s in self.signals.wait(Duration::from_millis(100), &[]).0 {
                if !escalated && matches!(s, Signal::Int | Signal::Quit) {
                    escalated = true;
                    sup.log(LogLevel::Info, &format!("Handling signal: {}", s.name()));
                    self.signal_all(libc::SIGQUIT);
                }
            }
            let _ = self.reap(sup);
        }
        if !self.workers.is_empty() {
            self.signal_all(libc::SIGKILL);
            while !self.workers.is_empty() {
                self.signals.wait(Duration::from_millis(50), &[]);
                let _ = self.reap(sup);
            }
        }
        Outcome::Exit(code)
    }
}

/// Desired workers per pool: the `/` pool's, then the others'.
fn pool_counts(opts: &ArbiterOptions) -> Vec<usize> {
    std::iter::once(opts.workers).chain(opts.pools.iter().map(|p| p.workers)).collect()
}
