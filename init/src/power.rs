//! Signals to PID 1 and the last part of shutdown: TERM all, bounded wait, KILL all,
//! sync, unmount in reverse, `reboot(2)`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::MntFlags;
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

/// Whether any user process other than PID 1 is left (zombies included).
///
/// Not `kill(-1, 0)`: it counts kernel threads, so it never says "none".
fn others_alive() -> bool {
    !survivors(Path::new("/proc")).is_empty()
}

/// TERM every process, wait up to `grace` for them to exit, then KILL the rest.
pub fn terminate_all(reaper: &Reaper, grace: Duration) {
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let gone = reaper.wait_until(Instant::now() + grace, || !others_alive());
    if !gone {
        log::warn!(
            "shutdown: processes left after {grace:?}, killing them: {}",
            survivors(Path::new("/proc")).join(", ")
        );
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        reaper.wait_until(Instant::now() + Duration::from_secs(2), || !others_alive());
    }
}

/// `pid:name` of every user process but PID 1, zombies included. Kernel threads are
/// kthreadd (pid 2) and its children, so they are skipped by their parent.
fn survivors(proc: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(proc).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if pid <= 2 {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if matches!(ppid, Some(0) | Some(2)) {
            continue;
        }
        out.push(format!("{pid}:{comm}"));
    }
    out.sort();
    out
}

/// Unmount everything but `/` and the kernel's pseudo filesystems, newest first.
pub fn unmount_all(mountinfo: &Path, m: &dyn Mounter) {
    let keep = [
        Path::new("/"),
        Path::new("/proc"),
        Path::new("/sys"),
        Path::new("/dev"),
    ];
    let mut targets: Vec<PathBuf> = mounts::mounted_targets(mountinfo);
    targets.reverse();
    for target in targets.iter().filter(|t| !keep.contains(&t.as_path())) {
        if m.umount(target, MntFlags::empty()).is_err() {
            let _ = m.umount(target, MntFlags::MNT_DETACH);
        }
    }
}

/// The end of every shutdown. Never returns.
pub fn finish(action: PowerAction, reaper: &Reaper, m: &dyn Mounter) -> ! {
    terminate_all(reaper, Duration::from_secs(5));
    nix::unistd::sync();
    unmount_all(Path::new("/proc/self/mountinfo"), m);
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
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        assert_eq!(
            survivors(dir.path()),
            vec!["300:containerd-shim".to_string(), "301:a (b) c".to_string()]
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
        unmount_all(&mi, &rec);
        assert_eq!(
            rec.calls(),
            vec![
                Call::Umount("/var".into()),
                Call::Umount("/run/x".into()),
                Call::Umount("/run".into())
            ]
        );
    }
}
