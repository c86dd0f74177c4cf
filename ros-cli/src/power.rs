//! `poweroff`, `reboot`, `halt`: ask PID 1 for an orderly shutdown.

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ros_control::PowerAction;

/// Send PID 1 the signal that stands for `action` (see `ros_control::SIGNAL_ACTIONS`).
pub fn request(action: PowerAction) -> anyhow::Result<()> {
    let sig = Signal::try_from(action.signal()).context("signal table")?;
    kill(Pid::from_raw(1), sig).with_context(|| {
        format!("asking PID 1 to {action} (needs root in the host pid namespace)")
    })
}
