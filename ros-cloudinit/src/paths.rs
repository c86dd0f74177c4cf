//! Every well-known path this crate touches, declared once. Paths are absolute as on the
//! running system; callers place them below a root with [`ros_config::paths::under`].

pub use ros_config::paths::{under, DROP_IN_DIR};

/// Saved `#!` user-data scripts, run once per boot by `run_user_scripts`.
pub const SCRIPTS_DIR: &str = "/var/lib/rancher/conf/scripts";
/// Where config drives are mounted while their user-data is read (tmpfs).
pub const CONFIG_DRIVE_MOUNT_DIR: &str = "/run/ros/cloud-init";
/// Block devices the kernel knows, one entry per disk and partition.
pub const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// Device nodes.
pub const DEV: &str = "/dev";
/// Sysctl files.
pub const PROC_SYS: &str = "/proc/sys";
/// Filesystems the kernel can mount (for `mounts` rows with fstype `auto`).
pub const PROC_FILESYSTEMS: &str = "/proc/filesystems";
/// What is mounted where (to skip `mounts` rows already in place).
pub const PROC_MOUNTINFO: &str = "/proc/self/mountinfo";
/// The static hostname.
pub const ETC_HOSTNAME: &str = "/etc/hostname";
/// Static host names.
pub const ETC_HOSTS: &str = "/etc/hosts";
/// User accounts (for `write_files[].owner`).
pub const ETC_PASSWD: &str = "/etc/passwd";
/// Groups (for `write_files[].owner`).
pub const ETC_GROUP: &str = "/etc/group";
/// The console user, who gets `ssh_authorized_keys` (as in RancherOS).
pub const CONSOLE_USER: &str = "rancher";
/// The console user's home.
pub const CONSOLE_HOME: &str = "/home/rancher";
/// The console user's uid and gid when `/etc/passwd` does not name it (RancherOS's).
pub const CONSOLE_UID: u32 = 1100;
/// Where `bootcmd`, `runcmd` and user scripts write their output (a suggestion for init).
pub const COMMAND_LOG: &str = "/var/log/cloud-init.log";
