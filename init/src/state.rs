//! The persistent state disk (`LABEL=RANCHER_STATE`, ext4): found by label, formatted
//! when `rancher.state.autoformat` names a *blank* disk, mounted at `/mnt/state`, and
//! bound over `/var`, `/home` and `/opt` so that what lives there survives a reboot.
//! Without one the system runs from RAM, and says so.
//!
//! Must never format a disk that holds data or that something else uses: autoformat
//! entries are resolved to their kernel device (a `/dev/disk/by-id/` name too, before
//! udev has made the link), and refused when they have partitions, holders, an active
//! swap, a mount, or any signature [`signatures`] knows. Must never pick one of several
//! volumes with the label at random: see [`choose_labelled`].

pub mod signatures;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::paths;
use crate::sys::{Host, Mounter};

/// The label RancherOS users know.
pub const STATE_LABEL: &str = "RANCHER_STATE";
/// Where the state partition is mounted.
pub const STATE_MOUNT: &str = "/mnt/state";
/// Directories of the root that live on the state partition (`<state>/<dir>`).
pub const PERSISTENT_DIRS: &[&str] = &["var", "home", "opt"];
/// The formatter from Debian's e2fsprogs, in the root image.
pub const MKFS: &str = "/sbin/mke2fs";

/// The state filesystem's mount flags; its binds over [`PERSISTENT_DIRS`] inherit them
/// (a bind copies the flags of the mount it binds).
///
/// `nodev`: nothing on the state disk is a device anyone should open through it (a
/// device node planted on a volume is a way around /dev's permissions). overlayfs's
/// whiteouts are 0:0 character devices, but they are made with mknod(2) and read as
/// directory entries, never opened, so Docker's overlay2 and containerd's overlayfs
/// snapshots work on a `nodev` disk.
///
/// `nosuid`: exec(2) honours set-user-ID by the mount the file is executed *through*
/// (`bprm->file->f_path.mnt`). A container's root is an overlay mount that dockerd or
/// containerd makes without `nosuid`, so setuid binaries in images (sudo, ping) keep
/// working although their layers live here. What loses set-user-ID is a binary run from
/// the state disk's own paths: a host bind volume (`docker run -v /home/x:/x`) or a
/// non-overlay storage driver (`vfs`). That is the hardening asked for: a volume that
/// happens to carry the label must not supply setuid-root binaries or device nodes.
pub const STATE_MOUNT_FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

/// What to look for, from `rancher.state` (built-in config and kernel command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// `LABEL=NAME` or a device path.
    pub dev: String,
    /// Filesystem type to mount (`auto` means ext4 here).
    pub fstype: String,
    /// Devices that may be formatted if blank.
    pub autoformat: Vec<String>,
    /// No state disk is an error.
    pub required: bool,
}

impl StateSettings {
    /// From the loaded config.
    pub fn from_config(config: &ros_config::CloudConfig) -> Self {
        let s = &config.rancher.state;
        StateSettings {
            dev: s
                .dev
                .as_ref()
                .map(|d| d.0.clone())
                .unwrap_or_else(|| format!("LABEL={STATE_LABEL}")),
            fstype: s
                .fstype
                .as_ref()
                .map(|f| f.0.clone())
                .filter(|f| f != "auto")
                .unwrap_or_else(|| "ext4".into()),
            autoformat: s.autoformat.iter().map(|d| d.0.clone()).collect(),
            required: s.required,
        }
    }

    /// The label to look for, if `dev` is `LABEL=...`.
    pub fn label(&self) -> Option<&str> {
        self.dev.strip_prefix("LABEL=")
    }
}

/// Errors setting up the state disk.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Formatting failed.
    #[error("state: formatting {device}: {message}")]
    Format {
        /// The device.
        device: String,
        /// Why.
        message: String,
    },
    /// Mounting or binding failed.
    #[error("state: mounting {what}: {source}")]
    Mount {
        /// What.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// More than one device carries the label, and not exactly one of them is on the
    /// disk the root came from.
    #[error(
        "state: LABEL={label} is on {} devices ({}) and {}; refusing to pick one \
         (its config could run commands as root): relabel or detach all but one",
        devices.len(),
        list(devices),
        match root_disk {
            Some(disk) => format!("not exactly one of them is on {disk}, the disk the root came from"),
            None => "the disk the root came from is not known".to_string(),
        }
    )]
    DuplicateLabel {
        /// The label.
        label: String,
        /// Every device carrying it.
        devices: Vec<PathBuf>,
        /// The root's disk, if known.
        root_disk: Option<String>,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the state came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOutcome {
    /// An existing state partition was mounted.
    Mounted(PathBuf),
    /// A blank disk was formatted and mounted.
    Formatted(PathBuf),
    /// None found: running from RAM.
    None,
}

fn first_bytes(dev: &Path) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; ros_cloudinit::PROBE_BYTES];
    let mut f = File::open(dev)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// The names of the block devices listed in `sys_block` (`/sys/class/block`), sorted:
/// disks and partitions, the order every scan of them goes in.
pub fn block_devices(sys_block: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(sys_block)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every device under `dev_dir` whose filesystem label is `label`, scanning the block
/// devices listed in `sys_block`, in their order.
pub fn find_all_by_label(sys_block: &Path, dev_dir: &Path, label: &str) -> Vec<PathBuf> {
    block_devices(sys_block)
        .into_iter()
        .map(|n| dev_dir.join(n))
        .filter(|dev| {
            first_bytes(dev)
                .ok()
                .and_then(|b| ros_cloudinit::detect_label(&b))
                .is_some_and(|(_, l)| l == label)
        })
        .collect()
}

/// The disk a block device is on, from its sysfs directory (`/sys/class/block/NAME` or
/// `/sys/dev/block/MAJ:MIN`): its parent for a partition (a partition's directory is
/// inside its disk's), itself for a whole disk.
pub fn disk_of(sys_entry: &Path) -> Option<String> {
    let real = fs::canonicalize(sys_entry).ok()?;
    let dir = if real.join("partition").exists() {
        real.parent()?
    } else {
        &real
    };
    Some(dir.file_name()?.to_string_lossy().into_owned())
}

/// `major:minor` of the mount at `mount_point` in a mountinfo text (the third field).
pub fn mount_device(mountinfo: &str, mount_point: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        (fields.nth(1)? == mount_point).then(|| dev.to_string())
    })
}

/// The disk the running root came from, under `root`: the disk holding the root image
/// file (mounted at [`paths::BOOT_DISK`]) on an installed disk, else the disk of the
/// device mounted on `/`.
pub fn root_disk(root: &Path) -> Option<String> {
    let info = fs::read_to_string(root.join("proc/self/mountinfo")).ok()?;
    let dev = mount_device(&info, paths::BOOT_DISK).or_else(|| mount_device(&info, "/"))?;
    disk_of(&root.join("sys/dev/block").join(dev))
}

/// Which of the devices `found` carrying `label` to use: the only one; of several, the
/// only one on `root_disk` (the others are logged as ignored); otherwise none, as an
/// error naming them all. A second volume with the label is someone else's disk (an old
/// installation, a copied image, a volume attached on purpose): its config runs as root.
pub fn choose_labelled(
    label: &str,
    found: Vec<PathBuf>,
    sys_block: &Path,
    root_disk: Option<&str>,
) -> Result<Option<PathBuf>, StateError> {
    if found.len() <= 1 {
        return Ok(found.into_iter().next());
    }
    let on_root_disk: Vec<&PathBuf> = found
        .iter()
        .filter(|dev| {
            let name = dev.file_name().unwrap_or_default();
            root_disk.is_some() && disk_of(&sys_block.join(name)).as_deref() == root_disk
        })
        .collect();
    if let [chosen] = on_root_disk[..] {
        let chosen = chosen.clone();
        let others: Vec<PathBuf> = found.iter().filter(|d| **d != chosen).cloned().collect();
        log::warn!(
            "state: LABEL={label} is also on {}: ignored; using {}, on {} (the disk the root came from)",
            list(&others),
            chosen.display(),
            root_disk.unwrap_or_default()
        );
        return Ok(Some(chosen));
    }
    Err(StateError::DuplicateLabel {
        label: label.to_string(),
        devices: found,
        root_disk: root_disk.map(str::to_string),
    })
}

/// A block device's number, `major:minor` as sysfs and mountinfo write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevNum {
    /// The major number.
    pub major: u64,
    /// The minor number.
    pub minor: u64,
}

impl DevNum {
    /// From `st_rdev`.
    pub fn from_rdev(rdev: u64) -> DevNum {
        DevNum {
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
        }
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// What autoformat asks of a device node. A seam because a test cannot make a block
/// device (mknod needs root): everything else it reads is under a root directory.
pub trait DeviceNodes {
    /// The number of the block device at `path`; `None` when `path` is not a block device.
    fn block_device(&self, path: &Path) -> io::Result<Option<DevNum>>;
}

impl DeviceNodes for Host {
    fn block_device(&self, path: &Path) -> io::Result<Option<DevNum>> {
        let meta = fs::metadata(path)?;
        Ok(meta
            .file_type()
            .is_block_device()
            .then(|| DevNum::from_rdev(meta.rdev())))
    }
}

/// Why `rancher.state.autoformat` passed over a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing by that name (a list of possible disks names some that are not attached).
    Missing,
    /// The name resolves to something that is not a block device.
    NotBlockDevice(PathBuf),
    /// A block device the kernel does not list.
    NoSysfsEntry(DevNum),
    /// A disk with partitions.
    Partitions(Vec<String>),
    /// A disk something (device-mapper, md RAID, bcache) is built on.
    Holders(Vec<String>),
    /// An active swap device.
    Swap,
    /// Mounted.
    Mounted(String),
    /// It holds data.
    NotBlank(signatures::Evidence),
    /// It could not be read.
    Unreadable(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => write!(f, "no such device (not attached?)"),
            Refusal::NotBlockDevice(p) => {
                write!(f, "{} is not a block device; not formatted", p.display())
            }
            Refusal::NoSysfsEntry(n) => write!(
                f,
                "block device {n} has no /sys/dev/block entry; not formatted"
            ),
            Refusal::Partitions(p) => {
                write!(f, "has partitions ({}); not formatted", p.join(", "))
            }
            Refusal::Holders(h) => write!(
                f,
                "is in use by {} (device-mapper, RAID or bcache is built on it); not formatted",
                h.join(", ")
            ),
            Refusal::Swap => write!(f, "is an active swap device (/proc/swaps); not formatted"),
            Refusal::Mounted(at) => write!(f, "is mounted on {at}; not formatted"),
            Refusal::NotBlank(e) => write!(
                f,
                "is not blank ({e}); rancher.state.autoformat never formats a disk holding data"
            ),
            Refusal::Unreadable(e) => write!(f, "reading it: {e}; not formatted"),
        }
    }
}

/// Names udev allows in a by-id link: others become `_`, whitespace runs one `_`.
fn udev_name(raw: &str) -> String {
    let mut out = String::new();
    for word in raw.split_whitespace() {
        if !out.is_empty() {
            out.push('_');
        }
        out.extend(word.chars().map(|c| {
            if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) {
                c
            } else {
                '_'
            }
        }));
    }
    out
}

/// The `/dev/disk/by-id/` names udev gives the whole disk at `dir` (its sysfs directory),
/// from the attributes its rules read: `virtio-SERIAL`, `nvme-MODEL_SERIAL`, `nvme-WWID`.
fn by_id_names(name: &str, dir: &Path) -> Vec<String> {
    let attr = |rel: &str| {
        fs::read_to_string(dir.join(rel))
            .ok()
            .map(|s| udev_name(&s))
            .filter(|s| !s.is_empty())
    };
    let mut names = Vec::new();
    if name.starts_with("vd") {
        names.extend(attr("serial").map(|s| format!("virtio-{s}")));
    } else if name.starts_with("nvme") {
        if let (Some(model), Some(serial)) = (attr("device/model"), attr("device/serial")) {
            names.push(format!("nvme-{model}_{serial}"));
        }
        names.extend(attr("wwid").map(|w| format!("nvme-{w}")));
    }
    names
}

/// The kernel name behind `/dev/disk/by-id/ID` from sysfs, for when udev has not made the
/// link yet (the state disk is set up before udev starts). Knows the names of virtio and
/// NVMe disks and their `-partN` partitions; ATA and SCSI names need an inquiry udev's
/// helpers make, so those links work only once udev has run.
pub fn resolve_by_id(sys_block: &Path, id: &str) -> Option<String> {
    let disks: Vec<String> = block_devices(sys_block)
        .into_iter()
        .filter(|n| !sys_block.join(n).join("partition").exists())
        .collect();
    let disk_named = |want: &str| {
        disks
            .iter()
            .find(|n| by_id_names(n, &sys_block.join(n)).iter().any(|b| b == want))
            .cloned()
    };
    if let Some(disk) = disk_named(id) {
        return Some(disk);
    }
    let (base, number) = id.rsplit_once("-part")?;
    let number: u32 = number.parse().ok()?;
    let disk = disk_named(base)?;
    partitions(&sys_block.join(&disk))
        .into_iter()
        .find(|(_, n)| *n == number)
        .map(|(name, _)| name)
}

/// The partitions of the disk whose sysfs directory is `dir`: name and number.
fn partitions(dir: &Path) -> Vec<(String, u32)> {
    let mut parts: Vec<(String, u32)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let number = fs::read_to_string(e.path().join("partition")).ok()?;
            let number = number.trim().parse().ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), number))
        })
        .collect();
    parts.sort();
    parts
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether the device `real` (its node; `name` in sysfs) is an active swap, from a
/// `/proc/swaps` text (a header line, then the device path first on each line).
fn is_swap(swaps: &str, root: &Path, real: &Path, name: &str) -> bool {
    swaps.lines().skip(1).any(|line| {
        let Some(file) = line.split_whitespace().next() else {
            return false;
        };
        file == format!("/dev/{name}")
            || fs::canonicalize(root.join(file.trim_start_matches('/'))).is_ok_and(|p| p == real)
    })
}

/// Resolve the autoformat entry `cand` (a `/dev` path, maybe a link such as
/// `/dev/disk/by-id/...`, which is looked up in sysfs when udev has not made it yet) under
/// `root` to the device node it names.
pub fn resolve_autoformat(cand: &str, root: &Path) -> Result<PathBuf, Refusal> {
    match fs::canonicalize(root.join(cand.trim_start_matches('/'))) {
        Ok(real) => Ok(real),
        Err(e) if e.kind() == io::ErrorKind::NotFound => cand
            .strip_prefix("/dev/disk/by-id/")
            .and_then(|id| resolve_by_id(&root.join("sys/class/block"), id))
            .and_then(|name| fs::canonicalize(root.join("dev").join(name)).ok())
            .ok_or(Refusal::Missing),
        Err(e) => Err(Refusal::Unreadable(e.to_string())),
    }
}

/// Whether the device node `real` may be formatted: a block device the kernel lists (by
/// its number, not its name: the node's name says nothing about which device it is), with
/// no partitions, no holders, no active swap, no mount, and blank. Reads `/sys` and
/// `/proc` under `root`.
pub fn check_autoformat(real: &Path, root: &Path, nodes: &dyn DeviceNodes) -> Result<(), Refusal> {
    let num = match nodes.block_device(real) {
        Ok(Some(num)) => num,
        Ok(None) => return Err(Refusal::NotBlockDevice(real.to_path_buf())),
        Err(e) => return Err(Refusal::Unreadable(e.to_string())),
    };
    let sys = fs::canonicalize(root.join("sys/dev/block").join(num.to_string()))
        .map_err(|_| Refusal::NoSysfsEntry(num))?;
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parts: Vec<String> = partitions(&sys).into_iter().map(|(n, _)| n).collect();
    if !parts.is_empty() {
        return Err(Refusal::Partitions(parts));
    }
    let holders = dir_names(&sys.join("holders"));
    if !holders.is_empty() {
        return Err(Refusal::Holders(holders));
    }
    let swaps = fs::read_to_string(root.join("proc/swaps")).unwrap_or_default();
    if is_swap(&swaps, root, real, &name) {
        return Err(Refusal::Swap);
    }
    let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default();
    let mounted = mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        let at = fields.nth(1)?;
        (dev == num.to_string()).then(|| at.to_string())
    });
    if let Some(at) = mounted {
        return Err(Refusal::Mounted(at));
    }
    let evidence = File::open(real)
        .and_then(|mut f| signatures::evidence_of_data(&mut f))
        .map_err(|e| Refusal::Unreadable(e.to_string()))?;
    match evidence {
        Some(e) => Err(Refusal::NotBlank(e)),
        None => Ok(()),
    }
}

/// Format the first acceptable entry of `settings.autoformat` with `label`, logging why
/// each one before it was passed over. Returns the formatted device.
fn autoformat(
    settings: &StateSettings,
    label: &str,
    root: &Path,
    format: &dyn Fn(&Path, &str) -> Result<(), String>,
    nodes: &dyn DeviceNodes,
) -> Result<Option<PathBuf>, StateError> {
    for cand in &settings.autoformat {
        let real = match resolve_autoformat(cand, root) {
            Ok(real) => real,
            // A list of possible disks: the absent ones are expected.
            Err(Refusal::Missing) => {
                log::debug!("state: autoformat {cand}: {}", Refusal::Missing);
                continue;
            }
            Err(why) => {
                log::warn!("state: autoformat {cand}: {why}");
                continue;
            }
        };
        let what = if root.join(cand.trim_start_matches('/')) == real {
            cand.clone()
        } else {
            format!("{cand} ({})", real.display())
        };
        if let Err(why) = check_autoformat(&real, root, nodes) {
            log::warn!("state: autoformat {what}: {why}");
            continue;
        }
        log::info!("state: formatting blank {what} as {label}");
        format(&real, label).map_err(|message| StateError::Format {
            device: what,
            message,
        })?;
        return Ok(Some(real));
    }
    Ok(None)
}

/// Find (or format) and mount the state partition, then bind its directories over the
/// root's. `format(device, label)` runs the formatter (PID 1 passes one that uses its
/// reaper); `load_fs(fstype)` loads the filesystem's modules, only once there is a disk
/// to mount. Returns what happened; errors are the caller's to judge against `required`.
pub fn setup(
    settings: &StateSettings,
    root: &Path,
    m: &dyn Mounter,
    format: &dyn Fn(&Path, &str) -> Result<(), String>,
    load_fs: &dyn Fn(&str),
) -> Result<StateOutcome, StateError> {
    setup_with(settings, root, m, format, load_fs, &Host)
}

/// [`setup`], with the device nodes looked at through `nodes`.
pub fn setup_with(
    settings: &StateSettings,
    root: &Path,
    m: &dyn Mounter,
    format: &dyn Fn(&Path, &str) -> Result<(), String>,
    load_fs: &dyn Fn(&str),
    nodes: &dyn DeviceNodes,
) -> Result<StateOutcome, StateError> {
    let sys_block = root.join("sys/class/block");
    let dev_dir = root.join("dev");
    let mut formatted = false;
    let device = match settings.label() {
        Some(label) => {
            let found = find_all_by_label(&sys_block, &dev_dir, label);
            let root_disk = if found.len() > 1 {
                root_disk(root)
            } else {
                None
            };
            match choose_labelled(label, found, &sys_block, root_disk.as_deref())? {
                Some(d) => Some(d),
                None => {
                    let made = autoformat(settings, label, root, format, nodes)?;
                    formatted = made.is_some();
                    made
                }
            }
        }
        None => Some(root.join(settings.dev.trim_start_matches('/'))).filter(|p| p.exists()),
    };
    let Some(device) = device else {
        return Ok(StateOutcome::None);
    };
    let mnt = root.join(STATE_MOUNT.trim_start_matches('/'));
    let _ = fs::create_dir_all(&mnt);
    load_fs(&settings.fstype);
    m.mount(
        &device.display().to_string(),
        &mnt,
        Some(&settings.fstype),
        STATE_MOUNT_FLAGS,
        None,
    )
    .map_err(|source| StateError::Mount {
        what: format!("{} on {}", device.display(), mnt.display()),
        source,
    })?;
    for dir in PERSISTENT_DIRS {
        let src = mnt.join(dir);
        let target = root.join(dir);
        fs::create_dir_all(&src).map_err(|source| StateError::Mount {
            what: src.display().to_string(),
            source,
        })?;
        let _ = fs::create_dir_all(&target);
        m.mount(
            &src.display().to_string(),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(|source| StateError::Mount {
            what: format!("{} on {}", src.display(), target.display()),
            source,
        })?;
    }
    Ok(if formatted {
        StateOutcome::Formatted(device)
    } else {
        StateOutcome::Mounted(device)
    })
}

/// A file of zeros PID 1 keeps on the state disk, so that a disk the user filled up can
/// still start the system: it is deleted when the disk is found (nearly) full at boot.
pub const RESERVE_FILE: &str = ".ros-reserve";
/// The reserve's size.
pub const RESERVE_BYTES: u64 = 16 << 20;
/// Less free space than this (for root) at boot counts as full.
pub const LOW_SPACE_BYTES: u64 = 32 << 20;

/// What [`keep_reserve`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Space {
    /// Enough room; the reserve is in place (made now if it was missing).
    Fine,
    /// Nearly full: the reserve was deleted to give the boot `free` bytes.
    Released {
        /// Free bytes after the release.
        free: u64,
    },
    /// Nearly full and no reserve to release.
    Full {
        /// Free bytes.
        free: u64,
    },
}

/// Free bytes (for root) of the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.blocks_free().saturating_mul(st.fragment_size()))
}

/// Check the free space of the state disk mounted at `mnt`, with `free` telling how much
/// there is: release the reserve when nearly full, (re)make it when there is room.
pub fn keep_reserve(mnt: &Path, free: &dyn Fn(&Path) -> io::Result<u64>) -> io::Result<Space> {
    let reserve = mnt.join(RESERVE_FILE);
    let now = free(mnt)?;
    if now < LOW_SPACE_BYTES {
        if reserve.exists() {
            fs::remove_file(&reserve)?;
            return Ok(Space::Released { free: free(mnt)? });
        }
        return Ok(Space::Full { free: now });
    }
    let have = fs::metadata(&reserve).map(|m| m.len()).unwrap_or(0);
    if have < RESERVE_BYTES && now >= LOW_SPACE_BYTES + RESERVE_BYTES {
        let tmp = mnt.join(format!("{RESERVE_FILE}.new"));
        let file = File::create(&tmp)?;
        // Real blocks, not a sparse hole: the point is to hold space.
        let len = i64::try_from(RESERVE_BYTES).unwrap_or(i64::MAX);
        nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, len)
            .map_err(io::Error::from)?;
        file.sync_all()?;
        fs::rename(&tmp, &reserve)?;
    }
    Ok(Space::Fine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};

    #[test]
    fn the_reserve_is_made_when_there_is_room_and_released_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path();
        let plenty = |_: &Path| Ok(1u64 << 30);
        assert_eq!(keep_reserve(mnt, &plenty).unwrap(), Space::Fine);
        assert_eq!(
            fs::metadata(mnt.join(RESERVE_FILE)).unwrap().len(),
            RESERVE_BYTES
        );
        assert!(!mnt.join(format!("{RESERVE_FILE}.new")).exists());
        // Full: the reserve goes, and what is free afterwards is reported.
        let full = |p: &Path| {
            Ok(if p.join(RESERVE_FILE).exists() {
                0
            } else {
                RESERVE_BYTES
            })
        };
        assert_eq!(
            keep_reserve(mnt, &full).unwrap(),
            Space::Released {
                free: RESERVE_BYTES
            }
        );
        assert!(!mnt.join(RESERVE_FILE).exists());
        // Still full, nothing left to release.
        let empty = |_: &Path| Ok(0u64);
        assert_eq!(keep_reserve(mnt, &empty).unwrap(), Space::Full { free: 0 });
        // Room between the thresholds: no new reserve yet.
        let some = |_: &Path| Ok(LOW_SPACE_BYTES + 1);
        assert_eq!(keep_reserve(mnt, &some).unwrap(), Space::Fine);
        assert!(!mnt.join(RESERVE_FILE).exists());
    }

    fn settings(autoformat: &[&str]) -> StateSettings {
        StateSettings {
            dev: format!("LABEL={STATE_LABEL}"),
            fstype: "ext4".into(),
            autoformat: autoformat.iter().map(|s| s.to_string()).collect(),
            required: false,
        }
    }

    /// A fake root with block devices `names`, each a 64 KiB file of `contents`.
    fn root_with(devs: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sys/class/block")).unwrap();
        fs::create_dir_all(dir.path().join("dev")).unwrap();
        for (name, bytes) in devs {
            fs::create_dir_all(dir.path().join("sys/class/block").join(name)).unwrap();
            fs::write(dir.path().join("dev").join(name), bytes).unwrap();
        }
        dir
    }

    fn ext4(label: &str) -> Vec<u8> {
        let mut b = vec![0u8; 65536];
        b[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        b[1144..1144 + label.len()].copy_from_slice(label.as_bytes());
        b
    }

    #[test]
    fn an_existing_state_partition_is_mounted_and_bound() {
        let root = root_with(&[("vda", vec![1; 65536]), ("vdb", ext4(STATE_LABEL))]);
        let rec = Recorder::default();
        let never = |_: &Path, _: &str| -> Result<(), String> { panic!("formatted") };
        let loaded = std::cell::RefCell::new(Vec::new());
        let load_fs = |fs: &str| loaded.borrow_mut().push(fs.to_string());
        let out = setup(
            &settings(&["/dev/vdb"]),
            root.path(),
            &rec,
            &never,
            &load_fs,
        )
        .unwrap();
        assert_eq!(out, StateOutcome::Mounted(root.path().join("dev/vdb")));
        assert_eq!(*loaded.borrow(), vec!["ext4".to_string()]);
        let calls = rec.calls();
        assert_eq!(calls.len(), 1 + PERSISTENT_DIRS.len());
        assert!(matches!(&calls[0], Call::Mount(src, t, Some(fs), _, None)
            if src.ends_with("dev/vdb") && t.ends_with("mnt/state") && fs == "ext4"));
        assert!(matches!(&calls[1], Call::Mount(src, t, None, flags, None)
            if src.ends_with("mnt/state/var") && t.ends_with("var") && *flags == MsFlags::MS_BIND.bits()));
    }

    /// Device numbers for the fake nodes of a test root: what `stat` would say.
    #[derive(Default)]
    struct FakeNodes(std::cell::RefCell<std::collections::HashMap<PathBuf, DevNum>>);

    impl DeviceNodes for FakeNodes {
        fn block_device(&self, path: &Path) -> io::Result<Option<DevNum>> {
            fs::metadata(path)?;
            Ok(self.0.borrow().get(path).copied())
        }
    }

    /// Add disk `name` (number 254:`minor`) to a test root: its node holding `bytes`,
    /// its sysfs directory under /sys/devices, linked from /sys/class/block and
    /// /sys/dev/block as the kernel links them.
    fn add_disk(root: &Path, nodes: &FakeNodes, name: &str, minor: u64, bytes: &[u8]) -> PathBuf {
        let sys = root.join("sys/devices/virtio").join(name);
        fs::create_dir_all(&sys).unwrap();
        for dir in ["sys/class/block", "sys/dev/block", "dev"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        let num = DevNum { major: 254, minor };
        std::os::unix::fs::symlink(&sys, root.join("sys/class/block").join(name)).unwrap();
        std::os::unix::fs::symlink(&sys, root.join("sys/dev/block").join(num.to_string())).unwrap();
        let node = root.join("dev").join(name);
        fs::write(&node, bytes).unwrap();
        nodes.0.borrow_mut().insert(node.clone(), num);
        sys
    }

    /// Add partition `n` of disk `disk` (its sysfs directory `disk_sys`) to a test root.
    fn add_partition(
        root: &Path,
        nodes: &FakeNodes,
        disk_sys: &Path,
        name: &str,
        n: u64,
        bytes: &[u8],
    ) {
        let sys = disk_sys.join(name);
        fs::create_dir_all(&sys).unwrap();
        fs::write(sys.join("partition"), format!("{n}\n")).unwrap();
        let minor = nodes.0.borrow().len() as u64 + 100;
        let num = DevNum { major: 254, minor };
        std::os::unix::fs::symlink(&sys, root.join("sys/class/block").join(name)).unwrap();
        std::os::unix::fs::symlink(&sys, root.join("sys/dev/block").join(num.to_string())).unwrap();
        let node = root.join("dev").join(name);
        fs::write(&node, bytes).unwrap();
        nodes.0.borrow_mut().insert(node, num);
    }

    fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        (dir, root)
    }

    /// The devices a [`recording_format`] formatter was given.
    type Formatted = std::rc::Rc<std::cell::RefCell<Vec<PathBuf>>>;

    /// A formatter that records what it formats (always with the state label).
    fn recording_format() -> (Formatted, impl Fn(&Path, &str) -> Result<(), String>) {
        let formatted = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let f = formatted.clone();
        (formatted, move |d: &Path, l: &str| {
            assert_eq!(l, STATE_LABEL);
            f.borrow_mut().push(d.to_path_buf());
            Ok(())
        })
    }

    #[test]
    fn only_a_blank_disk_is_formatted() {
        let (_dir, root) = canonical_tempdir();
        let nodes = FakeNodes::default();
        add_disk(&root, &nodes, "vda", 0, &[7; 65536]);
        add_disk(&root, &nodes, "vdb", 16, &[0; 65536]);
        let rec = Recorder::default();
        let (formatted, fmt) = recording_format();
        let out = setup_with(
            &settings(&["/dev/vda", "/dev/vdb"]),
            &root,
            &rec,
            &fmt,
            &|_: &str| {},
            &nodes,
        )
        .unwrap();
        assert_eq!(out, StateOutcome::Formatted(root.join("dev/vdb")));
        assert_eq!(*formatted.borrow(), vec![root.join("dev/vdb")]);
        // The state filesystem is mounted nosuid,nodev (and its binds inherit that).
        assert!(
            matches!(&rec.calls()[0], Call::Mount(_, t, Some(_), flags, None)
            if t.ends_with("mnt/state") && *flags == STATE_MOUNT_FLAGS.bits())
        );
        assert!(STATE_MOUNT_FLAGS.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV));
    }

    #[test]
    fn autoformat_takes_a_by_id_link_and_formats_the_disk_it_names() {
        let (_dir, root) = canonical_tempdir();
        let nodes = FakeNodes::default();
        add_disk(&root, &nodes, "vdb", 16, &[0; 1 << 20]);
        fs::create_dir_all(root.join("dev/disk/by-id")).unwrap();
        // As udev makes them: relative to the link's directory.
        std::os::unix::fs::symlink("../../vdb", root.join("dev/disk/by-id/virtio-state0")).unwrap();
        let (formatted, fmt) = recording_format();
        let out = setup_with(
            &settings(&["/dev/disk/by-id/virtio-state0"]),
            &root,
            &Recorder::default(),
            &fmt,
            &|_: &str| {},
            &nodes,
        )
        .unwrap();
        assert_eq!(out, StateOutcome::Formatted(root.join("dev/vdb")));
        assert_eq!(*formatted.borrow(), vec![root.join("dev/vdb")]);
    }

    #[test]
    fn a_by_id_name_is_found_in_sysfs_before_udev_has_made_the_link() {
        let (_dir, root) = canonical_tempdir();
        let nodes = FakeNodes::default();
        let vda = add_disk(&root, &nodes, "vda", 0, &[0; 4096]);
        fs::write(vda.join("serial"), "boot\n").unwrap();
        let vdb = add_disk(&root, &nodes, "vdb", 16, &[0; 1 << 20]);
        fs::write(vdb.join("serial"), "state0\n").unwrap();
        add_partition(&root, &nodes, &vda, "vda1", 1, &[0; 4096]);
        let nvme = add_disk(&root, &nodes, "nvme0n1", 32, &[0; 4096]);
        fs::create_dir_all(nvme.join("device")).unwrap();
        fs::write(nvme.join("device/model"), "QEMU NVMe Ctrl          \n").unwrap();
        fs::write(nvme.join("device/serial"), "deadbeef  \n").unwrap();
        let sys = root.join("sys/class/block");
        assert_eq!(resolve_by_id(&sys, "virtio-state0").as_deref(), Some("vdb"));
        assert_eq!(
            resolve_by_id(&sys, "virtio-boot-part1").as_deref(),
            Some("vda1")
        );
        assert_eq!(resolve_by_id(&sys, "virtio-boot-part2"), None);
        assert_eq!(
            resolve_by_id(&sys, "nvme-QEMU_NVMe_Ctrl_deadbeef").as_deref(),
            Some("nvme0n1")
        );
        assert_eq!(resolve_by_id(&sys, "ata-QEMU_HARDDISK_QM00001"), None);
        assert_eq!(
            resolve_autoformat("/dev/disk/by-id/virtio-state0", &root),
            Ok(root.join("dev/vdb"))
        );
        assert_eq!(
            resolve_autoformat("/dev/disk/by-id/virtio-gone", &root),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn autoformat_refuses_each_disk_in_use_or_holding_data_and_says_why() {
        let (_dir, root) = canonical_tempdir();
        let nodes = FakeNodes::default();
        // A whole-disk btrfs: its first 64 KiB are zero.
        let mut btrfs = vec![0u8; 1 << 20];
        btrfs[65600..65608].copy_from_slice(b"_BHRfS_M");
        add_disk(&root, &nodes, "vda", 0, &btrfs);
        let vdb = add_disk(&root, &nodes, "vdb", 16, &[0; 1 << 20]);
        add_partition(&root, &nodes, &vdb, "vdb1", 1, &[0; 4096]);
        add_partition(&root, &nodes, &vdb, "vdb2", 2, &[0; 4096]);
        let vdc = add_disk(&root, &nodes, "vdc", 32, &[0; 1 << 20]);
        fs::create_dir_all(vdc.join("holders/dm-0")).unwrap();
        add_disk(&root, &nodes, "vdd", 48, &[0; 1 << 20]);
        add_disk(&root, &nodes, "vde", 64, &[0; 1 << 20]);
        add_disk(&root, &nodes, "vdf", 80, &[0; 1 << 20]);
        fs::write(root.join("dev/notblock"), [0u8; 4096]).unwrap();
        // A node whose number the kernel does not list.
        fs::write(root.join("dev/stale"), [0u8; 4096]).unwrap();
        nodes
            .0
            .borrow_mut()
            .insert(root.join("dev/stale"), DevNum { major: 8, minor: 0 });
        fs::create_dir_all(root.join("proc/self")).unwrap();
        fs::write(
            root.join("proc/swaps"),
            "Filename\tType\tSize\tUsed\tPriority\n/dev/vdd  partition\t1048572\t0\t-2\n",
        )
        .unwrap();
        fs::write(
            root.join("proc/self/mountinfo"),
            "22 1 254:2 / / ro - squashfs /dev/vda2 ro\n\
             40 22 254:64 / /mnt/x rw - ext4 /dev/vde rw\n",
        )
        .unwrap();
        let cases: &[(&str, Result<PathBuf, Refusal>, &str)] = &[
            (
                "/dev/vda",
                Err(Refusal::NotBlank(signatures::Evidence::Signature(
                    signatures::Signature {
                        what: "btrfs superblock",
                        offset: 65600,
                    },
                ))),
                "is not blank (btrfs superblock at byte 65600); rancher.state.autoformat never formats a disk holding data",
            ),
            (
                "/dev/vdb",
                Err(Refusal::Partitions(vec!["vdb1".into(), "vdb2".into()])),
                "has partitions (vdb1, vdb2); not formatted",
            ),
            (
                "/dev/vdc",
                Err(Refusal::Holders(vec!["dm-0".into()])),
                "is in use by dm-0 (device-mapper, RAID or bcache is built on it); not formatted",
            ),
            (
                "/dev/vdd",
                Err(Refusal::Swap),
                "is an active swap device (/proc/swaps); not formatted",
            ),
            (
                "/dev/vde",
                Err(Refusal::Mounted("/mnt/x".into())),
                "is mounted on /mnt/x; not formatted",
            ),
            (
                "/dev/notblock",
                Err(Refusal::NotBlockDevice(root.join("dev/notblock"))),
                "is not a block device; not formatted",
            ),
            (
                "/dev/stale",
                Err(Refusal::NoSysfsEntry(DevNum { major: 8, minor: 0 })),
                "block device 8:0 has no /sys/dev/block entry; not formatted",
            ),
            ("/dev/vdz", Err(Refusal::Missing), "no such device"),
            ("/dev/vdf", Ok(root.join("dev/vdf")), ""),
        ];
        for (cand, want, message) in cases {
            let got = resolve_autoformat(cand, &root)
                .and_then(|real| check_autoformat(&real, &root, &nodes).map(|()| real));
            assert_eq!(&got, want, "{cand}");
            if let Err(why) = got {
                assert!(why.to_string().contains(message), "{cand}: {why}");
            }
        }
        // setup passes over every refused one and formats the acceptable one.
        let (formatted, fmt) = recording_format();
        let all: Vec<&str> = cases.iter().map(|(c, _, _)| *c).collect();
        let out = setup_with(
            &settings(&all),
            &root,
            &Recorder::default(),
            &fmt,
            &|_: &str| {},
            &nodes,
        )
        .unwrap();
        assert_eq!(out, StateOutcome::Formatted(root.join("dev/vdf")));
        assert_eq!(*formatted.borrow(), vec![root.join("dev/vdf")]);
    }

    /// A test root with the state label on `vda1` (a partition of vda) and on `vdb`
    /// (a whole disk), the root mounted from `root_dev`.
    fn two_labelled(root_dev: &str) -> (tempfile::TempDir, PathBuf, FakeNodes) {
        let (dir, root) = canonical_tempdir();
        let nodes = FakeNodes::default();
        let vda = add_disk(&root, &nodes, "vda", 0, &[0; 512]);
        add_partition(&root, &nodes, &vda, "vda1", 1, &ext4(STATE_LABEL));
        add_partition(&root, &nodes, &vda, "vda2", 2, &[0; 4096]);
        add_disk(&root, &nodes, "vdb", 16, &ext4(STATE_LABEL));
        add_disk(&root, &nodes, "vdc", 32, &[0; 4096]);
        fs::create_dir_all(root.join("proc/self")).unwrap();
        fs::write(
            root.join("proc/self/mountinfo"),
            format!("22 1 {root_dev} / / ro - squashfs /dev/x ro\n"),
        )
        .unwrap();
        (dir, root, nodes)
    }

    #[test]
    fn of_two_state_labels_the_one_on_the_root_disk_is_used() {
        // vda2 (the image's root partition) has the number add_partition gave it.
        let (_dir, root, nodes) = two_labelled("254:102");
        assert_eq!(root_disk(&root).as_deref(), Some("vda"));
        let rec = Recorder::default();
        let never = |_: &Path, _: &str| -> Result<(), String> { panic!("formatted") };
        let out = setup_with(
            &settings(&["/dev/vdc"]),
            &root,
            &rec,
            &never,
            &|_: &str| {},
            &nodes,
        )
        .unwrap();
        assert_eq!(out, StateOutcome::Mounted(root.join("dev/vda1")));
    }

    #[test]
    fn two_state_labels_off_the_root_disk_are_refused_naming_both() {
        // The root on vdc: neither labelled volume is on its disk.
        let (_dir, root, nodes) = two_labelled("254:32");
        let rec = Recorder::default();
        let never = |_: &Path, _: &str| -> Result<(), String> { panic!("formatted") };
        let err = setup_with(
            &settings(&["/dev/vdc"]),
            &root,
            &rec,
            &never,
            &|_: &str| {},
            &nodes,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, StateError::DuplicateLabel { devices, .. }
                if *devices == vec![root.join("dev/vda1"), root.join("dev/vdb")]),
            "{text}"
        );
        assert!(
            text.contains("LABEL=RANCHER_STATE is on 2 devices")
                && text.contains("dev/vda1, ")
                && text.contains("not exactly one of them is on vdc"),
            "{text}"
        );
        assert!(rec.calls().is_empty(), "nothing mounted");
        // Unknown root disk: refused too.
        assert!(matches!(
            choose_labelled(
                STATE_LABEL,
                vec![root.join("dev/vda1"), root.join("dev/vdb")],
                &root.join("sys/class/block"),
                None
            ),
            Err(StateError::DuplicateLabel {
                root_disk: None,
                ..
            })
        ));
    }

    #[test]
    fn two_state_labels_both_on_the_root_disk_are_refused() {
        let (_dir, root, nodes) = two_labelled("254:102");
        let vda = root.join("sys/devices/virtio/vda");
        add_partition(&root, &nodes, &vda, "vda3", 3, &ext4(STATE_LABEL));
        let never = |_: &Path, _: &str| -> Result<(), String> { panic!("formatted") };
        let err = setup_with(
            &settings(&[]),
            &root,
            &Recorder::default(),
            &never,
            &|_: &str| {},
            &nodes,
        )
        .unwrap_err();
        assert!(
            matches!(&err, StateError::DuplicateLabel { devices, .. } if devices.len() == 3),
            "{err}"
        );
    }

    #[test]
    fn the_root_disk_of_an_installed_system_is_the_one_holding_the_root_image() {
        let (_dir, root, _nodes) = two_labelled("7:0");
        // / is the loop device; the image file is on vdb, mounted at BOOT_DISK.
        fs::write(
            root.join("proc/self/mountinfo"),
            format!(
                "22 1 7:0 / / ro - squashfs /dev/loop0 ro\n\
                 27 22 254:16 / {} rw - ext4 /dev/vdb rw\n",
                paths::BOOT_DISK
            ),
        )
        .unwrap();
        assert_eq!(root_disk(&root).as_deref(), Some("vdb"));
    }

    #[test]
    fn nothing_found_means_ram() {
        let root = root_with(&[("vda", vec![7; 65536])]);
        let rec = Recorder::default();
        let never = |_: &Path, _: &str| -> Result<(), String> { panic!("formatted") };
        let no_fs = |fs: &str| panic!("loaded {fs} with no disk to mount");
        let out = setup(&settings(&["/dev/vda"]), root.path(), &rec, &never, &no_fs).unwrap();
        assert_eq!(out, StateOutcome::None);
        assert!(rec.calls().is_empty());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test process: it waits for mke2fs itself
    fn a_real_mke2fs_image_is_found_by_label() {
        let Some(mkfs) = ["/sbin/mke2fs", "/usr/sbin/mke2fs"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            ros_test_support::skip("a_real_mke2fs_image_is_found_by_label", "no mke2fs");
            return;
        };
        let root = root_with(&[("vdc", vec![])]);
        let img = root.path().join("dev/vdc");
        fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let status = std::process::Command::new(mkfs)
            .args(["-q", "-F", "-t", "ext4", "-L", STATE_LABEL])
            .arg(&img)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            find_all_by_label(
                &root.path().join("sys/class/block"),
                &root.path().join("dev"),
                STATE_LABEL
            ),
            vec![img]
        );
    }
}
