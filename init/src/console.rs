//! The console: PID 1's log backend and the boot-phase markers.
//!
//! PID 1's stderr is the kernel console. Markers are an interface read by tests and
//! benchmarks: `ROS BOOT <phase> <seconds-since-boot>s[ <detail>]`, one per line.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Seconds since the kernel started (CLOCK_BOOTTIME), the same clock as kernel timestamps.
pub fn uptime() -> f64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9,
        Err(_) => 0.0,
    }
}

/// A boot phase with a stable name. Tests grep for these names; don't rename them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPhase {
    /// PID 1 started.
    Init,
    /// Pseudo filesystems mounted.
    Mounts,
    /// Boot modules loaded.
    Modules,
    /// Switched into the read-only root.
    Root,
    /// The state disk is mounted (detail: its device) or not (`ram`).
    State,
    /// The system containerd answers on its socket.
    ContainerdReady,
    /// Preloaded images are in containerd.
    ImagesImported,
    /// A service's container started (detail: its name).
    ServiceStarted,
    /// Everything the boot was asked to start has started.
    BootComplete,
    /// Orderly shutdown began (detail: the action).
    Shutdown,
    /// A fatal boot error (detail: the reason).
    Fatal,
}

impl BootPhase {
    /// The marker's name.
    pub fn name(self) -> &'static str {
        match self {
            BootPhase::Init => "init",
            BootPhase::Mounts => "mounts",
            BootPhase::Modules => "modules",
            BootPhase::Root => "root",
            BootPhase::State => "state",
            BootPhase::ContainerdReady => "containerd-ready",
            BootPhase::ImagesImported => "images-imported",
            BootPhase::ServiceStarted => "service-started",
            BootPhase::BootComplete => "boot-complete",
            BootPhase::Shutdown => "shutdown",
            BootPhase::Fatal => "fatal",
        }
    }
}

impl fmt::Display for BootPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Format a marker line (without newline).
pub fn marker_line(phase: BootPhase, at: f64, detail: &str) -> String {
    if detail.is_empty() {
        format!("ROS BOOT {phase} {at:.3}s")
    } else {
        format!("ROS BOOT {phase} {at:.3}s {detail}")
    }
}

/// Print a boot-phase marker on the console.
pub fn marker(phase: BootPhase, detail: &str) {
    let mut line = marker_line(phase, uptime(), detail);
    line.push('\n');
    // One argument, so one write(2): stderr is unbuffered, and a line written in pieces
    // can be split by another process writing to the same console in between.
    // eprint! (not a raw stderr handle) so test harnesses capture it.
    eprint!("{line}");
}

static DEBUG: AtomicBool = AtomicBool::new(false);

/// The `log` backend of PID 1: timestamped lines on the console.
struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info || DEBUG.load(Ordering::Relaxed)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "ERROR ",
            log::Level::Warn => "WARN ",
            _ => "",
        };
        // Formatted first and written with one write(2), as a marker is (see `marker`).
        let line = format!("ros-init[{:.3}]: {level}{}\n", uptime(), record.args());
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Turn debug logging on or off (the config's `rancher.debug`, known once it is loaded).
pub fn set_debug(debug: bool) {
    if debug && !DEBUG.swap(true, Ordering::Relaxed) {
        log::debug!("debug logging on (rancher.debug)");
    } else if !debug {
        DEBUG.store(false, Ordering::Relaxed);
    }
}

/// Install the console logger (once; later calls only change the level).
pub fn init_logging(debug: bool) {
    DEBUG.store(debug, Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Debug);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_format_is_stable() {
        assert_eq!(
            marker_line(BootPhase::ContainerdReady, 14.2311, ""),
            "ROS BOOT containerd-ready 14.231s"
        );
        assert_eq!(
            marker_line(BootPhase::ServiceStarted, 20.0, "console"),
            "ROS BOOT service-started 20.000s console"
        );
    }
}
