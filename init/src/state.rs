//! The persistent state disk (`LABEL=RANCHER_STATE`, ext4): found by label, formatted
//! when `rancher.state.autoformat` names a *blank* disk, mounted at `/mnt/state`, and
//! bound over `/var`, `/home` and `/opt` so that what lives there survives a reboot.
//! Without one the system runs from RAM, and says so.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::sys::Mounter;

/// The label RancherOS users know.
pub const STATE_LABEL: &str = "RANCHER_STATE";
/// Where the state partition is mounted.
pub const STATE_MOUNT: &str = "/mnt/state";
/// Directories of the root that live on the state partition (`<state>/<dir>`).
pub const PERSISTENT_DIRS: &[&str] = &["var", "home", "opt"];
/// The formatter from Debian's e2fsprogs, in the root image.
pub const MKFS: &str = "/sbin/mke2fs";

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

/// The device under `dev_dir` whose filesystem label is `label`, scanning the block
/// devices listed in `sys_block`.
pub fn find_by_label(sys_block: &Path, dev_dir: &Path, label: &str) -> Option<PathBuf> {
    block_devices(sys_block)
        .into_iter()
        .map(|n| dev_dir.join(n))
        .find(|dev| {
            first_bytes(dev)
                .ok()
                .and_then(|b| ros_cloudinit::detect_label(&b))
                .is_some_and(|(_, l)| l == label)
        })
}

/// Whether a disk is blank: its first 64 KiB are all zero (no partition table, no
/// filesystem superblock). Anything else is never formatted.
pub fn is_blank(dev: &Path) -> io::Result<bool> {
    let bytes = first_bytes(dev)?;
    Ok(!bytes.is_empty() && bytes.iter().all(|b| *b == 0))
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
    let sys_block = root.join("sys/class/block");
    let dev_dir = root.join("dev");
    let mut formatted = false;
    let device = match settings.label() {
        Some(label) => match find_by_label(&sys_block, &dev_dir, label) {
            Some(d) => Some(d),
            None => {
                let mut chosen = None;
                for cand in &settings.autoformat {
                    let path = root.join(cand.trim_start_matches('/'));
                    match is_blank(&path) {
                        Ok(true) => {
                            log::info!("state: formatting blank {cand} as {label}");
                            format(&path, label).map_err(|message| StateError::Format {
                                device: cand.clone(),
                                message,
                            })?;
                            formatted = true;
                            chosen = Some(path);
                            break;
                        }
                        Ok(false) => log::warn!(
                            "state: {cand} is not blank; rancher.state.autoformat never formats a disk holding data"
                        ),
                        Err(e) => log::debug!("state: {cand}: {e}"),
                    }
                }
                chosen
            }
        },
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
        MsFlags::MS_NOATIME,
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

    #[test]
    fn only_a_blank_disk_is_formatted() {
        let root = root_with(&[("vda", vec![7; 65536]), ("vdb", vec![0; 65536])]);
        let rec = Recorder::default();
        let formatted = std::cell::RefCell::new(Vec::new());
        let fmt = |d: &Path, l: &str| {
            formatted
                .borrow_mut()
                .push((d.to_path_buf(), l.to_string()));
            Ok(())
        };
        let out = setup(
            &settings(&["/dev/vda", "/dev/vdb"]),
            root.path(),
            &rec,
            &fmt,
            &|_: &str| {},
        )
        .unwrap();
        assert_eq!(out, StateOutcome::Formatted(root.path().join("dev/vdb")));
        assert_eq!(
            *formatted.borrow(),
            vec![(root.path().join("dev/vdb"), STATE_LABEL.to_string())]
        );
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
    fn a_real_mke2fs_image_is_found_by_label() {
        let Some(mkfs) = ["/sbin/mke2fs", "/usr/sbin/mke2fs"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            eprintln!("skipped: no mke2fs on this host");
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
            find_by_label(
                &root.path().join("sys/class/block"),
                &root.path().join("dev"),
                STATE_LABEL
            ),
            Some(img)
        );
    }
}
