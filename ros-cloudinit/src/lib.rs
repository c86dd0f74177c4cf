//! cloud-init for rOS: fetch user-data from the datasources at boot, and apply a loaded
//! cloud-config to the host.
//!
//! Owns datasources (config drives found by label, files, HTTP URLs, the kernel's
//! `cloud-config-url=`), saving user-data as drop-ins and scripts, and applying hostname,
//! modules, sysctl, `write_files`, `ssh_authorized_keys`, `mounts`, `bootcmd`, `runcmd`.
//! Must not talk to containerd (`write_files` with `container:` are handed back), must not
//! parse YAML (ros-config does), and must not wait on children itself: every side effect
//! goes through [`Host`], [`ModuleLoader`] or [`CommandRunner`], which PID 1 implements
//! (its reaper owns child exits).
//!
//! Boot order as init uses it:
//! 1. load [`CDROM_MODULE`] if a SCSI host is there;
//!    [`fetch_user_data`] (it loads a found drive's filesystem); reload the config
//!    (`ros_config::load`) so the new drop-ins count;
//! 2. [`apply()`] (modules, sysctl, hostname, write_files, mounts, ssh keys);
//!    [`run_bootcmd`]; start containerd and the services;
//! 3. [`run_runcmd`], then [`run_user_scripts`]; hand [`container_files`] to the
//!    supervisor (again after each reload of the config), which writes them with [`apply_container_write_files`] into each
//!    service's root (`/proc/PID/root`, resolved inside it: see [`confined`]) as it starts.
//!
//! Every call returns a [`Report`]; print its `problem_lines()` on the console. Nothing here
//! panics on bad input or fails the boot.

mod accounts;
mod apply;
mod commands;
pub mod confined;
mod datasource;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
mod host;
mod http;
mod label;
mod mounts;
mod owner;
pub mod paths;
mod report;

pub use accounts::{lookup_group, lookup_user, resolve_owner, AccountFiles, OwnerError};
pub use apply::{
    apply, apply_container_write_files, apply_hostname, apply_sysctl, apply_write_files,
    authorize_ssh_keys, container_files, hosts_with, load_modules, merge_authorized_keys,
    sysctl_path, Applied,
};
pub use commands::{
    command_env, run_bootcmd, run_health_checks, run_runcmd, run_user_scripts, DEFAULT_PATH,
};
pub use confined::{ConfinedError, ContainerRoot, HomeFile};
pub use datasource::{
    fetch_user_data, find_config_drive, lists_config_drive, needs_network, plan, ConfigDrive,
    Datasource, DatasourceError, FetchOptions, CDROM_MODULE,
};
pub use host::{
    write_file_atomic, CommandRunner, Exit, Host, Invocation, ModuleLoader, MsFlags, Owner,
    StdRunner, SystemHost,
};
pub use http::{get as http_get, roots as https_roots, HttpError, RetryPolicy};
pub use label::{detect_label, is_config_drive_label, FsKind, PROBE_BYTES};
pub use mounts::{apply_mounts, mounted_targets, parse_mount_options, MountOptions};
pub use report::{Item, Report, Step};
