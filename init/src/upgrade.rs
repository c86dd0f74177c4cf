//! PID 1's part in upgrades, on an installed disk of two slots (`ros_os`): at boot, tell a
//! trial boot from a normal one and a failed trial from both (and record why it failed);
//! in a trial, check the health gate and commit the new slot, or record the failure and
//! reboot into the good one. `ros os upgrade` writes and arms; the bootloader's boot-once
//! makes every failure before this module runs end in the good slot by itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ros_config::schema::{CloudConfig, HEALTH_CHECK_DEADLINE_SECS};
use ros_control::PowerAction;
use ros_os::disk::{Disk, Firmware, BOOT_DISK};
use ros_os::slots::{self, BootKind, OsState, Slot, TrialPhase, Verdict};
use ros_runtime::ServiceRuntime;
use tokio::sync::mpsc::UnboundedSender;

use crate::cloudinit::ReaperRunner;
use crate::cmdline::KernelCmdline;
use crate::reaper::Reaper;
use crate::supervisor::{State, Supervisor};
use crate::watchdog::Watchdog;

/// How long a trial boot may take to be healthy, from PID 1's start: past it, the trial
/// is given up (recorded, and the good slot booted).
pub const TRIAL_DEADLINE: Duration = Duration::from_secs(900);
/// After `boot-complete`, how long every enabled service may take to be up and stay up
/// for `rancher.upgrade.healthy_after` (20 s by default: a service that crashes at once
/// is up for an instant after each of its restarts).
pub const HEALTH_WINDOW: Duration = Duration::from_secs(180);
/// Restarts of one service after `boot-complete` that fail the gate at once (a crash
/// loop: waiting for the window to close would tell nothing more).
pub const HEALTH_MAX_RESTARTS: u32 = 3;
/// How long a trial's watchdog is pinged past [`TRIAL_DEADLINE`]: the deadline's reboot
/// has that long to finish its shutdown before the watchdog resets the machine.
pub const WATCHDOG_GRACE: Duration = Duration::from_secs(120);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What this boot is to the upgrade machinery.
#[derive(Debug, Clone)]
pub enum Boot {
    /// Not an installed disk of two slots (a live medium, or the single-slot layout).
    NotSlotted,
    /// An installed disk.
    Slotted(Arc<Slotted>),
}

/// An installed disk's boot.
#[derive(Debug)]
pub struct Slotted {
    disk: Disk,
    booted: Slot,
    state: std::sync::Mutex<OsState>,
    trial: Option<String>,
    /// Set once the trial is decided (committed, or given up): the deadline then does nothing.
    decided: AtomicBool,
    /// A trial's watchdog, disarmed by the commit.
    watchdog: Option<Watchdog>,
}

impl Slotted {
    fn state(&self) -> OsState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn save(&self, next: OsState, settle: bool) {
        let written = if settle {
            self.disk.commit(&next)
        } else {
            self.disk.write_state(&next)
        };
        if let Err(e) = written {
            log::error!("upgrade: {e}");
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = next;
    }

    /// Give the trial up: record `reason` for the good slot to report, and reboot into it.
    fn give_up(&self, reason: &str, power: &UnboundedSender<PowerAction>) {
        if self.decided.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut next = self.state();
        if let Some(t) = next.trial.as_mut() {
            t.failure = Some(reason.to_string());
        }
        self.save(next, false);
        log::error!(
            "upgrade: the trial of {} in slot {} failed: {reason}; rebooting into slot {}",
            self.trial.as_deref().unwrap_or("?"),
            self.booted,
            self.booted.other()
        );
        let _ = power.send(PowerAction::Reboot);
    }
}

/// Read the slots' state at boot and record what this boot says about the last upgrade.
/// A trial boot turns the recovery shell off (any fatal error reboots into the good slot)
/// and arms a watchdog (loaded through `modules`).
pub fn at_boot(cmdline: &KernelCmdline, modules: &dyn ros_cloudinit::ModuleLoader) -> Boot {
    let Some(booted) = cmdline.get(slots::SLOT_ARG).and_then(Slot::parse) else {
        return Boot::NotSlotted;
    };
    let disk = Disk::at(Path::new(BOOT_DISK));
    let state = match disk.read_state() {
        Ok(Some(s)) => s,
        Ok(None) => {
            log::warn!("upgrade: booted slot {booted}, but the disk has no state file");
            return Boot::NotSlotted;
        }
        Err(e) => {
            log::error!("upgrade: {e}; upgrades and rollbacks are off for this boot");
            return Boot::NotSlotted;
        }
    };
    let removed = disk.remove_leftovers();
    if !removed.is_empty() {
        let names: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        log::warn!(
            "upgrade: removed what an interrupted upgrade left: {}",
            names.join(", ")
        );
    }
    let armed = disk.boot_once(Firmware::current());
    let kind = slots::on_boot(&state, booted, armed.as_deref(), || {
        crate::watchdog::reset_the_last_boot(modules, Path::new(crate::watchdog::CLASS_DIR))
    });
    let mut next = state.clone();
    let mut trial = None;
    let mut watchdog = None;
    match &kind {
        BootKind::Trial { version } => {
            crate::recovery::set_offer_shell(false);
            if let Some(t) = next.trial.as_mut() {
                t.phase = TrialPhase::Started;
            }
            // Durable before anything else happens: a power cut from here on is told
            // apart from a kernel that never reached PID 1.
            if let Err(e) = disk.write_state(&next) {
                log::error!("upgrade: {e}");
            }
            log::warn!(
                "upgrade: trial boot of {version} in slot {booted}: it becomes the default \
                 once every service is up; any failure boots slot {} again",
                booted.other()
            );
            trial = Some(version.clone());
            watchdog = Watchdog::arm(modules, TRIAL_DEADLINE + WATCHDOG_GRACE);
        }
        BootKind::RolledBack {
            version,
            slot,
            reason,
        } => {
            next = slots::rolled_back(&state, version, *slot, reason, now());
            log::error!(
                "upgrade: {version} (slot {slot}) was rolled back: {reason}; running slot \
                 {booted} again (`ros os list` says more)"
            );
        }
        BootKind::ArmingInterrupted => {
            next.trial = None;
            log::warn!(
                "upgrade: an upgrade was being armed when this machine went down: cancelled"
            );
        }
        BootKind::StillArmed | BootKind::Normal => {}
    }
    if let Some(last) = next
        .last
        .as_ref()
        .filter(|l| l.result == Verdict::RolledBack && !l.acknowledged)
    {
        if !matches!(kind, BootKind::RolledBack { .. }) {
            log::warn!(
                "upgrade: {} (slot {}) was rolled back: {} (`ros os list --acknowledge` \
                 stops this warning)",
                last.version,
                last.slot,
                last.reason.as_deref().unwrap_or("reason not recorded")
            );
        }
    }
    if booted != next.good && trial.is_none() {
        log::warn!(
            "upgrade: running slot {booted}, which is not the known-good slot {} (chosen at \
             the boot prompt?)",
            next.good
        );
    }
    // The state is the truth: a power cut between a commit's two writes (the state, then
    // syslinux.cfg) leaves the bootloader's DEFAULT behind it, which is written again here.
    if trial.is_none() && !disk.boot_config_matches(&next) {
        log::warn!(
            "upgrade: the boot entries did not match the state (a power cut during a \
             commit?): written again, slot {} boots by default",
            next.good
        );
        if let Err(e) = disk.write_boot_config(&next).and_then(|()| disk.settle()) {
            log::error!("upgrade: {e}");
        }
    }
    let slotted = Slotted {
        disk,
        booted,
        state: std::sync::Mutex::new(state.clone()),
        trial,
        decided: AtomicBool::new(false),
        watchdog,
    };
    if next != state {
        slotted.save(next, false);
    }
    Boot::Slotted(Arc::new(slotted))
}

/// In a trial boot: give it up if it is not healthy [`TRIAL_DEADLINE`] after now.
pub fn arm_trial_deadline(boot: &Boot, power: UnboundedSender<PowerAction>) {
    let Boot::Slotted(s) = boot else { return };
    if s.trial.is_none() {
        return;
    }
    let s = s.clone();
    let spawned = std::thread::Builder::new()
        .name("trial-deadline".into())
        .spawn(move || {
            // A deadline, not a synchronisation: a healthy trial decides first.
            std::thread::sleep(TRIAL_DEADLINE);
            s.give_up(
                &format!(
                    "health check: not healthy {} s after PID 1 started",
                    TRIAL_DEADLINE.as_secs()
                ),
                &power,
            );
        });
    if let Err(e) = spawned {
        log::warn!("upgrade: no trial deadline: {e}");
    }
}

/// The first service that is not up, or restarted since `restarts` was taken: `(name,
/// what it is doing)`; `None` when all are up and none restarted.
fn unhealthy<R: ServiceRuntime + 'static>(
    sup: &Supervisor<R>,
    restarts: &BTreeMap<String, u32>,
) -> Option<(String, String)> {
    sup.snapshot().into_iter().find_map(|(name, r)| {
        if !r.wanted {
            return None;
        }
        if restarts.get(&name).is_some_and(|n| *n != r.restarts) {
            return Some((
                name,
                format!("restarted ({} restarts since boot)", r.restarts),
            ));
        }
        let oneshot = r.spec.is_oneshot();
        let problem = match &r.state {
            State::Running { .. } if !oneshot => return None,
            State::Exited { status: 0, .. } if oneshot => return None,
            State::Exited { status, .. } => format!("exited {status}"),
            State::Failed { message, .. } => format!("failed to start: {message}"),
            State::Running { .. } => "still running (a one-shot)".into(),
            State::Starting => "still starting".into(),
            State::Created => "not started".into(),
        };
        Some((name, problem))
    })
}

/// The user's own health checks (`rancher.upgrade.health_checks`) and what running them
/// needs: they run as `runcmd` does, in the console's filesystem.
pub struct UserChecks {
    /// The boot's config (the checks, and `rancher.environment`).
    pub config: CloudConfig,
    /// The one reaper, which waits for them.
    pub reaper: Reaper,
    /// The console's pid once it started (0 before).
    pub console_pid: Arc<AtomicU32>,
}

impl UserChecks {
    /// Run every check; the first that failed, as `` `COMMAND`: WHAT HAPPENED ``.
    async fn first_failure(self) -> Option<String> {
        if self.config.rancher.upgrade.health_checks.is_empty() {
            return None;
        }
        let ran = tokio::task::spawn_blocking(move || {
            let mut runner =
                ReaperRunner::for_runcmd(self.reaper, self.console_pid.load(Ordering::Relaxed));
            runner.deadline = Duration::from_secs(HEALTH_CHECK_DEADLINE_SECS);
            ros_cloudinit::run_health_checks(
                &self.config,
                &runner,
                &crate::cloudinit::command_log(),
            )
        })
        .await;
        match ran {
            Ok(report) => report
                .problems
                .first()
                .map(|p| format!("{}: {}", p.subject, p.message)),
            Err(e) => Some(format!("running them: {e}")),
        }
    }
}

/// After `boot-complete`: in a trial, the health gate (every enabled service up within
/// [`HEALTH_WINDOW`], then the user's checks), then the commit or the reboot into the good slot; in the first
/// healthy boot of a slot, mark it so (`ros os rollback` goes only to such a slot).
pub async fn after_boot_complete<R: ServiceRuntime + 'static>(
    boot: &Boot,
    sup: &Supervisor<R>,
    power: &UnboundedSender<PowerAction>,
    checks: UserChecks,
) {
    let Boot::Slotted(s) = boot else { return };
    let state = s.state();
    let first_healthy = s.booted == state.good
        && state
            .slots
            .get(&s.booted)
            .is_some_and(|i| !i.booted_healthy);
    if s.trial.is_none() && !first_healthy {
        return;
    }
    // Healthy: every service up, and still up without a restart `stable` later.
    // Polled: services come up at their own pace, and a restart's backoff is seconds.
    let stable = checks.config.rancher.upgrade.healthy_after();
    let started = tokio::time::Instant::now();
    let restarts_now = || -> BTreeMap<String, u32> {
        sup.snapshot()
            .into_iter()
            .map(|(n, r)| (n, r.restarts))
            .collect()
    };
    let mut stable_since = started;
    let mut baseline = restarts_now();
    let at_start = baseline.clone();
    // The last problem seen: named if the window closes before the services settle.
    let mut seen = None;
    let healthy = loop {
        match unhealthy(sup, &baseline) {
            Some(problem) => {
                seen = Some(problem);
                stable_since = tokio::time::Instant::now();
                baseline = restarts_now();
            }
            None if stable_since.elapsed() >= stable => break true,
            None => {}
        }
        if started.elapsed() >= HEALTH_WINDOW {
            break false;
        }
        let looping = restarts_now().into_iter().find(|(name, n)| {
            n.saturating_sub(at_start.get(name).copied().unwrap_or(0)) >= HEALTH_MAX_RESTARTS
        });
        if let Some((name, n)) = looping {
            seen = Some((name, format!("restarted {n} times: a crash loop")));
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let last = (!healthy)
        .then(|| seen.unwrap_or_else(|| ("(none named)".into(), "not up for long enough".into())));
    if let Some((name, problem)) = last {
        if s.trial.is_some() {
            s.give_up(
                &format!(
                    "health check: service {name} is not up for {} s within {} s of \
                     boot-complete ({problem})",
                    stable.as_secs(),
                    HEALTH_WINDOW.as_secs()
                ),
                power,
            );
        } else {
            log::warn!(
                "upgrade: service {name} is not up ({problem}); slot {} stays not yet healthy",
                s.booted
            );
        }
        return;
    }
    if s.trial.is_some() {
        // Then the user's checks, on a system the gate found healthy.
        if let Some(failed) = checks.first_failure().await {
            s.give_up(&format!("health check: {failed}"), power);
            return;
        }
        if s.decided.swap(true, Ordering::SeqCst) {
            return;
        }
        let next = slots::committed(&s.state(), now());
        s.save(next, true);
        if let Some(w) = &s.watchdog {
            w.disarm();
        }
        log::warn!(
            "upgrade: {} committed: every service stayed up; slot {} boots by default now",
            s.trial.as_deref().unwrap_or("?"),
            s.booted
        );
    } else {
        let mut next = s.state();
        if let Some(info) = next.slots.get_mut(&s.booted) {
            info.booted_healthy = true;
        }
        s.save(next, false);
        log::info!("upgrade: slot {} booted healthy", s.booted);
    }
}
