//! `ros` exit codes and the error type that carries them.

use std::fmt;

/// Documented exit codes of `ros` (also printed by `ros --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// The command did what was asked.
    Success = 0,
    /// The operation failed (I/O error, a service failed to start, ...).
    Failure = 1,
    /// Bad command line.
    Usage = 2,
    /// The config (or the input file) is invalid; nothing was written.
    InvalidConfig = 3,
    /// PID 1's control socket or the system containerd could not be reached.
    Unreachable = 4,
    /// The named service, key or file does not exist.
    NotFound = 5,
}

/// The text appended to `ros --help`.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 success, 1 operation failed, 2 usage error, \
3 invalid config (nothing written), 4 PID 1 or containerd unreachable, 5 not found.";

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub status: ExitStatus,
    /// The message (printed once by main, prefixed with `ros: `); empty if already printed.
    pub message: String,
}

impl CliError {
    /// An error with `status` and `message`.
    pub fn new(status: ExitStatus, message: impl Into<String>) -> Self {
        CliError {
            status,
            message: message.into(),
        }
    }

    /// A usage error whose message clap has already printed.
    pub fn usage_printed() -> Self {
        CliError::new(ExitStatus::Usage, "")
    }

    /// Shorthand for [`ExitStatus::Failure`].
    pub fn failure(message: impl Into<String>) -> Self {
        CliError::new(ExitStatus::Failure, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
