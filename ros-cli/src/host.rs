//! The system `ros` runs on: the root of its well-known paths, its release, and the
//! host's mount namespace. Every command group asks here; none asks another group.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use ros_config::paths;

use crate::CliError;

/// Where the well-known paths are: `/`, or `$ROS_ROOT` (the tests' temporary roots).
pub fn root() -> PathBuf {
    match std::env::var_os(paths::ROOT_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("/"),
    }
}

/// The release line of a manifest: `release<TAB>ros<TAB>VERSION...`.
pub(crate) fn release(manifest: &str) -> Option<&str> {
    manifest.lines().find_map(|line| {
        let mut fields = line.split('\t');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("release"), Some("ros"), Some(v)) if !v.is_empty() => Some(v),
            _ => None,
        }
    })
}

/// The running release, from the manifest.
pub fn running_release(root: &Path) -> Result<String, CliError> {
    let path = paths::under(root, paths::MANIFEST);
    let text = fs::read_to_string(&path)
        .map_err(|e| CliError::failure(format!("reading {}: {e}", path.display())))?;
    release(&text)
        .map(String::from)
        .ok_or_else(|| CliError::failure(format!("{}: no `release` line", path.display())))
}

/// Enter PID 1's mount namespace (the console's differs), where the disks' mounts are.
pub fn enter_host_mount_namespace() -> Result<(), String> {
    let ours = fs::metadata("/proc/self/ns/mnt").map_err(|e| format!("/proc/self/ns/mnt: {e}"))?;
    let host = fs::metadata("/proc/1/ns/mnt")
        .map_err(|e| format!("/proc/1/ns/mnt: {e} (run as root in the host pid namespace)"))?;
    if ours.ino() == host.ino() && ours.dev() == host.dev() {
        return Ok(());
    }
    let ns = File::open("/proc/1/ns/mnt").map_err(|e| format!("/proc/1/ns/mnt: {e}"))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
        format!("entering the host's mount namespace: {e} (needs a privileged console)")
    })
}
