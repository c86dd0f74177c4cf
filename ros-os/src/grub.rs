//! GRUB, the bootloader of an installed disk under UEFI: its boot entries
//! (`boot/grub/grub.cfg` on the RANCHER_STATE partition, the same slots, default and kernel
//! lines as syslinux.cfg) and its environment block (`boot/grub/grubenv`), where
//! `ros os upgrade` arms a boot-once entry as `next_entry`.
//!
//! The GRUB on the disk's EFI system partition (built by `initramfs/build.sh`) finds this
//! partition as partition 1 of the disk it was loaded from. Its grub.cfg clears
//! `next_entry` with `save_env` before it boots the armed entry, and boots it only if that
//! write succeeded: a kernel that panics or hangs is tried once, as with syslinux's ADV, and
//! the next boot is the default, the known-good slot.
//!
//! The environment block (GRUB's `grub-core/lib/envblk.c`): exactly 1024 bytes, a header
//! line, one `name=value` line per variable (`\`, newline escaped with `\`), padded with
//! `#`. GRUB rewrites it in place, so it must keep its size.

use std::collections::BTreeMap;

use crate::slots::{kernel_args, OsState, Slot};

/// GRUB's entries, on the partition.
pub const GRUB_CFG: &str = "boot/grub/grub.cfg";
/// GRUB's environment block, on the partition.
pub const GRUBENV: &str = "boot/grub/grubenv";
/// The size of an environment block.
pub const ENV_SIZE: usize = 1024;
const ENV_HEADER: &str = "# GRUB Environment Block\n";
/// The variable that arms a boot-once entry.
pub const NEXT_ENTRY: &str = "next_entry";

/// An environment block holding `vars` (names and values without `=`, `\` or newlines,
/// as the boot entries' ids are). `None` if they do not fit in [`ENV_SIZE`] bytes.
pub fn env_block(vars: &BTreeMap<String, String>) -> Option<Vec<u8>> {
    let mut block = ENV_HEADER.to_string();
    for (name, value) in vars {
        let plain = |s: &str| !s.contains(['=', '\\', '\n']);
        if !plain(name) || !value.chars().all(|c| c != '\\' && c != '\n') {
            return None;
        }
        block.push_str(&format!("{name}={value}\n"));
    }
    if block.len() > ENV_SIZE {
        return None;
    }
    let mut bytes = block.into_bytes();
    bytes.resize(ENV_SIZE, b'#');
    Some(bytes)
}

/// The variables of an environment block; `None` if it is not one (wrong size or header).
pub fn parse_env(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    if bytes.len() != ENV_SIZE || !bytes.starts_with(ENV_HEADER.as_bytes()) {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes[ENV_HEADER.len()..]);
    let mut vars = BTreeMap::new();
    for line in text.split('\n') {
        // The padding, and GRUB's own comments.
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            let mut unescaped = String::new();
            let mut chars = value.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => unescaped.push(match chars.next() {
                        Some('n') => '\n',
                        Some(other) => other,
                        None => break,
                    }),
                    c => unescaped.push(c),
                }
            }
            vars.insert(name.to_string(), unescaped);
        }
    }
    Some(vars)
}

/// The environment block that arms `slot` for one boot, or (`None`) arms nothing.
pub fn boot_once_env(slot: Option<Slot>) -> Vec<u8> {
    let vars: BTreeMap<String, String> = slot
        .map(|s| (NEXT_ENTRY.to_string(), s.label()))
        .into_iter()
        .collect();
    env_block(&vars).unwrap_or_else(|| unreachable!("a label fits in an environment block"))
}

/// The boot-once label an environment block arms, if any.
pub fn boot_once(bytes: &[u8]) -> Option<String> {
    parse_env(bytes)?
        .remove(NEXT_ENTRY)
        .filter(|l| !l.is_empty())
}

/// grub.cfg for `state`: the default is its good slot; one entry per written slot, with the
/// kernel line syslinux.cfg has; an armed `next_entry` boots once, and only if clearing it
/// worked.
pub fn boot_config(state: &OsState) -> String {
    let mut cfg = format!(
        "# Written by ros (ros install, ros os upgrade): the default is the known-good slot;\n\
         # `ros os upgrade` arms the other for one boot in grubenv ({NEXT_ENTRY}).\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=1\n\
         set default={}\n\
         load_env -f $prefix/grubenv {NEXT_ENTRY}\n\
         if [ -n \"${NEXT_ENTRY}\" ]; then\n\
         \x20 set once=\"${NEXT_ENTRY}\"\n\
         \x20 set {NEXT_ENTRY}=\n\
         \x20 if save_env -f $prefix/grubenv {NEXT_ENTRY}; then set default=\"$once\"; fi\n\
         fi\n",
        state.good.label()
    );
    for &slot in state.slots.keys() {
        cfg.push_str(&format!(
            "\nmenuentry \"rOS slot {slot}\" --id {} {{\n  linux /{dir}/vmlinuz {}\n  \
             initrd /{dir}/initrd\n}}\n",
            slot.label(),
            kernel_args(slot, state.root.as_deref(), &state.append),
            dir = slot.dir()
        ));
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_block_is_1024_bytes_padded_and_reads_back() {
        let armed = boot_once_env(Some(Slot::B));
        assert_eq!(armed.len(), ENV_SIZE);
        assert!(armed.starts_with(b"# GRUB Environment Block\nnext_entry=ros-b\n###"));
        assert!(armed.ends_with(b"#"));
        assert_eq!(boot_once(&armed).as_deref(), Some("ros-b"));
        let clear = boot_once_env(None);
        assert_eq!(boot_once(&clear), None);
        // What GRUB's save_env writes after clearing it: an empty value.
        let mut spent = b"# GRUB Environment Block\nnext_entry=\n".to_vec();
        spent.resize(ENV_SIZE, b'#');
        assert_eq!(boot_once(&spent), None);
    }

    #[test]
    fn grub_edits_are_read_and_anything_else_is_not_an_environment_block() {
        let mut block =
            b"# GRUB Environment Block\nsaved_entry=a\\\\b\nnext_entry=ros-a\n".to_vec();
        block.resize(ENV_SIZE, b'#');
        let vars = parse_env(&block).unwrap();
        assert_eq!(vars["saved_entry"], "a\\b");
        assert_eq!(boot_once(&block).as_deref(), Some("ros-a"));
        assert_eq!(parse_env(&block[..1000]), None);
        assert_eq!(parse_env(&[b'#'; ENV_SIZE]), None);
        let mut bad = BTreeMap::new();
        bad.insert("x".to_string(), "line\nbreak".to_string());
        assert_eq!(env_block(&bad), None);
        bad.clear();
        bad.insert("x".to_string(), "y".repeat(2000));
        assert_eq!(env_block(&bad), None);
    }

    #[test]
    fn the_entries_match_syslinux_and_the_default_is_the_good_slot() {
        let mut state = OsState::installed("1.0", "x=1", 0);
        state.root = Some("PARTUUID=1234abcd-01".into());
        let a = state.slots[&Slot::A].clone();
        state.slots.insert(Slot::B, a);
        state.good = Slot::B;
        let cfg = boot_config(&state);
        assert!(cfg.contains("set default=ros-b\n"), "{cfg}");
        assert!(
            cfg.contains("menuentry \"rOS slot a\" --id ros-a {"),
            "{cfg}"
        );
        assert!(
            cfg.contains(&format!(
                "  linux /boot/slot-a/vmlinuz {}\n  initrd /boot/slot-a/initrd\n",
                kernel_args(Slot::A, Some("PARTUUID=1234abcd-01"), "x=1")
            )),
            "{cfg}"
        );
        // The boot-once entry is used only once its clearing is written.
        assert!(cfg
            .contains("if save_env -f $prefix/grubenv next_entry; then set default=\"$once\"; fi"));
    }
}
