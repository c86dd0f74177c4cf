//! The watchdog of a trial boot: armed when a trial starts, pinged by a thread of PID 1's
//! own, disarmed once the trial commits. What stops that thread (the whole of userspace
//! starved or hung, a kernel that no longer schedules it) ends in a reset, and so does a
//! trial still undecided past its deadline plus a grace for the shutdown: after a reset
//! the bootloader boots the good slot (the boot-once was spent by this boot). Outside a
//! trial nothing here runs: a hang of a committed system is not this module's to judge.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use ros_cloudinit::ModuleLoader;

/// The first watchdog device.
pub const DEVICE: &str = "/dev/watchdog";
/// The hardware watchdog's driver (QEMU's `-device i6300esb`, Intel chipsets'): it also
/// resets a hung kernel, and its chip remembers that it did.
const HARDWARE_DRIVER: &str = "i6300esb";
/// Drivers tried in order: the hardware's, then the kernel's softdog, which resets only
/// when userspace stops pinging it.
const DRIVERS: [&str; 2] = [HARDWARE_DRIVER, "softdog"];
/// Where watchdog drivers show their state (CONFIG_WATCHDOG_SYSFS).
pub const CLASS_DIR: &str = "/sys/class/watchdog";
/// WDIOF_CARDRESET in <linux/watchdog.h>: the last reset was the watchdog's.
const WDIOF_CARDRESET: u32 = 0x0020;
/// The timeout set on the device. i6300esb counts it twice (its two stages) before the
/// reset; very short timeouts are known to reset at once.
pub const TIMEOUT_SECS: i32 = 30;
/// How often the thread pings: well inside [`TIMEOUT_SECS`].
const PING_EVERY: Duration = Duration::from_secs(5);

// WDIOC_SETTIMEOUT: _IOWR('W', 6, int) in <linux/watchdog.h>.
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);

/// An armed watchdog; [`Watchdog::disarm`] stops it.
#[derive(Debug)]
pub struct Watchdog {
    disarm: mpsc::Sender<()>,
}

impl Watchdog {
    /// Load a driver, open [`DEVICE`] and ping it from a thread for `ping_for` at most
    /// (then a reset follows within the timeout). `None`, with a warning, when no
    /// watchdog can be had: the trial's own deadline is then all there is.
    pub fn arm(modules: &dyn ModuleLoader, ping_for: Duration) -> Option<Watchdog> {
        let mut driver = "already present";
        for name in DRIVERS {
            if Path::new(DEVICE).exists() {
                break;
            }
            // i6300esb fails with ENODEV where there is no such device: the next is tried.
            if modules.load_module(name, "").is_ok() {
                driver = name;
            }
        }
        let mut file = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(DEVICE)
        {
            Ok(f) => f,
            Err(e) => {
                log::warn!("watchdog: {DEVICE}: {e}; a hang in this trial boot is not reset");
                return None;
            }
        };
        let mut timeout: libc::c_int = TIMEOUT_SECS;
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one int, which `timeout` is, on a
        // descriptor `file` keeps open.
        if let Err(e) = unsafe { wdioc_settimeout(file.as_raw_fd(), &mut timeout) } {
            log::warn!("watchdog: setting its timeout: {e}; keeping the driver's ({timeout} s)");
        }
        let (tx, rx) = mpsc::channel::<()>();
        let until = Instant::now() + ping_for;
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || ping(&mut file, &rx, until));
        if let Err(e) = spawned {
            log::warn!("watchdog: no thread to ping it ({e}); a reset follows");
            return None;
        }
        log::warn!(
            "watchdog: armed for this trial boot ({driver}, {timeout} s): a hang resets the \
             machine into the good slot"
        );
        Some(Watchdog { disarm: tx })
    }

    /// Stop the watchdog (the trial committed).
    pub fn disarm(&self) {
        let _ = self.disarm.send(());
    }
}

/// Whether a hardware watchdog reset the machine before this boot: its driver, loaded
/// now, reads the chip's flag (and clears it: it is told once) into `bootstatus` under
/// `class`. softdog keeps nothing across a reset, so a hang it ended reads as no.
pub fn reset_the_last_boot(modules: &dyn ModuleLoader, class: &Path) -> bool {
    // ENODEV where there is no such chip: then no device below says yes.
    let _ = modules.load_module(HARDWARE_DRIVER, "");
    let Ok(devices) = std::fs::read_dir(class) else {
        return false;
    };
    devices.flatten().any(|d| {
        std::fs::read_to_string(d.path().join("bootstatus"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .is_some_and(|status| status & WDIOF_CARDRESET != 0)
    })
}

/// The pinging thread: a write is a ping; `V` then a close stops the device (the
/// drivers' magic close). Past `until`, or if the channel says so, it stops pinging.
fn ping(file: &mut File, disarm: &mpsc::Receiver<()>, until: Instant) {
    loop {
        match disarm.recv_timeout(PING_EVERY) {
            Ok(()) => {
                match file.write_all(b"V") {
                    Ok(()) => log::info!("watchdog: disarmed"),
                    Err(e) => log::error!("watchdog: disarming: {e}; a reset follows"),
                }
                return;
            }
            // The owner is gone without a word: go on pinging until the deadline.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(PING_EVERY),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= until {
            // Closed without the magic `V`: the device keeps counting.
            log::error!("watchdog: the trial is still undecided past its deadline; resetting");
            return;
        }
        if let Err(e) = file.write_all(b"\0") {
            log::error!("watchdog: ping: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn device() -> (tempfile::NamedTempFile, File) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let file = OpenOptions::new().write(true).open(f.path()).unwrap();
        (f, file)
    }

    #[test]
    fn a_disarm_writes_the_magic_close_and_stops() {
        let (f, mut file) = device();
        let (tx, rx) = mpsc::channel();
        tx.send(()).unwrap();
        ping(&mut file, &rx, Instant::now() + Duration::from_secs(60));
        assert_eq!(std::fs::read(f.path()).unwrap(), b"V");
    }

    struct Loads(std::cell::RefCell<Vec<String>>);
    impl ModuleLoader for Loads {
        fn load_module(&self, name: &str, _: &str) -> Result<(), String> {
            self.0.borrow_mut().push(name.into());
            Err("no such device".into())
        }
    }

    #[test]
    fn only_a_bootstatus_with_cardreset_says_the_watchdog_reset_the_machine() {
        let class = tempfile::tempdir().unwrap();
        let loads = Loads(Default::default());
        // No watchdog device at all (the driver found no chip).
        assert!(!reset_the_last_boot(&loads, class.path()));
        assert_eq!(*loads.0.borrow(), ["i6300esb"]);
        for (dev, status) in [("watchdog0", "0\n"), ("watchdog1", "garbage\n")] {
            std::fs::create_dir(class.path().join(dev)).unwrap();
            std::fs::write(class.path().join(dev).join("bootstatus"), status).unwrap();
        }
        assert!(!reset_the_last_boot(&loads, class.path()));
        std::fs::write(class.path().join("watchdog1/bootstatus"), "32\n").unwrap();
        assert!(reset_the_last_boot(&loads, class.path()));
    }

    #[test]
    fn past_its_deadline_it_stops_pinging_without_the_magic_close() {
        let (f, mut file) = device();
        let (_tx, rx) = mpsc::channel();
        ping(&mut file, &rx, Instant::now());
        assert_eq!(std::fs::read(f.path()).unwrap(), b"");
    }
}
