//! `poweroff`, `reboot`, `halt`: ask PID 1 for an orderly shutdown.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ros_control::PowerAction;

use crate::CliError;

/// Send PID 1 the signal that stands for `action` (see `ros_control::SIGNAL_ACTIONS`).
pub fn request(action: PowerAction) -> Result<(), CliError> {
    let sig = Signal::try_from(action.signal())
        .map_err(|e| CliError::failure(format!("{action}: signal table: {e}")))?;
    kill(Pid::from_raw(1), sig).map_err(|e| {
        CliError::failure(format!(
            "asking PID 1 to {action}: {e} (needs root in the host pid namespace)"
        ))
    })
}
