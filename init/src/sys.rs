//! Side-effecting syscalls behind small traits, one per concern.
//!
//! The boot sequence is written against these traits so it can be unit-tested with
//! `Recorder` (tests), which records the calls instead of making them.

use std::fs::File;
use std::io;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use nix::mount::{MntFlags, MsFlags};

/// Mounting and unmounting.
pub trait Mounter {
    /// `mount(2)`.
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `umount2(2)`.
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
}

/// Loading kernel modules.
pub trait ModuleLoader {
    /// `finit_module(2)` of the module file at `path` with `params`. Already loaded is `Ok`.
    fn load(&self, path: &Path, params: &str) -> io::Result<()>;
}

/// The real syscalls.
#[derive(Debug, Default, Clone, Copy)]
pub struct Host;

impl Mounter for Host {
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

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(io::Error::from)
    }
}

impl ModuleLoader for Host {
    fn load(&self, path: &Path, params: &str) -> io::Result<()> {
        let file = File::open(path)?;
        let params = std::ffi::CString::new(params)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in module parameters"))?;
        match nix::kmod::finit_module(&file, &params, nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

/// One recorded call.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A mount: source, target, fstype, flags (bits), data.
    Mount(String, PathBuf, Option<String>, u64, Option<String>),
    /// An unmount.
    Umount(PathBuf),
    /// A module load with its parameters.
    LoadModule(PathBuf, String),
}

/// A fake that records calls; mounts listed in `fail_mounts` fail with EINVAL.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Recorder {
    /// The calls made, in order.
    pub calls: std::sync::Mutex<Vec<Call>>,
    /// Targets whose mount fails.
    pub fail_mounts: Vec<PathBuf>,
}

#[cfg(test)]
impl Recorder {
    /// The calls made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(&self, call: Call) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
}

#[cfg(test)]
impl Mounter for Recorder {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.push(Call::Mount(
            source.to_string(),
            target.to_path_buf(),
            fstype.map(str::to_string),
            flags.bits(),
            data.map(str::to_string),
        ));
        if self.fail_mounts.iter().any(|p| p == target) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn umount(&self, target: &Path, _flags: MntFlags) -> io::Result<()> {
        self.push(Call::Umount(target.to_path_buf()));
        Ok(())
    }
}

#[cfg(test)]
impl ModuleLoader for Recorder {
    fn load(&self, path: &Path, params: &str) -> io::Result<()> {
        self.push(Call::LoadModule(path.to_path_buf(), params.to_string()));
        Ok(())
    }
}
