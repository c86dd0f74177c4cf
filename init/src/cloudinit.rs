//! PID 1's side of cloud-init: the module loader and command runner that
//! `ros_cloudinit` needs, implemented with init's module index and its one reaper.

use std::path::{Path, PathBuf};

use ros_cloudinit::{CommandRunner, Exit as RunExit, Invocation, ModuleLoader, Report};

use crate::modules::ModuleIndex;
use crate::reaper::{Exit, Reaper};
use crate::sys::Host;

/// Loads modules by name from the running kernel's modules.dep.
pub struct InitModules {
    index: Option<ModuleIndex>,
}

impl InitModules {
    /// Index the modules in `dir` (missing index: every load fails with a clear message).
    pub fn new(dir: &Path) -> Self {
        let index = match ModuleIndex::open(dir) {
            Ok(i) => Some(i),
            Err(e) => {
                log::warn!("{e}");
                None
            }
        };
        InitModules { index }
    }
}

impl ModuleLoader for InitModules {
    fn load_module(&self, name: &str, params: &str) -> Result<(), String> {
        let index = self
            .index
            .as_ref()
            .ok_or_else(|| format!("module {name}: no modules.dep for this kernel"))?;
        index
            .load_with_params(name, params, &Host)
            .map_err(|e| e.to_string())
    }
}

/// Runs commands as children of PID 1, waited for through the reaper.
pub struct ReaperRunner {
    /// The one reaper.
    pub reaper: Reaper,
}

impl CommandRunner for ReaperRunner {
    fn run(&self, inv: &Invocation) -> Result<RunExit, String> {
        let mut cmd = inv.command().map_err(|e| e.to_string())?;
        let (_pid, rx) = self.reaper.spawn(&mut cmd).map_err(|e| e.to_string())?;
        match rx.recv() {
            Ok(Exit::Code(c)) => Ok(RunExit::Code(c)),
            Ok(Exit::Signal(s)) => Ok(RunExit::Signal(s)),
            Err(_) => Err("the reaper went away".into()),
        }
    }
}

/// Print a report's problems on the console (each is one `cloud-init: ...` line).
pub fn print(report: &Report) {
    for line in report.problem_lines() {
        log::error!("{line}");
    }
    for line in report.applied_lines() {
        log::debug!("{line}");
    }
}

/// Where command output goes.
pub fn command_log() -> PathBuf {
    PathBuf::from(ros_cloudinit::paths::COMMAND_LOG)
}

/// `write_files` entries with `container: NAME`, written into that service's container
/// (through `/proc/<pid>/root`, so owners resolve against the container's own
/// `/etc/passwd`) each time the service starts, as RancherOS did.
pub struct ContainerFiles {
    config: ros_config::CloudConfig,
}

impl ContainerFiles {
    /// The entries of `config` that target containers.
    pub fn new(config: &ros_config::CloudConfig) -> Self {
        let mut config = config.clone();
        config.write_files.retain(|f| f.container.is_some());
        ContainerFiles { config }
    }

    /// Write the files meant for `service`, whose task has host pid `pid`.
    pub fn write_for(&self, service: &str, pid: u32) {
        let mut mine = self.config.clone();
        mine.write_files
            .retain(|f| f.container.as_ref().is_some_and(|c| c.0 == service));
        if mine.write_files.is_empty() {
            return;
        }
        for f in &mut mine.write_files {
            f.container = None;
        }
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let mut report = Report::default();
        ros_cloudinit::apply_write_files(&root, &mine, &ros_cloudinit::SystemHost, &mut report);
        print(&report);
    }
}
