//! Linux capabilities as a service's `cap_add` and `cap_drop` name them, parsed once, when
//! the service file is read: a name the kernel does not have is an error of that file, at
//! its line, and the runtime only maps what was parsed. A primitive: it imports nothing of
//! this crate but `suggest`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer};

/// The capabilities up to `CAP_CHECKPOINT_RESTORE` (Linux 5.9), without their `CAP_`
/// prefix, in the kernel's numbering (index = capability number).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// One capability, by its kernel number (always below [`CAPABILITY_NAMES`]'s length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Capability(u8);

impl Capability {
    /// Its kernel number (`CAP_SYS_ADMIN` is 21).
    pub fn number(self) -> usize {
        usize::from(self.0)
    }

    /// Its name without `CAP_` (`SYS_ADMIN`).
    pub fn name(self) -> &'static str {
        CAPABILITY_NAMES[self.number()]
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An entry of `cap_add` or `cap_drop`: one capability, or `ALL` (Docker's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapEntry {
    /// Every capability.
    All,
    /// This one.
    One(Capability),
}

impl FromStr for CapEntry {
    type Err = String;

    /// As Docker reads them: any case, with or without `CAP_`.
    fn from_str(text: &str) -> Result<CapEntry, String> {
        let upper = text.trim().to_ascii_uppercase();
        if upper == "ALL" {
            return Ok(CapEntry::All);
        }
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        match CAPABILITY_NAMES.iter().position(|n| *n == bare) {
            // The table has 41 entries: the index fits.
            Some(i) => Ok(CapEntry::One(Capability(i as u8))),
            None => Err(match crate::suggest::suggest(bare, &CAPABILITY_NAMES) {
                Some(s) => format!("unknown capability `{text}` (did you mean `{s}`?)"),
                None => format!(
                    "unknown capability `{text}` (a Linux capability such as SYS_ADMIN or \
                     NET_ADMIN, with or without CAP_, or ALL)"
                ),
            }),
        }
    }
}

impl fmt::Display for CapEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapEntry::All => f.write_str("ALL"),
            CapEntry::One(c) => c.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for CapEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_docker_reads_them_and_unknown_ones_are_refused() {
        let admin: CapEntry = "SYS_ADMIN".parse().unwrap();
        assert_eq!(admin.to_string(), "SYS_ADMIN");
        assert_eq!("cap_sys_admin".parse::<CapEntry>(), Ok(admin));
        assert_eq!(" Cap_Sys_Admin ".parse::<CapEntry>(), Ok(admin));
        let CapEntry::One(c) = admin else {
            panic!("{admin:?}")
        };
        assert_eq!(c.number(), 21);
        assert_eq!("all".parse::<CapEntry>(), Ok(CapEntry::All));
        assert_eq!(
            "NOPE".parse::<CapEntry>().unwrap_err(),
            "unknown capability `NOPE` (a Linux capability such as SYS_ADMIN or NET_ADMIN, \
             with or without CAP_, or ALL)"
        );
        assert_eq!(
            "SYS_ADMN".parse::<CapEntry>().unwrap_err(),
            "unknown capability `SYS_ADMN` (did you mean `SYS_ADMIN`?)"
        );
        assert!("CAP_".parse::<CapEntry>().is_err());
        assert!("".parse::<CapEntry>().is_err());
    }

    #[test]
    fn every_name_round_trips_at_its_number() {
        for (i, name) in CAPABILITY_NAMES.iter().enumerate() {
            let CapEntry::One(c) = name.parse::<CapEntry>().unwrap() else {
                panic!("{name}")
            };
            assert_eq!((c.number(), c.name()), (i, *name));
        }
    }
}
