//! Boot mounts as one declarative table, applied by one idempotent function.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::sys::Mounter;

/// One row of a mount table.
#[derive(Debug, Clone, Copy)]
pub struct MountSpec {
    /// Mount source (device or fs name).
    pub source: &'static str,
    /// Absolute target, relative to the root the table is applied under.
    pub target: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MsFlags,
    /// fs-specific options.
    pub data: &'static str,
    /// Whether boot cannot go on without it (and why, for the console).
    pub fatal: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The pseudo filesystems every boot needs, parents before children.
pub const PSEUDO_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        fatal: Some("nothing works without /proc"),
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        fatal: Some("devices and cgroups live under /sys"),
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
        fatal: Some("the root disk appears under /dev"),
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "gid=5,mode=620,ptmxmode=666",
        fatal: None,
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
        fatal: None,
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
        fatal: Some("containerd's state and sockets live in /run"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
        fatal: None,
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "nsdelegate",
        fatal: Some("containers need cgroups"),
    },
];

/// Writable places on top of the read-only root, applied after the switch.
pub const WRITABLE_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "tmpfs",
        target: "/var",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
        fatal: Some("containerd's images live under /var"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/home",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
        fatal: None,
    },
];

/// A mount that failed.
#[derive(Debug, thiserror::Error)]
#[error("mounting {fstype} on {target}: {source}")]
pub struct MountError {
    /// Where.
    pub target: PathBuf,
    /// What.
    pub fstype: &'static str,
    /// Why it matters, when boot cannot continue.
    pub fatal: Option<&'static str>,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Mount points currently mounted, from `<root>/proc/self/mountinfo` (empty if unreadable).
pub fn mounted_targets(mountinfo: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(mountinfo) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            // Bytes, not `&s[..]`: a str slice inside a multi-byte char would panic PID 1.
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Apply `table` under `root`: create each target, mount what isn't mounted yet.
///
/// Idempotent: targets already in `already` are skipped. Stops at the first failing
/// fatal row; failures of other rows are logged and skipped.
pub fn apply(
    table: &[MountSpec],
    root: &Path,
    already: &[PathBuf],
    m: &dyn Mounter,
) -> Result<(), MountError> {
    for row in table {
        let target = root.join(row.target.trim_start_matches('/'));
        if already
            .iter()
            .any(|p| p == Path::new(row.target) || *p == target)
        {
            log::debug!("mount {}: already mounted", target.display());
            continue;
        }
        let _ = fs::create_dir_all(&target);
        let data = (!row.data.is_empty()).then_some(row.data);
        if let Err(source) = m.mount(row.source, &target, Some(row.fstype), row.flags, data) {
            let err = MountError {
                target,
                fstype: row.fstype,
                fatal: row.fatal,
                source,
            };
            if row.fatal.is_some() {
                return Err(err);
            }
            log::warn!("{err} (continuing without it)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};

    #[test]
    fn applies_every_row_in_order() {
        let rec = Recorder::default();
        apply(PSEUDO_MOUNTS, Path::new("/"), &[], &rec).unwrap();
        let targets: Vec<PathBuf> = rec
            .calls()
            .into_iter()
            .map(|c| match c {
                Call::Mount(_, t, _, _, _) => t,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let want: Vec<PathBuf> = PSEUDO_MOUNTS.iter().map(|r| r.target.into()).collect();
        assert_eq!(targets, want);
    }

    #[test]
    fn skips_what_is_mounted() {
        let rec = Recorder::default();
        let already = vec![
            PathBuf::from("/proc"),
            PathBuf::from("/sys"),
            PathBuf::from("/dev"),
        ];
        apply(PSEUDO_MOUNTS, Path::new("/"), &already, &rec).unwrap();
        let calls = rec.calls();
        assert_eq!(calls.len(), PSEUDO_MOUNTS.len() - 3);
        assert!(!calls
            .iter()
            .any(|c| matches!(c, Call::Mount(_, t, _, _, _) if t == Path::new("/proc"))));
    }

    #[test]
    fn fatal_row_stops_best_effort_row_does_not() {
        let rec = Recorder {
            fail_mounts: vec![PathBuf::from("/dev/shm")],
            ..Default::default()
        };
        apply(PSEUDO_MOUNTS, Path::new("/"), &[], &rec).unwrap();
        assert_eq!(rec.calls().len(), PSEUDO_MOUNTS.len());

        let rec = Recorder {
            fail_mounts: vec![PathBuf::from("/run")],
            ..Default::default()
        };
        let err = apply(PSEUDO_MOUNTS, Path::new("/"), &[], &rec).unwrap_err();
        assert_eq!(err.target, Path::new("/run"));
        assert!(err.fatal.is_some());
        assert!(err.to_string().contains("/run"), "{err}");
    }

    #[test]
    fn a_backslash_before_a_multibyte_char_is_kept_not_a_panic() {
        assert_eq!(unescape_octal("/a\\é€"), "/a\\é€");
        assert_eq!(unescape_octal("/a\\040b"), "/a b");
    }

    #[test]
    fn reads_mountinfo_with_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let mi = dir.path().join("mountinfo");
        fs::write(
            &mi,
            "22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n\
             30 1 0:25 / /mnt/a\\040b rw - tmpfs tmpfs rw\n",
        )
        .unwrap();
        assert_eq!(
            mounted_targets(&mi),
            vec![PathBuf::from("/proc"), PathBuf::from("/mnt/a b")]
        );
    }
}
