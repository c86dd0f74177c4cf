//! Whether a disk holds anything: the on-disk signatures libblkid and wipefs look for
//! (filesystems, partition tables, RAID, LVM, encryption), at both ends of the disk, read
//! from any `Read + Seek` so that tests use byte buffers. The image ships no blkid or
//! wipefs binary, and `rancher.state.autoformat` must never format a disk holding data.
//!
//! Pure: no paths, no device opening. It never writes. The caller names the device in
//! what it reports, so errors here are plain `io::Error`s.
//!
//! A disk is blank when none of [`probe`]'s signatures is found *and* its first and last
//! 64 KiB are all zero. The zero rule is kept on top of the signatures on purpose: it
//! catches the formats this list does not know (hardware RAID metadata at the end, a
//! foreign boot loader at the start), at the cost of refusing a disk that merely has
//! stray bytes there. Refusing a disk that could have been formatted is the cheap error.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// How much of each end of the disk must be zero.
pub const ZERO_SPAN: u64 = 64 * KIB;

/// A signature found on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// What it is (`btrfs superblock`, `GPT backup header`, ...).
    pub what: &'static str,
    /// Its byte offset from the start of the disk.
    pub offset: u64,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

/// Why a disk is not blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// A known signature.
    Signature(Signature),
    /// No known signature, but non-zero bytes where a blank disk has none.
    Data {
        /// `first 64 KiB` or `last 64 KiB`.
        region: &'static str,
    },
    /// The device has no bytes at all (an empty card reader, a detached volume).
    Empty,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::Signature(s) => write!(f, "{s}"),
            Evidence::Data { region } => write!(f, "non-zero bytes in its {region}"),
            Evidence::Empty => write!(f, "it is empty (size 0)"),
        }
    }
}

/// A signature that is a fixed byte string at a fixed offset.
struct Magic {
    what: &'static str,
    at: At,
    bytes: &'static [u8],
}

/// Where a [`Magic`] sits.
#[derive(Clone, Copy)]
enum At {
    /// Bytes from the start.
    Start(u64),
    /// Bytes before the end (the last LBA is `End(sector)`).
    End(u64),
}

const MD_MAGIC_LE: &[u8] = &[0xfc, 0x4e, 0x2b, 0xa9];
/// v0.90 superblocks are in the writer's byte order.
const MD_MAGIC_BE: &[u8] = &[0xa9, 0x2b, 0x4e, 0xfc];
const ZFS_UBERBLOCK_LE: [u8; 8] = 0x00ba_b10c_u64.to_le_bytes();
const ZFS_UBERBLOCK_BE: [u8; 8] = 0x00ba_b10c_u64.to_be_bytes();
const BCACHE_MAGIC: &[u8] = &[
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];

/// Fixed signatures, filesystems before partition tables so that a FAT or NTFS boot
/// sector (which also ends in 55 AA) is named for what it is.
const MAGICS: &[Magic] = &[
    Magic {
        what: "LUKS header",
        at: At::Start(0),
        bytes: b"LUKS\xba\xbe",
    },
    Magic {
        what: "XFS superblock",
        at: At::Start(0),
        bytes: b"XFSB",
    },
    Magic {
        what: "squashfs superblock",
        at: At::Start(0),
        bytes: b"hsqs",
    },
    Magic {
        what: "NTFS boot sector",
        at: At::Start(3),
        bytes: b"NTFS    ",
    },
    Magic {
        what: "exFAT boot sector",
        at: At::Start(3),
        bytes: b"EXFAT   ",
    },
    Magic {
        what: "ext2/3/4 superblock",
        at: At::Start(1080),
        bytes: &[0x53, 0xEF],
    },
    Magic {
        what: "f2fs superblock",
        at: At::Start(1024),
        bytes: &[0x10, 0x20, 0xF5, 0xF2],
    },
    Magic {
        what: "btrfs superblock",
        at: At::Start(64 * KIB + 64),
        bytes: b"_BHRfS_M",
    },
    Magic {
        what: "btrfs superblock mirror",
        at: At::Start(64 * MIB + 64),
        bytes: b"_BHRfS_M",
    },
    Magic {
        what: "btrfs superblock mirror",
        at: At::Start(256 * GIB + 64),
        bytes: b"_BHRfS_M",
    },
    Magic {
        what: "ISO9660 volume descriptor",
        at: At::Start(32 * KIB + 1),
        bytes: b"CD001",
    },
    Magic {
        what: "JFS superblock",
        at: At::Start(32 * KIB),
        bytes: b"JFS1",
    },
    // Swap: the magic ends the first page; pages of 4, 8, 16 and 64 KiB.
    Magic {
        what: "swap signature",
        at: At::Start(4 * KIB - 10),
        bytes: b"SWAPSPACE2",
    },
    Magic {
        what: "swap signature (old)",
        at: At::Start(4 * KIB - 10),
        bytes: b"SWAP-SPACE",
    },
    Magic {
        what: "swap signature",
        at: At::Start(8 * KIB - 10),
        bytes: b"SWAPSPACE2",
    },
    Magic {
        what: "swap signature",
        at: At::Start(16 * KIB - 10),
        bytes: b"SWAPSPACE2",
    },
    Magic {
        what: "swap signature",
        at: At::Start(64 * KIB - 10),
        bytes: b"SWAPSPACE2",
    },
    // LVM2: the label may be in any of the first four sectors.
    Magic {
        what: "LVM2 label",
        at: At::Start(0),
        bytes: b"LABELONE",
    },
    Magic {
        what: "LVM2 label",
        at: At::Start(512),
        bytes: b"LABELONE",
    },
    Magic {
        what: "LVM2 label",
        at: At::Start(1024),
        bytes: b"LABELONE",
    },
    Magic {
        what: "LVM2 label",
        at: At::Start(1536),
        bytes: b"LABELONE",
    },
    Magic {
        what: "Linux RAID superblock (md v1.1)",
        at: At::Start(0),
        bytes: MD_MAGIC_LE,
    },
    Magic {
        what: "Linux RAID superblock (md v1.2)",
        at: At::Start(4 * KIB),
        bytes: MD_MAGIC_LE,
    },
    Magic {
        what: "bcache superblock",
        at: At::Start(4 * KIB + 24),
        bytes: BCACHE_MAGIC,
    },
    Magic {
        what: "GPT header (512-byte sectors)",
        at: At::Start(512),
        bytes: b"EFI PART",
    },
    Magic {
        what: "GPT header (4096-byte sectors)",
        at: At::Start(4096),
        bytes: b"EFI PART",
    },
    Magic {
        what: "GPT backup header (512-byte sectors)",
        at: At::End(512),
        bytes: b"EFI PART",
    },
    Magic {
        what: "GPT backup header (4096-byte sectors)",
        at: At::End(4096),
        bytes: b"EFI PART",
    },
];

/// LUKS2 keeps a second header at one of these offsets, in case the first is wiped.
const LUKS2_SECONDARY: &[u64] = &[
    16 * KIB,
    32 * KIB,
    64 * KIB,
    128 * KIB,
    256 * KIB,
    512 * KIB,
    MIB,
    2 * MIB,
    4 * MIB,
];

/// A ZFS vdev label is 256 KiB; its second half is the uberblock ring.
const ZFS_LABEL: u64 = 256 * KIB;
/// The smallest uberblock slot (ashift 9); larger ones start on these boundaries too.
const ZFS_UBERBLOCK_SLOT: usize = 1024;

/// The size of `dev` in bytes (for a block device, the disk's size).
pub fn size<R: Seek>(dev: &mut R) -> io::Result<u64> {
    dev.seek(SeekFrom::End(0))
}

/// `len` bytes at `offset`, or `None` when they are not all on a disk of `size` bytes.
fn read_at<R: Read + Seek>(
    dev: &mut R,
    size: u64,
    offset: u64,
    len: usize,
) -> io::Result<Option<Vec<u8>>> {
    let fits = offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= size);
    if !fits {
        return Ok(None);
    }
    dev.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    dev.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn has_at<R: Read + Seek>(dev: &mut R, size: u64, offset: u64, bytes: &[u8]) -> io::Result<bool> {
    Ok(read_at(dev, size, offset, bytes.len())?.is_some_and(|b| b == bytes))
}

/// Every signature found on `dev`, in the order they are checked (the most telling
/// first). Empty means none of the known formats, not that the disk is blank: see
/// [`evidence_of_data`].
pub fn probe<R: Read + Seek>(dev: &mut R) -> io::Result<Vec<Signature>> {
    let size = size(dev)?;
    let mut found = Vec::new();
    let mut add = |what, offset| found.push(Signature { what, offset });

    for m in MAGICS {
        let offset = match m.at {
            At::Start(o) => Some(o),
            At::End(back) => size.checked_sub(back),
        };
        if let Some(offset) = offset {
            if has_at(dev, size, offset, m.bytes)? {
                add(m.what, offset);
            }
        }
    }
    for &offset in LUKS2_SECONDARY {
        if has_at(dev, size, offset, b"SKUL\xba\xbe")? {
            add("LUKS2 secondary header", offset);
        }
    }
    if let Some(sector) = read_at(dev, size, 0, 512)? {
        let boot_signature = sector[510..512] == [0x55, 0xAA];
        let fat = (sector[54..59] == *b"FAT12" || sector[54..59] == *b"FAT16")
            || sector[82..87] == *b"FAT32";
        if boot_signature && fat {
            add("FAT boot sector", 0);
        }
        // An MBR with at least one entry in use (a GPT's protective MBR is one).
        let entries = &sector[446..510];
        if boot_signature && entries.chunks(16).any(|e| e.iter().any(|b| *b != 0)) {
            add("MBR partition table", 0);
        }
    }
    // md v0.90: the last 64 KiB-aligned 64 KiB of the disk; v1.0: 8 KiB from the end,
    // rounded down to 4 KiB.
    if let Some(offset) = (size & !(64 * KIB - 1)).checked_sub(64 * KIB) {
        if has_at(dev, size, offset, MD_MAGIC_LE)? || has_at(dev, size, offset, MD_MAGIC_BE)? {
            add("Linux RAID superblock (md v0.90)", offset);
        }
    }
    if let Some(offset) = size.checked_sub(8 * KIB).map(|o| o & !(4 * KIB - 1)) {
        if has_at(dev, size, offset, MD_MAGIC_LE)? {
            add("Linux RAID superblock (md v1.0)", offset);
        }
    }
    // ZFS: four labels, two at each end (the end ones on a 256 KiB-aligned size).
    let aligned = size & !(ZFS_LABEL - 1);
    let labels = [
        Some(0),
        Some(ZFS_LABEL),
        aligned.checked_sub(2 * ZFS_LABEL),
        aligned.checked_sub(ZFS_LABEL),
    ];
    let mut seen = Vec::new();
    for base in labels.into_iter().flatten() {
        if seen.contains(&base) {
            continue;
        }
        seen.push(base);
        let ring = base + ZFS_LABEL / 2;
        if let Some(bytes) = read_at(dev, size, ring, (ZFS_LABEL / 2) as usize)? {
            let hit = bytes
                .chunks(ZFS_UBERBLOCK_SLOT)
                .position(|slot| slot[..8] == ZFS_UBERBLOCK_LE || slot[..8] == ZFS_UBERBLOCK_BE);
            if let Some(i) = hit {
                add("ZFS uberblock", ring + (i * ZFS_UBERBLOCK_SLOT) as u64);
            }
        }
    }
    Ok(found)
}

/// Why `dev` is not blank, or `None` when it is: no signature [`probe`] knows, and its
/// first and last [`ZERO_SPAN`] bytes all zero.
pub fn evidence_of_data<R: Read + Seek>(dev: &mut R) -> io::Result<Option<Evidence>> {
    let size = size(dev)?;
    if size == 0 {
        return Ok(Some(Evidence::Empty));
    }
    if let Some(first) = probe(dev)?.into_iter().next() {
        return Ok(Some(Evidence::Signature(first)));
    }
    let span = size.min(ZERO_SPAN);
    let span_len = usize::try_from(span).unwrap_or(usize::MAX);
    for (region, offset) in [("first 64 KiB", 0), ("last 64 KiB", size - span)] {
        let bytes = read_at(dev, size, offset, span_len)?.unwrap_or_default();
        if bytes.iter().any(|b| *b != 0) {
            return Ok(Some(Evidence::Data { region }));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A disk of `size` zero bytes with `patches` written on it, without allocating it:
    /// big enough for the btrfs mirror at 256 GiB.
    pub(crate) struct SparseDisk {
        size: u64,
        patches: Vec<(u64, Vec<u8>)>,
        pos: u64,
    }

    impl SparseDisk {
        pub(crate) fn new(size: u64) -> Self {
            SparseDisk {
                size,
                patches: Vec::new(),
                pos: 0,
            }
        }

        pub(crate) fn with(mut self, offset: u64, bytes: &[u8]) -> Self {
            assert!(
                offset + bytes.len() as u64 <= self.size,
                "patch past the end"
            );
            self.patches.push((offset, bytes.to_vec()));
            self
        }
    }

    impl Read for SparseDisk {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let left = self.size.saturating_sub(self.pos);
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let (start, end) = (self.pos, self.pos + n as u64);
            buf[..n].fill(0);
            for (at, bytes) in &self.patches {
                let (p_start, p_end) = (*at, at + bytes.len() as u64);
                let (lo, hi) = (start.max(p_start), end.min(p_end));
                if lo < hi {
                    let dst = (lo - start) as usize..(hi - start) as usize;
                    let src = (lo - p_start) as usize..(hi - p_start) as usize;
                    buf[dst].copy_from_slice(&bytes[src]);
                }
            }
            self.pos = end;
            Ok(n)
        }
    }

    impl Seek for SparseDisk {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            let pos = match to {
                SeekFrom::Start(p) => Some(p),
                SeekFrom::End(d) => self.size.checked_add_signed(d),
                SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            };
            self.pos =
                pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before 0"))?;
            Ok(self.pos)
        }
    }

    fn whats(disk: &mut SparseDisk) -> Vec<&'static str> {
        probe(disk).unwrap().into_iter().map(|s| s.what).collect()
    }

    const DISK: u64 = 8 * MIB + 3 * 512;

    #[test]
    fn each_signature_is_found_where_its_format_puts_it() {
        let md_090 = (DISK & !(64 * KIB - 1)) - 64 * KIB;
        let md_10 = (DISK - 8 * KIB) & !(4 * KIB - 1);
        let mut fat16 = vec![0u8; 512];
        fat16[54..59].copy_from_slice(b"FAT16");
        fat16[510..512].copy_from_slice(&[0x55, 0xAA]);
        let mut fat32 = vec![0u8; 512];
        fat32[82..87].copy_from_slice(b"FAT32");
        fat32[510..512].copy_from_slice(&[0x55, 0xAA]);
        let mut mbr = vec![0u8; 512];
        mbr[446 + 4] = 0x83;
        mbr[510..512].copy_from_slice(&[0x55, 0xAA]);
        let table: Vec<(u64, Vec<u8>, &str)> = vec![
            (1080, vec![0x53, 0xEF], "ext2/3/4 superblock"),
            (65600, b"_BHRfS_M".to_vec(), "btrfs superblock"),
            (
                64 * MIB + 64,
                b"_BHRfS_M".to_vec(),
                "btrfs superblock mirror",
            ),
            (0, b"XFSB".to_vec(), "XFS superblock"),
            (4086, b"SWAPSPACE2".to_vec(), "swap signature"),
            (4086, b"SWAP-SPACE".to_vec(), "swap signature (old)"),
            (65526, b"SWAPSPACE2".to_vec(), "swap signature"),
            (0, b"LABELONE".to_vec(), "LVM2 label"),
            (1536, b"LABELONE".to_vec(), "LVM2 label"),
            (0, MD_MAGIC_LE.to_vec(), "Linux RAID superblock (md v1.1)"),
            (
                4096,
                MD_MAGIC_LE.to_vec(),
                "Linux RAID superblock (md v1.2)",
            ),
            (
                md_10,
                MD_MAGIC_LE.to_vec(),
                "Linux RAID superblock (md v1.0)",
            ),
            (
                md_090,
                MD_MAGIC_LE.to_vec(),
                "Linux RAID superblock (md v0.90)",
            ),
            (
                md_090,
                MD_MAGIC_BE.to_vec(),
                "Linux RAID superblock (md v0.90)",
            ),
            (32769, b"CD001".to_vec(), "ISO9660 volume descriptor"),
            (0, fat16, "FAT boot sector"),
            (0, fat32, "FAT boot sector"),
            (0, mbr, "MBR partition table"),
            (0, b"LUKS\xba\xbe".to_vec(), "LUKS header"),
            (16 * KIB, b"SKUL\xba\xbe".to_vec(), "LUKS2 secondary header"),
            (512, b"EFI PART".to_vec(), "GPT header (512-byte sectors)"),
            (4096, b"EFI PART".to_vec(), "GPT header (4096-byte sectors)"),
            (
                DISK - 512,
                b"EFI PART".to_vec(),
                "GPT backup header (512-byte sectors)",
            ),
            (
                DISK - 4096,
                b"EFI PART".to_vec(),
                "GPT backup header (4096-byte sectors)",
            ),
            (128 * KIB, ZFS_UBERBLOCK_LE.to_vec(), "ZFS uberblock"),
            (
                256 * KIB + 128 * KIB + 3 * KIB,
                ZFS_UBERBLOCK_BE.to_vec(),
                "ZFS uberblock",
            ),
            (
                (DISK & !(ZFS_LABEL - 1)) - ZFS_LABEL / 2,
                ZFS_UBERBLOCK_LE.to_vec(),
                "ZFS uberblock",
            ),
            (4096 + 24, BCACHE_MAGIC.to_vec(), "bcache superblock"),
            (1024, vec![0x10, 0x20, 0xF5, 0xF2], "f2fs superblock"),
            (0, b"hsqs".to_vec(), "squashfs superblock"),
            (3, b"NTFS    ".to_vec(), "NTFS boot sector"),
        ];
        for (offset, bytes, what) in table {
            let size = if offset > DISK { 65 * MIB } else { DISK };
            let mut disk = SparseDisk::new(size).with(offset, &bytes);
            let found = probe(&mut disk).unwrap();
            assert!(
                found.contains(&Signature { what, offset }),
                "{what} at {offset}: found {found:?}"
            );
            assert_eq!(
                evidence_of_data(&mut disk).unwrap(),
                Some(Evidence::Signature(found[0].clone())),
                "{what}"
            );
        }
    }

    #[test]
    fn a_whole_disk_btrfs_is_not_blank_though_its_first_64_kib_are_zero() {
        // mkfs.btrfs leaves the first 64 KiB alone: the old "first 64 KiB zero" test
        // called this disk blank.
        let mut disk = SparseDisk::new(300 * GIB)
            .with(65600, b"_BHRfS_M")
            .with(64 * MIB + 64, b"_BHRfS_M")
            .with(256 * GIB + 64, b"_BHRfS_M");
        assert_eq!(
            whats(&mut disk),
            vec![
                "btrfs superblock",
                "btrfs superblock mirror",
                "btrfs superblock mirror"
            ]
        );
        // Only the last mirror left (the first two were wiped): still not blank.
        let mut disk = SparseDisk::new(300 * GIB).with(256 * GIB + 64, b"_BHRfS_M");
        assert_eq!(
            evidence_of_data(&mut disk).unwrap().unwrap().to_string(),
            format!("btrfs superblock mirror at byte {}", 256 * GIB + 64)
        );
        // A disk too small for a mirror is not read past its end.
        let mut small = SparseDisk::new(MIB);
        assert_eq!(evidence_of_data(&mut small).unwrap(), None);
    }

    #[test]
    fn a_gpt_disk_whose_primary_header_was_wiped_is_found_by_its_backup() {
        let size = 10 * GIB;
        let mut disk = SparseDisk::new(size).with(size - 512, b"EFI PART");
        assert_eq!(
            evidence_of_data(&mut disk).unwrap(),
            Some(Evidence::Signature(Signature {
                what: "GPT backup header (512-byte sectors)",
                offset: size - 512,
            }))
        );
    }

    #[test]
    fn blank_means_no_signature_and_both_ends_zero() {
        assert_eq!(evidence_of_data(&mut SparseDisk::new(DISK)).unwrap(), None);
        // Data in the middle of an otherwise zero disk is not looked for.
        let mut middle = SparseDisk::new(DISK).with(MIB, b"data");
        assert_eq!(evidence_of_data(&mut middle).unwrap(), None);
        let mut head = SparseDisk::new(DISK).with(100, b"x");
        assert_eq!(
            evidence_of_data(&mut head).unwrap(),
            Some(Evidence::Data {
                region: "first 64 KiB"
            })
        );
        let mut tail = SparseDisk::new(DISK).with(DISK - 20_000, b"x");
        assert_eq!(
            evidence_of_data(&mut tail).unwrap().unwrap().to_string(),
            "non-zero bytes in its last 64 KiB"
        );
        assert_eq!(
            evidence_of_data(&mut SparseDisk::new(0)).unwrap(),
            Some(Evidence::Empty)
        );
        // A 55 AA with no partition entry is no partition table (but still not zero).
        let mut bare = SparseDisk::new(DISK).with(510, &[0x55, 0xAA]);
        assert!(whats(&mut bare).is_empty());
        assert!(evidence_of_data(&mut bare).unwrap().is_some());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test process: it waits for mke2fs itself
    fn a_real_mke2fs_image_is_not_blank() {
        let Some(mkfs) = ["/sbin/mke2fs", "/usr/sbin/mke2fs"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            ros_test_support::skip("a_real_mke2fs_image_is_not_blank", "no mke2fs");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk");
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let mut f = std::fs::File::open(&img).unwrap();
        assert_eq!(evidence_of_data(&mut f).unwrap(), None);
        let status = std::process::Command::new(mkfs)
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&img)
            .status()
            .unwrap();
        assert!(status.success());
        let mut f = std::fs::File::open(&img).unwrap();
        assert!(probe(&mut f)
            .unwrap()
            .iter()
            .any(|s| s.what == "ext2/3/4 superblock" && s.offset == 1080));
    }
}
