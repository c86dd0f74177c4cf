//! `mounts`: fstab-like rows `[device, mountpoint, fstype, options]` mounted at boot.
//! Owns turning an options string into `mount(2)` flags and data; every mount goes through
//! [`Host`]. A row that fails is reported and the others are still mounted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ros_config::schema::{CloudConfig, MountRow};

use crate::host::{Host, MsFlags, Owner};
use crate::paths::{self, under};
use crate::report::{Report, Step};

/// An options string split for `mount(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags (`ro`, `nosuid`, `bind`, ...).
    pub flags: MsFlags,
    /// Filesystem-specific options, comma-separated (`size=64m,mode=0755`).
    pub data: Option<String>,
    /// `noauto`: the row is not mounted at boot.
    pub noauto: bool,
}

/// Split fstab options into flags and data. `defaults`, `auto`, `nofail`, `user`, `_netdev`,
/// `x-*` and `comment=` are fstab-only and dropped; unknown words go to the data.
pub fn parse_mount_options(options: &str) -> MountOptions {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut noauto = false;
    for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (set, clear) = match opt {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "noauto" => {
                noauto = true;
                continue;
            }
            "defaults" | "auto" | "nofail" | "user" | "nouser" | "users" | "owner" | "group"
            | "_netdev" => continue,
            o if o.starts_with("x-") || o.starts_with("comment=") => continue,
            other => {
                data.push(other);
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    MountOptions {
        flags,
        data: (!data.is_empty()).then(|| data.join(",")),
        noauto,
    }
}

/// `LABEL=`/`UUID=`/`PARTUUID=` as the udev symlink path; anything else as given.
fn device_path(device: &str) -> String {
    for (prefix, dir) in [
        ("LABEL=", "/dev/disk/by-label/"),
        ("UUID=", "/dev/disk/by-uuid/"),
        ("PARTUUID=", "/dev/disk/by-partuuid/"),
    ] {
        if let Some(rest) = device.strip_prefix(prefix) {
            return format!("{dir}{rest}");
        }
    }
    device.to_string()
}

/// Mount points listed in a mountinfo file (octal escapes undone); empty if unreadable.
pub fn mounted_targets(mountinfo: &Path) -> Vec<PathBuf> {
    fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystems to try for fstype `auto`: the block-device ones in `/proc/filesystems`.
fn auto_fstypes(root: &Path) -> Vec<String> {
    fs::read_to_string(under(root, paths::PROC_FILESYSTEMS))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .filter_map(|l| l.split_whitespace().next())
        // fuseblk needs a daemon; never what `auto` means here.
        .filter(|f| *f != "fuseblk")
        .map(str::to_string)
        .collect()
}

/// Mount every `mounts` row: create a missing mount point (0755), skip rows already
/// mounted there and `noauto` rows. fstype `auto` (or none) tries the kernel's
/// block filesystems in turn.
pub fn apply_mounts(root: &Path, config: &CloudConfig, host: &dyn Host, report: &mut Report) {
    if config.mounts.is_empty() {
        return;
    }
    let mounted = mounted_targets(&under(root, paths::PROC_MOUNTINFO));
    for (i, row) in config.mounts.iter().enumerate() {
        if let Err(e) = mount_row(root, row, &mounted, host, report) {
            let subject = row
                .field(1)
                .map_or_else(|| format!("mounts[{i}]"), str::to_string);
            report.problem(Step::Mounts, subject, e);
        }
    }
}

fn mount_row(
    root: &Path,
    row: &MountRow,
    mounted: &[PathBuf],
    host: &dyn Host,
    report: &mut Report,
) -> Result<(), String> {
    let (Some(device), Some(mountpoint)) = (row.field(0), row.field(1)) else {
        return Err("a row needs at least [device, mountpoint]".into());
    };
    let fstype = row.field(2).filter(|f| !f.is_empty());
    if fstype == Some("swap") || mountpoint == "none" || mountpoint == "swap" {
        return Err("swap is not supported".into());
    }
    if !mountpoint.starts_with('/') {
        return Err("the mount point must be an absolute path".into());
    }
    let options = parse_mount_options(row.field(3).unwrap_or("defaults"));
    if options.noauto {
        report.done(Step::Mounts, mountpoint, "noauto; not mounted");
        return Ok(());
    }
    let remount = options.flags.contains(MsFlags::MS_REMOUNT);
    if !remount && mounted.iter().any(|m| m == Path::new(mountpoint)) {
        report.done(Step::Mounts, mountpoint, "already mounted");
        return Ok(());
    }
    let target = under(root, mountpoint);
    if !target.exists() {
        host.create_dir(&target, 0o755, Owner::ROOT)
            .map_err(|e| format!("creating {}: {e}", target.display()))?;
    }
    let source = device_path(device);
    let bind = options.flags.contains(MsFlags::MS_BIND);
    let candidates: Vec<Option<String>> = match fstype {
        _ if bind || remount => vec![None],
        Some("auto") | None => auto_fstypes(root).into_iter().map(Some).collect(),
        Some(f) => vec![Some(f.to_string())],
    };
    if candidates.is_empty() {
        return Err(format!(
            "fstype auto: no filesystems listed in {}",
            under(root, paths::PROC_FILESYSTEMS).display()
        ));
    }
    let mut last: Option<(Option<String>, io::Error)> = None;
    for fs in candidates {
        match host.mount(
            &source,
            &target,
            fs.as_deref(),
            options.flags,
            options.data.as_deref(),
        ) {
            Ok(()) => {
                report.done(
                    Step::Mounts,
                    mountpoint,
                    format!("{source} ({})", fs.as_deref().unwrap_or("bind")),
                );
                return Ok(());
            }
            Err(e) => last = Some((fs, e)),
        }
    }
    let (fs, e) = last.unwrap_or((None, io::Error::other("not tried")));
    Err(format!(
        "mounting {source} ({}) on {}: {e}",
        fs.as_deref().unwrap_or("no fstype"),
        target.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_table() {
        let o = parse_mount_options("defaults,nofail,ro,noexec,size=64m,mode=0755,x-systemd.foo");
        assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC);
        assert_eq!(o.data.as_deref(), Some("size=64m,mode=0755"));
        assert!(!o.noauto);
        let o = parse_mount_options("ro,rw,rbind");
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(o.data, None);
        assert!(parse_mount_options("noauto").noauto);
        assert_eq!(parse_mount_options("").flags, MsFlags::empty());
    }

    #[test]
    fn devices_and_mountinfo() {
        assert_eq!(device_path("LABEL=data"), "/dev/disk/by-label/data");
        assert_eq!(device_path("/dev/vdb1"), "/dev/vdb1");
        assert_eq!(unescape_octal("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(unescape_octal("/a\\04"), "/a\\04");
    }
}
