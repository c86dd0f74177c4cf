//! syslinux's ADV (auxiliary data vector): the two 512-byte copies at the end of
//! `ldlinux.sys` where `extlinux --once=LABEL` arms a boot-once entry, and which ldlinux
//! clears (and writes back) before it loads the kernel. Read here, never written: arming is
//! `extlinux --once`, so that the sectors extlinux patched into the boot code stay its own.
//!
//! Layout of one copy (syslinux's `libinstaller/setadv.c`): a head magic, a checksum that
//! makes the little-endian words from byte 4 to 508 sum to a fixed value, 500 bytes of
//! records (tag, length, data; tag 0 ends them), a tail magic.

use std::io::{self, Read, Seek, SeekFrom};

/// Size of one copy.
pub const ADV_SIZE: usize = 512;
const MAGIC1: u32 = 0x5a2d_2fa5;
const MAGIC2: u32 = 0xa304_1767;
const MAGIC3: u32 = 0xdd28_bf64;
/// Tag of the boot-once label.
const BOOTONCE: u8 = 1;

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether one copy has both magics and a right checksum.
fn consistent(copy: &[u8]) -> bool {
    if copy.len() != ADV_SIZE || word(copy, 0) != MAGIC1 || word(copy, ADV_SIZE - 4) != MAGIC3 {
        return false;
    }
    let sum = (4..ADV_SIZE - 4)
        .step_by(4)
        .fold(0u32, |s, i| s.wrapping_add(word(copy, i)));
    sum == MAGIC2
}

/// What the ADV says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adv {
    /// Neither copy is valid (never written, or torn): ldlinux treats it as empty.
    Invalid,
    /// A valid ADV, with the boot-once label if one is armed.
    Valid {
        /// The label `extlinux --once` armed and ldlinux has not consumed yet.
        boot_once: Option<String>,
    },
}

impl Adv {
    /// The armed boot-once label, if any.
    pub fn boot_once(&self) -> Option<&str> {
        match self {
            Adv::Valid { boot_once } => boot_once.as_deref(),
            Adv::Invalid => None,
        }
    }
}

/// Parse the two copies (`2 * ADV_SIZE` bytes): the first valid one is used, as ldlinux does.
pub fn parse(both: &[u8]) -> Adv {
    let copy = both.chunks(ADV_SIZE).take(2).find(|c| consistent(c));
    let Some(copy) = copy else {
        return Adv::Invalid;
    };
    let data = &copy[8..ADV_SIZE - 4];
    let mut at = 0;
    while at + 2 <= data.len() {
        let (tag, len) = (data[at], usize::from(data[at + 1]));
        if tag == 0 || at + 2 + len > data.len() {
            break;
        }
        if tag == BOOTONCE {
            let label = String::from_utf8_lossy(&data[at + 2..at + 2 + len])
                .trim_end_matches('\0')
                .to_string();
            return Adv::Valid {
                boot_once: Some(label).filter(|l| !l.is_empty()),
            };
        }
        at += 2 + len;
    }
    Adv::Valid { boot_once: None }
}

/// Read the ADV of an installed `ldlinux.sys` (its last two sectors).
pub fn read(ldlinux: &mut (impl Read + Seek)) -> io::Result<Adv> {
    let size = ldlinux.seek(SeekFrom::End(0))?;
    if size < 2 * ADV_SIZE as u64 {
        return Ok(Adv::Invalid);
    }
    ldlinux.seek(SeekFrom::Start(size - 2 * ADV_SIZE as u64))?;
    let mut both = vec![0u8; 2 * ADV_SIZE];
    ldlinux.read_exact(&mut both)?;
    Ok(parse(&both))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One copy holding `records`, made as setadv.c makes it.
    fn copy(records: &[u8]) -> Vec<u8> {
        let mut c = vec![0u8; ADV_SIZE];
        c[0..4].copy_from_slice(&MAGIC1.to_le_bytes());
        c[8..8 + records.len()].copy_from_slice(records);
        let mut csum = MAGIC2;
        for i in (8..ADV_SIZE - 4).step_by(4) {
            csum = csum.wrapping_sub(word(&c, i));
        }
        c[4..8].copy_from_slice(&csum.to_le_bytes());
        c[ADV_SIZE - 4..].copy_from_slice(&MAGIC3.to_le_bytes());
        c
    }

    #[test]
    fn an_armed_label_is_read_and_an_empty_adv_has_none() {
        let armed = copy(&[BOOTONCE, 5, b'r', b'o', b's', b'-', b'b']);
        assert_eq!(
            parse(&[armed.clone(), armed].concat()).boot_once(),
            Some("ros-b")
        );
        let empty = copy(&[]);
        assert_eq!(
            parse(&[empty.clone(), empty].concat()),
            Adv::Valid { boot_once: None }
        );
    }

    #[test]
    fn a_torn_first_copy_falls_back_to_the_second_and_two_torn_ones_are_invalid() {
        let armed = copy(&[7, 1, 0, BOOTONCE, 3, b'o', b'n', b'e']);
        let mut torn = armed.clone();
        torn[20] ^= 0xff;
        assert_eq!(
            parse(&[torn.clone(), armed].concat()).boot_once(),
            Some("one")
        );
        assert_eq!(parse(&[torn.clone(), torn].concat()), Adv::Invalid);
        assert_eq!(parse(&[0u8; 1024]), Adv::Invalid);
    }

    #[test]
    fn the_adv_is_the_last_two_sectors_of_ldlinux_sys() {
        let armed = copy(&[BOOTONCE, 4, b'r', b'o', b's', b'a']);
        let file = [vec![0x90u8; 4096], armed.clone(), armed].concat();
        let adv = read(&mut io::Cursor::new(file)).unwrap();
        assert_eq!(adv.boot_once(), Some("rosa"));
        assert_eq!(
            read(&mut io::Cursor::new(vec![0u8; 100])).unwrap(),
            Adv::Invalid
        );
    }
}
