//! Recording fakes of [`Host`], [`ModuleLoader`] and [`CommandRunner`] for tests (here and
//! in init). They record every call in order and fail where told to. [`RecordingHost`]
//! writes files and directories through to the real filesystem (tests give it paths in a
//! temp dir), so that what cloud-init reads back is what it wrote; hostname, sysctl and
//! mount calls are only recorded.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::confined::{ConfinedError, ContainerRoot, HomeFile};
use crate::host::{CommandRunner, Exit, Host, Invocation, ModuleLoader, MsFlags, Owner};

/// One recorded [`Host`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `set_hostname`.
    SetHostname(String),
    /// `write_file`.
    WriteFile {
        /// Where.
        path: PathBuf,
        /// What.
        bytes: Vec<u8>,
        /// Mode.
        mode: u32,
        /// Owner.
        owner: Owner,
    },
    /// `create_dir`.
    CreateDir {
        /// Where.
        path: PathBuf,
        /// Mode.
        mode: u32,
        /// Owner.
        owner: Owner,
    },
    /// `remove`.
    Remove(PathBuf),
    /// `write_file_in_root`.
    WriteFileInRoot {
        /// The container root (as the host sees it).
        root: PathBuf,
        /// The path below it (relative).
        path: PathBuf,
        /// What.
        bytes: Vec<u8>,
        /// Mode.
        mode: u32,
        /// Owner.
        owner: Owner,
    },
    /// `update_home_file`.
    UpdateHomeFile {
        /// The home directory.
        home: PathBuf,
        /// The directory in it, and its mode.
        dir: (String, u32),
        /// The file in that, and its mode.
        file: (String, u32),
        /// Owner of both.
        owner: Owner,
        /// What the file holds afterwards.
        bytes: Vec<u8>,
    },
    /// `sysctl`.
    Sysctl {
        /// The /proc/sys file.
        path: PathBuf,
        /// The value written.
        value: String,
    },
    /// `mount`.
    Mount {
        /// Device or source.
        source: String,
        /// Mount point.
        target: PathBuf,
        /// Filesystem type.
        fstype: Option<String>,
        /// Flag bits.
        flags: u64,
        /// Filesystem options.
        data: Option<String>,
    },
    /// `umount`.
    Umount(PathBuf),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn denied(what: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: Permission denied (fake)", what.display()),
    )
}

/// A [`Host`] that records calls. Calls about a path in `fail` fail (after being recorded);
/// `fail_hostname` makes `set_hostname` fail; a mount of a source in `mount_contents`
/// creates those files (relative paths) under the target, as if the device held them.
#[derive(Debug, Default)]
pub struct RecordingHost {
    calls: Mutex<Vec<Call>>,
    /// Paths whose calls fail with "Permission denied".
    pub fail: Vec<PathBuf>,
    /// Whether `set_hostname` fails.
    pub fail_hostname: bool,
    /// Files a mounted source shows under its mount point.
    pub mount_contents: BTreeMap<String, Vec<(PathBuf, Vec<u8>)>>,
    populated: Mutex<HashSet<PathBuf>>,
}

impl RecordingHost {
    /// A fake where everything succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The `write_file` calls for `path`.
    pub fn writes_to(&self, path: &Path) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches!(c, Call::WriteFile { path: p, .. } if p == path))
            .collect()
    }

    fn record(&self, call: Call, path: Option<&Path>) -> io::Result<()> {
        lock(&self.calls).push(call);
        match path {
            Some(p) if self.fail.iter().any(|f| f == p) => Err(denied(p)),
            _ => Ok(()),
        }
    }
}

impl Host for RecordingHost {
    fn set_hostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::SetHostname(name.to_string()), None)?;
        if self.fail_hostname {
            return Err(io::Error::from_raw_os_error(nix::libc::EPERM));
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> io::Result<()> {
        self.record(
            Call::WriteFile {
                path: path.to_path_buf(),
                bytes: bytes.to_vec(),
                mode,
                owner,
            },
            Some(path),
        )?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, bytes)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn create_dir(&self, path: &Path, mode: u32, owner: Owner) -> io::Result<()> {
        self.record(
            Call::CreateDir {
                path: path.to_path_buf(),
                mode,
                owner,
            },
            Some(path),
        )?;
        fs::create_dir_all(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Remove(path.to_path_buf()), Some(path))?;
        let result = if path.is_dir() {
            fs::remove_dir(path)
        } else {
            fs::remove_file(path)
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
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
        let full = root.path().join(path);
        let call = Call::WriteFileInRoot {
            root: root.path().to_path_buf(),
            path: path.to_path_buf(),
            bytes: bytes.to_vec(),
            mode,
            owner,
        };
        self.record(call, Some(&full))
            .map_err(|source| ConfinedError::Io {
                action: "writing",
                path: full.clone(),
                source,
            })?;
        // Written for real, resolved inside the root as the real host does (a plain write
        // would follow the root's absolute symlinks out of the test's temp dir), but owned
        // by whoever runs the test: only root may give files away.
        let me = Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        };
        root.write_file(path, bytes, mode, me)
    }

    fn update_home_file(
        &self,
        home: &Path,
        file: &HomeFile<'_>,
        owner: Owner,
        update: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfinedError> {
        let path = home.join(file.dir).join(file.name);
        let fail = |source| ConfinedError::Io {
            action: "writing",
            path: path.clone(),
            source,
        };
        let existing = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(fail(e)),
        };
        let text = update(&existing);
        let call = Call::UpdateHomeFile {
            home: home.to_path_buf(),
            dir: (file.dir.to_string(), file.dir_mode),
            file: (file.name.to_string(), file.mode),
            owner,
            bytes: text.clone().into_bytes(),
        };
        self.record(call, Some(&path)).map_err(fail)?;
        // Written for real without following symlinks, as the real host does, but owned by
        // whoever runs the test: only root may give files away.
        let me = Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        };
        crate::confined::update_home_file(home, file, me, &|_| text.clone())
    }

    fn sysctl(&self, path: &Path, value: &str) -> io::Result<()> {
        self.record(
            Call::Sysctl {
                path: path.to_path_buf(),
                value: value.to_string(),
            },
            Some(path),
        )
    }

    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.record(
            Call::Mount {
                source: source.to_string(),
                target: target.to_path_buf(),
                fstype: fstype.map(str::to_string),
                flags: flags.bits(),
                data: data.map(str::to_string),
            },
            Some(target),
        )?;
        if let Some(files) = self.mount_contents.get(source) {
            for (rel, bytes) in files {
                let p = target.join(rel);
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::write(&p, bytes)?;
            }
            lock(&self.populated).insert(target.to_path_buf());
        }
        Ok(())
    }

    fn umount(&self, target: &Path) -> io::Result<()> {
        self.record(Call::Umount(target.to_path_buf()), Some(target))?;
        // What a fake mount showed goes away with it, as on a real unmount.
        if lock(&self.populated).remove(target) {
            for entry in fs::read_dir(target)? {
                let p = entry?.path();
                if p.is_dir() {
                    fs::remove_dir_all(&p)?;
                } else {
                    fs::remove_file(&p)?;
                }
            }
        }
        Ok(())
    }
}

/// A [`ModuleLoader`] that records `(name, params)`; names in `fail` fail.
#[derive(Debug, Default)]
pub struct RecordingModules {
    loaded: Mutex<Vec<(String, String)>>,
    /// Module names that fail to load.
    pub fail: Vec<String>,
}

impl RecordingModules {
    /// A loader where the modules named in `fail` fail and the others load.
    pub fn failing(fail: &[&str]) -> Self {
        RecordingModules {
            fail: fail.iter().map(|s| s.to_string()).collect(),
            ..Self::default()
        }
    }

    /// The loads asked for, in order.
    pub fn loaded(&self) -> Vec<(String, String)> {
        lock(&self.loaded).clone()
    }
}

impl ModuleLoader for RecordingModules {
    fn load_module(&self, name: &str, params: &str) -> Result<(), String> {
        lock(&self.loaded).push((name.to_string(), params.to_string()));
        if self.fail.iter().any(|f| f == name) {
            return Err(format!("module {name}: not found in modules.dep (fake)"));
        }
        Ok(())
    }
}

/// A [`CommandRunner`] that records invocations and runs nothing. The first entry of
/// `results` whose key occurs in the space-joined argv decides the outcome; otherwise
/// `Exit::Code(0)`.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    runs: Mutex<Vec<Invocation>>,
    /// `(argv substring, outcome)`.
    pub results: Vec<(String, Result<Exit, String>)>,
}

impl RecordingRunner {
    /// A runner with these `(argv substring, outcome)` rules.
    pub fn with_results(results: Vec<(String, Result<Exit, String>)>) -> Self {
        RecordingRunner {
            results,
            ..Self::default()
        }
    }

    /// The invocations so far, in order.
    pub fn runs(&self) -> Vec<Invocation> {
        lock(&self.runs).clone()
    }

    /// Just the argvs, in order.
    pub fn argvs(&self) -> Vec<Vec<String>> {
        self.runs().into_iter().map(|i| i.argv).collect()
    }
}

impl CommandRunner for RecordingRunner {
    fn run(&self, invocation: &Invocation) -> Result<Exit, String> {
        lock(&self.runs).push(invocation.clone());
        let line = invocation.argv.join(" ");
        self.results
            .iter()
            .find(|(key, _)| line.contains(key.as_str()))
            .map_or(Ok(Exit::Code(0)), |(_, r)| r.clone())
    }
}
