//! What should run: the one reconciler of the boot's first plan and every reload's. It
//! owns what a reload needs (the kernel line's text, and its debug flag), the
//! `write_files` for containers (replaced by each plan), and the console's pid (runcmd
//! and the health checks run in its filesystem).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ros_config::{CloudConfig, Mode, Severity};

use crate::catalog::{self, Plan};
use crate::cloudinit::{ContainerFiles, CONSOLE_SERVICE};
use crate::cmdline::KernelCmdline;
use crate::console;
use crate::paths;

/// The reconciler.
pub struct Desired {
    cmdline: String,
    kernel_debug: bool,
    files: ContainerFiles,
    console_pid: Arc<AtomicU32>,
}

impl Desired {
    /// For the kernel line `cmdline`; the first [`Desired::plan`] gives it a config.
    pub fn new(cmdline: String) -> Desired {
        Desired {
            kernel_debug: KernelCmdline::parse(&cmdline).debug(),
            cmdline,
            files: ContainerFiles::default(),
            console_pid: Arc::new(AtomicU32::new(0)),
        }
    }

    /// What should run for `config`, in order (problems printed). Services started from
    /// now on get its `write_files`; `rancher.debug` in it (or on the kernel line) turns
    /// PID 1's debug lines on.
    pub fn plan(&self, config: &CloudConfig) -> Plan {
        console::set_debug(self.kernel_debug || config.rancher.debug);
        self.files.replace(config);
        plan_services(config)
    }

    /// Re-read the config (every layer, the kernel line) and plan it: a reload.
    pub fn reload(&self) -> Plan {
        self.plan(&load_config(&self.cmdline))
    }

    /// A service's task started with host pid `pid`: write its files into it; remember
    /// the console's.
    pub fn started(&self, service: &str, pid: u32) {
        if service == CONSOLE_SERVICE {
            self.console_pid.store(pid, Ordering::Relaxed);
        }
        self.files.write_for(service, pid);
    }

    /// The console's pid once it started (0 before).
    pub fn console_pid(&self) -> Arc<AtomicU32> {
        self.console_pid.clone()
    }
}

/// Load every config layer plus the kernel command line, boot mode: never fails; every
/// problem is printed on the console and kept in `/var/log/ros/config.log`.
pub fn load_config(cmdline: &str) -> CloudConfig {
    reported(ros_config::load(
        crate::mode::root(),
        Some(cmdline),
        Mode::Boot,
    ))
}

/// The config of a full load ([`ros_config::Stage::Full`]), its problems printed on the
/// console and kept in `/var/log/ros/config.log`.
pub fn reported(loaded: ros_config::Loaded) -> CloudConfig {
    let mut report = String::new();
    for d in &loaded.diagnostics {
        match d.severity {
            Severity::Error => log::error!("config: {d}"),
            Severity::Warning => log::warn!("config: {d}"),
        }
        report.push_str(&format!("{d}\n"));
    }
    // Through LogDir, not fs::write: a `config.log` symlink planted in the log directory
    // must not let the diagnostics overwrite what it points to (the user's config).
    let written = crate::logfile::LogDir::open(&paths::at(paths::LOG_DIR))
        .and_then(|dir| dir.write_truncated("config.log", report.as_bytes()));
    if let Err(e) = written {
        log::warn!("config: {e}");
    }
    loaded.config
}

/// What should run, in order, for `config`; problems are printed.
fn plan_services(config: &CloudConfig) -> catalog::Plan {
    let plan = catalog::plan(
        &paths::at(paths::SERVICES_DIR),
        &paths::at(paths::SERVICE_INDEX_DIR),
        config,
    );
    for p in &plan.problems {
        log::error!("{p}");
    }
    plan
}
