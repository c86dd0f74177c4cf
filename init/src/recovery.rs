//! Fatal errors and panics end here: a message on the console, then a recovery shell
//! (or, with `rancher.recovery=false`, a reboot). PID 1 never returns or exits.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::reboot::RebootMode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::console::{self, BootPhase};
use crate::paths;

static OFFER_SHELL: AtomicBool = AtomicBool::new(true);
static IN_RECOVERY: AtomicBool = AtomicBool::new(false);

/// Choose what a fatal error leads to (see [`offer_shell`]).
pub fn set_offer_shell(offer: bool) {
    OFFER_SHELL.store(offer, Ordering::Relaxed);
}

/// Whether a fatal error offers a root shell on the console: as `rancher.recovery` says
/// when it is on the kernel line; otherwise only on a live medium (the image, as
/// RancherOS's ISO did). An installed disk reboots instead: its console is whatever a
/// cloud's serial console or an IPMI SOL reaches, and nobody there has logged in.
pub fn offer_shell(recovery_flag: Option<bool>, installed_disk: bool) -> bool {
    recovery_flag.unwrap_or(!installed_disk)
}

/// Whether the recovery path owns child reaping (the reaper thread stands aside).
pub fn in_recovery() -> bool {
    IN_RECOVERY.load(Ordering::Relaxed)
}

/// The device behind /dev/console, e.g. /dev/ttyS0, so the shell gets job control.
pub fn console_tty(sys: &Path) -> PathBuf {
    std::fs::read_to_string(sys.join("class/tty/console/active"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .last()
                .map(|t| PathBuf::from("/dev").join(t))
        })
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/dev/console"))
}

fn open_tty(path: &Path) -> Option<File> {
    OpenOptions::new().read(true).write(true).open(path).ok()
}

/// Report a fatal boot error and never return.
pub fn fatal(reason: &str) -> ! {
    console::marker(BootPhase::Fatal, reason);
    eprintln!("ros-init: FATAL: {reason}");
    if crate::mode::subreaper() {
        // No shell and no reboot for a test's process: it exits, and says so.
        eprintln!("ros-init: subreaper mode: exiting");
        std::process::exit(1);
    }
    if OFFER_SHELL.load(Ordering::Relaxed) && Path::new(paths::RECOVERY_SHELL).exists() {
        eprintln!(
            "ros-init: starting a recovery shell; exit it to reboot \
             (boot with rancher.recovery=false to reboot at once)"
        );
        run_shell();
    } else {
        eprintln!(
            "ros-init: rebooting (rancher.recovery=true on the kernel line offers a \
             recovery shell instead)"
        );
    }
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(RebootMode::RB_AUTOBOOT);
    // reboot(2) only returns on error; PID 1 must not exit.
    loop {
        nix::unistd::pause();
    }
}

fn run_shell() {
    IN_RECOVERY.store(true, Ordering::Relaxed);
    let tty = console_tty(Path::new("/sys"));
    let Some(stdin) = open_tty(&tty) else {
        eprintln!("ros-init: cannot open {}", tty.display());
        return;
    };
    let (Ok(stdout), Ok(stderr)) = (stdin.try_clone(), stdin.try_clone()) else {
        return;
    };
    let mut cmd = if Path::new(paths::BUSYBOX).exists() {
        // `setsid -c` makes the tty the shell's controlling terminal (job control, ^C).
        let mut c = Command::new(paths::BUSYBOX);
        c.args(["setsid", "-c", paths::RECOVERY_SHELL]);
        c
    } else {
        Command::new(paths::RECOVERY_SHELL)
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/")
        .env("TERM", "linux")
        .env("PS1", "(recovery) # ")
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    match cmd.spawn() {
        Ok(child) => {
            let pid = Pid::from_raw(child.id() as i32);
            drop(child);
            // The reaper thread stands aside while IN_RECOVERY is set.
            let _ = waitpid(pid, None);
        }
        Err(e) => eprintln!("ros-init: starting {}: {e}", paths::RECOVERY_SHELL),
    }
}

/// Install the panic hook: message on the console, then the fatal path.
///
/// Release builds use `panic = "abort"`; the hook runs before the abort and never
/// returns, so a panic can't kill PID 1 (which would panic the kernel).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string().replace('\n', " ");
        eprintln!("ros-init: PANIC: {msg}");
        if std::process::id() == 1 || crate::mode::subreaper() {
            fatal(&format!("panic: {msg}"));
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_shell_only_on_live_media_unless_asked() {
        // (rancher.recovery on the kernel line, installed disk) -> shell offered
        let table = [
            (None, false, true),
            (None, true, false),
            (Some(true), true, true),
            (Some(false), false, false),
            (Some(true), false, true),
        ];
        for (flag, installed, offered) in table {
            assert_eq!(
                offer_shell(flag, installed),
                offered,
                "{flag:?} {installed}"
            );
        }
    }
}
