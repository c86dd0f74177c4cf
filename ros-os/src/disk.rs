//! The files of an installed disk's partition (mounted at `/run/ros/boot-disk` by PID 1):
//! the state file, the boot entries of both bootloaders (syslinux under BIOS, GRUB under
//! UEFI), the slots' files, syslinux's ADV and GRUB's environment block. Every write is
//! atomic (a temporary file, fsync, rename, fsync of the directory), and [`Disk::settle`]
//! checkpoints the ext4 journal afterwards: extlinux and GRUB read the filesystem without
//! replaying the journal, so a rename that is only in the journal is not there for them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::adv::{self, Adv};
use crate::bundle::{Part, PartSink};
use crate::grub::{self, GRUBENV, GRUB_CFG};
use crate::slots::{OsState, Slot, SLOT_FILES};

/// Where PID 1 mounts an installed disk's partition.
pub const BOOT_DISK: &str = "/run/ros/boot-disk";
/// The state file, on the partition.
pub const STATE_FILE: &str = "boot/ros-os.json";
/// syslinux's directory, on the partition.
pub const SYSLINUX_DIR: &str = "boot/syslinux";
/// Where `ros os upgrade -i URL` downloads a bundle on the partition, until it is checked
/// and written to a slot.
pub const DOWNLOAD: &str = "boot/upgrade.download";
/// The files of the single slot `ros install` wrote before there were two.
pub const LEGACY_FILES: [&str; 3] = ["boot/vmlinuz", "boot/initrd", "boot/root.img"];
/// extlinux, in the root image.
pub const EXTLINUX: &str = "/usr/bin/extlinux";

/// The firmware that booted this machine, and so the bootloader that reads the disk and
/// whose boot-once entry arms a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// A PC BIOS: the MBR's code, then extlinux (syslinux.cfg, the ADV).
    Bios,
    /// UEFI: GRUB on the EFI system partition (grub.cfg, grubenv).
    Uefi,
}

impl Firmware {
    /// This machine's: UEFI when the kernel was started through UEFI (it then has
    /// `/sys/firmware/efi`).
    pub fn current() -> Firmware {
        if Path::new("/sys/firmware/efi").exists() {
            Firmware::Uefi
        } else {
            Firmware::Bios
        }
    }
}

/// Why something on the disk could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// To what.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state file is there but cannot be used.
    #[error(transparent)]
    State(#[from] crate::slots::StateError),
    /// extlinux failed.
    #[error("{0}")]
    Extlinux(String),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::Io {
        action,
        path,
        source,
    }
}

/// An installed disk's partition, mounted at `root`.
#[derive(Debug, Clone)]
pub struct Disk {
    root: PathBuf,
}

impl Disk {
    /// The partition mounted at `root`.
    pub fn at(root: &Path) -> Disk {
        Disk {
            root: root.to_path_buf(),
        }
    }

    /// A path on the partition.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The state, `None` when there is no state file (a disk of the single-slot layout).
    pub fn read_state(&self) -> Result<Option<OsState>, DiskError> {
        let path = self.path(STATE_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(OsState::parse(&text, &path.display().to_string())?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Whether this is a disk of the single-slot layout (no state file, a root image
    /// directly in `boot/`).
    pub fn is_legacy(&self) -> bool {
        !self.path(STATE_FILE).exists() && self.path(LEGACY_FILES[2]).exists()
    }

    /// Replace the state file.
    pub fn write_state(&self, state: &OsState) -> Result<(), DiskError> {
        write_atomic(&self.path(STATE_FILE), state.to_text().as_bytes())
    }

    /// The two bootloaders' configs and what `state` says they must hold.
    fn boot_configs(&self, state: &OsState) -> [(PathBuf, String); 2] {
        [
            (
                self.path(&format!("{SYSLINUX_DIR}/syslinux.cfg")),
                state.boot_config(),
            ),
            (self.path(GRUB_CFG), crate::grub::boot_config(state)),
        ]
    }

    /// Replace syslinux.cfg and grub.cfg with the entries of `state`.
    pub fn write_boot_config(&self, state: &OsState) -> Result<(), DiskError> {
        for (path, text) in self.boot_configs(state) {
            if let Some(dir) = path.parent().filter(|d| !d.exists()) {
                fs::create_dir_all(dir).map_err(io("creating", dir))?;
            }
            write_atomic(&path, text.as_bytes())?;
        }
        // GRUB rewrites its environment block in place: it must be there beforehand.
        let env = self.path(GRUBENV);
        if !env.exists() {
            write_atomic(&env, &grub::boot_once_env(None))?;
        }
        Ok(())
    }

    /// Whether syslinux.cfg and grub.cfg hold exactly the entries of `state` (a power cut
    /// between the writes of [`Disk::commit`] leaves them behind the state).
    pub fn boot_config_matches(&self, state: &OsState) -> bool {
        self.boot_configs(state)
            .iter()
            .all(|(path, text)| fs::read_to_string(path).is_ok_and(|t| t == *text))
    }

    /// Write the state, then the boot entries it implies, then [`Disk::settle`]: the
    /// order in which a power cut at any point leaves a state PID 1 understands.
    pub fn commit(&self, state: &OsState) -> Result<(), DiskError> {
        self.write_state(state)?;
        self.write_boot_config(state)?;
        self.settle()
    }

    /// Make what was written visible to the bootloader: freeze the filesystem (which
    /// writes back the journal and the data) and thaw it at once. Only a kernel that
    /// cannot freeze it gets a sync instead.
    pub fn settle(&self) -> Result<(), DiskError> {
        let dir = File::open(&self.root).map_err(io("opening", &self.root))?;
        // Only the partition's own mount is frozen: a directory inside another filesystem
        // (a test's temporary directory) would freeze that whole filesystem, the host's /
        // perhaps. syncfs is all such a directory gets.
        if !is_mount_point(&self.root) {
            return nix::unistd::syncfs(&dir).map_err(|e| io("syncing", &self.root)(e.into()));
        }
        // FIFREEZE and FITHAW: _IOWR('X', 119, int) and _IOWR('X', 120, int).
        const FIFREEZE: libc::c_ulong = 0xC004_5877;
        const FITHAW: libc::c_ulong = 0xC004_5878;
        // SAFETY: both ioctls take an int argument (ignored) on a descriptor of the
        // filesystem's root directory, which `dir` keeps open.
        let frozen = unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE as _, 0) };
        if frozen != 0 {
            let e = io::Error::last_os_error();
            // EOPNOTSUPP (a filesystem without freeze) or EBUSY (frozen already).
            nix::unistd::sync();
            return match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EBUSY) => Ok(()),
                _ => Err(io("freezing", &self.root)(e)),
            };
        }
        // SAFETY: as above.
        let thawed = unsafe { libc::ioctl(dir.as_raw_fd(), FITHAW as _, 0) };
        if thawed != 0 {
            return Err(io("thawing", &self.root)(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// What syslinux's ADV says (an armed boot-once entry).
    pub fn adv(&self) -> Result<Adv, DiskError> {
        let path = self.path(&format!("{SYSLINUX_DIR}/ldlinux.sys"));
        let mut file = File::open(&path).map_err(io("opening", &path))?;
        adv::read(&mut file).map_err(io("reading", &path))
    }

    /// The boot-once label armed for the bootloader `firmware` starts (syslinux's ADV, or
    /// GRUB's `next_entry`), and not yet consumed by it.
    pub fn boot_once(&self, firmware: Firmware) -> Option<String> {
        match firmware {
            Firmware::Bios => self.adv().ok()?.boot_once().map(String::from),
            Firmware::Uefi => grub::boot_once(&fs::read(self.path(GRUBENV)).ok()?),
        }
    }

    /// Arm `slot` for the next boot, once, in the bootloader `firmware` starts: only there,
    /// so that no other bootloader keeps an entry armed after the trial (`extlinux --once`;
    /// GRUB's environment block). Not for PID 1: it waits for extlinux itself.
    pub fn arm(&self, slot: Slot, firmware: Firmware) -> Result<(), DiskError> {
        if firmware == Firmware::Uefi {
            write_atomic(&self.path(GRUBENV), &grub::boot_once_env(Some(slot)))?;
            // Visible to GRUB before the caller records the trial as armed, as extlinux's
            // direct write to the ADV is: else a boot that missed it would be taken for a
            // kernel that never reached PID 1.
            return self.settle();
        }
        self.extlinux(&[&format!("--once={}", slot.label())])?;
        match self.adv()?.boot_once() {
            Some(l) if l == slot.label() => Ok(()),
            other => Err(DiskError::Extlinux(format!(
                "extlinux --once={} left the ADV saying {other:?}",
                slot.label()
            ))),
        }
    }

    /// Clear the boot-once entry of both bootloaders (`extlinux --reset-adv`, an empty
    /// environment block). Not for PID 1.
    pub fn disarm(&self) -> Result<(), DiskError> {
        write_atomic(&self.path(GRUBENV), &grub::boot_once_env(None))?;
        self.extlinux(&["--reset-adv"])
    }

    fn extlinux(&self, args: &[&str]) -> Result<(), DiskError> {
        let dir = self.path(SYSLINUX_DIR);
        let out = Command::new(EXTLINUX)
            .args(args)
            .arg(&dir)
            .output()
            .map_err(io("running extlinux on", &dir))?;
        if !out.status.success() {
            return Err(DiskError::Extlinux(format!(
                "extlinux {} {}: {} ({})",
                args.join(" "),
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            )));
        }
        Ok(())
    }

    /// Bytes free on the partition.
    pub fn free_bytes(&self) -> Result<u64, DiskError> {
        let st = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| io("checking the free space of", &self.root)(e.into()))?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    /// The size of what `slot` holds now (its room counts as free for a new release).
    pub fn slot_bytes(&self, slot: Slot) -> u64 {
        SLOT_FILES
            .iter()
            .filter_map(|f| fs::metadata(self.path(&format!("{}/{f}", slot.dir()))).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Remove what an upgrade cut short left on the partition (the download, slot files
    /// still named `NAME.new`): nothing uses them, and they take room a later upgrade
    /// needs. Only when no upgrade runs (PID 1, at boot). Returns what was removed.
    pub fn remove_leftovers(&self) -> Vec<PathBuf> {
        let download = self.path(DOWNLOAD);
        let mut removed: Vec<PathBuf> = fs::remove_file(&download)
            .map(|()| download)
            .into_iter()
            .collect();
        for slot in [Slot::A, Slot::B] {
            removed.extend(remove_unfinished(&self.path(&slot.dir())));
        }
        removed
    }

    /// A sink that writes a bundle's boot parts to `slot` as `NAME.new`; nothing replaces
    /// the slot's files until [`SlotWriter::finish`].
    pub fn slot_writer(&self, slot: Slot) -> Result<SlotWriter, DiskError> {
        let dir = self.path(&slot.dir());
        fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        Ok(SlotWriter {
            dir,
            current: None,
            written: Vec::new(),
        })
    }

    /// Turn a disk of the single-slot layout into slot A holding `version`, without
    /// copying: the files get a second name in `boot/slot-a/`, the state and the boot
    /// entries point there, then the old names go. A power cut at any point leaves a
    /// disk that boots (the old entries until the new ones are written, then the new).
    pub fn migrate_legacy(
        &self,
        version: &str,
        append: &str,
        now: u64,
    ) -> Result<OsState, DiskError> {
        let slot_dir = self.path(&Slot::A.dir());
        fs::create_dir_all(&slot_dir).map_err(io("creating", &slot_dir))?;
        for (old, name) in LEGACY_FILES.iter().zip(SLOT_FILES) {
            let from = self.path(old);
            let to = slot_dir.join(name);
            let _ = fs::remove_file(&to);
            fs::hard_link(&from, &to).map_err(io("linking", &to))?;
        }
        sync_dir(&slot_dir)?;
        let mut state = OsState::installed(version, append, now);
        // It is the release running now, healthy enough to be upgraded from.
        if let Some(a) = state.slots.get_mut(&Slot::A) {
            a.booted_healthy = true;
        }
        self.commit(&state)?;
        for old in LEGACY_FILES {
            let path = self.path(old);
            fs::remove_file(&path).map_err(io("removing", &path))?;
        }
        sync_dir(&self.path("boot"))?;
        self.settle()?;
        Ok(state)
    }
}

/// Writes a bundle's boot parts into a slot directory as `NAME.new` (see
/// [`Disk::slot_writer`]). The build manifest part is kept as `manifest`.
#[derive(Debug)]
pub struct SlotWriter {
    dir: PathBuf,
    current: Option<(File, PathBuf)>,
    written: Vec<String>,
}

impl PartSink for SlotWriter {
    fn begin(&mut self, part: &Part) -> io::Result<()> {
        let path = self.dir.join(format!("{}.new", part.name));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        self.current = Some((file, path));
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.current {
            Some((file, _)) => file.write_all(bytes),
            None => Err(io::Error::other("a part's bytes before its start")),
        }
    }

    fn end(&mut self) -> io::Result<()> {
        if let Some((file, path)) = self.current.take() {
            file.sync_all()?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().trim_end_matches(".new").to_string())
                .unwrap_or_default();
            self.written.push(name);
        }
        Ok(())
    }
}

impl SlotWriter {
    /// Every part was written and checked: put them in place.
    pub fn finish(self) -> Result<(), DiskError> {
        for name in &self.written {
            let from = self.dir.join(format!("{name}.new"));
            let to = self.dir.join(name);
            fs::rename(&from, &to).map_err(io("renaming", &from))?;
        }
        sync_dir(&self.dir)
    }

    /// The bundle was refused: remove what was written.
    pub fn discard(self) {
        remove_unfinished(&self.dir);
    }
}

/// Remove the files a [`SlotWriter`] left unfinished in `dir` (`NAME.new`); returns them.
fn remove_unfinished(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter(|e| e.file_name().to_string_lossy().ends_with(".new"))
        .map(|e| e.path())
        .filter(|p| fs::remove_file(p).is_ok())
        .collect()
}

/// Whether `dir` is the root of a mount (another device than its parent's).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (fs::metadata(dir), fs::metadata(dir.join(".."))) {
        (Ok(d), Ok(parent)) => d.dev() != parent.dev() || d.ino() == parent.ino(),
        _ => false,
    }
}

fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// Replace `path` with `bytes`: a temporary file beside it, fsync, rename, fsync of the
/// directory. A power cut leaves the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    file.write_all(bytes).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("renaming", &tmp))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::Slot;

    #[test]
    fn an_interrupted_upgrades_leftovers_go_and_the_slots_stay() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::at(dir.path());
        for slot in [Slot::A, Slot::B] {
            fs::create_dir_all(disk.path(&slot.dir())).unwrap();
            fs::write(disk.path(&format!("{}/vmlinuz", slot.dir())), b"k").unwrap();
        }
        assert!(disk.remove_leftovers().is_empty(), "nothing left over");
        fs::write(disk.path(DOWNLOAD), b"half a bundle").unwrap();
        fs::write(disk.path("boot/slot-b/root.img.new"), b"half an image").unwrap();
        let mut removed = disk.remove_leftovers();
        removed.sort();
        assert_eq!(
            removed,
            [disk.path("boot/slot-b/root.img.new"), disk.path(DOWNLOAD)]
        );
        assert!(
            disk.path("boot/slot-a/vmlinuz").exists() && disk.path("boot/slot-b/vmlinuz").exists()
        );
    }

    #[test]
    fn a_legacy_disk_becomes_slot_a_without_losing_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::at(dir.path());
        fs::create_dir_all(dir.path().join(SYSLINUX_DIR)).unwrap();
        for (i, f) in LEGACY_FILES.iter().enumerate() {
            fs::write(disk.path(f), vec![i as u8; 10]).unwrap();
        }
        assert!(disk.is_legacy());
        let state = disk.migrate_legacy("1.0", "rancher.debug", 5).unwrap();
        assert!(!disk.is_legacy());
        assert_eq!(disk.read_state().unwrap(), Some(state.clone()));
        for (i, f) in SLOT_FILES.iter().enumerate() {
            assert_eq!(
                fs::read(disk.path(&format!("boot/slot-a/{f}"))).unwrap(),
                vec![i as u8; 10]
            );
        }
        for f in LEGACY_FILES {
            assert!(!disk.path(f).exists(), "{f} left behind");
        }
        let cfg = fs::read_to_string(disk.path("boot/syslinux/syslinux.cfg")).unwrap();
        assert!(
            cfg.contains("DEFAULT ros-a") && cfg.contains("rancher.debug"),
            "{cfg}"
        );
        assert_eq!(disk.slot_bytes(Slot::A), 30);
        assert!(disk.boot_config_matches(&state));
        // A commit cut between its two writes: the state moved on, the entries did not.
        let mut ahead = state.clone();
        ahead.good = Slot::B;
        ahead.slots.insert(Slot::B, ahead.slots[&Slot::A].clone());
        disk.write_state(&ahead).unwrap();
        assert!(!disk.boot_config_matches(&ahead));
        disk.write_boot_config(&ahead).unwrap();
        assert!(disk.boot_config_matches(&ahead));
    }

    #[test]
    fn a_slot_writer_replaces_nothing_until_finished_and_discard_leaves_the_slot_alone() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::at(dir.path());
        let slot = dir.path().join("boot/slot-b");
        fs::create_dir_all(&slot).unwrap();
        fs::write(slot.join("vmlinuz"), "old").unwrap();
        let part = |name: &str| Part {
            name: name.into(),
            size: 3,
            sha256: String::new(),
        };
        let mut w = disk.slot_writer(Slot::B).unwrap();
        w.begin(&part("vmlinuz")).unwrap();
        w.write(b"new").unwrap();
        w.end().unwrap();
        assert_eq!(fs::read_to_string(slot.join("vmlinuz")).unwrap(), "old");
        w.discard();
        assert_eq!(fs::read_to_string(slot.join("vmlinuz")).unwrap(), "old");
        assert!(!slot.join("vmlinuz.new").exists());
        let mut w = disk.slot_writer(Slot::B).unwrap();
        w.begin(&part("vmlinuz")).unwrap();
        w.write(b"new").unwrap();
        w.end().unwrap();
        w.finish().unwrap();
        assert_eq!(fs::read_to_string(slot.join("vmlinuz")).unwrap(), "new");
    }

    #[test]
    fn only_a_mount_point_is_frozen() {
        // A test's directory inside the host's filesystem is synced, never frozen.
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()));
        assert!(is_mount_point(Path::new("/")));
        Disk::at(dir.path()).settle().unwrap();
    }

    #[test]
    fn no_state_file_is_none_and_a_broken_one_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::at(dir.path());
        assert_eq!(disk.read_state().unwrap(), None);
        fs::create_dir_all(dir.path().join("boot")).unwrap();
        fs::write(disk.path(STATE_FILE), "{").unwrap();
        let err = disk.read_state().unwrap_err();
        assert!(err.to_string().contains("ros-os.json"), "{err}");
    }
}
