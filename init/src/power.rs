//! Signals to PID 1 and the last part of shutdown: TERM all, bounded wait, KILL all,
//! sync, unmount in reverse (a busy disk filesystem remounted read-only before it is
//! detached), `reboot(2)`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::reboot::RebootMode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ros_control::{action_for_signal, PowerAction, SIGNAL_ACTIONS};
use signal_hook::iterator::Signals;

use crate::mounts;
use crate::reaper::Reaper;
use crate::recovery;
use crate::sys::Mounter;

/// Start the signal thread: SIGCHLD drives the reaper; the power signals are sent
/// to `actions`. Also routes Ctrl-Alt-Del to PID 1 as SIGINT.
pub fn start_signal_thread(reaper: Reaper, actions: Sender<PowerAction>) -> std::io::Result<()> {
    let mut sigs: Vec<i32> = SIGNAL_ACTIONS.iter().map(|(s, _)| *s).collect();
    sigs.push(libc::SIGCHLD);
    let mut signals = Signals::new(&sigs)?;
    if std::process::id() == 1 {
        // With CAD disabled the kernel sends SIGINT to PID 1 instead of rebooting hard.
        if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
            log::warn!("ctrl-alt-del: cannot route to init: {e}");
        }
    }
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // Children may have exited before the handler was installed.
            reaper.reap_all();
            for sig in signals.forever() {
                if sig == libc::SIGCHLD {
                    if !recovery::in_recovery() {
                        reaper.reap_all();
                    }
                } else if let Some(action) = action_for_signal(sig) {
                    log::info!("signal {sig}: {action} requested");
                    let _ = actions.send(action);
                }
            }
        })?;
    Ok(())
}

/// Whether any descendant of `ancestor` is left (zombies included).
///
/// Not `kill(-1, 0)`: it counts kernel threads, so it never says "none".
fn others_alive(ancestor: u32) -> bool {
    !survivors(Path::new("/proc"), ancestor).is_empty()
}

/// Send `signal` to every descendant of `ancestor`: for PID 1, every user process, with
/// one `kill(-1)` (nothing forked meanwhile escapes it); for a subreaper, each of its own.
fn signal_all(ancestor: u32, signal: Signal) {
    if ancestor == 1 {
        let _ = kill(Pid::from_raw(-1), signal);
        return;
    }
    for (pid, _) in descendants(Path::new("/proc"), ancestor) {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
}

/// The farthest deadline [`deadline_after`] gives when the clock cannot hold the one asked.
const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The instant `after` from now. Every wait in init whose length comes from outside (the
/// config, the kernel command line) takes its deadline from here: `Instant + Duration`
/// panics when the sum does not fit the clock, and a panic in PID 1 is a kernel panic, so
/// such an `after` is cut to [`LONGEST_WAIT`] (or to now, if even that does not fit).
pub fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(LONGEST_WAIT))
        .unwrap_or(now)
}

/// TERM every process, wait up to `grace` for them to exit, then KILL the rest.
pub fn terminate_all(reaper: &Reaper, grace: Duration) {
    // PID 1's descendants are every user process (kernel threads descend from kthreadd,
    // pid 2); a subreaper's are only its own.
    let scope = std::process::id();
    signal_all(scope, Signal::SIGTERM);
    let gone = reaper.wait_until(deadline_after(grace), || !others_alive(scope));
    if !gone {
        log::warn!(
            "shutdown: processes left after {grace:?}, killing them: {}",
            survivors(Path::new("/proc"), scope).join(", ")
        );
        signal_all(scope, Signal::SIGKILL);
        reaper.wait_until(Instant::now() + Duration::from_secs(2), || {
            !others_alive(scope)
        });
    }
}

/// `pid:name` of every descendant of `ancestor` ([`descendants`]).
fn survivors(proc: &Path, ancestor: u32) -> Vec<String> {
    let mut out: Vec<String> = descendants(proc, ancestor)
        .into_iter()
        .map(|(pid, comm)| format!("{pid}:{comm}"))
        .collect();
    out.sort();
    out
}

/// Every descendant of `ancestor`, zombies included: pid and name. PID 1's are every user
/// process; kernel threads are kthreadd (pid 2, parent 0) and its children, so none is.
fn descendants(proc: &Path, ancestor: u32) -> Vec<(u32, String)> {
    let mut children: HashMap<u32, Vec<(u32, String)>> = HashMap::new();
    for entry in std::fs::read_dir(proc).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        children
            .entry(ppid)
            .or_default()
            .push((pid, comm.to_string()));
    }
    let mut out = Vec::new();
    let mut next = vec![ancestor];
    while let Some(parent) = next.pop() {
        for (pid, comm) in children.remove(&parent).unwrap_or_default() {
            next.push(pid);
            out.push((pid, comm));
        }
    }
    out
}

/// Unmount everything but `/` and the kernel's pseudo filesystems, newest first.
///
/// A disk's filesystem that stays busy is remounted read-only before it is detached, so
/// that it is left clean, with no journal to replay at the next boot: the installed
/// disk's partition always is (mounted at [`crate::paths::BOOT_DISK`], it holds the root
/// image the loop device under `/` reads), and so is the state disk (the same partition
/// there; its own disk otherwise) when something still holds it. A detach alone would
/// leave it mounted read-write until the power goes. When even the remount fails (a file
/// still open for writing), `sync` runs instead, with a warning.
pub fn unmount_all(mountinfo: &Path, m: &dyn Mounter, sync: &dyn Fn()) {
    let keep = [
        Path::new("/"),
        Path::new("/proc"),
        Path::new("/sys"),
        Path::new("/dev"),
    ];
    let mut mounts = mounted_with_devices(mountinfo);
    mounts.reverse();
    // One remount per filesystem: its binds share its superblock.
    let mut settled: Vec<&str> = Vec::new();
    for (target, dev) in mounts.iter().filter(|(t, _)| !keep.contains(&t.as_path())) {
        if m.umount(target, MntFlags::empty()).is_ok() {
            continue;
        }
        if let Some(dev) = dev.as_deref().filter(|d| on_a_disk(d)) {
            if !settled.contains(&dev) {
                settled.push(dev);
                remount_read_only(target, dev, m, sync);
            }
        }
        let _ = m.umount(target, MntFlags::MNT_DETACH);
    }
}

/// The mount points of `mountinfo`, each with its `major:minor` when the table read
/// agrees with itself.
fn mounted_with_devices(mountinfo: &Path) -> Vec<(PathBuf, Option<String>)> {
    let targets = mounts::mounted_targets(mountinfo);
    // Read twice (mounts::mounted_targets owns the unescaping of mount points), while
    // nothing else runs: if the table changed in between, remount nothing rather than
    // the wrong thing.
    let devices: Vec<String> = std::fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.split(' ').nth(4).is_some())
        .filter_map(|line| line.split(' ').nth(2).map(str::to_string))
        .collect();
    let agree = devices.len() == targets.len();
    targets
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, agree.then(|| devices[i].clone())))
        .collect()
}

/// Whether `major:minor` is a block device's (tmpfs, proc, overlay and the like have
/// anonymous devices, major 0: nothing on a disk to leave clean).
fn on_a_disk(dev: &str) -> bool {
    dev.split_once(':')
        .and_then(|(major, _)| major.parse::<u64>().ok())
        .is_some_and(|major| major != 0)
}

/// Remount the busy filesystem at `target` (on device `dev`) read-only; sync on failure.
fn remount_read_only(target: &Path, dev: &str, m: &dyn Mounter, sync: &dyn Fn()) {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    match m.mount("none", target, None, flags, None) {
        Ok(()) => log::info!(
            "shutdown: {} ({dev}) is busy: remounted read-only, so it is left clean",
            target.display()
        ),
        Err(e) => {
            log::warn!(
                "shutdown: {} ({dev}) is busy and could not be remounted read-only ({e}): \
                 syncing it instead; its journal will be replayed at the next boot",
                target.display()
            );
            sync();
        }
    }
}

/// How much longer than `rancher.shutdown_timeout` (the services' stop budget) a whole
/// shutdown may take: containerd's stop, the TERM/KILL of what is left, unmounting.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(30);

/// Only the first caller of [`finish`] goes on; a second (the deadline's thread, or the
/// normal path after it) waits for the reboot.
static FINISHING: AtomicBool = AtomicBool::new(false);

/// One deadline on the whole shutdown: `services_budget` plus [`SHUTDOWN_MARGIN`] after
/// now, [`finish`] runs from a thread of its own, whatever the normal path is stuck on (a
/// hung containerd, a service stop with a huge timeout, an in-flight reload).
pub fn arm_shutdown_deadline(action: PowerAction, services_budget: Duration, reaper: Reaper) {
    let budget = services_budget.saturating_add(SHUTDOWN_MARGIN);
    let spawned = thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            // A deadline, not a synchronisation: the normal path ends the process first.
            thread::sleep(budget);
            log::error!(
                "shutdown: not done after {} s; forcing it (TERM and KILL everything, unmount)",
                budget.as_secs()
            );
            finish(action, &reaper, &crate::sys::Host)
        });
    if let Err(e) = spawned {
        log::warn!("shutdown: no deadline thread: {e}");
    }
}

/// The end of every shutdown. Never returns.
pub fn finish(action: PowerAction, reaper: &Reaper, m: &dyn Mounter) -> ! {
    if FINISHING.swap(true, Ordering::SeqCst) {
        loop {
            nix::unistd::pause();
        }
    }
    terminate_all(reaper, Duration::from_secs(5));
    if crate::mode::subreaper() {
        // The machine's mounts and power are not a subreaper's: it ends here.
        eprintln!("ros-init: {action} (subreaper: exiting)");
        std::process::exit(0);
    }
    nix::unistd::sync();
    unmount_all(Path::new("/proc/self/mountinfo"), m, &nix::unistd::sync);
    nix::unistd::sync();
    eprintln!("ros-init: {action}");
    let mode = match action {
        PowerAction::PowerOff => RebootMode::RB_POWER_OFF,
        PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
        PowerAction::Halt => RebootMode::RB_HALT_SYSTEM,
    };
    let _ = nix::sys::reboot::reboot(mode);
    loop {
        nix::unistd::pause();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};

    #[test]
    fn deadlines_never_overflow_the_clock() {
        let cases = [
            (Duration::ZERO, Duration::ZERO),
            (Duration::from_secs(60), Duration::from_secs(60)),
            (Duration::MAX, LONGEST_WAIT),
            (Duration::from_secs(u64::MAX), LONGEST_WAIT),
        ];
        for (after, want) in cases {
            let before = Instant::now();
            let got = deadline_after(after).saturating_duration_since(before);
            // Instant::now() in deadline_after is a little later than `before`.
            assert!(
                got >= want && got < want + Duration::from_secs(5),
                "{after:?}: {got:?}"
            );
        }
    }

    #[test]
    fn survivors_are_user_processes_and_zombies_not_kernel_threads() {
        let dir = tempfile::tempdir().unwrap();
        let add = |pid: u32, stat: &str| {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("stat"), stat).unwrap();
        };
        add(1, "1 (init) S 0 1 1 0");
        add(2, "2 (kthreadd) S 0 0 0 0");
        add(15, "15 (kworker/0:1) I 2 0 0 0");
        add(300, "300 (containerd-shim) S 1 300 300 0");
        add(301, "301 (a (b) c) Z 300 300 300 0");
        add(400, "400 (test-runner) S 1 400 400 0");
        add(401, "401 (init) S 400 401 401 0");
        add(402, "402 (containerd) S 401 401 401 0");
        add(403, "403 (shim) S 402 401 401 0");
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            survivors(dir.path(), 1),
            names(&[
                "300:containerd-shim",
                "301:a (b) c",
                "400:test-runner",
                "401:init",
                "402:containerd",
                "403:shim"
            ])
        );
        // A subreaper ends its own descendants, never its parent or the machine's others.
        assert_eq!(
            survivors(dir.path(), 401),
            names(&["402:containerd", "403:shim"])
        );
    }

    #[test]
    fn unmounts_newest_first_and_keeps_kernel_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let mi = dir.path().join("mountinfo");
        std::fs::write(
            &mi,
            "1 0 0:1 / / ro - squashfs /dev/vda ro\n\
             2 1 0:2 / /proc rw - proc proc rw\n\
             3 1 0:3 / /run rw - tmpfs tmpfs rw\n\
             4 3 0:4 / /run/x rw - tmpfs tmpfs rw\n\
             5 1 0:5 / /var rw - tmpfs tmpfs rw\n",
        )
        .unwrap();
        let rec = Recorder::default();
        unmount_all(&mi, &rec, &|| panic!("nothing was busy"));
        assert_eq!(
            rec.calls(),
            vec![
                Call::Umount("/var".into()),
                Call::Umount("/run/x".into()),
                Call::Umount("/run".into())
            ]
        );
    }

    /// A mounter whose unmounts of `busy` fail (EBUSY) unless lazy, and whose remounts
    /// fail when `remount_fails`; it records every call, with `sync` as one of them.
    #[derive(Default)]
    struct BusyMounter {
        busy: Vec<&'static str>,
        remount_fails: bool,
        calls: std::cell::RefCell<Vec<String>>,
    }

    impl Mounter for BusyMounter {
        fn mount(
            &self,
            _source: &str,
            target: &Path,
            _fstype: Option<&str>,
            flags: MsFlags,
            _data: Option<&str>,
        ) -> std::io::Result<()> {
            assert_eq!(flags, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY);
            self.calls
                .borrow_mut()
                .push(format!("remount-ro {}", target.display()));
            if self.remount_fails {
                return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
            }
            Ok(())
        }

        fn umount(&self, target: &Path, flags: MntFlags) -> std::io::Result<()> {
            let lazy = flags.contains(MntFlags::MNT_DETACH);
            let verb = if lazy { "detach" } else { "umount" };
            self.calls
                .borrow_mut()
                .push(format!("{verb} {}", target.display()));
            if !lazy && self.busy.iter().any(|b| Path::new(b) == target) {
                return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
            }
            Ok(())
        }
    }

    /// An installed disk: vda1 holds the root image (looped under /) and is the state.
    const INSTALLED: &str = "22 1 7:0 / / ro - squashfs /dev/loop0 ro\n\
        23 22 0:5 / /dev rw - devtmpfs devtmpfs rw\n\
        24 22 0:20 / /proc rw - proc proc rw\n\
        25 22 0:21 / /sys rw - sysfs sysfs rw\n\
        26 22 0:22 / /run rw - tmpfs tmpfs rw\n\
        27 26 254:1 / /run/ros/boot-disk rw - ext4 /dev/vda1 rw\n\
        30 22 254:1 / /mnt/state rw,nosuid,nodev - ext4 /dev/vda1 rw\n\
        31 22 254:1 /var /var rw,nosuid,nodev - ext4 /dev/vda1 rw\n\
        32 26 0:30 / /run/busy rw - tmpfs tmpfs rw\n";

    fn shut_down(mountinfo: &str, m: &BusyMounter) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let mi = dir.path().join("mountinfo");
        std::fs::write(&mi, mountinfo).unwrap();
        unmount_all(&mi, m, &|| m.calls.borrow_mut().push("sync".into()));
        m.calls.borrow().clone()
    }

    #[test]
    fn a_busy_disk_filesystem_is_remounted_read_only_before_it_is_detached() {
        let m = BusyMounter {
            busy: vec!["/run/busy", "/run/ros/boot-disk", "/run"],
            ..Default::default()
        };
        assert_eq!(
            shut_down(INSTALLED, &m),
            vec![
                // tmpfs: nothing on a disk to leave clean.
                "umount /run/busy",
                "detach /run/busy",
                "umount /var",
                "umount /mnt/state",
                // The loop device under / holds the image file: busy, so read-only.
                "umount /run/ros/boot-disk",
                "remount-ro /run/ros/boot-disk",
                "detach /run/ros/boot-disk",
                "umount /run",
                "detach /run",
            ]
        );
    }

    #[test]
    fn a_busy_state_disk_is_remounted_once_and_synced_when_that_fails_too() {
        let m = BusyMounter {
            busy: vec!["/var", "/mnt/state", "/run/ros/boot-disk"],
            remount_fails: true,
            ..Default::default()
        };
        assert_eq!(
            shut_down(INSTALLED, &m),
            vec![
                "umount /run/busy",
                "umount /var",
                "remount-ro /var",
                "sync",
                "detach /var",
                // The same filesystem (254:1): not tried again.
                "umount /mnt/state",
                "detach /mnt/state",
                "umount /run/ros/boot-disk",
                "detach /run/ros/boot-disk",
                "umount /run",
            ]
        );
    }
}
