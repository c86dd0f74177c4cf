//! Datasources: where user-data comes from at boot (`rancher.cloud_init.datasources`), and
//! saving what they deliver where the config loader and `run_user_scripts` find it. Owns
//! config-drive detection and the drop-in/script naming; must not apply anything (that is
//! `apply`), and a datasource that fails is reported, never fatal.
//!
//! What is saved, per datasource in list order (`NN` is its position):
//! - `#cloud-config` -> `/var/lib/rancher/conf/cloud-config.d/zz-datasource-NN-KIND.yml`
//!   (0600). `ros_config::layer_files` sorts drop-ins by name, so the `zz-` prefix puts
//!   datasource user-data above the other drop-ins and below the kernel command line, and a
//!   later datasource above an earlier one.
//! - `#!` script -> `/var/lib/rancher/conf/scripts/datasource-NN-KIND` (0700).
//! - Nothing (no config drive, no user-data on it) -> both removed.
//! - A failure -> both left as an earlier boot saved them (the last good user-data).
//!
//! Files of datasources no longer listed are removed. `configdrive:PATH` whose PATH does
//! not exist falls back to detection: RancherOS mounted the drive there itself, so its
//! `configdrive:/media/config-2` keeps working. All HTTP fetches of one call share one
//! timeout.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ros_config::schema::CloudConfig;
use ros_config::{parse_user_data, UserData, UserDataError, MAX_FILE_BYTES};

use crate::host::{Host, ModuleLoader, MsFlags, Owner};
use crate::http::{self, HttpError, RetryPolicy};
use crate::label::{detect_label, is_config_drive_label, FsKind, PROBE_BYTES};
use crate::paths::{self, under};
use crate::report::{Report, Step};

/// The SCSI CD-ROM driver: init loads it only when a host adapter (a `scsi_host`) is there
/// for it to use, since with the SCSI core it costs 0.16 s of the boot under emulation. The
/// IDE and SATA adapters a CD-ROM sits on are loaded by the initrd when the root is not on
/// a virtio disk or came in the initramfs (the ISO); a virtio boot does not probe them (a
/// second under emulation), so there a config drive is found on a virtio disk, not a CD.
pub const CDROM_MODULE: &str = "sr_mod";

/// Prefix of datasource drop-in names: sorts after other drop-ins.
const DROP_IN_PREFIX: &str = "zz-";
/// Prefix of a datasource's slot (drop-in without `zz-` and `.yml`, or script name).
const SLOT_PREFIX: &str = "datasource-";
/// User-data paths inside a config drive, in order of preference.
const CONFIG_DRIVE_USER_DATA: &[&str] = &["openstack/latest/user_data", "user-data"];

/// RancherOS datasources rOS does not implement, with advice.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("ec2", "; use url:http://169.254.169.254/latest/user-data"),
    (
        "digitalocean",
        "; use url:http://169.254.169.254/metadata/v1/user-data",
    ),
    ("gce", ""),
    ("packet", ""),
    ("cloudstack", ""),
    ("aliyun", ""),
    ("azure", ""),
    ("vmware", ""),
    ("proxmox", ""),
    ("hetzner", ""),
    ("exoscale", ""),
];

/// One entry of `rancher.cloud_init.datasources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datasource {
    /// `configdrive:PATH`: a directory holding a config drive's files, or a block device
    /// holding one; `configdrive` alone: detect one among the block devices.
    ConfigDrive(Option<PathBuf>),
    /// `file:PATH`: a file holding user-data.
    File(PathBuf),
    /// `url:URL`: user-data from an HTTP server.
    Url(String),
    /// `cmdline`: the URL in the kernel's `cloud-config-url=` argument.
    Cmdline,
}

/// Why a datasource gave no user-data.
#[derive(Debug, thiserror::Error)]
pub enum DatasourceError {
    /// Not a datasource form we know.
    #[error("unknown datasource; expected configdrive[:PATH], file:PATH, url:URL or cmdline")]
    Unknown,
    /// A RancherOS datasource rOS does not implement.
    #[error("datasource `{name}` is not supported by rOS{hint}")]
    Unsupported {
        /// Its name.
        name: String,
        /// What to use instead.
        hint: &'static str,
    },
    /// A path that is not absolute.
    #[error("`{path}` is not an absolute path")]
    RelativePath {
        /// The path given.
        path: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file larger than a config file may be.
    #[error("reading {path}: larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// `configdrive:PATH` names neither a directory nor a block device.
    #[error("{path}: neither a directory nor a block device")]
    NotAConfigDrive {
        /// The path.
        path: PathBuf,
    },
    /// A block device without an ISO9660 or FAT filesystem.
    #[error("{path}: no ISO9660 or FAT filesystem found")]
    UnknownFilesystem {
        /// The device.
        path: PathBuf,
    },
    /// The mount point could not be created.
    #[error("creating mount point {path}: {source}")]
    CreateMountPoint {
        /// The mount point.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The config drive could not be mounted.
    #[error("mounting {device} ({fstype}, read-only) on {target}: {source}")]
    Mount {
        /// The device.
        device: PathBuf,
        /// Its filesystem type.
        fstype: &'static str,
        /// The mount point.
        target: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `cmdline` is listed but the kernel command line has no URL.
    #[error("no cloud-config-url= on the kernel command line")]
    NoCmdlineUrl,
    /// The HTTP fetch failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The user-data is neither cloud-config nor a script, or is damaged.
    #[error(transparent)]
    UserData(#[from] UserDataError),
    /// Saving the user-data failed.
    #[error("saving {path}: {source}")]
    Save {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Datasource {
    /// Parse one list entry.
    pub fn parse(entry: &str) -> Result<Datasource, DatasourceError> {
        let entry = entry.trim();
        let (kind, arg) = match entry.split_once(':') {
            Some((k, a)) => (k, Some(a.trim())),
            None => (entry, None),
        };
        let absolute = |p: &str| {
            if p.starts_with('/') {
                Ok(PathBuf::from(p))
            } else {
                Err(DatasourceError::RelativePath {
                    path: p.to_string(),
                })
            }
        };
        match (kind, arg) {
            ("configdrive", None | Some("")) => Ok(Datasource::ConfigDrive(None)),
            ("configdrive", Some(p)) => absolute(p).map(|p| Datasource::ConfigDrive(Some(p))),
            ("file", Some(p)) => absolute(p).map(Datasource::File),
            ("url", Some(u)) if !u.is_empty() => Ok(Datasource::Url(u.to_string())),
            ("cmdline", None | Some("")) => Ok(Datasource::Cmdline),
            _ => match UNSUPPORTED.iter().find(|(name, _)| *name == kind) {
                Some((name, hint)) => Err(DatasourceError::Unsupported {
                    name: name.to_string(),
                    hint,
                }),
                None => Err(DatasourceError::Unknown),
            },
        }
    }

    /// A short name for files: `configdrive`, `file`, `url`, `cmdline`.
    pub fn kind(&self) -> &'static str {
        match self {
            Datasource::ConfigDrive(_) => "configdrive",
            Datasource::File(_) => "file",
            Datasource::Url(_) => "url",
            Datasource::Cmdline => "cmdline",
        }
    }
}

impl fmt::Display for Datasource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datasource::ConfigDrive(None) => f.write_str("configdrive"),
            Datasource::ConfigDrive(Some(p)) => write!(f, "configdrive:{}", p.display()),
            Datasource::File(p) => write!(f, "file:{}", p.display()),
            Datasource::Url(u) => write!(f, "url:{u}"),
            Datasource::Cmdline => f.write_str("cmdline"),
        }
    }
}

/// How [`fetch_user_data`] behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Retries of `url:`/`cmdline` fetches. Its `timeout` (default 60 s) bounds all of
    /// them together: however many HTTP datasources are dead, they delay boot by at most
    /// that much.
    pub http: RetryPolicy,
}

/// The datasources to use: the configured list, or, when it is empty, config-drive
/// detection and the kernel's `cloud-config-url=` (RancherOS always probed for a config
/// drive). The flag says whether the entry was listed (a listed `cmdline` without a URL is a
/// problem; an implied one is not).
pub fn plan(config: &CloudConfig, report: &mut Report) -> Vec<(Datasource, bool)> {
    let entries = &config.rancher.cloud_init.datasources;
    if entries.is_empty() {
        return vec![
            (Datasource::ConfigDrive(None), false),
            (Datasource::Cmdline, false),
        ];
    }
    entries
        .iter()
        .filter_map(|entry| match Datasource::parse(entry) {
            Ok(ds) => Some((ds, true)),
            Err(e) => {
                report.problem(Step::Datasource, entry.trim(), e.to_string());
                None
            }
        })
        .collect()
}

/// Whether `config` lists `configdrive` without a path: the config drive is searched for
/// on every drive, CD-ROMs on IDE and SATA included, which PID 1 otherwise drives only when
/// the root is not on a virtio disk (see `init/src/boot.rs`).
pub fn lists_config_drive(config: &CloudConfig) -> bool {
    plan(config, &mut Report::default())
        .iter()
        .any(|(source, listed)| *listed && *source == Datasource::ConfigDrive(None))
}

/// Whether the datasources of `config` (see [`plan`]) fetch over the network: a `url:`,
/// or `cmdline` with the kernel's `cloud-config-url=` given. PID 1 brings up a network for
/// them before [`fetch_user_data`]; a boot without them pays nothing.
pub fn needs_network(config: &CloudConfig, cloud_config_url: Option<&str>) -> bool {
    plan(config, &mut Report::default())
        .iter()
        .any(|(source, _)| match source {
            Datasource::Url(_) => true,
            Datasource::Cmdline => cloud_config_url.is_some(),
            _ => false,
        })
}

/// Fetch user-data from every datasource of `config` (see [`plan`]) and save it under
/// `root` (see the module docs). `cloud_config_url` is the kernel's `cloud-config-url=`
/// (`Loaded::cmdline.cloud_config_url()`). Reload the config afterwards to see the new
/// drop-ins. Each datasource's failure is a problem in the report; none stops the others.
/// A config drive's filesystem modules are loaded through `modules` only when one is
/// mounted (they cost a tenth of a second of the boot under emulation).
pub fn fetch_user_data(
    root: &Path,
    config: &CloudConfig,
    cloud_config_url: Option<&str>,
    host: &dyn Host,
    modules: &dyn ModuleLoader,
    options: &FetchOptions,
) -> Report {
    let mut report = Report::default();
    let http_deadline = Instant::now() + options.http.timeout;
    let planned = plan(config, &mut report);
    let ca_certs: Vec<String> = config
        .rancher
        .cloud_init
        .ca_certs
        .iter()
        .map(|c| c.to_string())
        .collect();
    let drop_in_dir = under(root, paths::DROP_IN_DIR);
    let scripts_dir = under(root, paths::SCRIPTS_DIR);
    let mut slots = HashSet::new();
    for (i, (source, listed)) in planned.iter().enumerate() {
        let slot = format!("{SLOT_PREFIX}{i:02}-{}", source.kind());
        let drop_in = drop_in_dir.join(format!("{DROP_IN_PREFIX}{slot}.yml"));
        let script = scripts_dir.join(&slot);
        slots.insert(slot);
        let subject = source.to_string();
        let http = RetryPolicy {
            timeout: http_deadline.saturating_duration_since(Instant::now()),
            ..options.http
        };
        let began = Instant::now();
        let fetched = fetch_one(
            root,
            source,
            *listed,
            cloud_config_url,
            &Mounter { host, modules },
            &Net {
                http,
                ca_certs: &ca_certs,
            },
            &mut report,
        )
        .and_then(|bytes| match bytes {
            Some(b) => parse_user_data(&b).map_err(DatasourceError::from),
            None => Ok(UserData::Empty),
        });
        let saved = match fetched {
            Ok(UserData::CloudConfig(text)) => {
                save(host, &drop_in, text.as_bytes(), 0o600, &script).map(|()| Some(&drop_in))
            }
            Ok(UserData::Script(bytes)) => {
                save(host, &script, &bytes, 0o700, &drop_in).map(|()| Some(&script))
            }
            Ok(UserData::Empty) => {
                remove_quietly(host, &drop_in, &subject, &mut report);
                remove_quietly(host, &script, &subject, &mut report);
                Ok(None)
            }
            Err(e) => Err(e),
        };
        match saved {
            Ok(Some(path)) => {
                // Over the network: how long it took, against its bound.
                let took = match source {
                    Datasource::Url(_) | Datasource::Cmdline => format!(
                        " (fetched in {:.1} s of at most {} s)",
                        began.elapsed().as_secs_f64(),
                        options.http.timeout.as_secs()
                    ),
                    _ => String::new(),
                };
                report.done(
                    Step::Datasource,
                    &subject,
                    format!("user-data saved to {}{took}", path.display()),
                )
            }
            Ok(None) => {}
            Err(e) => {
                let mut message = e.to_string();
                if drop_in.exists() || script.exists() {
                    message.push_str("; keeping the user-data an earlier boot saved");
                }
                report.problem(Step::Datasource, &subject, message);
            }
        }
    }
    remove_stale(
        host,
        &drop_in_dir,
        DROP_IN_PREFIX,
        ".yml",
        &slots,
        &mut report,
    );
    remove_stale(host, &scripts_dir, "", "", &slots, &mut report);
    report
}

fn save(
    host: &dyn Host,
    path: &Path,
    bytes: &[u8],
    mode: u32,
    other_kind: &Path,
) -> Result<(), DatasourceError> {
    host.write_file(path, bytes, mode, Owner::ROOT)
        .map_err(|source| DatasourceError::Save {
            path: path.to_path_buf(),
            source,
        })?;
    // The same datasource switched between cloud-config and script: drop the old one.
    host.remove(other_kind)
        .map_err(|source| DatasourceError::Save {
            path: other_kind.to_path_buf(),
            source,
        })
}

fn remove_quietly(host: &dyn Host, path: &Path, subject: &str, report: &mut Report) {
    if path.exists() {
        match host.remove(path) {
            Ok(()) => report.done(
                Step::Datasource,
                subject,
                format!("no user-data now; removed {}", path.display()),
            ),
            Err(e) => report.problem(
                Step::Datasource,
                subject,
                format!("removing {}: {e}", path.display()),
            ),
        }
    }
}

/// Remove `PREFIX datasource-* SUFFIX` files in `dir` whose slot is not in `slots`.
fn remove_stale(
    host: &dyn Host,
    dir: &Path,
    prefix: &str,
    suffix: &str,
    slots: &HashSet<String>,
    report: &mut Report,
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let Some(slot) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(suffix))
            .filter(|s| s.starts_with(SLOT_PREFIX))
        else {
            continue;
        };
        if slots.contains(slot) {
            continue;
        }
        let path = dir.join(&name);
        match host.remove(&path) {
            Ok(()) => report.done(
                Step::Datasource,
                slot,
                format!("no longer listed; removed {}", path.display()),
            ),
            Err(e) => report.problem(
                Step::Datasource,
                slot,
                format!("removing {}: {e}", path.display()),
            ),
        }
    }
}

/// What mounting a config drive goes through: the host, and the loader of its modules.
struct Mounter<'a> {
    host: &'a dyn Host,
    modules: &'a dyn ModuleLoader,
}

/// How the network datasources fetch: the retries left, and the CAs https trusts
/// (`rancher.cloud_init.ca_certs`; none: the public roots).
struct Net<'a> {
    http: RetryPolicy,
    ca_certs: &'a [String],
}

fn fetch_one(
    root: &Path,
    source: &Datasource,
    listed: bool,
    cloud_config_url: Option<&str>,
    mounter: &Mounter,
    net: &Net,
    report: &mut Report,
) -> Result<Option<Vec<u8>>, DatasourceError> {
    let subject = source.to_string();
    let (http, ca_certs) = (&net.http, net.ca_certs);
    match source {
        Datasource::File(p) => read_capped(&under_path(root, p)).map(Some),
        Datasource::Url(url) => Ok(Some(http::get(url, http, ca_certs)?)),
        Datasource::Cmdline => match cloud_config_url {
            Some(url) => Ok(Some(http::get(url, http, ca_certs)?)),
            None if listed => Err(DatasourceError::NoCmdlineUrl),
            None => Ok(None),
        },
        Datasource::ConfigDrive(Some(p)) => {
            let path = under_path(root, p);
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                // RancherOS mounted the drive at that path itself (`/media/config-2` in
                // its examples); here nothing does, so look for the drive instead.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return detect_and_read(root, mounter, &subject, report)
                }
                Err(source) => return Err(DatasourceError::Read { path, source }),
            };
            if meta.is_dir() {
                return read_config_drive_dir(&path, &subject, report);
            }
            if !meta.file_type().is_block_device() {
                return Err(DatasourceError::NotAConfigDrive { path });
            }
            let Some((kind, _)) = read_first_bytes(&path).ok().and_then(|b| detect_label(&b))
            else {
                return Err(DatasourceError::UnknownFilesystem { path });
            };
            mount_and_read(root, mounter, &path, kind, &subject, report)
        }
        Datasource::ConfigDrive(None) => detect_and_read(root, mounter, &subject, report),
    }
}

/// Find a config drive among the block devices and read its user-data.
fn detect_and_read(
    root: &Path,
    mounter: &Mounter,
    subject: &str,
    report: &mut Report,
) -> Result<Option<Vec<u8>>, DatasourceError> {
    match find_config_drive(root) {
        Some(drive) => {
            report.done(
                Step::Datasource,
                subject,
                format!(
                    "found {} ({}, label {})",
                    drive.device.display(),
                    drive.kind.fstype(),
                    drive.label
                ),
            );
            mount_and_read(root, mounter, &drive.device, drive.kind, subject, report)
        }
        None => {
            report.done(Step::Datasource, subject, "no config drive found");
            Ok(None)
        }
    }
}

/// An absolute system path placed under `root`.
fn under_path(root: &Path, p: &Path) -> PathBuf {
    under(root, &p.to_string_lossy())
}

fn read_capped(path: &Path) -> Result<Vec<u8>, DatasourceError> {
    let read = |source| DatasourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(DatasourceError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(bytes)
}

/// The user-data in a config drive's directory tree; `Ok(None)` when it has none.
fn read_config_drive_dir(
    dir: &Path,
    subject: &str,
    report: &mut Report,
) -> Result<Option<Vec<u8>>, DatasourceError> {
    for rel in CONFIG_DRIVE_USER_DATA {
        match read_capped(&dir.join(rel)) {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(DatasourceError::Read { source, .. })
                if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    report.done(
        Step::Datasource,
        subject,
        format!(
            "no user-data in {} (looked for {})",
            dir.display(),
            CONFIG_DRIVE_USER_DATA.join(", ")
        ),
    );
    Ok(None)
}

/// Mount `device` read-only on a directory under /run, read its user-data, unmount.
fn mount_and_read(
    root: &Path,
    mounter: &Mounter,
    device: &Path,
    kind: FsKind,
    subject: &str,
    report: &mut Report,
) -> Result<Option<Vec<u8>>, DatasourceError> {
    // Quietly: one that is missing shows up as the mount's error.
    for module in kind.modules() {
        if let Err(e) = mounter.modules.load_module(module, "") {
            log::debug!("{e}");
        }
    }
    let host = mounter.host;
    let name = device
        .file_name()
        .map_or_else(|| "device".into(), |n| n.to_string_lossy().into_owned());
    let target = under(root, paths::CONFIG_DRIVE_MOUNT_DIR).join(name);
    host.create_dir(&target, 0o700, Owner::ROOT)
        .map_err(|source| DatasourceError::CreateMountPoint {
            path: target.clone(),
            source,
        })?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let fstype = kind.fstype();
    if let Err(source) = host.mount(
        &device.to_string_lossy(),
        &target,
        Some(fstype),
        flags,
        None,
    ) {
        let _ = host.remove(&target);
        return Err(DatasourceError::Mount {
            device: device.to_path_buf(),
            fstype,
            target,
            source,
        });
    }
    let read = read_config_drive_dir(&target, subject, report);
    match host.umount(&target) {
        Ok(()) => {
            if let Err(e) = host.remove(&target) {
                report.problem(
                    Step::Datasource,
                    subject,
                    format!("removing mount point {}: {e}", target.display()),
                );
            }
        }
        Err(e) => report.problem(
            Step::Datasource,
            subject,
            format!("unmounting {}: {e}", target.display()),
        ),
    }
    read
}

/// A config drive found among the block devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDrive {
    /// Its device node (under the root given).
    pub device: PathBuf,
    /// Its filesystem.
    pub kind: FsKind,
    /// Its label (`config-2` or `cidata`, in any case).
    pub label: String,
}

/// The first block device (by name) under `<root>/sys/class/block` whose raw filesystem
/// label is `config-2` or `cidata`, read from `<root>/dev/NAME` without mounting.
/// Devices that cannot be read (an empty CD-ROM drive) are skipped.
pub fn find_config_drive(root: &Path) -> Option<ConfigDrive> {
    let entries = fs::read_dir(under(root, paths::SYS_CLASS_BLOCK)).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        // RAM disks never hold a config drive; reading 16 of them is wasted time.
        .filter(|n| !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    let dev = under(root, paths::DEV);
    for name in names {
        let device = dev.join(&name);
        let bytes = match read_first_bytes(&device) {
            Ok(b) => b,
            Err(e) => {
                log::debug!("config drive probe {}: {e}", device.display());
                continue;
            }
        };
        if let Some((kind, label)) = detect_label(&bytes) {
            if is_config_drive_label(&label) {
                return Some(ConfigDrive {
                    device,
                    kind,
                    label,
                });
            }
        }
    }
    None
}

fn read_first_bytes(device: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(PROBE_BYTES);
    File::open(device)?
        .take(PROBE_BYTES as u64)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_configdrive_without_a_path_searches_every_drive() {
        let with = |list: &[&str]| {
            let mut c = CloudConfig::default();
            c.rancher.cloud_init.datasources = list.iter().map(|s| (*s).into()).collect();
            lists_config_drive(&c)
        };
        assert!(
            !with(&[]),
            "the default searches the drives PID 1 drives anyway"
        );
        assert!(with(&["configdrive"]));
        assert!(with(&["url:http://10.0.2.2/cc", "configdrive:"]));
        assert!(!with(&["configdrive:/media/config-2"]));
        assert!(!with(&["cmdline"]));
    }

    #[test]
    fn parse_table() {
        let ok = [
            ("configdrive", Datasource::ConfigDrive(None)),
            ("configdrive:", Datasource::ConfigDrive(None)),
            (
                "configdrive:/media/config-2",
                Datasource::ConfigDrive(Some("/media/config-2".into())),
            ),
            ("file:/var/cc.yml", Datasource::File("/var/cc.yml".into())),
            (
                "url:http://10.0.0.1/cc",
                Datasource::Url("http://10.0.0.1/cc".into()),
            ),
            (" cmdline ", Datasource::Cmdline),
        ];
        for (text, want) in ok {
            assert_eq!(Datasource::parse(text).unwrap(), want, "{text}");
        }
        for (text, want) in [
            (
                "ec2",
                "not supported by rOS; use url:http://169.254.169.254/latest/user-data",
            ),
            ("gce", "`gce` is not supported by rOS"),
            ("file:relative", "`relative` is not an absolute path"),
            ("file", "unknown datasource"),
            ("url:", "unknown datasource"),
            ("floppy:/dev/fd0", "unknown datasource"),
        ] {
            let e = Datasource::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert_eq!(
            Datasource::parse("configdrive:/media/config-2")
                .unwrap()
                .to_string(),
            "configdrive:/media/config-2"
        );
    }
}
