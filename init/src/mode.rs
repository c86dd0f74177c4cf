//! How this init runs: as the machine's PID 1, or as a child subreaper below a temporary
//! root, the process-level test tier (STYLE 18). It owns that one decision and the root the
//! well-known paths are under; the steps that only a machine's PID 1 may take (mounts,
//! modules, the root switch, the state disk, the hostname, the network, `kill(-1)`,
//! `reboot(2)`, the recovery shell) ask [`subreaper`] and are skipped when it says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The mode, chosen once by main before the boot starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMode {
    /// The kernel's init: every path is the machine's.
    Pid1,
    /// A child subreaper (`init --subreaper`, `ROS_ROOT=DIR`): every well-known path is
    /// below `root`, nothing is mounted, the host's name, network and processes are left
    /// alone, and the end of a shutdown is an exit instead of `reboot(2)`.
    Subreaper {
        /// Where the well-known paths are (`$ROS_ROOT`, as `ros` reads it).
        root: PathBuf,
    },
}

static MODE: OnceLock<RunMode> = OnceLock::new();

/// Choose the mode; only the first call counts (main makes it, once).
pub fn set(mode: RunMode) {
    let _ = MODE.set(mode);
}

fn mode() -> &'static RunMode {
    MODE.get_or_init(|| RunMode::Pid1)
}

/// Whether init runs as a subreaper under a test root.
pub fn subreaper() -> bool {
    matches!(mode(), RunMode::Subreaper { .. })
}

/// The root every well-known path is under: `/` for PID 1.
pub fn root() -> &'static Path {
    match mode() {
        RunMode::Pid1 => Path::new("/"),
        RunMode::Subreaper { root } => root,
    }
}

/// A subreaper's name for what it makes in the machine's shared tables: its containerd
/// namespace (so runc's state under /run/containerd/runc is its own too) and its services'
/// cgroup parent, `ros-subreaper-PID`, never the machine's `ros`. None for PID 1.
pub fn own_name() -> Option<String> {
    subreaper().then(|| format!("ros-subreaper-{}", std::process::id()))
}
