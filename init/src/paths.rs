//! Every well-known path PID 1 uses, declared once.
//!
//! Paths are absolute in the final root; functions elsewhere take `&Path` so tests can
//! point them into a temp dir.

/// Where the initramfs mounts the real root before switching into it.
pub const NEWROOT: &str = "/newroot";
/// Where the disk holding the root image (`rootimg=`) is mounted; under /run, so it is
/// carried into the new root.
pub const BOOT_DISK: &str = "/run/ros/boot-disk";
/// The root image inside the initramfs, for a boot from RAM.
pub const LIVE_ROOT_IMAGE: &str = ros_config::paths::LIVE_ROOT_IMAGE;
/// Kernel modules (both in the initrd and in the root image).
pub const MODULES_DIR: &str = "/lib/modules";
/// The system containerd binary in the root image.
pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";
/// containerd's runc v2 shim, which containerd starts for the first service.
pub const SHIM_BIN: &str = "/usr/bin/containerd-shim-runc-v2";
/// The OCI runtime the system containerd's shim runs for services (crun: a C runtime,
/// several times cheaper per container start than runc's Go under emulation; the root
/// image has no runc of its own, only the user Docker engine's).
pub const OCI_RUNTIME: &str = "/usr/bin/crun";
/// State dir of the system containerd (tmpfs); also holds its socket and config.
pub const CONTAINERD_STATE: &str = "/run/system-containerd";
/// The system containerd's gRPC socket: root-only (the directory is 0700, the socket 0600).
pub const CONTAINERD_SOCKET: &str = "/run/system-containerd/containerd.sock";
/// The generated containerd config.
pub const CONTAINERD_CONFIG: &str = "/run/system-containerd/config.toml";
/// Root dir of the system containerd (content, snapshots, metadata).
pub const CONTAINERD_ROOT: &str = "/var/lib/system-containerd";
/// Preloaded OCI image archives in the root image (imported into the system containerd).
pub const IMAGES_DIR: &str = "/usr/share/ros/images";
/// The built-in images, unpacked in the root image: layer directories and image records
/// (`ros-image store`), run as overlay roots without an import.
pub const IMAGE_STORE: &str = "/usr/share/ros/image-store";
/// Writable upper layers of services running on [`IMAGE_STORE`] images (root only).
pub const SERVICE_ROOTS: &str = "/var/lib/ros/roots";
pub use ros_config::paths::{LOG_DIR, SERVICES_DIR, SERVICE_INDEX_DIR};
/// The syslog service's socket directory, the only host path it writes besides /var/log.
pub const SYSLOG_DIR: &str = "/run/syslog";
/// `/dev/log`, a link to the syslog service's socket `log` in [`SYSLOG_DIR`].
pub const DEV_LOG: &str = "/dev/log";
/// Writable layers of the /etc overlay.
pub const ETC_OVERLAY_DIR: &str = "/run/ros/etc";
/// The shell offered on fatal errors.
pub const RECOVERY_SHELL: &str = "/bin/sh";
/// busybox, used to give the recovery shell a controlling terminal.
pub const BUSYBOX: &str = "/bin/busybox";
/// The user's config directory (cloud-config.yml, cloud-config.d/).
pub const USER_CONF_DIR: &str = "/var/lib/rancher/conf";

/// The well-known path `path` where this init's root is: itself for PID 1, below the test
/// root in subreaper mode ([`crate::mode`]).
pub fn at(path: &str) -> std::path::PathBuf {
    ros_config::paths::under(crate::mode::root(), path)
}
