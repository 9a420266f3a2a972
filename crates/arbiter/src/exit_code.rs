//! The exit statuses of ferrocorn's processes, defined once: the command line, the master and
//! the workers all use these. The values are Gunicorn's, so the scripts and supervisors that
//! read them keep working.

/// A process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Stopped as asked.
    Success = 0,
    /// Bad configuration, a bind error, or a failure at run time.
    Failure = 1,
    /// Bad command-line usage.
    Usage = 2,
    /// A worker failed while booting (Gunicorn's `WORKER_BOOT_ERROR`); the master stops.
    WorkerBoot = 3,
    /// The app could not be loaded (Gunicorn's `APP_LOAD_ERROR`); the master stops.
    AppLoad = 4,
}

impl ExitCode {
    /// The status as the process exits with it.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// Why the master stops when a worker exits with `code`, for the statuses that stop it.
    pub fn halt_reason(code: i32) -> Option<&'static str> {
        match code {
            c if c == ExitCode::WorkerBoot.code() => Some("Worker failed to boot."),
            c if c == ExitCode::AppLoad.code() => Some("App failed to load."),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statuses_are_gunicorns() {
        let codes = [ExitCode::Success, ExitCode::Failure, ExitCode::Usage, ExitCode::WorkerBoot];
        assert_eq!(codes.map(ExitCode::code), [0, 1, 2, 3]);
        assert_eq!(ExitCode::AppLoad.code(), 4);
    }

    #[test]
    fn only_boot_and_app_load_failures_stop_the_master() {
        assert_eq!(ExitCode::halt_reason(3), Some("Worker failed to boot."));
        assert_eq!(ExitCode::halt_reason(4), Some("App failed to load."));
        assert_eq!(ExitCode::halt_reason(1), None);
        assert_eq!(ExitCode::halt_reason(0), None);
    }
}
