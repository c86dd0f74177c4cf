//! What an installed rOS disk holds and how it is upgraded: its two slots and the state
//! file that says which is good and what is being tried ([`slots`]), the files on its
//! partition ([`disk`]), syslinux's boot-once record ([`adv`]), GRUB's entries and
//! boot-once record ([`grub`]), and the signed upgrade
//! bundle ([`bundle`]). Used by `ros os` (upgrade, list, rollback), by `ros install`, by
//! PID 1 (the trial boot and its commit) and by the build (`ros-bundle`).
//!
//! Must not talk to containerd or depend on init: PID 1 calls in, never the reverse.

pub mod adv;
pub mod bundle;
pub mod disk;
pub mod grub;
pub mod slots;

/// Where the public keys a system trusts for upgrades live (in the root image).
pub const TRUSTED_KEYS_DIR: &str = "/usr/share/ros/trusted-keys";
