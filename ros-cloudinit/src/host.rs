//! The side effects cloud-init has on the host, behind small traits: [`Host`] (files,
//! hostname, sysctl, mounts), [`ModuleLoader`] (kernel modules, implemented by init) and
//! [`CommandRunner`] (running commands, implemented by init with its reaper). Real
//! implementations: [`SystemHost`] (std and nix) and [`StdRunner`] (not for PID 1).
//! The recording fakes live in `fake` (feature `test-util`).

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub use nix::mount::MsFlags;

use crate::confined::{ConfinedError, ContainerRoot, HomeFile};

pub use crate::owner::Owner;

/// Files, hostname, sysctl and mounts. Every path is absolute and already placed below the
/// root the caller was given.
pub trait Host {
    /// `sethostname(2)`.
    fn set_hostname(&self, name: &str) -> io::Result<()>;
    /// Replace `path` atomically with `bytes`, owned by `owner` with mode `mode` (set even
    /// when the file exists). Missing parent directories are created (0755, owned by the
    /// caller).
    fn write_file(&self, path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> io::Result<()>;
    /// Create `path` (and missing parents, 0755) and give it `mode` and `owner`, also when it
    /// already exists.
    fn create_dir(&self, path: &Path, mode: u32, owner: Owner) -> io::Result<()>;
    /// Remove a file or an empty directory; one that does not exist is `Ok`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Replace `path` (relative: see [`crate::confined::container_path`]) inside the
    /// container root `root` with `bytes`, owned by `owner` with mode `mode`, resolving it
    /// as if `root` were `/` ([`ContainerRoot::write_file`]).
    fn write_file_in_root(
        &self,
        root: &ContainerRoot,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        owner: Owner,
    ) -> Result<(), ConfinedError>;
    /// Replace `file` in the home directory `home` with what `update` makes of its text,
    /// never following a symlink the user planted there ([`crate::confined::update_home_file`]).
    fn update_home_file(
        &self,
        home: &Path,
        file: &HomeFile<'_>,
        owner: Owner,
        update: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfinedError>;
    /// Write `value` into the sysctl file `path` (under `/proc/sys`).
    fn sysctl(&self, path: &Path, value: &str) -> io::Result<()>;
    /// `mount(2)`.
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `umount(2)`.
    fn umount(&self, target: &Path) -> io::Result<()>;
}

/// Loading kernel modules by name. init implements it with its `modules.dep` index.
pub trait ModuleLoader {
    /// Load module `name` (and what it depends on) with `params` (`""` for none, else
    /// e.g. `max_part=8`). Already loaded or built in is `Ok`.
    fn load_module(&self, name: &str, params: &str) -> Result<(), String>;
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    /// Exited with status 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// One command to run: what `bootcmd`, `runcmd` and the user scripts hand to a
/// [`CommandRunner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// What it is, for the log and the report (`runcmd[2]`, a script's path).
    pub label: String,
    /// Program and arguments (`argv[0]` is looked up in `PATH`).
    pub argv: Vec<String>,
    /// Variables added to the inherited environment (`rancher.environment`, `PATH`).
    pub env: Vec<(String, String)>,
    /// File that receives a header line, then the command's stdout and stderr (appended).
    pub log: PathBuf,
}

impl Invocation {
    /// A [`Command`] ready to spawn: environment set, stdin from `/dev/null`, working
    /// directory `/`, stdout and stderr appended to [`Invocation::log`] (created 0600 with
    /// its directory if missing) after a header line naming the command. The runner only
    /// spawns it and waits for the exit in its own way.
    pub fn command(&self) -> io::Result<Command> {
        self.command_in(Path::new("/"))
    }

    /// [`Invocation::command`] for a command that will run with `root` as its `/` (a
    /// container's root, seen as `/proc/PID/root`): `argv[0]` is looked up in the `PATH`
    /// of [`Invocation::env`] below `root`, and the command runs the program by the path
    /// it has there. A program that is not there is an error naming it and the `PATH`.
    pub fn command_in(&self, root: &Path) -> io::Result<Command> {
        let Some((name, args)) = self.argv.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        };
        let program = self.resolve(root, name)?;
        if let Some(dir) = self.log.parent() {
            fs::create_dir_all(dir).map_err(|e| annotate(e, "creating", dir))?;
        }
        // `/var/log` is shared with the syslog service: a symlink or a FIFO planted at
        // the log's name must not redirect (or block) what root writes here.
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(&self.log)
            .map_err(|e| annotate(e, "opening", &self.log))?;
        if !log.metadata()?.is_file() {
            return Err(annotate(
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
                "opening",
                &self.log,
            ));
        }
        writeln!(log, "cloud-init: {}: {:?}", self.label, self.argv)
            .map_err(|e| annotate(e, "writing", &self.log))?;
        let mut cmd = Command::new(program);
        // argv[0] as it was written (`sleep`, not `/bin/sleep`): busybox picks its applet by it.
        std::os::unix::process::CommandExt::arg0(&mut cmd, name);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(cmd)
    }
}

impl Invocation {
    /// `PATH` as the command will see it: the last `PATH` of [`Invocation::env`], else
    /// [`crate::DEFAULT_PATH`].
    pub fn path_var(&self) -> &str {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(crate::DEFAULT_PATH, |(_, v)| v.as_str())
    }

    /// Where `name` is, as a path below `/` of the command's root `root`: itself when it
    /// holds a `/`, else the first executable file `DIR/name` for the `DIR`s of
    /// [`Invocation::path_var`]. Resolving here (rather than letting exec search) gives a
    /// missing program one clear error, and spawns with an absolute path.
    fn resolve(&self, root: &Path, name: &str) -> io::Result<PathBuf> {
        // A symlink counts without following it: below /proc/PID/root an absolute link
        // (busybox's applets) would resolve against PID 1's root, not the container's;
        // exec, from inside the container, follows it right.
        let executable = |p: &Path| {
            let below = root.join(p.strip_prefix("/").unwrap_or(p));
            fs::symlink_metadata(below).is_ok_and(|m| {
                m.file_type().is_symlink() || (m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        };
        if name.contains('/') {
            let p = PathBuf::from(name);
            return if !p.is_absolute() || executable(&p) {
                Ok(p)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: no such executable file"),
                ))
            };
        }
        self.path_var()
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| Path::new(d).join(name))
            .find(|p| executable(p))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: command not found in PATH {}", self.path_var()),
                )
            })
    }
}

fn annotate(e: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{action} {}: {e}", path.display()))
}

/// Running commands to completion. PID 1 must implement this with its reaper: spawn
/// [`Invocation::command`] after registering interest in the child's exit, then wait for
/// that exit. Never `Child::wait`/`Command::status` in PID 1 (they race the reaper).
pub trait CommandRunner {
    /// Run `invocation` to completion. `Err` when it could not be started (message names
    /// the program).
    fn run(&self, invocation: &Invocation) -> Result<Exit, String>;

    /// A problem line (`cloud-init: runcmd ...: ...`) as it happens, before the report is
    /// complete: a later command may run for as long as the machine is up. Nothing by
    /// default.
    fn problem(&self, _line: &str) {}
}

/// [`CommandRunner`] with `Command::status`: for tests and tools that are not PID 1.
/// Do not use it in init: it waits on its own child and so races init's reaper.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdRunner;

impl CommandRunner for StdRunner {
    fn run(&self, invocation: &Invocation) -> Result<Exit, String> {
        let program = invocation.argv.first().map_or("", String::as_str);
        let status = invocation
            .command()
            .and_then(|mut c| c.status())
            .map_err(|e| format!("running {program}: {e}"))?;
        Ok(match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Code(-1),
        })
    }
}

/// The real [`Host`]: std for files, nix for hostname and mounts.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemHost;

static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Write a temporary file next to `path`, set owner then mode (chown clears set-id bits),
/// fsync, rename it over `path`, fsync the directory. On error `path` is untouched and the
/// temporary file is removed. Unlike `ros_config::write_atomic`, the mode and owner are
/// imposed even on an existing file: `write_files` says what they must be.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| annotate(e, "creating", &dir))?;
    let mut created = None;
    for _ in 0..64 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        // A leading dot keeps it out of `cloud-config.d/*.yml` and of globbing readers.
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{n}",
            name.to_string_lossy(),
            std::process::id()
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => {
                created = Some((tmp, f));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(annotate(e, "creating", &tmp)),
        }
    }
    let Some((tmp, mut file)) = created else {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: no free temporary name", dir.display()),
        ));
    };
    let written = (|| {
        file.write_all(bytes)?;
        std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))?;
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
        file.sync_all()
    })();
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(annotate(e, "writing", &tmp));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(annotate(e, "renaming over", path));
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| annotate(e, "syncing", &dir))
}

impl Host for SystemHost {
    fn set_hostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn write_file(&self, path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> io::Result<()> {
        write_file_atomic(path, bytes, mode, owner)
    }

    fn create_dir(&self, path: &Path, mode: u32, owner: Owner) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| annotate(e, "creating", parent))?;
        }
        match DirBuilder::new().mode(mode & 0o7777).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(annotate(e, "creating", path)),
        }
        std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
            .map_err(|e| annotate(e, "changing the owner of", path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| annotate(e, "changing the mode of", path))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let result = match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => fs::remove_dir(path),
            Ok(_) => fs::remove_file(path),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(annotate(e, "removing", path)),
            _ => Ok(()),
        }
    }

    fn write_file_in_root(
        &self,
        root: &ContainerRoot,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        owner: Owner,
    ) -> Result<(), ConfinedError> {
        root.write_file(path, bytes, mode, owner)
    }

    fn update_home_file(
        &self,
        home: &Path,
        file: &HomeFile<'_>,
        owner: Owner,
        update: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfinedError> {
        crate::confined::update_home_file(home, file, owner, update)
    }

    fn sysctl(&self, path: &Path, value: &str) -> io::Result<()> {
        // No create, no truncate, no rename: /proc/sys files exist or the key is wrong.
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|e| annotate(e, "writing", path))
    }

    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(Some(source), target, fstype, flags, data).map_err(io::Error::from)
    }

    fn umount(&self, target: &Path) -> io::Result<()> {
        nix::mount::umount2(target, nix::mount::MntFlags::empty()).map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owner {
        Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn atomic_write_imposes_mode_creates_parents_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("etc/app/conf");
        SystemHost.write_file(&p, b"one", 0o640, me()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(mode_of(&p), 0o640);
        // An existing file gets the requested mode, not its old one.
        SystemHost.write_file(&p, b"two", 0o600, me()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode_of(&p), 0o600);
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("conf")]);
    }

    #[test]
    fn atomic_write_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), "x").unwrap();
        let p = dir.path().join("file/below");
        let err = SystemHost.write_file(&p, b"x", 0o644, me()).unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
        assert!(SystemHost
            .write_file(Path::new("/"), b"x", 0o644, me())
            .is_err());
    }

    #[test]
    fn create_dir_sets_mode_on_existing_dir_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("home/rancher/.ssh");
        SystemHost.create_dir(&d, 0o700, me()).unwrap();
        assert_eq!(mode_of(&d), 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        SystemHost.create_dir(&d, 0o700, me()).unwrap();
        assert_eq!(mode_of(&d), 0o700);
        SystemHost.remove(&d).unwrap();
        assert!(!d.exists());
        SystemHost.remove(&d).unwrap();
    }

    #[test]
    fn sysctl_writes_an_existing_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ip_forward");
        fs::write(&p, "0\n").unwrap();
        SystemHost.sysctl(&p, "1").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "1\n");
        let missing = dir.path().join("nope");
        let err = SystemHost.sysctl(&missing, "1").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(!missing.exists());
    }

    #[test]
    fn a_log_planted_as_a_symlink_or_fifo_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("cloud-config.yml");
        fs::write(&target, "hostname: kept\n").unwrap();
        let log = dir.path().join("cloud-init.log");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        let inv = Invocation {
            label: "runcmd[0]".into(),
            argv: vec!["sh".into(), "-c".into(), "echo written".into()],
            env: vec![],
            log: log.clone(),
        };
        let err = inv.command().unwrap_err();
        assert!(err.to_string().contains("cloud-init.log"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "hostname: kept\n");
        fs::remove_file(&log).unwrap();
        nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A FIFO with no reader: ENXIO at once (O_NONBLOCK), never a blocked PID 1.
        let err = inv.command().unwrap_err();
        assert!(err.to_string().contains("cloud-init.log"), "{err}");
    }

    #[test]
    fn std_runner_captures_output_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log/cloud-init.log");
        let inv = Invocation {
            label: "runcmd[0]".into(),
            argv: vec!["sh".into(), "-c".into(), "echo $GREETING; exit 3".into()],
            env: vec![("GREETING".into(), "hello".into())],
            log: log.clone(),
        };
        assert_eq!(StdRunner.run(&inv), Ok(Exit::Code(3)));
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("cloud-init: runcmd[0]: "), "{text}");
        assert!(text.ends_with("hello\n"), "{text}");
        let missing = Invocation {
            argv: vec!["/no/such/program".into()],
            ..inv
        };
        let err = StdRunner.run(&missing).unwrap_err();
        assert!(err.contains("/no/such/program"), "{err}");
    }

    fn invocation(argv: &[&str], path: &str) -> Invocation {
        Invocation {
            label: "runcmd[0]".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), path.into())],
            log: PathBuf::from("/dev/null"),
        }
    }

    #[test]
    fn argv0_is_found_on_the_path_below_the_commands_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        fs::create_dir_all(root.path().join("bin")).unwrap();
        fs::write(root.path().join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            root.path().join("usr/bin/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // A file that is not executable is passed over; an (absolute) applet symlink counts.
        fs::write(root.path().join("bin/tool"), "").unwrap();
        std::os::unix::fs::symlink("/bin/busybox", root.path().join("bin/sleep")).unwrap();
        let inv = invocation(&["tool"], "/bin:/usr/bin");
        assert_eq!(
            inv.resolve(root.path(), "tool").unwrap(),
            Path::new("/usr/bin/tool")
        );
        assert_eq!(
            inv.resolve(root.path(), "sleep").unwrap(),
            Path::new("/bin/sleep")
        );
        let err = inv.resolve(root.path(), "nope").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            "nope: command not found in PATH /bin:/usr/bin"
        );
        assert!(inv.resolve(root.path(), "/usr/bin/missing").is_err());
    }

    #[test]
    fn a_missing_program_is_an_error_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = invocation(&["ros-no-such-program", "x"], "/nonexistent");
        inv.log = dir.path().join("log");
        let err = StdRunner.run(&inv).unwrap_err();
        assert!(
            err.contains("command not found in PATH /nonexistent"),
            "{err}"
        );
        // The default PATH when none is given.
        inv.env.clear();
        assert_eq!(inv.path_var(), crate::DEFAULT_PATH);
    }
}
