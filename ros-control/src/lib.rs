//! The interface between the `ros` CLI and PID 1.
//!
//! Owns the one table that says which signal sent to PID 1 means which power action
//! (this file): `ros` (and its `poweroff`/`reboot`/`halt` aliases) sends these signals; init
//! installs handlers for exactly these. Owns the control-socket protocol too: its types and
//! codec ([`protocol`], pure) and the synchronous client `ros` uses ([`client`], the only
//! code here that performs I/O). The server loop is PID 1's; it must not need tokio here.

use std::fmt;

pub mod client;
pub mod protocol;

pub use client::{call, ControlError};
pub use protocol::{
    decode_request, decode_response, encode_request, encode_response, human_duration, state_text,
    DecodeError, ErrorKind, Request, Response, ServiceRow, ServiceState, CONTROL_SOCKET,
    MAX_LINE_BYTES, PROTOCOL_VERSION,
};

/// What PID 1 does at the end of an orderly shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Power the machine off (QEMU exits).
    PowerOff,
    /// Reboot.
    Reboot,
    /// Stop the CPU without powering off.
    Halt,
}

impl PowerAction {
    /// The name used on the console and in command names.
    pub fn name(self) -> &'static str {
        match self {
            PowerAction::PowerOff => "poweroff",
            PowerAction::Reboot => "reboot",
            PowerAction::Halt => "halt",
        }
    }

    /// The action a command name stands for (`poweroff`, `reboot`, `halt`, `shutdown`).
    pub fn from_command(name: &str) -> Option<Self> {
        match name {
            "poweroff" | "shutdown" => Some(PowerAction::PowerOff),
            "reboot" => Some(PowerAction::Reboot),
            "halt" => Some(PowerAction::Halt),
            _ => None,
        }
    }

    /// The signal `ros` sends to PID 1 to ask for this action.
    pub fn signal(self) -> libc::c_int {
        match self {
            PowerAction::PowerOff => libc::SIGTERM,
            PowerAction::Reboot => libc::SIGINT,
            PowerAction::Halt => libc::SIGUSR1,
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which signal to PID 1 means which action. This is the only such table.
///
/// - `SIGTERM`: power off (what `ros`'s `poweroff` sends; also `kill 1`).
/// - `SIGINT`: reboot. The kernel sends it for Ctrl-Alt-Del once init disables the
///   hard-reboot behaviour (`reboot(RB_DISABLE_CAD)`).
/// - `SIGUSR1`: halt.
/// - `SIGUSR2`: power off (what busybox's `poweroff` sends to PID 1).
/// - `SIGPWR`: power off (power-fail notification, as sysvinit and systemd treat it).
pub const SIGNAL_ACTIONS: &[(libc::c_int, PowerAction)] = &[
    (libc::SIGTERM, PowerAction::PowerOff),
    (libc::SIGINT, PowerAction::Reboot),
    (libc::SIGUSR1, PowerAction::Halt),
    (libc::SIGUSR2, PowerAction::PowerOff),
    (libc::SIGPWR, PowerAction::PowerOff),
];

/// The action a signal to PID 1 asks for, if any.
pub fn action_for_signal(sig: libc::c_int) -> Option<PowerAction> {
    SIGNAL_ACTIONS
        .iter()
        .find(|(s, _)| *s == sig)
        .map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_through_its_signal() {
        for action in [
            PowerAction::PowerOff,
            PowerAction::Reboot,
            PowerAction::Halt,
        ] {
            assert_eq!(action_for_signal(action.signal()), Some(action));
            assert_eq!(PowerAction::from_command(action.name()), Some(action));
        }
    }

    #[test]
    fn unrelated_signals_mean_nothing() {
        assert_eq!(action_for_signal(libc::SIGCHLD), None);
        assert_eq!(action_for_signal(libc::SIGHUP), None);
    }
}
