//! Finding the read-only root, mounting it, and switching into it while staying PID 1.
//!
//! runc cannot `pivot_root` out of the initramfs (rootfs can't be unmounted), so the
//! new root must be a real mount moved onto `/` (the classic switch_root: move the
//! pseudo filesystems across, `MS_MOVE` the new root onto `/`, `chroot`).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::paths;
use crate::sys::Mounter;

/// Errors on the way to the real root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The root device never showed up.
    #[error("root device {device} did not appear within {waited:?}; {seen}")]
    DeviceMissing {
        /// The device path.
        device: String,
        /// How long we waited.
        waited: Duration,
        /// What the kernel has instead ([`seen_disks`]).
        seen: String,
    },
    /// `root=LABEL=` matches more than one device.
    #[error(
        "root=LABEL={label} is on {} devices ({}); refusing to guess which one to boot: \
         relabel or detach all but one, or boot with root=PARTUUID=",
        devices.len(),
        devices.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    DuplicateLabel {
        /// The label.
        label: String,
        /// Every device carrying it.
        devices: Vec<PathBuf>,
    },
    /// `root=PARTUUID=` names no MBR partition.
    #[error("root=PARTUUID={0}: not an MBR partition id (SSSSSSSS-PP: the disk signature and the partition number, in hex)")]
    BadPartUuid(String),
    /// Mounting the root failed.
    #[error("mounting root {device} ({fstype}) on {target}: {source}")]
    Mount {
        /// The device.
        device: String,
        /// The filesystem type tried.
        fstype: String,
        /// Where.
        target: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A step of the switch failed.
    #[error("switching root: {step}: {source}")]
    Switch {
        /// What we were doing.
        step: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Wait until `device` exists, woken by inotify on its directory, up to `timeout`.
pub fn wait_for_device(device: &Path, timeout: Duration) -> Result<(), RootError> {
    let dir = device.parent().unwrap_or(Path::new("/dev"));
    wait_on_dir(dir, timeout, || device.exists().then_some(()))
        .ok_or_else(|| missing(device.display().to_string(), timeout))
}

fn missing(device: String, waited: Duration) -> RootError {
    RootError::DeviceMissing {
        device,
        waited,
        seen: seen_disks(Path::new("/sys/class/block")),
    }
}

/// The block devices the kernel has, for the error when the root is not among them; with
/// no disk at all, say which controllers the initrd drives.
pub fn seen_disks(sys_block: &Path) -> String {
    let disks: Vec<String> = crate::state::block_devices(sys_block)
        .into_iter()
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .collect();
    if disks.is_empty() {
        "the kernel found no disk: this initrd drives virtio (blk and scsi), IDE, \
         SATA (AHCI), NVMe and VMware pvscsi disks"
            .to_string()
    } else {
        format!("block devices: {}", disks.join(" "))
    }
}

/// Wait until a block device whose filesystem is labelled `label` exists (`root=LABEL=`).
/// More than one is an error: the root must not come from whichever volume sorts first.
pub fn wait_for_label(label: &str, timeout: Duration) -> Result<PathBuf, RootError> {
    let find = || find_unique_by_label(Path::new("/sys/class/block"), Path::new("/dev"), label);
    wait_on_dir(Path::new("/dev"), timeout, find)
        .ok_or_else(|| missing(format!("LABEL={label}"), timeout))?
}

/// The one device labelled `label` among the block devices of `sys_block`, as its node in
/// `dev_dir`; `None` while there is none, an error naming them all when there are several.
pub fn find_unique_by_label(
    sys_block: &Path,
    dev_dir: &Path,
    label: &str,
) -> Option<Result<PathBuf, RootError>> {
    let mut found = crate::state::find_all_by_label(sys_block, dev_dir, label);
    match found.len() {
        0 => None,
        1 => found.pop().map(Ok),
        _ => Some(Err(RootError::DuplicateLabel {
            label: label.to_string(),
            devices: found,
        })),
    }
}

/// An MBR partition id, `SSSSSSSS-PP` as the kernel writes it: the disk signature and
/// the partition number, both in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartUuid {
    /// The disk signature (MBR bytes 440..444, little-endian).
    pub signature: u32,
    /// The partition number (1-based).
    pub partition: u32,
}

impl PartUuid {
    /// Parse `SSSSSSSS-PP`.
    pub fn parse(id: &str) -> Result<PartUuid, RootError> {
        let bad = || RootError::BadPartUuid(id.to_string());
        let (sig, part) = id.split_once('-').ok_or_else(bad)?;
        if sig.len() != 8 || part.is_empty() || part.len() > 2 {
            return Err(bad());
        }
        Ok(PartUuid {
            signature: u32::from_str_radix(sig, 16).map_err(|_| bad())?,
            partition: u32::from_str_radix(part, 16).map_err(|_| bad())?,
        })
    }
}

/// The partition `id` among the block devices of `sys_block` (`/sys/class/block`), as its
/// node in `dev_dir`: a partition with that number on a disk whose MBR has that signature.
pub fn find_by_partuuid(sys_block: &Path, dev_dir: &Path, id: PartUuid) -> Option<PathBuf> {
    crate::state::block_devices(sys_block)
        .into_iter()
        .find_map(|name| {
            let part = sys_block.join(&name);
            let number: u32 = fs::read_to_string(part.join("partition"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if number != id.partition {
                return None;
            }
            // A partition's sysfs directory is inside its disk's.
            let disk = fs::canonicalize(&part).ok()?;
            let disk = disk.parent()?.file_name()?;
            let mut f = fs::File::open(dev_dir.join(disk)).ok()?;
            let header = mbrman::MBRHeader::read_from(&mut f).ok()?;
            (header.disk_signature == id.signature.to_le_bytes()).then(|| dev_dir.join(&name))
        })
}

/// Wait until the MBR partition `id` exists (`root=PARTUUID=`).
pub fn wait_for_partuuid(id: &str, timeout: Duration) -> Result<PathBuf, RootError> {
    let parsed = PartUuid::parse(id)?;
    let find = || find_by_partuuid(Path::new("/sys/class/block"), Path::new("/dev"), parsed);
    wait_on_dir(Path::new("/dev"), timeout, find)
        .ok_or_else(|| missing(format!("PARTUUID={id}"), timeout))
}

/// Check `found` each time something is created in `dir` (inotify), up to `timeout`.
fn wait_on_dir<T>(
    dir: &Path,
    timeout: Duration,
    mut found: impl FnMut() -> Option<T>,
) -> Option<T> {
    if let Some(v) = found() {
        return Some(v);
    }
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
    // Watch before re-checking, so a device created in between is not missed.
    if let Some(i) = &inotify {
        let _ = i.add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
    }
    // `timeout` comes from `rootdelay=`: checked, since an overflow would panic PID 1.
    let deadline = crate::power::deadline_after(timeout);
    loop {
        if let Some(v) = found() {
            return Some(v);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        // Without inotify, look again every 100 ms.
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match &inotify {
            Some(i) => {
                let mut fds = [PollFd::new(i.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(ms));
                let _ = i.read_events();
            }
            None => std::thread::sleep(Duration::from_millis(100).min(left)),
        }
    }
}

nix::ioctl_none!(loop_ctl_get_free, 0x4C, 0x82);
nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);

/// Mount `disk` (ext4, read-write: the state disk mounts the same filesystem later) at
/// [`paths::BOOT_DISK`] and attach the image file `image` on it to a free loop device,
/// read-only. Returns the loop device.
pub fn attach_image(disk: &Path, image: &str, m: &dyn Mounter) -> Result<PathBuf, RootError> {
    let target = Path::new(paths::BOOT_DISK);
    let _ = fs::create_dir_all(target);
    m.mount(
        &disk.to_string_lossy(),
        target,
        Some("ext4"),
        MsFlags::empty(),
        None,
    )
    .map_err(|source| RootError::Mount {
        device: disk.display().to_string(),
        fstype: "ext4".into(),
        target: target.to_path_buf(),
        source,
    })?;
    attach_loop(&target.join(image.trim_start_matches('/')))
}

/// Attach `file` to a free loop device, read-only. Returns the loop device.
pub fn attach_loop(file: &Path) -> Result<PathBuf, RootError> {
    let step = |what: String| move |source: io::Error| RootError::Switch { step: what, source };
    let backing = fs::File::open(file).map_err(step(format!("opening {}", file.display())))?;
    let control =
        fs::File::open("/dev/loop-control").map_err(step("opening /dev/loop-control".into()))?;
    use std::os::fd::AsRawFd as _;
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    // Another opener may take the free device between asking and attaching: ask again.
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is /dev/loop-control.
        let n = unsafe { loop_ctl_get_free(control.as_raw_fd()) }
            .map_err(|e| step("finding a free loop device".into())(e.into()))?;
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        wait_for_device(&dev, Duration::from_secs(5))?;
        let loopdev = fs::File::open(&dev).map_err(step(format!("opening {}", dev.display())))?;
        // SAFETY: LOOP_SET_FD takes the backing file's descriptor, open for this call.
        match unsafe { loop_set_fd(loopdev.as_raw_fd(), backing.as_raw_fd()) } {
            Ok(_) => return Ok(dev),
            Err(nix::errno::Errno::EBUSY) => last = io::Error::from_raw_os_error(libc::EBUSY),
            Err(e) => {
                return Err(step(format!(
                    "attaching {} to {}",
                    file.display(),
                    dev.display()
                ))(e.into()))
            }
        }
    }
    Err(step(format!("attaching {}", file.display()))(last))
}

use std::os::fd::AsFd;

/// Mount the root device read-only at `target`.
pub fn mount_root(
    device: &str,
    fstype: &str,
    target: &Path,
    m: &dyn Mounter,
) -> Result<(), RootError> {
    let _ = fs::create_dir_all(target);
    m.mount(device, target, Some(fstype), MsFlags::MS_RDONLY, None)
        .map_err(|source| RootError::Mount {
            device: device.to_string(),
            fstype: fstype.to_string(),
            target: target.to_path_buf(),
            source,
        })
}

/// Pseudo filesystems carried from the initramfs into the new root.
pub const CARRIED_MOUNTS: &[&str] = &["/dev", "/proc", "/sys", "/run"];

/// Move the pseudo filesystems under `newroot` and give it a writable /etc overlay.
pub fn prepare_newroot(newroot: &Path, m: &dyn Mounter) -> Result<(), RootError> {
    for dir in CARRIED_MOUNTS {
        let target = newroot.join(dir.trim_start_matches('/'));
        m.mount(dir, &target, None, MsFlags::MS_MOVE, None)
            .map_err(|source| RootError::Switch {
                step: format!("moving {dir} to {}", target.display()),
                source,
            })?;
    }
    // /etc: the image's files below, a tmpfs-backed upper layer on top, so the
    // system can write hostname, resolv.conf and the like.
    let ovl = newroot.join(paths::ETC_OVERLAY_DIR.trim_start_matches('/'));
    let upper = ovl.join("upper");
    let work = ovl.join("work");
    for d in [&upper, &work] {
        fs::create_dir_all(d).map_err(|source| RootError::Switch {
            step: format!("creating {}", d.display()),
            source,
        })?;
    }
    let etc = newroot.join("etc");
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        etc.display(),
        upper.display(),
        work.display()
    );
    m.mount(
        "overlay",
        &etc,
        Some("overlay"),
        MsFlags::empty(),
        Some(&data),
    )
    .map_err(|source| RootError::Switch {
        step: "mounting the /etc overlay".into(),
        source,
    })
}

/// Delete the initramfs contents (they'd pin RAM forever), staying on its device.
pub fn free_initramfs(root: &Path) {
    let Ok(meta) = fs::symlink_metadata(root) else {
        return;
    };
    remove_on_device(root, meta.dev());
}

fn remove_on_device(dir: &Path, dev: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            remove_on_device(&path, dev);
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Make `newroot` the root of PID 1: `MS_MOVE` it onto `/`, chroot, chdir.
pub fn switch_into(newroot: &Path, m: &dyn Mounter) -> Result<(), RootError> {
    let step = |s: &str| {
        let s = s.to_string();
        move |source: io::Error| RootError::Switch { step: s, source }
    };
    std::env::set_current_dir(newroot).map_err(step("chdir to new root"))?;
    m.mount(".", Path::new("/"), None, MsFlags::MS_MOVE, None)
        .map_err(step("moving new root onto /"))?;
    nix::unistd::chroot(".").map_err(|e| step("chroot")(e.into()))?;
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    Ok(())
}

/// The whole switch: initramfs (`/`) to the mounted root at `newroot`.
pub fn switch_root(newroot: &Path, m: &dyn Mounter) -> Result<(), RootError> {
    prepare_newroot(newroot, m)?;
    free_initramfs(Path::new("/"));
    switch_into(newroot, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};

    #[test]
    fn moves_pseudo_filesystems_then_overlays_etc() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::default();
        prepare_newroot(dir.path(), &rec).unwrap();
        let calls = rec.calls();
        for (i, d) in CARRIED_MOUNTS.iter().enumerate() {
            match &calls[i] {
                Call::Mount(src, target, None, flags, None) => {
                    assert_eq!(src, d);
                    assert_eq!(*target, dir.path().join(d.trim_start_matches('/')));
                    assert_eq!(*flags, MsFlags::MS_MOVE.bits());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        match &calls[CARRIED_MOUNTS.len()] {
            Call::Mount(_, target, Some(fs), _, Some(data)) => {
                assert_eq!(*target, dir.path().join("etc"));
                assert_eq!(fs, "overlay");
                assert!(data.contains("upperdir="), "{data}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn root_mount_is_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::default();
        mount_root("/dev/vda", "squashfs", dir.path(), &rec).unwrap();
        assert_eq!(
            rec.calls(),
            vec![Call::Mount(
                "/dev/vda".into(),
                dir.path().to_path_buf(),
                Some("squashfs".into()),
                MsFlags::MS_RDONLY.bits(),
                None
            )]
        );
    }

    #[test]
    fn missing_device_times_out_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("vdz");
        let err = wait_for_device(&dev, Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("vdz"), "{err}");
    }

    #[test]
    fn a_missing_root_names_the_disks_there_are_or_says_there_are_none() {
        let sys = tempfile::tempdir().unwrap();
        let none = seen_disks(sys.path());
        assert!(
            none.contains("no disk") && none.contains("virtio"),
            "{none}"
        );
        for name in ["loop0", "ram0"] {
            fs::create_dir(sys.path().join(name)).unwrap();
        }
        assert_eq!(
            seen_disks(sys.path()),
            none,
            "loop and ram devices are not disks"
        );
        for name in ["vda", "vda1", "sda"] {
            fs::create_dir(sys.path().join(name)).unwrap();
        }
        assert_eq!(seen_disks(sys.path()), "block devices: sda vda vda1");
    }

    #[test]
    fn device_created_while_waiting_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("vda");
        let dev2 = dev.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::write(dev2, b"").unwrap();
        });
        wait_for_device(&dev, Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn partuuids_parse_as_the_kernel_writes_them() {
        assert_eq!(
            PartUuid::parse("524f5330-02").unwrap(),
            PartUuid {
                signature: 0x524f_5330,
                partition: 2
            }
        );
        assert_eq!(PartUuid::parse("DEADBEEF-0a").unwrap().partition, 10);
        for bad in [
            "524f5330",
            "524f533-02",
            "524f5330-",
            "524f5330-002",
            "xyzf5330-02",
            "6fa1e1c2-57d4-4b4e-a3b9-6d8a1c1f2e3d",
        ] {
            let e = PartUuid::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("SSSSSSSS-PP"), "{e}");
        }
    }

    /// A fake /sys/class/block and /dev: disks with MBRs of the given signatures, each
    /// with partitions 1 and 2.
    fn fake_disks(dir: &Path, disks: &[(&str, u32)]) -> (PathBuf, PathBuf) {
        let (sys, dev) = (dir.join("sys/class/block"), dir.join("dev"));
        fs::create_dir_all(&sys).unwrap();
        fs::create_dir_all(&dev).unwrap();
        for (disk, signature) in disks {
            let devices = dir.join("sys/devices/virtio").join(disk);
            std::os::unix::fs::symlink(&devices, sys.join(disk)).unwrap();
            for n in 1..=2 {
                let part = devices.join(format!("{disk}{n}"));
                fs::create_dir_all(&part).unwrap();
                fs::write(part.join("partition"), format!("{n}\n")).unwrap();
                std::os::unix::fs::symlink(&part, sys.join(format!("{disk}{n}"))).unwrap();
            }
            let mut image = io::Cursor::new(vec![0u8; 4096]);
            mbrman::MBR::new_from(&mut image, 512, signature.to_le_bytes())
                .unwrap()
                .write_into(&mut image)
                .unwrap();
            fs::write(dev.join(disk), image.into_inner()).unwrap();
        }
        (sys, dev)
    }

    #[test]
    fn partuuid_finds_the_partition_on_the_disk_with_that_signature() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = fake_disks(dir.path(), &[("vda", 0x1111_1111), ("vdb", 0x524f_5330)]);
        let id = |s| PartUuid::parse(s).unwrap();
        assert_eq!(
            find_by_partuuid(&sys, &dev, id("524f5330-02")),
            Some(dev.join("vdb2"))
        );
        assert_eq!(
            find_by_partuuid(&sys, &dev, id("11111111-01")),
            Some(dev.join("vda1"))
        );
        assert_eq!(find_by_partuuid(&sys, &dev, id("524f5330-03")), None);
        assert_eq!(find_by_partuuid(&sys, &dev, id("524f5331-02")), None);
    }

    #[test]
    fn a_root_label_on_two_devices_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = (dir.path().join("sys/class/block"), dir.path().join("dev"));
        fs::create_dir_all(&dev).unwrap();
        let ext4 = |label: &str| {
            let mut b = vec![0u8; 65536];
            b[1080..1082].copy_from_slice(&[0x53, 0xEF]);
            b[1144..1144 + label.len()].copy_from_slice(label.as_bytes());
            b
        };
        for (name, label) in [("vda1", "OTHER"), ("vdb", "RANCHER_STATE")] {
            fs::create_dir_all(sys.join(name)).unwrap();
            fs::write(dev.join(name), ext4(label)).unwrap();
        }
        assert!(find_unique_by_label(&sys, &dev, "NOPE").is_none());
        assert_eq!(
            find_unique_by_label(&sys, &dev, "RANCHER_STATE")
                .unwrap()
                .unwrap(),
            dev.join("vdb")
        );
        fs::create_dir_all(sys.join("vdc")).unwrap();
        fs::write(dev.join("vdc"), ext4("RANCHER_STATE")).unwrap();
        let e = find_unique_by_label(&sys, &dev, "RANCHER_STATE")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("root=LABEL=RANCHER_STATE is on 2 devices")
                && e.contains("vdb, ")
                && e.contains("vdc)"),
            "{e}"
        );
    }

    #[test]
    fn free_initramfs_removes_files_on_the_same_device() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/c"), b"x").unwrap();
        free_initramfs(dir.path());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
