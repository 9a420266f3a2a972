//! How workers leave: reaping exited children (logging why, counting boot failures that stop
//! the server, folding their counters and naming the restart reason), and killing the ones
//! whose heartbeat is stale or that never finish booting (SIGABRT, then SIGKILL after a
//! second) — each with its pool's timeout.

use std::time::{Duration, Instant};

use ferrocorn_shm::monotonic_ms;
use ferrocorn_shm::scoreboard::{RestartReason, SlotState};

use super::{Arbiter, ExitReason, LogLevel, MAX_BOOT_FAILURES, Supervisor};
use crate::exit_code::ExitCode;
use crate::signals::kill;

impl Arbiter {
    /// Reap exited children. Returns an exit status when the server must halt.
    pub(super) fn reap(&mut self, sup: &mut dyn Supervisor) -> Option<i32> {
        let mut halt = None;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any child with a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if self.reexec_pid == Some(pid) {
                sup.log(LogLevel::Info, &format!("re-executed master (pid:{pid}) exited"));
                self.reexec_pid = None;
                continue;
            }
            let Some(index) = self.workers.iter().position(|w| w.meta.pid == pid) else {
                continue; // not ours (e.g. an orphan re-parented to us as PID 1)
            };
            let worker = self.workers.remove(index);
            let reason = if libc::WIFEXITED(status) {
                ExitReason::Code(libc::WEXITSTATUS(status))
            } else {
                ExitReason::Signal(libc::WTERMSIG(status))
            };
            match reason {
                ExitReason::Code(code) if let Some(reason) = ExitCode::halt_reason(code) => {
                    sup.log(
                        LogLevel::Error,
                        &format!("Worker (pid:{pid}) exited with code {code}"),
                    );
                    sup.log(LogLevel::Error, &format!("Reason: {reason}"));
                    halt = Some(code);
                }
                ExitReason::Code(0) => {}
                ExitReason::Code(code) => sup
                    .log(LogLevel::Error, &format!("Worker (pid:{pid}) exited with code {code}.")),
                ExitReason::Signal(libc::SIGKILL) => sup.log(
                    LogLevel::Error,
                    &format!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?"),
                ),
                ExitReason::Signal(libc::SIGTERM) => {
                    sup.log(LogLevel::Info, &format!("Worker (pid:{pid}) was sent SIGTERM!"))
                }
                ExitReason::Signal(sig) => sup
                    .log(LogLevel::Warning, &format!("Worker (pid:{pid}) was sent signal {sig}!")),
            }
            // A worker that left the booting state (even straight to retiring, between two
            // looks of the master) did boot.
            let booted =
                worker.booted || self.board.slot(worker.meta.slot).state() != SlotState::Booting;
            if booted {
                self.boot_failures = 0;
            }
            if !booted && !worker.term_sent && halt.is_none() {
                self.boot_failures += 1;
                if self.boot_failures >= MAX_BOOT_FAILURES {
                    sup.log(
                        LogLevel::Error,
                        &format!("{MAX_BOOT_FAILURES} workers in a row died while booting; stopping instead of respawning"),
                    );
                    halt = Some(ExitCode::WorkerBoot.code());
                }
            }
            let slot = self.board.slot(worker.meta.slot);
            self.board.master().retired.add(&slot.counters().totals());
            self.board.master().retire_pool_requests(worker.meta.pool, slot.requests());
            if !self.halting {
                let reason = if worker.aborted_at.is_some() {
                    Some(RestartReason::Timeout)
                } else if worker.term_sent && worker.meta.generation != self.generation {
                    Some(RestartReason::Reload)
                } else if worker.term_sent {
                    Some(RestartReason::Scale)
                } else if slot.state() == SlotState::Retiring {
                    Some(RestartReason::MaxRequests)
                } else if booted {
                    Some(RestartReason::Crash)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.board.master().count_restart(reason);
                }
            }
            self.board.release(worker.meta.slot);
            if halt.is_none() || !matches!(reason, ExitReason::Code(3 | 4)) {
                sup.child_exited(&worker.meta, reason);
            }
        }
        halt
    }

    pub(super) fn murder_workers(&mut self, sup: &mut dyn Supervisor) {
        let now = monotonic_ms();
        let boot_ms = self.opts.boot_timeout.as_millis() as u64;
        for w in &mut self.workers {
            if w.meta.pid <= 0 {
                continue;
            }
            let timeout = match w.meta.pool {
                0 => self.opts.timeout,
                n => self.opts.pools.get(n - 1).map_or(self.opts.timeout, |p| p.timeout),
            };
            let timeout_ms = timeout.as_millis() as u64;
            let slot = self.board.slot(w.meta.slot);
            if let Some(at) = w.aborted_at {
                if at.elapsed() >= Duration::from_secs(1) {
                    let _ = kill(w.meta.pid, libc::SIGKILL);
                }
                continue;
            }
            let stale = match slot.state() {
                SlotState::Booting => {
                    boot_ms > 0 && now.saturating_sub(slot.started_ms()) > boot_ms
                }
                SlotState::Free => false,
                _ => timeout_ms > 0 && now.saturating_sub(slot.last_heartbeat_ms()) > timeout_ms,
            };
            if stale {
                if slot.state() == SlotState::Booting {
                    sup.log(
                        LogLevel::Critical,
                        &format!("WORKER BOOT TIMEOUT (pid:{})", w.meta.pid),
                    );
                } else {
                    sup.log(LogLevel::Critical, &format!("WORKER TIMEOUT (pid:{})", w.meta.pid));
                }
                w.aborted_at = Some(Instant::now());
                let _ = kill(w.meta.pid, libc::SIGABRT);
            }
        }
    }
}
