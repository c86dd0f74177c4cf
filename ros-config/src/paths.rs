//! Every well-known path of the config system, declared once. Paths are absolute as on the
//! running system; [`under`] places them below another root (tests pass a temp dir).

use std::path::{Path, PathBuf};

/// Built-in defaults, the lowest layer.
pub const OS_CONFIG: &str = "/usr/share/ros/os-config.yml";
/// OEM layer, above the defaults.
pub const OEM_CONFIG: &str = "/usr/share/ros/oem/oem-config.yml";
/// The user's cloud-config (what `ros config set/merge` edits).
pub const USER_CONFIG: &str = "/var/lib/rancher/conf/cloud-config.yml";
/// Drop-ins from datasources and `ros`, applied in name order above the user config.
pub const DROP_IN_DIR: &str = "/var/lib/rancher/conf/cloud-config.d";
/// Built-in service definitions (always on unless disabled).
pub const SERVICES_DIR: &str = "/usr/share/ros/services";
/// Optional service definitions that `rancher.services_include` enables by name.
pub const SERVICE_INDEX_DIR: &str = "/usr/share/ros/service-index";
/// Service logs, `<name>.log` (and `<name>.log.1` after rotation).
pub const LOG_DIR: &str = "/var/log/ros";
/// The image's build manifest (initramfs/build.sh): its release and every build input.
pub const MANIFEST: &str = "/usr/share/ros/manifest";
/// The kernel command line, the top layer.
pub const KERNEL_CMDLINE: &str = "/proc/cmdline";
/// The kernel command line with its secrets hidden ([`crate::redacted_cmdline`]), written
/// by PID 1 at boot: what unprivileged services see as their `/proc/cmdline`.
pub const REDACTED_CMDLINE: &str = "/run/ros/cmdline";

/// The root image inside the initramfs, for a boot from RAM (the ISO and PXE: `root.cpio`,
/// appended to the initrd by the bootloader; `initramfs/build.sh`). PID 1 attaches it to a
/// loop device; `ros install` on such a boot reads the kernel and initrd from the ISO.
pub const LIVE_ROOT_IMAGE: &str = "/ros/root.squashfs";

/// Environment variable that moves every well-known path below another directory, for
/// `ros` and for init's subreaper mode (`ROS_ROOT=/tmp/r` reads
/// `/tmp/r/usr/share/ros/os-config.yml`, `/tmp/r/proc/cmdline`, ...).
pub const ROOT_ENV: &str = "ROS_ROOT";

/// `well_known` below `root` (`under(Path::new("/"), X)` is `X`).
pub fn under(root: &Path, well_known: &str) -> PathBuf {
    root.join(well_known.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_root() {
        assert_eq!(
            under(Path::new("/"), USER_CONFIG),
            PathBuf::from(USER_CONFIG)
        );
        assert_eq!(
            under(Path::new("/tmp/r"), OS_CONFIG),
            PathBuf::from("/tmp/r/usr/share/ros/os-config.yml")
        );
    }
}
