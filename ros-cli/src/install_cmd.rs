//! `ros install`: put rOS on a disk that boots by itself, under BIOS and under UEFI. An
//! MBR with two partitions: 1, ext4 labelled RANCHER_STATE (so it is also the state disk),
//! holding the slots (`/boot/slot-a/{vmlinuz,initrd,root.img}`: the running root image),
//! extlinux from Debian's syslinux and GRUB's entries (`/boot/grub`), and the given
//! cloud-config as the user config; 2, a small EFI system partition (type 0xEF, FAT) first
//! on the disk, holding `/EFI/BOOT/BOOTX64.EFI`: GRUB, which reads partition 1's
//! `/boot/grub/grub.cfg` (the image's `/usr/lib/ros/esp.img`, written as it is). The kernel
//! finds its root as `root=PARTUUID=... rootimg=/boot/slot-a/root.img`.
//!
//! What is copied is what runs: the root image from the root's device, the kernel and
//! initrd from beside it (the image's FAT boot partition, the installed disk's slot, or the
//! CD-ROM of a boot from RAM).
//!
//! Nothing is written before the cloud-config validates, the device checks pass and the
//! user confirms. The device is resolved to its kernel device (a `/dev/disk/by-id/` link
//! too) and checked by its major:minor, then held with an exclusive open (`O_EXCL`) whose
//! descriptor makes every write to the disk. Runs in PID 1's mount namespace (the host's
//! tools and mounts), which the privileged console can enter.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ros_config::{paths, Mode};

use crate::{CliError, ExitStatus};

/// The boot files copied, in the boot directory they are read from.
pub const BOOT_FILES: [&str; 2] = ["vmlinuz", "initrd"];
/// extlinux's MBR boot code (Debian's extlinux package).
pub const MBR_CODE: &str = "/usr/lib/EXTLINUX/mbr.bin";
/// The label of the installed partition (root image and state).
pub const LABEL: &str = "RANCHER_STATE";
/// The EFI system partition's contents: a FAT image holding GRUB (initramfs/build.sh).
pub const ESP_IMAGE: &str = "/usr/lib/ros/esp.img";
/// The EFI system partition (partition 2) starts at 1 MiB...
const FIRST_LBA: u32 = 2048;
/// ... and takes 16 MiB; partition 1 follows it to the end of the disk.
const ESP_SECTORS: u32 = 32768;
const SECTOR: u64 = 512;
/// Partition 1's smallest size.
const MIN_STATE_BYTES: u64 = 256 << 20;

/// `ros install`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The disk to install to (a whole disk, e.g. /dev/sda); everything on it is erased.
    #[arg(short = 'd', long = "device")]
    device: PathBuf,
    /// Cloud-config for the installed system (becomes its user config).
    #[arg(short = 'c', long = "cloud-config")]
    cloud_config: PathBuf,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Do not reboot when done.
    #[arg(long = "no-reboot")]
    no_reboot: bool,
    /// Extra kernel command line arguments for the installed system.
    #[arg(short = 'a', long = "append", default_value = "")]
    append: String,
}

/// Run `ros install`.
pub fn run(args: InstallArgs) -> Result<(), CliError> {
    let fail = |m: String| CliError::failure(format!("ros install: {m}"));
    // 1. The cloud-config must be valid before anything else happens.
    let text = fs::read_to_string(&args.cloud_config)
        .map_err(|e| fail(format!("reading {}: {e}", args.cloud_config.display())))?;
    let origin = args.cloud_config.display().to_string();
    let diagnostics = ros_config::validate_text(&origin, &text, Mode::Strict);
    if diagnostics.iter().any(|d| d.is_error()) {
        let lines: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        return Err(CliError::new(
            ExitStatus::InvalidConfig,
            format!(
                "ros install: {origin} is not valid; nothing was written:\n{}",
                lines.join("\n")
            ),
        ));
    }
    if args.append.contains(['\n', '\r']) {
        return Err(CliError::new(
            ExitStatus::Usage,
            "ros install: --append must be one line",
        ));
    }
    // 2. From here on, the host's view: its tools, its mounts, its /dev.
    crate::host::enter_host_mount_namespace().map_err(fail)?;
    let disk = check_disk(&args.device, Path::new("/"), &HostNodes).map_err(fail)?;
    // Claimed from here on: the kernel refuses a mount, a swapon or a RAID assembly of
    // the disk while this descriptor is open.
    let dev = open_exclusive(&disk).map_err(fail)?;
    let root_image = running_root_image().map_err(fail)?;
    let boot = BootSource::find(&root_image).map_err(fail)?;
    if !args.force && !confirm(&disk.path)? {
        return Err(CliError::failure(
            "ros install: not confirmed; nothing was written",
        ));
    }
    let version = crate::host::running_release(Path::new("/")).map_err(|e| fail(e.message))?;
    install(
        &disk,
        dev,
        &root_image,
        &boot.dir,
        &text,
        &args.append,
        &version,
    )
    .map_err(fail)?;
    drop(boot);
    println!("ros install: installed to {}", disk.path.display());
    if args.no_reboot {
        return Ok(());
    }
    println!("ros install: rebooting");
    crate::power::request(ros_control::PowerAction::Reboot)
}

fn confirm(disk: &Path) -> Result<bool, CliError> {
    print!(
        "ros install: everything on {} will be erased. Continue? [y/N] ",
        disk.display()
    );
    io::stdout().flush().ok();
    let mut answer = String::new();
    io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::failure(format!("ros install: reading the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// What `ros install` asks of a device node. A seam because a test cannot make a block
/// device (mknod needs root); everything else the checks read is under a root directory.
pub trait BlockNodes {
    /// `major:minor` of the block device at `path`; `None` when it is not a block device.
    fn block_device(&self, path: &Path) -> io::Result<Option<String>>;
}

/// The real `stat(2)`.
#[derive(Debug, Clone, Copy)]
pub struct HostNodes;

impl BlockNodes for HostNodes {
    fn block_device(&self, path: &Path) -> io::Result<Option<String>> {
        let meta = fs::metadata(path)?;
        Ok(meta
            .file_type()
            .is_block_device()
            .then(|| dev_id(meta.rdev())))
    }
}

/// The disk `ros install` writes to, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDisk {
    /// What the user gave (`/dev/disk/by-id/...`), for messages.
    pub given: PathBuf,
    /// The device node it resolves to (`/dev/vdb`).
    pub path: PathBuf,
    /// Its kernel name (`vdb`).
    pub name: String,
    /// `major:minor`.
    pub id: String,
}

/// `device` as the user gave it, and what it resolves to when that differs.
fn described(given: &Path, real: &Path) -> String {
    if given == real {
        given.display().to_string()
    } else {
        format!("{} ({})", given.display(), real.display())
    }
}

/// Names of the entries of `dir`, sorted (none if it is missing).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The whole disk `device` names (a link such as `/dev/disk/by-id/...` too), if it is one
/// and nothing uses it or any of its partitions: not mounted (by `major:minor` in
/// mountinfo, not by name), nothing built on it (holders), no active swap. The device is
/// looked up in sysfs by its number, never by the name it was given. Reads `/sys` and
/// `/proc` under `root`.
pub fn check_disk(
    device: &Path,
    root: &Path,
    nodes: &dyn BlockNodes,
) -> Result<TargetDisk, String> {
    let real = fs::canonicalize(device).map_err(|e| format!("{}: {e}", device.display()))?;
    let what = described(device, &real);
    let id = nodes
        .block_device(&real)
        .map_err(|e| format!("{what}: {e}"))?
        .ok_or_else(|| format!("{what} is not a block device"))?;
    let sys = fs::canonicalize(root.join("sys/dev/block").join(&id))
        .map_err(|_| format!("{what}: the kernel lists no block device {id}"))?;
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Ok(number) = fs::read_to_string(sys.join("partition")) {
        let disk = sys
            .parent()
            .and_then(|d| d.file_name())
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(format!(
            "{what} is a partition ({name}, number {} of {disk}); give the whole disk (/dev/{disk})",
            number.trim()
        ));
    }
    // The disk and each of its partitions: name, sysfs directory, major:minor.
    let mut parts = vec![(name.clone(), sys.clone(), id.clone())];
    for part in entries(&sys) {
        let dir = sys.join(&part);
        if !dir.join("partition").exists() {
            continue;
        }
        if let Ok(dev) = fs::read_to_string(dir.join("dev")) {
            parts.push((part, dir, dev.trim().to_string()));
        }
    }
    let in_use = |why: String| format!("{what} is in use ({why}); nothing was written");
    let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default();
    for (part, _, dev) in &parts {
        if let Some(mount) = mounted_from(&mountinfo, std::slice::from_ref(dev)) {
            return Err(in_use(format!("{part} is mounted on {mount}")));
        }
    }
    for (part, dir, _) in &parts {
        let holders = entries(&dir.join("holders"));
        if !holders.is_empty() {
            return Err(in_use(format!(
                "{} is built on {part}: device-mapper, RAID or bcache",
                holders.join(", ")
            )));
        }
    }
    let swaps = fs::read_to_string(root.join("proc/swaps")).unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let Some(file) = line.split_whitespace().next() else {
            continue;
        };
        // By name, then by what the name resolves to (a swap on /dev/mapper/x is held,
        // and refused above, but a link to a partition is not).
        let resolved = fs::canonicalize(root.join(file.trim_start_matches('/'))).ok();
        let names = [
            Path::new(file).file_name(),
            resolved.as_deref().and_then(Path::file_name),
        ];
        let swap_on = parts.iter().find(|(part, _, _)| {
            file.starts_with("/dev/")
                && names
                    .iter()
                    .flatten()
                    .any(|n| n.to_string_lossy() == part.as_str())
        });
        if let Some((part, _, _)) = swap_on {
            return Err(in_use(format!("{part} is an active swap, {file}")));
        }
    }
    Ok(TargetDisk {
        given: device.to_path_buf(),
        path: real,
        name,
        id,
    })
}

/// Open `disk` for writing with `O_EXCL`: for a block device that is an exclusive claim,
/// which fails with EBUSY while the disk is mounted, a swap, or a member of a RAID or
/// device-mapper device, and which stops anyone from claiming it while it is held. Every
/// write to the disk goes through the descriptor returned.
pub fn open_exclusive(disk: &TargetDisk) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let what = described(&disk.given, &disk.path);
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(&disk.path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::EBUSY) {
                format!(
                    "{what} is in use (the kernel refused to let it be opened exclusively: \
                     mounted, a swap, or part of a RAID or device-mapper device); nothing was written"
                )
            } else {
                format!("opening {what}: {e}")
            }
        })
}

/// `major:minor` of a device number.
fn dev_id(rdev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )
}

/// The mount point of the first mountinfo line whose device is one of `ids`.
pub fn mounted_from(mountinfo: &str, ids: &[String]) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        ids.iter()
            .any(|id| id == dev)
            .then(|| mount_point.to_string())
    })
}

/// The device holding the running root (squashfs on `/`), from PID 1's mountinfo.
fn running_root_image() -> Result<PathBuf, String> {
    let info =
        fs::read_to_string("/proc/1/mountinfo").map_err(|e| format!("/proc/1/mountinfo: {e}"))?;
    info.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next()?;
            (mount_point == "/" && fstype == "squashfs").then(|| PathBuf::from(source))
        })
        .ok_or_else(|| "the running root is not a squashfs image; nothing to install from".into())
}

/// Where the running system's kernel and initrd are read from; a boot partition mounted
/// for that is unmounted on drop.
struct BootSource {
    /// The directory holding [`BOOT_FILES`].
    dir: PathBuf,
    /// The mount made to reach it.
    mounted: Option<PathBuf>,
}

impl BootSource {
    /// Beside the running root image `root` (a block device): on an installed disk, the
    /// directory of the loop device's backing file; on the image, the `/boot` of the first
    /// partition of the root partition's disk (FAT, mounted read-only here).
    fn find(root: &Path) -> Result<BootSource, String> {
        let name = root.file_name().unwrap_or_default();
        let sys = Path::new("/sys/class/block").join(name);
        let backing = fs::read_to_string(sys.join("loop/backing_file"));
        let source = if let Ok(backing) = backing {
            // A boot from RAM: the root image came in the initramfs (which PID 1 emptied
            // when it switched root: the kernel says the file is deleted).
            let file = backing.trim();
            if file.strip_suffix(" (deleted)").unwrap_or(file) == ros_config::paths::LIVE_ROOT_IMAGE
            {
                return BootSource::live_medium();
            }
            let dir = Path::new(backing.trim())
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf();
            BootSource { dir, mounted: None }
        } else {
            let boot = boot_partition(&sys).ok_or_else(|| {
                format!(
                    "the root {} is not a partition of a disk with a boot partition; \
                     nothing to copy the kernel and initrd from (boot the rOS image, ros.img)",
                    root.display()
                )
            })?;
            // The boot partition's filesystem, if nothing has loaded it yet.
            let _ = Command::new("/bin/busybox")
                .args(["modprobe", "-a", "vfat", "nls_cp437", "nls_ascii"])
                .status();
            let target = mount_point()?;
            if let Err(e) = mount_read_only(&boot, "vfat", &target) {
                let _ = fs::remove_dir(&target);
                return Err(format!(
                    "mounting the boot partition {} on {}: {e}",
                    boot.display(),
                    target.display()
                ));
            }
            BootSource {
                dir: target.join("boot"),
                mounted: Some(target),
            }
        };
        for f in BOOT_FILES {
            let path = source.dir.join(f);
            if !path.is_file() {
                return Err(format!(
                    "{} is missing; nothing to install from",
                    path.display()
                ));
            }
        }
        Ok(source)
    }
}

impl BootSource {
    /// On a boot from RAM, the ISO it booted from: the CD-ROM whose `/boot` holds
    /// [`BOOT_FILES`] (iso9660, mounted read-only here).
    fn live_medium() -> Result<BootSource, String> {
        // The CD-ROM driver and its filesystem, if udev has not loaded them yet (the IDE and
        // SATA adapters' the initrd loaded for a boot from RAM).
        let _ = Command::new("/bin/busybox")
            .args(["modprobe", "-a", "sr_mod", "isofs"])
            .status();
        let target = mount_point()?;
        for name in entries(Path::new("/sys/class/block")) {
            let cd = Path::new("/dev").join(&name);
            if !name.starts_with("sr") || mount_read_only(&cd, "iso9660", &target).is_err() {
                continue;
            }
            let dir = target.join("boot");
            if BOOT_FILES.iter().all(|f| dir.join(f).is_file()) {
                return Ok(BootSource {
                    dir,
                    mounted: Some(target),
                });
            }
            let _ = nix::mount::umount(&target);
        }
        let _ = fs::remove_dir(&target);
        Err(
            "this system runs from RAM (the ISO or PXE), and no CD-ROM holds the rOS \
             ISO's /boot/vmlinuz and /boot/initrd to install from: attach the ISO (or boot \
             the disk image, ros.img) and run ros install again"
                .into(),
        )
    }
}

/// A directory of this process's own to mount the install's source on.
fn mount_point() -> Result<PathBuf, String> {
    let target = PathBuf::from(format!("/run/ros/install-boot-{}", std::process::id()));
    fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    Ok(target)
}

/// Mount `device` (`fstype`) read-only on `target`, with nothing on it to run or open as a
/// device.
fn mount_read_only(device: &Path, fstype: &str, target: &Path) -> nix::Result<()> {
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some(device),
        target,
        Some(fstype),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
}

impl Drop for BootSource {
    fn drop(&mut self) {
        if let Some(target) = &self.mounted {
            let _ = nix::mount::umount(target);
            let _ = fs::remove_dir(target);
        }
    }
}

/// The first partition of the disk that partition `sys` (its `/sys/class/block` entry) is
/// on, as a `/dev` path, if `sys` is another partition.
pub fn boot_partition(sys: &Path) -> Option<PathBuf> {
    let number = fs::read_to_string(sys.join("partition")).ok()?;
    if number.trim() == "1" {
        return None;
    }
    // A partition's sysfs directory is inside its disk's.
    let real = fs::canonicalize(sys).ok()?;
    let disk = real.parent()?.file_name()?;
    Some(first_partition(&Path::new("/dev").join(disk)))
}

/// The size of the squashfs image at the start of `r` (its superblock's `bytes_used`,
/// rounded up to 4 KiB as mksquashfs pads it).
pub fn squashfs_size(r: &mut impl Read) -> Result<u64, String> {
    let mut sb = [0u8; 48];
    r.read_exact(&mut sb)
        .map_err(|e| format!("reading the root image: {e}"))?;
    if &sb[0..4] != b"hsqs" {
        return Err("the root image is not squashfs".into());
    }
    let mut used = [0u8; 8];
    used.copy_from_slice(&sb[40..48]);
    Ok(u64::from_le_bytes(used).div_ceil(4096) * 4096)
}

/// Write an MBR with `boot_code`, the EFI system partition (2) from 1 MiB, and the
/// bootable Linux partition (1) after it to the end of a disk of `size` bytes; returns how
/// a kernel line names partition 1 (`PARTUUID=SSSSSSSS-01`, from the new disk signature).
pub fn write_partition_table<W: Write + Seek>(
    disk: &mut W,
    size: u64,
    boot_code: &[u8],
) -> Result<String, String> {
    let sectors = size / SECTOR;
    let state_lba = FIRST_LBA + ESP_SECTORS;
    if sectors < u64::from(state_lba) + MIN_STATE_BYTES / SECTOR {
        return Err(format!(
            "the disk is too small ({} MiB; at least {} MiB)",
            size >> 20,
            (u64::from(state_lba) * SECTOR + MIN_STATE_BYTES) >> 20
        ));
    }
    let count = u32::try_from(sectors - u64::from(state_lba)).unwrap_or(u32::MAX);
    // The disk signature: the boot entries name the partition by it (`root=PARTUUID=`),
    // so it must differ from every other disk's (random, not the pid: two installs from
    // the same image run as the same pid).
    let mut signature = [0u8; 4];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut signature))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    if signature == [0; 4] {
        signature = 0x524f_5321u32.to_le_bytes();
    }
    let mut mbr = mbrman::MBR::new_from(disk, SECTOR as u32, signature)
        .map_err(|e| format!("partition table: {e}"))?;
    let n = boot_code.len().min(mbr.header.bootstrap_code.len());
    mbr.header.bootstrap_code[..n].copy_from_slice(&boot_code[..n]);
    mbr[1] = mbrman::MBRPartitionEntry {
        boot: mbrman::BOOT_ACTIVE,
        first_chs: mbrman::CHS::empty(),
        sys: 0x83,
        last_chs: mbrman::CHS::empty(),
        starting_lba: state_lba,
        sectors: count,
    };
    mbr[2] = mbrman::MBRPartitionEntry {
        boot: mbrman::BOOT_INACTIVE,
        first_chs: mbrman::CHS::empty(),
        sys: 0xef,
        last_chs: mbrman::CHS::empty(),
        starting_lba: FIRST_LBA,
        sectors: ESP_SECTORS,
    };
    mbr.write_into(disk)
        .map_err(|e| format!("writing the partition table: {e}"))?;
    Ok(format!("PARTUUID={:08x}-01", u32::from_le_bytes(signature)))
}

/// Write the EFI system partition's image `esp` where [`write_partition_table`] puts it.
pub fn write_esp<W: Write + Seek>(disk: &mut W, esp: &[u8]) -> Result<(), String> {
    if esp.len() as u64 > u64::from(ESP_SECTORS) * SECTOR {
        return Err(format!(
            "{ESP_IMAGE}: {} bytes, larger than the EFI system partition",
            esp.len()
        ));
    }
    disk.seek(SeekFrom::Start(u64::from(FIRST_LBA) * SECTOR))
        .and_then(|_| disk.write_all(esp))
        .map_err(|e| format!("writing the EFI system partition: {e}"))
}

/// The first partition of `disk` (`/dev/vdb1`, `/dev/nvme0n1p1`).
pub fn first_partition(disk: &Path) -> PathBuf {
    let name = disk.to_string_lossy();
    if name.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{name}p1"))
    } else {
        PathBuf::from(format!("{name}1"))
    }
}

fn install(
    target: &TargetDisk,
    mut dev: File,
    root_image: &Path,
    boot_dir: &Path,
    cloud_config: &str,
    append: &str,
    version: &str,
) -> Result<(), String> {
    let io_err = |what: String| move |e: io::Error| format!("{what}: {e}");
    let boot_code = fs::read(MBR_CODE).map_err(io_err(MBR_CODE.into()))?;
    let esp = fs::read(ESP_IMAGE).map_err(io_err(ESP_IMAGE.into()))?;
    let mut image = File::open(root_image).map_err(io_err(root_image.display().to_string()))?;
    let image_size = squashfs_size(&mut image)?;
    image
        .seek(SeekFrom::Start(0))
        .map_err(io_err("root image".into()))?;

    let disk = target.path.as_path();
    println!("ros install: partitioning {}", disk.display());
    let size = dev
        .seek(SeekFrom::End(0))
        .map_err(io_err(disk.display().to_string()))?;
    // Old signatures (filesystems, partition tables) in the first MiB go, and those in the
    // partitions' first MiB too, so that no stale superblock fools a later probe: through
    // the claimed descriptor, before the partitions exist for anyone to open.
    dev.seek(SeekFrom::Start(0))
        .map_err(io_err(disk.display().to_string()))?;
    let wipe = u64::from(FIRST_LBA + ESP_SECTORS) * SECTOR + (1 << 20);
    dev.write_all(&vec![0u8; usize::try_from(wipe).unwrap_or(18 << 20)])
        .map_err(io_err(disk.display().to_string()))?;
    dev.seek(SeekFrom::Start(0))
        .map_err(io_err(disk.display().to_string()))?;
    let root = write_partition_table(&mut dev, size, &boot_code)?;
    write_esp(&mut dev, &esp)?;
    dev.sync_all().map_err(io_err(disk.display().to_string()))?;
    let reread_err =
        |e: io::Error| format!("re-reading the partition table of {}: {e}", disk.display());
    match reread_partitions(&dev) {
        // The claim goes now: the kernel lets no one claim a partition of a claimed
        // disk, and mke2fs and mount(2) below claim the partition.
        Ok(()) => drop(dev),
        // Some kernels refuse the re-read on a disk held exclusively, even by the caller:
        // everything is written, so let go and ask again.
        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
            drop(dev);
            let plain = File::open(disk).map_err(io_err(disk.display().to_string()))?;
            reread_partitions(&plain).map_err(reread_err)?;
        }
        Err(e) => return Err(reread_err(e)),
    }
    let part = first_partition(disk);
    wait_for(&part, Duration::from_secs(10))?;

    println!("ros install: formatting {} as ext4 {LABEL}", part.display());
    // No 64bit and no metadata checksums: extlinux 6.04 reads neither.
    run_tool(
        Command::new("/sbin/mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                LABEL,
                "-O",
                "^64bit,^metadata_csum",
            ])
            .arg(&part),
    )?;
    // ext4 may not be loaded yet (no state disk on this boot).
    let _ = Command::new("/bin/busybox")
        .args(["modprobe", "-a", "crc32c_generic", "ext4"])
        .status();

    let target = PathBuf::from(format!("/run/ros/install-{}", std::process::id()));
    fs::create_dir_all(&target).map_err(io_err(target.display().to_string()))?;
    nix::mount::mount(
        Some(&part),
        &target,
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("mounting {} on {}: {e}", part.display(), target.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut state = ros_os::slots::OsState::installed(version, append, now);
    state.root = Some(root);
    let result = populate(
        &target,
        boot_dir,
        &mut image,
        image_size,
        cloud_config,
        &state,
    );
    let unmounted =
        nix::mount::umount(&target).map_err(|e| format!("unmounting {}: {e}", target.display()));
    let _ = fs::remove_dir(&target);
    result?;
    unmounted?;
    nix::unistd::sync();
    Ok(())
}

fn populate(
    target: &Path,
    boot_dir: &Path,
    image: &mut File,
    image_size: u64,
    cloud_config: &str,
    state: &ros_os::slots::OsState,
) -> Result<(), String> {
    let io_err = |what: &Path| {
        let what = what.display().to_string();
        move |e: io::Error| format!("{what}: {e}")
    };
    // Slot A of two (ros_os::slots): `ros os upgrade` writes the other one.
    let disk = ros_os::disk::Disk::at(target);
    let boot = disk.path(&ros_os::slots::Slot::A.dir());
    let syslinux = disk.path(ros_os::disk::SYSLINUX_DIR);
    fs::create_dir_all(&syslinux).map_err(io_err(&syslinux))?;
    fs::create_dir_all(&boot).map_err(io_err(&boot))?;
    for name in BOOT_FILES {
        let from = boot_dir.join(name);
        println!("ros install: copying {}", from.display());
        fs::copy(&from, boot.join(name)).map_err(io_err(&from))?;
    }
    println!(
        "ros install: copying the root image ({} MiB)",
        image_size >> 20
    );
    let dest = boot.join("root.img");
    let mut out = File::create(&dest).map_err(io_err(&dest))?;
    let copied = io::copy(&mut image.take(image_size), &mut out).map_err(io_err(&dest))?;
    if copied != image_size {
        return Err(format!("root image: copied {copied} of {image_size} bytes"));
    }
    out.sync_all().map_err(io_err(&dest))?;

    disk.write_state(state).map_err(|e| e.to_string())?;
    disk.write_boot_config(state).map_err(|e| e.to_string())?;
    run_tool(
        Command::new("/usr/bin/extlinux")
            .arg("--install")
            .arg(&syslinux),
    )?;

    // The user config, where the state disk's /var puts it (private: it may hold secrets).
    let user = target.join(paths::USER_CONFIG.trim_start_matches('/'));
    let conf_dir = user.parent().unwrap_or(target);
    fs::create_dir_all(conf_dir).map_err(io_err(conf_dir))?;
    fs::set_permissions(conf_dir, fs::Permissions::from_mode(0o700)).map_err(io_err(conf_dir))?;
    ros_config::write_atomic(&user, cloud_config.as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", user.display()))?;
    Ok(())
}

fn run_tool(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

nix::ioctl_none!(blkrrpart, 0x12, 95);

fn reread_partitions(dev: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: BLKRRPART takes no argument; the fd is an open block device.
    unsafe { blkrrpart(dev.as_raw_fd()) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Wait (bounded) for the kernel to create `path` after re-reading the partition table.
fn wait_for(path: &Path, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            return Err(format!(
                "{} did not appear within {limit:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn partition_table_is_a_bootable_linux_partition_after_an_efi_system_partition() {
        let size = 300u64 << 20;
        let mut disk = Cursor::new(vec![0u8; 18 << 20]);
        let code: Vec<u8> = (0..440u32).map(|i| (i % 251) as u8).collect();
        let root = write_partition_table(&mut disk, size, &code).unwrap();
        write_esp(&mut disk, &[0xe5; 4096]).unwrap();
        let bytes = disk.into_inner();
        let signature = u32::from_le_bytes(bytes[440..444].try_into().unwrap());
        assert_eq!(root, format!("PARTUUID={signature:08x}-01"));
        assert_ne!(signature, 0);
        assert_eq!(&bytes[..440], &code[..]);
        assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let state = &bytes[446..462];
        assert_eq!(state[0], 0x80, "bootable");
        assert_eq!(state[4], 0x83, "Linux");
        assert_eq!(word(446 + 8), 2048 + 32768);
        assert_eq!(u64::from(word(446 + 12)), size / 512 - 2048 - 32768);
        let esp = &bytes[462..478];
        assert_eq!(esp[0], 0, "not bootable");
        assert_eq!(esp[4], 0xef, "EFI system partition");
        assert_eq!((word(462 + 8), word(462 + 12)), (2048, 32768));
        assert!(bytes[478..510].iter().all(|b| *b == 0), "two partitions");
        // The ESP's image, at its partition's start.
        assert!(bytes[(1 << 20) - 1] == 0 && bytes[1 << 20] == 0xe5);
        assert!(bytes[(1 << 20) + 4095] == 0xe5 && bytes[(1 << 20) + 4096] == 0);
        let mut disk = Cursor::new(Vec::new());
        let e = write_esp(&mut disk, &vec![0; 17 << 20]).unwrap_err();
        assert!(e.contains("larger than the EFI system partition"), "{e}");
    }

    #[test]
    fn small_disks_are_refused() {
        let mut disk = Cursor::new(vec![0u8; 4096]);
        let e = write_partition_table(&mut disk, 100 << 20, &[0; 440]).unwrap_err();
        assert!(e.contains("too small"), "{e}");
    }

    #[test]
    fn squashfs_size_comes_from_the_superblock() {
        let mut sb = vec![0u8; 96];
        sb[..4].copy_from_slice(b"hsqs");
        sb[40..48].copy_from_slice(&5000u64.to_le_bytes());
        assert_eq!(squashfs_size(&mut Cursor::new(&sb)).unwrap(), 8192);
        sb[0] = b'x';
        assert!(squashfs_size(&mut Cursor::new(&sb)).is_err());
    }

    #[test]
    fn partitions_and_mounts() {
        assert_eq!(
            first_partition(Path::new("/dev/vdb")),
            Path::new("/dev/vdb1")
        );
        assert_eq!(
            first_partition(Path::new("/dev/nvme0n1")),
            Path::new("/dev/nvme0n1p1")
        );
        let info = "22 1 254:0 / / ro,relatime - squashfs /dev/vda ro\n\
                    30 22 254:17 / /mnt/state rw - ext4 /dev/vdb1 rw\n";
        assert_eq!(
            mounted_from(info, &["254:16".into(), "254:17".into()]),
            Some("/mnt/state".into())
        );
        assert_eq!(mounted_from(info, &["254:32".into()]), None);
    }

    /// Device numbers for the fake nodes of a test root: what `stat` would say.
    #[derive(Default)]
    struct FakeNodes(std::cell::RefCell<Vec<(PathBuf, String)>>);

    impl BlockNodes for FakeNodes {
        fn block_device(&self, path: &Path) -> io::Result<Option<String>> {
            fs::metadata(path)?;
            let nodes = self.0.borrow();
            Ok(nodes
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, id)| id.clone()))
        }
    }

    /// A test root with disk vdb (254:16) and its partitions vdb1 (254:17) and vdb2
    /// (254:18), a node for each in /dev, the sysfs tree as the kernel links it, and an
    /// empty /proc/self/mountinfo and /proc/swaps.
    fn fake_host() -> (tempfile::TempDir, PathBuf, FakeNodes) {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let nodes = FakeNodes::default();
        let disk = root.join("sys/devices/pci0/virtio2/block/vdb");
        for d in [
            "sys/dev/block",
            "sys/class/block",
            "dev/disk/by-id",
            "proc/self",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let add = |name: &str, dir: &Path, id: &str| {
            fs::create_dir_all(dir.join("holders")).unwrap();
            fs::write(dir.join("dev"), format!("{id}\n")).unwrap();
            std::os::unix::fs::symlink(dir, root.join("sys/dev/block").join(id)).unwrap();
            std::os::unix::fs::symlink(dir, root.join("sys/class/block").join(name)).unwrap();
            let node = root.join("dev").join(name);
            fs::write(&node, b"").unwrap();
            nodes.0.borrow_mut().push((node, id.to_string()));
        };
        add("vdb", &disk, "254:16");
        for n in 1..=2 {
            let part = disk.join(format!("vdb{n}"));
            add(&format!("vdb{n}"), &part, &format!("254:{}", 16 + n));
            fs::write(part.join("partition"), format!("{n}\n")).unwrap();
        }
        std::os::unix::fs::symlink("../../vdb", root.join("dev/disk/by-id/virtio-target")).unwrap();
        fs::write(root.join("proc/self/mountinfo"), "").unwrap();
        fs::write(
            root.join("proc/swaps"),
            "Filename Type Size Used Priority\n",
        )
        .unwrap();
        (dir, root, nodes)
    }

    #[test]
    fn a_by_id_link_is_checked_as_the_disk_it_names() {
        let (_dir, root, nodes) = fake_host();
        let link = root.join("dev/disk/by-id/virtio-target");
        let disk = check_disk(&link, &root, &nodes).unwrap();
        assert_eq!(disk.path, root.join("dev/vdb"));
        assert_eq!((disk.name.as_str(), disk.id.as_str()), ("vdb", "254:16"));
        // The partition written next is the disk's, not the link's name plus "1".
        assert_eq!(first_partition(&disk.path), root.join("dev/vdb1"));
    }

    #[test]
    fn a_disk_in_use_is_refused_before_a_byte_is_written() {
        let link = |root: &Path| root.join("dev/disk/by-id/virtio-target");
        type Setup = fn(&Path, &FakeNodes);
        let cases: [(Setup, &str); 6] = [
            (
                // A partition mounted: found by its major:minor, whatever its name.
                |root, _| {
                    fs::write(
                        root.join("proc/self/mountinfo"),
                        "22 1 254:0 / / ro - squashfs /dev/vda ro\n\
                         30 22 254:18 / /mnt/state rw - ext4 /dev/disk/by-label/X rw\n",
                    )
                    .unwrap()
                },
                "is in use (vdb2 is mounted on /mnt/state); nothing was written",
            ),
            (
                // The whole disk mounted.
                |root, _| {
                    fs::write(
                        root.join("proc/self/mountinfo"),
                        "30 22 254:16 / /data rw - ext4 /dev/vdb rw\n",
                    )
                    .unwrap()
                },
                "is in use (vdb is mounted on /data)",
            ),
            (
                |root, _| {
                    let part = root.join("sys/devices/pci0/virtio2/block/vdb/vdb1");
                    fs::create_dir_all(part.join("holders/md0")).unwrap()
                },
                "is in use (md0 is built on vdb1: device-mapper, RAID or bcache)",
            ),
            (
                |root, _| {
                    fs::create_dir_all(root.join("sys/devices/pci0/virtio2/block/vdb/holders/dm-0"))
                        .unwrap()
                },
                "is in use (dm-0 is built on vdb",
            ),
            (
                |root, _| {
                    fs::write(
                        root.join("proc/swaps"),
                        "Filename Type Size Used Priority\n/dev/vdb1 partition 1048572 0 -2\n",
                    )
                    .unwrap()
                },
                "is in use (vdb1 is an active swap, /dev/vdb1)",
            ),
            (
                // Not a block device at all.
                |root, nodes| {
                    nodes
                        .0
                        .borrow_mut()
                        .retain(|(p, _)| *p != root.join("dev/vdb"));
                },
                "is not a block device",
            ),
        ];
        for (setup, want) in cases {
            let (_dir, root, nodes) = fake_host();
            setup(&root, &nodes);
            let e = check_disk(&link(&root), &root, &nodes).unwrap_err();
            assert!(e.contains(want), "want {want:?}, got {e:?}");
            assert!(e.contains("virtio-target"), "names what was given: {e}");
        }
    }

    #[test]
    fn a_partition_is_refused_naming_its_disk() {
        let (_dir, root, nodes) = fake_host();
        let e = check_disk(&root.join("dev/vdb2"), &root, &nodes).unwrap_err();
        assert!(
            e.contains("is a partition (vdb2, number 2 of vdb); give the whole disk (/dev/vdb)"),
            "{e}"
        );
        // A number the kernel does not list.
        for (node, id) in nodes.0.borrow_mut().iter_mut() {
            if *node == root.join("dev/vdb1") {
                *id = "8:99".into();
            }
        }
        let e = check_disk(&root.join("dev/vdb1"), &root, &nodes).unwrap_err();
        assert!(e.contains("the kernel lists no block device 8:99"), "{e}");
    }

    #[test]
    fn the_boot_partition_is_the_first_on_the_root_partitions_disk() {
        let dir = tempfile::tempdir().unwrap();
        let devices = dir.path().join("devices/pci0/virtio1/block/vda");
        let sys = dir.path().join("class/block");
        fs::create_dir_all(&sys).unwrap();
        for n in 1..=2 {
            let part = devices.join(format!("vda{n}"));
            fs::create_dir_all(&part).unwrap();
            fs::write(part.join("partition"), format!("{n}\n")).unwrap();
            std::os::unix::fs::symlink(&part, sys.join(format!("vda{n}"))).unwrap();
        }
        std::os::unix::fs::symlink(&devices, sys.join("vda")).unwrap();
        assert_eq!(
            boot_partition(&sys.join("vda2")),
            Some(PathBuf::from("/dev/vda1"))
        );
        // The first partition itself, or a whole disk: none.
        assert_eq!(boot_partition(&sys.join("vda1")), None);
        assert_eq!(boot_partition(&sys.join("vda")), None);
    }

    #[test]
    fn the_boot_entry_finds_slot_as_root_image_by_label_and_keeps_user_arguments() {
        let cfg = ros_os::slots::OsState::installed("1.0", "rancher.debug  ", 0).boot_config();
        assert!(cfg.contains("  APPEND console=tty0 console=ttyS0 quiet panic=10 root=LABEL=RANCHER_STATE rootimg=/boot/slot-a/root.img ros.slot=a rancher.debug\n"), "{cfg}");
        assert!(
            cfg.contains("KERNEL /boot/slot-a/vmlinuz")
                && cfg.contains("INITRD /boot/slot-a/initrd")
        );
    }
}
