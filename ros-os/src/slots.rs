//! An installed disk's two slots and what is known about them: the state file
//! (`boot/ros-os.json` on the RANCHER_STATE partition), the boot entries extlinux reads
//! (`boot/syslinux/syslinux.cfg`), and the decisions PID 1 and `ros os` take from them.
//! Pure: no file is read or written here (see [`crate::disk`] for that).
//!
//! The scheme (see `../shared/UPGRADE.md`): `DEFAULT` in syslinux.cfg is always the
//! known-good slot. An upgrade writes the other slot and arms it for one boot with
//! `extlinux --once`; ldlinux consumes that before it loads the kernel, so a kernel that
//! panics (`panic=10`), an initrd that never reaches PID 1 or a hang ends, at the next
//! boot, in the good slot. The trial slot becomes `DEFAULT` only once its PID 1 has passed
//! the health gate. The state file says what was tried, and PID 1 of the good slot tells a
//! failed trial from a normal boot by it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The state file's format.
pub const STATE_FORMAT: u32 = 1;
/// The filesystem label of an installed disk's one partition (boot, slots and state).
pub const PARTITION_LABEL: &str = "RANCHER_STATE";
/// Kernel command line word that names the slot a boot entry boots.
pub const SLOT_ARG: &str = "ros.slot";

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A (`boot/slot-a`, boot entry `ros-a`).
    A,
    /// Slot B (`boot/slot-b`, boot entry `ros-b`).
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `a` or `b`, as in paths, labels and `ros.slot=`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The slot's directory, relative to the partition's root.
    pub fn dir(self) -> String {
        format!("boot/slot-{}", self.name())
    }

    /// Its boot entry in syslinux.cfg (what `extlinux --once` arms).
    pub fn label(self) -> String {
        format!("ros-{}", self.name())
    }

    /// `a` or `b` back into a slot.
    pub fn parse(name: &str) -> Option<Slot> {
        match name {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot a boot entry label (`ros-a`) names.
    pub fn from_label(label: &str) -> Option<Slot> {
        label.strip_prefix("ros-").and_then(Slot::parse)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The files of a slot, in its directory.
pub const SLOT_FILES: [&str; 3] = ["vmlinuz", "initrd", "root.img"];

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// The release it holds (`ros os version` of that release, without the `v`).
    pub version: String,
    /// When it was written (seconds since the epoch).
    pub written_at: u64,
    /// Whether it has booted and passed the health gate at least once.
    pub booted_healthy: bool,
}

/// How far an upgrade's trial boot got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialPhase {
    /// `ros os upgrade` is arming it: the boot-once entry may or may not be set.
    Arming,
    /// Armed: the next boot goes to the trial slot, once.
    Armed,
    /// The trial slot's PID 1 ran (and is checking its health, or failed to).
    Started,
}

/// An upgrade under trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// The slot being tried.
    pub slot: Slot,
    /// Its release.
    pub version: String,
    /// How far it got.
    pub phase: TrialPhase,
    /// Why the trial's PID 1 gave up, when it did (it then rebooted into the good slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// How the last upgrade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The new slot passed the health gate and is the default now.
    Committed,
    /// The new slot did not; the good slot booted again.
    RolledBack,
}

/// The last upgrade's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The release that was tried.
    pub version: String,
    /// The slot it was in.
    pub slot: Slot,
    /// How it ended.
    pub result: Verdict,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When that was found (seconds since the epoch).
    pub at: u64,
    /// Whether the user has seen a rollback (the console warns at every boot until then).
    #[serde(default)]
    pub acknowledged: bool,
}

/// What `boot/ros-os.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// What each written slot holds.
    pub slots: BTreeMap<Slot, SlotInfo>,
    /// The known-good slot: syslinux.cfg's `DEFAULT`.
    pub good: Slot,
    /// The user's kernel arguments (`ros install -a`), on every boot entry.
    #[serde(default)]
    pub append: String,
    /// How the boot entries name the partition (`root=`): `PARTUUID=SSSSSSSS-01`, the
    /// disk signature `ros install` wrote, so that another volume labelled like it cannot
    /// stand in for it; none (disks installed before): [`PARTITION_LABEL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The upgrade being tried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<Trial>,
    /// How the last upgrade ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Outcome>,
    /// Releases rolled back automatically: not tried again unless asked (`-f`).
    #[serde(default)]
    pub refused: Vec<String>,
}

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not JSON of the expected shape.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's complaint (with its line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A format this release does not know (written by a newer one).
    #[error("{path}: format {found}, but this release reads format {STATE_FORMAT}")]
    Format {
        /// The file.
        path: String,
        /// What it says.
        found: u32,
    },
    /// The good slot is not one that was written.
    #[error("{path}: the good slot {slot} holds nothing")]
    GoodSlotEmpty {
        /// The file.
        path: String,
        /// The slot.
        slot: Slot,
    },
}

impl OsState {
    /// A disk just installed with `version` in slot A.
    pub fn installed(version: &str, append: &str, now: u64) -> OsState {
        OsState {
            format: STATE_FORMAT,
            slots: BTreeMap::from([(
                Slot::A,
                SlotInfo {
                    version: version.to_string(),
                    written_at: now,
                    // It booted healthy once if it was installed from a running system of
                    // the same release; the first boot confirms it (see on_boot).
                    booted_healthy: false,
                },
            )]),
            good: Slot::A,
            append: append.trim().to_string(),
            root: None,
            trial: None,
            last: None,
            refused: Vec::new(),
        }
    }

    /// Parse a state file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &str) -> Result<OsState, StateError> {
        let state: OsState = serde_json::from_str(text).map_err(|source| StateError::Parse {
            path: path.to_string(),
            source,
        })?;
        if state.format != STATE_FORMAT {
            return Err(StateError::Format {
                path: path.to_string(),
                found: state.format,
            });
        }
        if !state.slots.contains_key(&state.good) {
            return Err(StateError::GoodSlotEmpty {
                path: path.to_string(),
                slot: state.good,
            });
        }
        Ok(state)
    }

    /// The text of the state file.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The boot entries for this state: `DEFAULT` the good slot, an entry per written slot.
    pub fn boot_config(&self) -> String {
        boot_config(
            self.good,
            self.slots.keys().copied(),
            self.root.as_deref(),
            &self.append,
        )
    }
}

/// The kernel command line of `slot`'s boot entry: the root image in the slot's directory
/// on the partition `root` names (`PARTUUID=...`; none: by its label), a reboot 10 s
/// after a panic (Debian's kernel otherwise waits forever, and the bootloader's fallback
/// never comes), then the user's arguments.
pub fn kernel_args(slot: Slot, root: Option<&str>, append: &str) -> String {
    let label = format!("LABEL={PARTITION_LABEL}");
    let mut args = format!(
        "console=tty0 console=ttyS0 quiet panic=10 root={} rootimg=/{}/root.img \
         {SLOT_ARG}={slot}",
        root.unwrap_or(&label),
        slot.dir()
    );
    if !append.trim().is_empty() {
        args.push(' ');
        args.push_str(append.trim());
    }
    args
}

/// syslinux.cfg: `DEFAULT` is `good`; one entry per slot in `slots`. No prompt: a boot-once
/// entry that cannot be loaded falls back to `DEFAULT` after the timeout.
pub fn boot_config(
    good: Slot,
    slots: impl IntoIterator<Item = Slot>,
    root: Option<&str>,
    append: &str,
) -> String {
    let entries: Vec<SyslinuxEntry> = slots
        .into_iter()
        .map(|slot| SyslinuxEntry {
            label: slot.label(),
            kernel: format!("/{}/vmlinuz", slot.dir()),
            initrd: format!("/{}/initrd", slot.dir()),
            append: kernel_args(slot, root, append),
        })
        .collect();
    syslinux_config(
        "Written by ros (ros install, ros os upgrade): DEFAULT is the known-good slot.",
        &good.label(),
        &entries,
    )
}

/// One entry of a syslinux (or isolinux) config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslinuxEntry {
    /// Its `LABEL`.
    pub label: String,
    /// The kernel's path on the boot partition.
    pub kernel: String,
    /// The initrds, comma-separated (syslinux's syntax for several).
    pub initrd: String,
    /// The kernel command line.
    pub append: String,
}

/// A syslinux config: on the serial console too (ttyS0 at 115200), `default` booted
/// after a second. The one writer of syslinux configs: the installed disk's slots here,
/// and the image's and the ISO's through `ros-bundle syslinux-cfg` (initramfs/build.sh).
pub fn syslinux_config(comment: &str, default: &str, entries: &[SyslinuxEntry]) -> String {
    let mut cfg =
        format!("# {comment}\nSERIAL 0 115200\nDEFAULT {default}\nPROMPT 0\nTIMEOUT 10\n");
    for e in entries {
        cfg.push_str(&format!(
            "\nLABEL {}\n  KERNEL {}\n  INITRD {}\n  APPEND {}\n",
            e.label, e.kernel, e.initrd, e.append
        ));
    }
    cfg
}

/// What PID 1 makes of the state when it boots from `booted` (its `ros.slot=`), with
/// `armed` the boot-once label still in the ADV (`None` once ldlinux consumed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootKind {
    /// No upgrade under way.
    Normal,
    /// The first boot of a newly written slot under trial: check its health, then commit
    /// or roll back.
    Trial {
        /// The release under trial.
        version: String,
    },
    /// Back in the good slot after a trial that did not commit: record why.
    RolledBack {
        /// The release that was tried.
        version: String,
        /// The slot it was in.
        slot: Slot,
        /// Why, as well as the good slot can tell.
        reason: String,
    },
    /// An upgrade was being armed when the power went: nothing was tried.
    ArmingInterrupted,
    /// Armed, and this boot did not go through the bootloader's boot-once (another
    /// bootloader, or a boot before the reboot): the trial is still to come.
    StillArmed,
}

/// Why a trial boot ended, when a hardware watchdog says it reset the machine.
pub const WATCHDOG_RESET: &str = "the trial boot hung: the hardware watchdog reset the machine";
/// Why a trial boot ended, when nothing says more.
pub const TRIAL_CUT_SHORT: &str = "the trial boot ended before its health check finished \
     (a power cut or a reset; a hang too where no hardware watchdog tells its resets apart)";

/// See [`BootKind`]. `watchdog_reset` is asked only for a trial that started and recorded
/// no failure: did a hardware watchdog reset the machine since?
pub fn on_boot(
    state: &OsState,
    booted: Slot,
    armed: Option<&str>,
    watchdog_reset: impl FnOnce() -> bool,
) -> BootKind {
    let Some(trial) = &state.trial else {
        return BootKind::Normal;
    };
    // Whatever the phase says (arming may have been cut off after the ADV was written):
    // this slot is only booted by the boot-once entry, or by hand.
    if booted == trial.slot {
        return BootKind::Trial {
            version: trial.version.clone(),
        };
    }
    let rolled_back = |reason: &str| BootKind::RolledBack {
        version: trial.version.clone(),
        slot: trial.slot,
        reason: reason.to_string(),
    };
    let still_armed = armed == Some(trial.slot.label().as_str());
    match trial.phase {
        // Cut off after extlinux armed it: it will be tried at the next boot.
        TrialPhase::Arming if still_armed => BootKind::StillArmed,
        TrialPhase::Arming => BootKind::ArmingInterrupted,
        TrialPhase::Armed if still_armed => BootKind::StillArmed,
        TrialPhase::Armed => {
            rolled_back("the new kernel or initrd never reached PID 1 (a panic, a bad image, a hang before init)")
        }
        TrialPhase::Started => match &trial.failure {
            Some(reason) => rolled_back(reason),
            None if watchdog_reset() => rolled_back(WATCHDOG_RESET),
            None => rolled_back(TRIAL_CUT_SHORT),
        },
    }
}

/// The state after a trial passed its health gate: the slot is the good one.
pub fn committed(state: &OsState, now: u64) -> OsState {
    let mut next = state.clone();
    if let Some(trial) = next.trial.take() {
        if let Some(info) = next.slots.get_mut(&trial.slot) {
            info.booted_healthy = true;
        }
        next.good = trial.slot;
        next.refused.retain(|v| v != &trial.version);
        next.last = Some(Outcome {
            version: trial.version,
            slot: trial.slot,
            result: Verdict::Committed,
            reason: None,
            at: now,
            acknowledged: true,
        });
    }
    next
}

/// The state after the good slot found a trial that did not commit (`kind` is
/// [`BootKind::RolledBack`]): the reason recorded, the release refused from now on.
pub fn rolled_back(state: &OsState, version: &str, slot: Slot, reason: &str, now: u64) -> OsState {
    let mut next = state.clone();
    next.trial = None;
    if !next.refused.iter().any(|v| v == version) {
        next.refused.push(version.to_string());
    }
    next.last = Some(Outcome {
        version: version.to_string(),
        slot,
        result: Verdict::RolledBack,
        reason: Some(reason.to_string()),
        at: now,
        acknowledged: false,
    });
    next
}

/// Why `ros os upgrade` will not write `version` over the inactive slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefusal {
    /// That release runs already.
    #[error("{version} is the release running now (use -f to write it to the other slot anyway)")]
    SameVersion {
        /// The release.
        version: String,
    },
    /// It was rolled back automatically before.
    #[error("{version} was rolled back after a failed trial ({reason}); use -f to try it again")]
    RolledBackBefore {
        /// The release.
        version: String,
        /// Why it was rolled back, as recorded.
        reason: String,
    },
    /// Booted from the slot that is not the good one (chosen by hand at the boot prompt).
    #[error(
        "running slot {booted}, but the known-good slot is {good}: reboot into it (or \
         `ros os rollback`) before upgrading"
    )]
    NotOnTheGoodSlot {
        /// The slot running now.
        booted: Slot,
        /// The good one.
        good: Slot,
    },
}

/// The slot `ros os upgrade` writes `version` into, or why it will not.
pub fn upgrade_target(
    state: &OsState,
    booted: Slot,
    running: &str,
    version: &str,
    force: bool,
) -> Result<Slot, UpgradeRefusal> {
    if booted != state.good {
        return Err(UpgradeRefusal::NotOnTheGoodSlot {
            booted,
            good: state.good,
        });
    }
    if !force && version == running {
        return Err(UpgradeRefusal::SameVersion {
            version: version.to_string(),
        });
    }
    if !force && state.refused.iter().any(|v| v == version) {
        let reason = state
            .last
            .as_ref()
            .filter(|o| o.version == version)
            .and_then(|o| o.reason.clone())
            .unwrap_or_else(|| "reason not recorded".into());
        return Err(UpgradeRefusal::RolledBackBefore {
            version: version.to_string(),
            reason,
        });
    }
    Ok(booted.other())
}

/// Why `ros os rollback` will not switch slots.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefusal {
    /// The other slot was never written.
    #[error("slot {slot} is empty: there is nothing to roll back to")]
    Empty {
        /// The slot.
        slot: Slot,
    },
    /// The other slot never passed a health check.
    #[error("slot {slot} ({version}) never booted healthy: not rolling back to it")]
    NeverHealthy {
        /// The slot.
        slot: Slot,
        /// Its release.
        version: String,
    },
}

/// What `ros os rollback` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// An armed upgrade is cancelled before its trial boot (the boot-once is cleared).
    CancelTrial(OsState),
    /// The other slot becomes the good one (the next boot, and every one after).
    Switch(OsState),
}

/// See [`Rollback`].
pub fn rollback(state: &OsState) -> Result<Rollback, RollbackRefusal> {
    if let Some(trial) = &state.trial {
        if matches!(trial.phase, TrialPhase::Arming | TrialPhase::Armed) {
            let mut next = state.clone();
            next.trial = None;
            return Ok(Rollback::CancelTrial(next));
        }
    }
    let other = state.good.other();
    let info = state
        .slots
        .get(&other)
        .ok_or(RollbackRefusal::Empty { slot: other })?;
    if !info.booted_healthy {
        return Err(RollbackRefusal::NeverHealthy {
            slot: other,
            version: info.version.clone(),
        });
    }
    let mut next = state.clone();
    next.good = other;
    next.trial = None;
    Ok(Rollback::Switch(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_slots() -> OsState {
        let mut s = OsState::installed("1.0", "rancher.debug", 100);
        s.slots.get_mut(&Slot::A).unwrap().booted_healthy = true;
        s.slots.insert(
            Slot::B,
            SlotInfo {
                version: "2.0".into(),
                written_at: 200,
                booted_healthy: false,
            },
        );
        s
    }

    fn armed(phase: TrialPhase, failure: Option<&str>) -> OsState {
        let mut s = two_slots();
        s.trial = Some(Trial {
            slot: Slot::B,
            version: "2.0".into(),
            phase,
            failure: failure.map(String::from),
        });
        s
    }

    #[test]
    fn the_state_file_round_trips_and_bad_ones_are_refused_with_their_path() {
        let s = armed(TrialPhase::Started, Some("service ntp: exited 1"));
        let text = s.to_text();
        assert_eq!(OsState::parse(&text, "x.json").unwrap(), s);
        let err = OsState::parse("{", "/b/ros-os.json").unwrap_err();
        assert!(err.to_string().starts_with("/b/ros-os.json: "), "{err}");
        let newer = text.replace("\"format\": 1", "\"format\": 2");
        assert!(matches!(
            OsState::parse(&newer, "x").unwrap_err(),
            StateError::Format { found: 2, .. }
        ));
        let mut empty = s.clone();
        empty.good = Slot::B;
        empty.slots.remove(&Slot::B);
        assert!(OsState::parse(&empty.to_text(), "x").is_err());
    }

    #[test]
    fn the_boot_config_defaults_to_the_good_slot_and_has_an_entry_per_slot() {
        let cfg = two_slots().boot_config();
        assert!(cfg.contains("\nDEFAULT ros-a\n"), "{cfg}");
        assert!(cfg.contains(
            "LABEL ros-a\n  KERNEL /boot/slot-a/vmlinuz\n  INITRD /boot/slot-a/initrd\n"
        ));
        assert!(
            cfg.contains(
                "  APPEND console=tty0 console=ttyS0 quiet panic=10 root=LABEL=RANCHER_STATE \
             rootimg=/boot/slot-b/root.img ros.slot=b rancher.debug\n"
            ),
            "{cfg}"
        );
        let mut one = OsState::installed("1.0", "", 1);
        let cfg = one.boot_config();
        assert!(!cfg.contains("ros-b"), "{cfg}");
        assert!(cfg.contains("ros.slot=a\n"), "{cfg}");
        // A disk installed with its partition id names it so, and the id survives the
        // state file.
        one.root = Some("PARTUUID=1a2b3c4d-01".into());
        let cfg = one.boot_config();
        assert!(
            cfg.contains(" root=PARTUUID=1a2b3c4d-01 rootimg=/boot/slot-a/root.img "),
            "{cfg}"
        );
        assert_eq!(OsState::parse(&one.to_text(), "x").unwrap(), one);
    }

    #[test]
    fn each_boot_is_told_apart_by_the_trials_phase_and_the_adv() {
        let table: [(OsState, Slot, Option<&str>, BootKind); 9] = [
            (armed(TrialPhase::Arming, None), Slot::A, Some("ros-b"), BootKind::StillArmed),
            (two_slots(), Slot::A, None, BootKind::Normal),
            (armed(TrialPhase::Armed, None), Slot::B, None, BootKind::Trial { version: "2.0".into() }),
            (armed(TrialPhase::Started, None), Slot::B, None, BootKind::Trial { version: "2.0".into() }),
            (armed(TrialPhase::Arming, None), Slot::A, None, BootKind::ArmingInterrupted),
            (armed(TrialPhase::Armed, None), Slot::A, Some("ros-b"), BootKind::StillArmed),
            (
                armed(TrialPhase::Armed, None),
                Slot::A,
                None,
                BootKind::RolledBack {
                    version: "2.0".into(),
                    slot: Slot::B,
                    reason: "the new kernel or initrd never reached PID 1 (a panic, a bad image, a hang before init)".into(),
                },
            ),
            (
                armed(TrialPhase::Started, Some("health check: service ntp is not up")),
                Slot::A,
                None,
                BootKind::RolledBack {
                    version: "2.0".into(),
                    slot: Slot::B,
                    reason: "health check: service ntp is not up".into(),
                },
            ),
            (
                armed(TrialPhase::Started, None),
                Slot::A,
                None,
                BootKind::RolledBack {
                    version: "2.0".into(),
                    slot: Slot::B,
                    reason: TRIAL_CUT_SHORT.into(),
                },
            ),
        ];
        for (state, booted, adv, want) in table {
            assert_eq!(
                on_boot(&state, booted, adv, || false),
                want,
                "{state:?} {booted} {adv:?}"
            );
        }
        // A hardware watchdog's word is asked for only where it tells something apart.
        let reason = |k: BootKind| match k {
            BootKind::RolledBack { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        let started = armed(TrialPhase::Started, None);
        assert_eq!(
            reason(on_boot(&started, Slot::A, None, || true)),
            WATCHDOG_RESET
        );
        let failed = armed(
            TrialPhase::Started,
            Some("health check: service ntp is not up"),
        );
        let asked = |k| on_boot(&failed, Slot::A, None, || panic!("asked for {k}"));
        assert_eq!(
            reason(asked("a recorded failure")),
            "health check: service ntp is not up"
        );
        let never = armed(TrialPhase::Armed, None);
        on_boot(&never, Slot::A, None, || {
            panic!("asked for a trial that never started")
        });
    }

    #[test]
    fn a_commit_makes_the_trial_slot_good_and_a_rollback_refuses_its_release() {
        let c = committed(&armed(TrialPhase::Started, None), 300);
        assert_eq!(c.good, Slot::B);
        assert!(c.trial.is_none() && c.slots[&Slot::B].booted_healthy);
        assert_eq!(c.last.as_ref().unwrap().result, Verdict::Committed);
        assert!(c.boot_config().contains("DEFAULT ros-b"));

        let r = rolled_back(
            &armed(TrialPhase::Armed, None),
            "2.0",
            Slot::B,
            "panic",
            300,
        );
        assert_eq!(r.good, Slot::A);
        assert_eq!(r.refused, ["2.0"]);
        let last = r.last.as_ref().unwrap();
        assert_eq!(
            (last.result, last.reason.as_deref(), last.acknowledged),
            (Verdict::RolledBack, Some("panic"), false)
        );
        assert_eq!(
            upgrade_target(&r, Slot::A, "1.0", "2.0", false),
            Err(UpgradeRefusal::RolledBackBefore {
                version: "2.0".into(),
                reason: "panic".into()
            })
        );
        assert_eq!(upgrade_target(&r, Slot::A, "1.0", "2.0", true), Ok(Slot::B));
        // A later commit of it clears the refusal.
        assert!(committed(&armed(TrialPhase::Started, None), 1)
            .refused
            .is_empty());
    }

    #[test]
    fn upgrades_go_to_the_other_slot_from_the_good_one_only() {
        let s = two_slots();
        assert_eq!(
            upgrade_target(&s, Slot::A, "1.0", "3.0", false),
            Ok(Slot::B)
        );
        assert!(matches!(
            upgrade_target(&s, Slot::A, "1.0", "1.0", false),
            Err(UpgradeRefusal::SameVersion { .. })
        ));
        assert_eq!(upgrade_target(&s, Slot::A, "1.0", "1.0", true), Ok(Slot::B));
        assert!(matches!(
            upgrade_target(&s, Slot::B, "2.0", "3.0", false),
            Err(UpgradeRefusal::NotOnTheGoodSlot { .. })
        ));
    }

    #[test]
    fn rollback_cancels_an_armed_trial_or_switches_to_a_healthy_other_slot() {
        assert!(
            matches!(rollback(&armed(TrialPhase::Armed, None)), Ok(Rollback::CancelTrial(s)) if s.trial.is_none())
        );
        assert_eq!(
            rollback(&OsState::installed("1.0", "", 1)),
            Err(RollbackRefusal::Empty { slot: Slot::B })
        );
        assert!(matches!(
            rollback(&two_slots()),
            Err(RollbackRefusal::NeverHealthy { .. })
        ));
        let c = committed(&armed(TrialPhase::Started, None), 300);
        match rollback(&c) {
            Ok(Rollback::Switch(s)) => assert_eq!(s.good, Slot::A),
            other => panic!("{other:?}"),
        }
    }
}
