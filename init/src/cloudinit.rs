//! PID 1's side of cloud-init: the module loader and command runner that
//! `ros_cloudinit` needs, implemented with init's module index and its one reaper.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
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
        // A subreaper loads nothing into the kernel of the machine running it.
        if crate::mode::subreaper() {
            return InitModules { index: None };
        }
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

impl InitModules {
    /// The index, when there is one.
    pub fn index(&self) -> Option<&ModuleIndex> {
        self.index.as_ref()
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

/// The service whose filesystem `runcmd` and the user scripts run in (its busybox, `ros`,
/// the docker CLI and the user engine's socket), as RancherOS ran them in its console.
pub const CONSOLE_SERVICE: &str = "console";

/// How long one `bootcmd` entry may run: the boot waits for it.
pub const BOOTCMD_DEADLINE: Duration = Duration::from_secs(300);
/// How long one `runcmd` entry or user script may run (after the services are up).
pub const RUNCMD_DEADLINE: Duration = Duration::from_secs(3600);

/// The cgroup every command runs in: shutdown kills it first, whatever the commands
/// started, and whatever they did with their process groups.
pub const COMMANDS_CGROUP: &str = "/sys/fs/cgroup/cloud-init";

/// Runs commands as children of PID 1, waited for through the reaper: each in a session
/// (and so a process group) of its own, in [`COMMANDS_CGROUP`], killed with its process
/// group after `deadline`.
pub struct ReaperRunner {
    /// The one reaper.
    pub reaper: Reaper,
    /// How long one command may run.
    pub deadline: Duration,
    /// The host pid of a process (the console's) whose mount namespace, and so root
    /// filesystem, the commands run in; `None`: PID 1's own root.
    pub inside: Option<u32>,
}

impl ReaperRunner {
    /// A runner for `bootcmd`: PID 1's root (nothing else runs yet).
    pub fn for_bootcmd(reaper: Reaper) -> Self {
        ReaperRunner {
            reaper,
            deadline: BOOTCMD_DEADLINE,
            inside: None,
        }
    }

    /// A runner for `runcmd` and the user scripts: in the console's filesystem when its
    /// container runs (`console_pid`, from the supervisor's start hook), else PID 1's root
    /// with a warning.
    pub fn for_runcmd(reaper: Reaper, console_pid: u32) -> Self {
        let inside = (console_pid != 0
            && Path::new(&format!("/proc/{console_pid}/ns/mnt")).exists())
        .then_some(console_pid);
        if inside.is_none() {
            log::warn!(
                "cloud-init: the {CONSOLE_SERVICE} service is not running: runcmd runs in \
                 PID 1's root, which has busybox but no docker CLI"
            );
        }
        ReaperRunner {
            reaper,
            deadline: RUNCMD_DEADLINE,
            inside,
        }
    }
}

impl CommandRunner for ReaperRunner {
    fn problem(&self, line: &str) {
        log::error!("{line}");
    }

    fn run(&self, inv: &Invocation) -> Result<RunExit, String> {
        if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("not run: the machine is shutting down".into());
        }
        let root = match self.inside {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/root")),
            None => PathBuf::from("/"),
        };
        let mut cmd = inv.command_in(&root).map_err(|e| e.to_string())?;
        // Opened here, used in the child between fork and exec (O_CLOEXEC: the program
        // does not inherit them).
        let mnt_ns = match self.inside {
            Some(pid) => Some(
                File::open(format!("/proc/{pid}/ns/mnt"))
                    .map_err(|e| format!("entering the {CONSOLE_SERVICE}'s namespace: {e}"))?,
            ),
            None => None,
        };
        let procs = commands_cgroup().and_then(|dir| {
            OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(|e| log::warn!("cloud-init: {}: {e}", dir.display()))
                .ok()
        });
        let ns_fd = mnt_ns.as_ref().map(|f| f.as_raw_fd());
        let procs_fd = procs.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls on descriptors the parent keeps open until
        // spawn() returns; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = procs_fd {
                    // "0": the writing process itself. Best-effort, like the open above.
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                }
                if let Some(fd) = ns_fd {
                    if libc::setns(fd, libc::CLONE_NEWNS) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::chdir(c"/".as_ptr()) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let (pid, rx) = self.reaper.spawn(&mut cmd).map_err(|e| e.to_string())?;
        drop((mnt_ns, procs));
        let exit = match rx.recv_timeout(self.deadline) {
            Ok(exit) => exit,
            Err(RecvTimeoutError::Timeout) => {
                // Its process group is its session (setsid above).
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                let _ = rx.recv_timeout(Duration::from_secs(10));
                return Err(format!(
                    "still running after {} s: killed, with its process group",
                    self.deadline.as_secs()
                ));
            }
            Err(RecvTimeoutError::Disconnected) => return Err("the reaper went away".into()),
        };
        Ok(match exit {
            Exit::Code(c) => RunExit::Code(c),
            Exit::Signal(s) => RunExit::Signal(s),
        })
    }
}

/// [`COMMANDS_CGROUP`], or none for a subreaper: the machine's cloud-init cgroup is not
/// its to make or to kill (the shutdown's TERM of its descendants reaches its commands).
fn commands_cgroup_path() -> Option<&'static Path> {
    (!crate::mode::subreaper()).then_some(Path::new(COMMANDS_CGROUP))
}

/// [`commands_cgroup_path`], created if missing; `None` (with a warning) when it cannot be.
fn commands_cgroup() -> Option<PathBuf> {
    let dir = commands_cgroup_path()?.to_path_buf();
    match std::fs::create_dir(&dir) {
        Ok(()) => Some(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(dir),
        Err(e) => {
            log::warn!("cloud-init: creating {}: {e}", dir.display());
            None
        }
    }
}

/// Set by [`kill_commands`]: no command starts after it.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Kill every command still running (`runcmd`, user scripts, what they started), and
/// start no more: the first step of a shutdown, so that nothing they do holds it.
pub fn kill_commands() {
    STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
    let Some(dir) = commands_cgroup_path() else {
        return;
    };
    let kill = dir.join("cgroup.kill");
    if kill.exists() {
        if let Err(e) = std::fs::write(&kill, "1") {
            log::warn!("shutdown: {}: {e}", kill.display());
        }
    }
}

/// Log what a command report applied (its problems were printed as they happened, by
/// [`ReaperRunner`]).
pub fn print_commands(report: &Report) {
    for line in report.applied_lines() {
        log::debug!("{line}");
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
    crate::paths::at(ros_cloudinit::paths::COMMAND_LOG)
}

/// The host cloud-init acts on: the machine ([`ros_cloudinit::SystemHost`]). In subreaper
/// mode, what would change the machine running the test (its name, its mounts, its
/// sysctls) is refused with an error that says so; files are written below the root.
pub struct BootHost;

impl BootHost {
    /// Err in subreaper mode (the caller names the operation).
    fn machine_only(&self) -> std::io::Result<()> {
        if crate::mode::subreaper() {
            return Err(std::io::Error::other(
                "not done in subreaper mode (it would change the machine running it)",
            ));
        }
        Ok(())
    }
}

impl ros_cloudinit::Host for BootHost {
    fn set_hostname(&self, name: &str) -> std::io::Result<()> {
        self.machine_only()?;
        ros_cloudinit::SystemHost.set_hostname(name)
    }

    fn write_file(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        owner: ros_cloudinit::Owner,
    ) -> std::io::Result<()> {
        ros_cloudinit::SystemHost.write_file(path, bytes, mode, owner)
    }

    fn create_dir(
        &self,
        path: &Path,
        mode: u32,
        owner: ros_cloudinit::Owner,
    ) -> std::io::Result<()> {
        ros_cloudinit::SystemHost.create_dir(path, mode, owner)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        ros_cloudinit::SystemHost.remove(path)
    }

    fn write_file_in_root(
        &self,
        root: &ros_cloudinit::ContainerRoot,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        owner: ros_cloudinit::Owner,
    ) -> Result<(), ros_cloudinit::ConfinedError> {
        ros_cloudinit::SystemHost.write_file_in_root(root, path, bytes, mode, owner)
    }

    fn update_home_file(
        &self,
        home: &Path,
        file: &ros_cloudinit::HomeFile<'_>,
        owner: ros_cloudinit::Owner,
        update: &dyn Fn(&str) -> String,
    ) -> Result<(), ros_cloudinit::ConfinedError> {
        ros_cloudinit::SystemHost.update_home_file(home, file, owner, update)
    }

    fn sysctl(&self, path: &Path, value: &str) -> std::io::Result<()> {
        self.machine_only()?;
        ros_cloudinit::SystemHost.sysctl(path, value)
    }

    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        flags: nix::mount::MsFlags,
        data: Option<&str>,
    ) -> std::io::Result<()> {
        self.machine_only()?;
        ros_cloudinit::SystemHost.mount(source, target, fstype, flags, data)
    }

    fn umount(&self, target: &Path) -> std::io::Result<()> {
        self.machine_only()?;
        ros_cloudinit::SystemHost.umount(target)
    }
}

/// `write_files` entries with `container: NAME`, written into that service's container
/// (through `/proc/<pid>/root`, so owners resolve against the container's own
/// `/etc/passwd`) each time the service starts, as RancherOS did. A reload of the config
/// replaces them ([`ContainerFiles::replace`]); none until the first.
#[derive(Default)]
pub struct ContainerFiles {
    files: std::sync::RwLock<Vec<ros_config::schema::WriteFile>>,
}

impl ContainerFiles {
    /// From now on, the entries of `config` that target containers.
    pub fn replace(&self, config: &ros_config::CloudConfig) {
        let files = ros_cloudinit::container_files(config);
        *self.files.write().unwrap_or_else(|e| e.into_inner()) = files;
    }

    /// The entries for `service`.
    fn for_service(&self, service: &str) -> Vec<ros_config::schema::WriteFile> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|f| f.container.as_ref().is_some_and(|c| c.0 == service))
            .cloned()
            .collect()
    }

    /// Write the files meant for `service`, whose task has host pid `pid`, inside its root:
    /// paths with `..` are refused and the rest resolved as if `/proc/PID/root` were `/`
    /// (`apply_container_write_files`), so neither the entry nor a symlink in the image
    /// can put a file on the host.
    pub fn write_for(&self, service: &str, pid: u32) {
        let mine = self.for_service(service);
        if mine.is_empty() {
            return;
        }
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let mut report = Report::default();
        ros_cloudinit::apply_container_write_files(
            &root,
            &mine,
            &ros_cloudinit::SystemHost,
            &mut report,
        );
        print(&report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ros_config::CloudConfig {
        let layer = ros_config::Layer::parse("t.yml", text).unwrap();
        ros_config::resolve(vec![layer], ros_config::Mode::Boot).config
    }

    #[test]
    fn a_reload_replaces_the_files_for_containers() {
        let files = ContainerFiles::default();
        files.replace(&config(
            "write_files:\n- {path: /etc/ntp.conf, content: a, container: ntp}\n\
             - {path: /etc/host-only, content: b}\n",
        ));
        let paths = |service: &str| -> Vec<String> {
            files
                .for_service(service)
                .iter()
                .map(|f| f.path.to_string())
                .collect()
        };
        assert_eq!(paths("ntp"), ["/etc/ntp.conf"]);
        assert!(paths("syslog").is_empty());
        files.replace(&config(
            "write_files:\n- {path: /etc/syslog.conf, content: c, container: syslog}\n",
        ));
        assert!(paths("ntp").is_empty());
        assert_eq!(paths("syslog"), ["/etc/syslog.conf"]);
    }
}
