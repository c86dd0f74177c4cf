//! Filesystem labels read from the first bytes of a raw block device, without mounting:
//! ISO9660 (the primary volume descriptor's volume id) and FAT (the boot sector's label).
//! Pure: the caller reads the bytes. Only what config-drive detection needs.

/// How many bytes of a device [`detect_label`] looks at.
pub const PROBE_BYTES: usize = 64 * 1024;

/// The filesystems a config drive may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsKind {
    /// ISO9660 (`genisoimage -V config-2`).
    Iso9660,
    /// FAT12 or FAT16.
    Fat,
    /// FAT32.
    Fat32,
    /// ext2/3/4 (the state partition, `LABEL=RANCHER_STATE`).
    Ext4,
}

impl FsKind {
    /// The `mount(2)` filesystem type.
    pub fn fstype(self) -> &'static str {
        match self {
            FsKind::Iso9660 => "iso9660",
            FsKind::Fat | FsKind::Fat32 => "vfat",
            FsKind::Ext4 => "ext4",
        }
    }

    /// The kernel modules mounting it needs: the filesystem, and for FAT the code pages it
    /// loads by name (crc32c, which ext4 also asks for, is in the initrd).
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            FsKind::Iso9660 => &["isofs"],
            FsKind::Fat | FsKind::Fat32 => &["vfat", "nls_cp437", "nls_ascii", "nls_utf8"],
            FsKind::Ext4 => &["ext4"],
        }
    }
}

const ISO_SECTOR: usize = 2048;
/// Volume descriptors start at sector 16.
const ISO_FIRST_DESCRIPTOR: usize = 16 * ISO_SECTOR;
const ISO_MAGIC: &[u8] = b"CD001";
const ISO_PRIMARY: u8 = 1;
const ISO_TERMINATOR: u8 = 255;
/// Offset and length of the volume identifier in the primary volume descriptor.
const ISO_VOLUME_ID: (usize, usize) = (40, 32);

/// FAT boot sector fields: (extended boot signature offset, label offset, fs-type offset).
const FAT16_FIELDS: (usize, usize, usize) = (38, 43, 54);
const FAT32_FIELDS: (usize, usize, usize) = (66, 71, 82);
const FAT_LABEL_LEN: usize = 11;
/// The extended boot signature that says the label and fs-type fields are present.
const FAT_EXTENDED_SIGNATURE: u8 = 0x29;
/// FAT's placeholder for "no label".
const FAT_NO_LABEL: &str = "NO NAME";

/// The filesystem and label of a device from its first bytes (at least the first 34 KiB
/// for ISO9660, the first 512 bytes for FAT; [`PROBE_BYTES`] is plenty). The label is
/// trimmed of padding, empty when the filesystem has none; `None` when neither an ISO9660
/// nor a FAT filesystem is recognised.
pub fn detect_label(first_bytes: &[u8]) -> Option<(FsKind, String)> {
    iso9660_label(first_bytes)
        .map(|l| (FsKind::Iso9660, l))
        .or_else(|| fat_label(first_bytes))
        .or_else(|| ext_label(first_bytes).map(|l| (FsKind::Ext4, l)))
}

/// ext2/3/4 superblock: at byte 1024; magic 0xEF53 (little-endian) at +0x38, the volume
/// name (16 bytes, NUL-padded) at +0x78.
const EXT_SUPERBLOCK: usize = 1024;
const EXT_MAGIC: (usize, [u8; 2]) = (0x38, [0x53, 0xEF]);
const EXT_VOLUME_NAME: (usize, usize) = (0x78, 16);

fn ext_label(bytes: &[u8]) -> Option<String> {
    let sb = bytes.get(EXT_SUPERBLOCK..EXT_SUPERBLOCK + 1024)?;
    let (at, magic) = EXT_MAGIC;
    if sb[at..at + 2] != magic {
        return None;
    }
    let (at, len) = EXT_VOLUME_NAME;
    Some(text(&sb[at..at + len]))
}

/// Whether `label` marks a config drive: OpenStack's `config-2` or NoCloud's `cidata`,
/// in any case (FAT labels are often upper-cased).
pub fn is_config_drive_label(label: &str) -> bool {
    label.eq_ignore_ascii_case("config-2") || label.eq_ignore_ascii_case("cidata")
}

fn iso9660_label(bytes: &[u8]) -> Option<String> {
    let mut offset = ISO_FIRST_DESCRIPTOR;
    while let Some(desc) = bytes.get(offset..offset + ISO_SECTOR) {
        if &desc[1..6] != ISO_MAGIC {
            return None;
        }
        match desc[0] {
            ISO_PRIMARY => {
                let (at, len) = ISO_VOLUME_ID;
                return Some(text(&desc[at..at + len]));
            }
            ISO_TERMINATOR => return None,
            // Boot record, supplementary (Joliet) or partition descriptors come first
            // on some images.
            _ => offset += ISO_SECTOR,
        }
    }
    None
}

fn fat_label(bytes: &[u8]) -> Option<(FsKind, String)> {
    let sector = bytes.get(..512)?;
    // A FAT boot sector starts with a jump (EB xx / E9 xx xx) and ends with 55 AA.
    if !matches!(sector[0], 0xEB | 0xE9) || sector[510..512] != [0x55, 0xAA] {
        return None;
    }
    let (kind, (sig, label, _)) = if sector[FAT32_FIELDS.2..].starts_with(b"FAT32") {
        (FsKind::Fat32, FAT32_FIELDS)
    } else if sector[FAT16_FIELDS.2..].starts_with(b"FAT") {
        (FsKind::Fat, FAT16_FIELDS)
    } else {
        return None;
    };
    if sector[sig] != FAT_EXTENDED_SIGNATURE {
        return Some((kind, String::new()));
    }
    let label = text(&sector[label..label + FAT_LABEL_LEN]);
    if label == FAT_NO_LABEL {
        return Some((kind, String::new()));
    }
    Some((kind, label))
}

/// Space- or NUL-padded text.
fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first 64 KiB of an ISO9660 image whose primary volume id is `label`, after a
    /// boot record descriptor (as El Torito images have).
    pub(crate) fn iso_image(label: &str) -> Vec<u8> {
        let mut img = vec![0u8; PROBE_BYTES];
        let mut put_descriptor = |sector: usize, kind: u8| {
            let at = sector * ISO_SECTOR;
            img[at] = kind;
            img[at + 1..at + 6].copy_from_slice(ISO_MAGIC);
            img[at + 6] = 1;
            at
        };
        put_descriptor(16, 0);
        let pvd = put_descriptor(17, ISO_PRIMARY);
        put_descriptor(18, ISO_TERMINATOR);
        let id = &mut img[pvd + 40..pvd + 72];
        id.fill(b' ');
        id[..label.len()].copy_from_slice(label.as_bytes());
        img
    }

    /// A FAT boot sector (FAT16 layout, or FAT32 when `fat32`) labelled `label`.
    pub(crate) fn fat_image(label: &str, fat32: bool) -> Vec<u8> {
        let mut img = vec![0u8; 4096];
        img[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        img[3..11].copy_from_slice(b"mkfs.fat");
        let (sig, lab, fs, name): (usize, usize, usize, &[u8]) = if fat32 {
            (66, 71, 82, b"FAT32   ")
        } else {
            (38, 43, 54, b"FAT16   ")
        };
        img[sig] = FAT_EXTENDED_SIGNATURE;
        img[lab..lab + 11].fill(b' ');
        img[lab..lab + label.len()].copy_from_slice(label.as_bytes());
        img[fs..fs + 8].copy_from_slice(name);
        img[510] = 0x55;
        img[511] = 0xAA;
        img
    }

    #[test]
    fn iso9660_primary_volume_id() {
        assert_eq!(
            detect_label(&iso_image("config-2")),
            Some((FsKind::Iso9660, "config-2".into()))
        );
        assert_eq!(
            detect_label(&iso_image("CIDATA")),
            Some((FsKind::Iso9660, "CIDATA".into()))
        );
        // Cut before the primary descriptor: not enough bytes to tell.
        assert_eq!(detect_label(&iso_image("config-2")[..35 * 1024]), None);
        // Wrong magic.
        let mut bad = iso_image("config-2");
        bad[ISO_FIRST_DESCRIPTOR + 1] = b'X';
        assert_eq!(detect_label(&bad), None);
    }

    #[test]
    fn fat_boot_sector_labels() {
        assert_eq!(
            detect_label(&fat_image("CIDATA", false)),
            Some((FsKind::Fat, "CIDATA".into()))
        );
        assert_eq!(
            detect_label(&fat_image("config-2", true)),
            Some((FsKind::Fat32, "config-2".into()))
        );
        assert_eq!(
            detect_label(&fat_image("NO NAME", true)),
            Some((FsKind::Fat32, String::new()))
        );
        let mut no_ext = fat_image("CIDATA", false);
        no_ext[38] = 0x28;
        assert_eq!(detect_label(&no_ext), Some((FsKind::Fat, String::new())));
        let mut no_sig = fat_image("CIDATA", false);
        no_sig[511] = 0;
        assert_eq!(detect_label(&no_sig), None);
        let mut no_jump = fat_image("CIDATA", false);
        no_jump[0] = 0xFA;
        assert_eq!(detect_label(&no_jump), None);
    }

    #[test]
    fn other_data_is_not_a_label() {
        assert_eq!(detect_label(&[]), None);
        assert_eq!(detect_label(&vec![0u8; PROBE_BYTES]), None);
    }

    #[test]
    fn ext4_labels() {
        let mut ext4 = vec![0u8; PROBE_BYTES];
        ext4[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        assert_eq!(detect_label(&ext4), Some((FsKind::Ext4, String::new())));
        ext4[1144..1144 + 13].copy_from_slice(b"RANCHER_STATE");
        assert_eq!(
            detect_label(&ext4),
            Some((FsKind::Ext4, "RANCHER_STATE".into()))
        );
        assert!(!is_config_drive_label("RANCHER_STATE"));
    }

    #[test]
    fn config_drive_labels() {
        for yes in ["config-2", "CONFIG-2", "cidata", "CIDATA"] {
            assert!(is_config_drive_label(yes), "{yes}");
        }
        for no in ["", "config", "RANCHER_STATE", "cidata2"] {
            assert!(!is_config_drive_label(no), "{no}");
        }
    }
}
