//! PID 1's early network: a `url:` or `cmdline` datasource (and NoCloud over HTTP) needs an
//! address before any service runs, as RancherOS's init did with its early DHCP. Only a
//! boot with such a datasource pays for it. The network service owns the network: what is
//! set up here is taken down again once the datasources are read.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cloudinit::InitModules;
use crate::reaper::{Exit, Reaper};

/// busybox's DHCP client in the root image.
pub const UDHCPC: &str = "/sbin/udhcpc";
/// The network service's lease script, also in the root image (`initramfs/build.sh`): one
/// way of applying a lease for both.
pub const LEASE_SCRIPT: &str = "/usr/libexec/ros/udhcpc-event";
/// Where network drivers are, under a modules directory.
const NET_DRIVERS: &str = "kernel/drivers/net/";
/// Buses whose devices can be network cards (a virtio NIC is a virtio device).
const BUSES: [&str; 2] = ["pci", "virtio"];

/// An interface that has a lease.
#[derive(Debug)]
pub struct EarlyNet {
    /// Its name.
    pub interface: String,
}

/// Load the network drivers of the devices on `sys_bus` (`/sys/bus`), by their aliases.
/// Returns the modules loaded.
fn load_drivers(sys_bus: &Path, modules: &InitModules) -> Vec<String> {
    let Some(index) = modules.index() else {
        return Vec::new();
    };
    let mut wanted = index.drivers_for(sys_bus, &BUSES, NET_DRIVERS);
    wanted.retain(
        |name| match ros_cloudinit::ModuleLoader::load_module(modules, name, "") {
            Ok(()) => true,
            Err(e) => {
                log::warn!("network: {e}");
                false
            }
        },
    );
    wanted
}

/// The network interfaces of real devices in `sys_net` (`/sys/class/net`), sorted.
fn interfaces(sys_net: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(sys_net)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// udhcpc's arguments for one interface: in the foreground, quit once leased, give up
/// (exit 1) after `tries` discovers two seconds apart.
fn udhcpc_args(interface: &str, tries: u64) -> Vec<String> {
    let tries = tries.max(1).to_string();
    [
        "-i",
        interface,
        "-f",
        "-q",
        "-n",
        "-t",
        &tries,
        "-T",
        "2",
        "-A",
        "0",
        "-s",
        LEASE_SCRIPT,
    ]
    .map(String::from)
    .to_vec()
}

/// Run `args` through the reaper, killed after `budget`: whether it exited 0.
fn run(
    reaper: &Reaper,
    program: &str,
    args: &[String],
    envs: &[(&str, &str)],
    budget: Duration,
) -> bool {
    let mut cmd = Command::new(program);
    cmd.args(args).envs(envs.iter().copied());
    let (pid, rx) = match reaper.spawn(&mut cmd) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("network: {program}: {e}");
            return false;
        }
    };
    match rx.recv_timeout(budget) {
        Ok(Exit::Code(0)) => true,
        Ok(_) | Err(RecvTimeoutError::Disconnected) => false,
        Err(RecvTimeoutError::Timeout) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = rx.recv();
            false
        }
    }
}

/// Bring up the first interface that gets a DHCP lease within `budget`, loading the
/// network drivers first. Says on the console what it did and how long it took.
pub fn up(modules: &InitModules, reaper: &Reaper, budget: Duration) -> Result<EarlyNet, String> {
    // The machine running a subreaper keeps its own network.
    if crate::mode::subreaper() {
        return Err("not brought up in subreaper mode".into());
    }
    let start = Instant::now();
    let deadline = crate::power::deadline_after(budget);
    let drivers = load_drivers(Path::new("/sys/bus"), modules);
    let names = interfaces(Path::new("/sys/class/net"));
    if names.is_empty() {
        return Err(format!(
            "no network interface (drivers loaded: {})",
            if drivers.is_empty() {
                "none".to_string()
            } else {
                drivers.join(" ")
            }
        ));
    }
    for name in &names {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if run(
            reaper,
            UDHCPC,
            &udhcpc_args(name, left.as_secs() / 2),
            &[],
            left,
        ) {
            log::info!(
                "network: {name} leased by DHCP in {:.1} s, for the datasources",
                start.elapsed().as_secs_f64()
            );
            return Ok(EarlyNet {
                interface: name.clone(),
            });
        }
    }
    Err(format!(
        "no DHCP lease on {} within {:.0} s",
        names.join(", "),
        budget.as_secs_f64()
    ))
}

/// Give the lease's address back to the network service: it applies `rancher.network`.
pub fn down(net: &EarlyNet, reaper: &Reaper) {
    let ok = run(
        reaper,
        LEASE_SCRIPT,
        &["deconfig".to_string()],
        &[("interface", net.interface.as_str())],
        Duration::from_secs(10),
    );
    if !ok {
        log::warn!(
            "network: releasing {}'s early address failed",
            net.interface
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_interfaces_of_devices_are_brought_up() {
        let dir = tempfile::tempdir().unwrap();
        for (name, device) in [
            ("lo", false),
            ("eth1", true),
            ("eth0", true),
            ("docker0", false),
        ] {
            fs::create_dir(dir.path().join(name)).unwrap();
            if device {
                fs::create_dir(dir.path().join(name).join("device")).unwrap();
            }
        }
        assert_eq!(interfaces(dir.path()), ["eth0", "eth1"]);
    }

    #[test]
    fn udhcpc_gives_up_within_its_budget() {
        let args = udhcpc_args("eth0", 0);
        assert_eq!(args[..2], ["-i", "eth0"]);
        let tries = args.iter().position(|a| a == "-t").unwrap();
        assert_eq!(args[tries + 1], "1");
        assert!(args.contains(&"-n".to_string()), "gives up");
        assert!(args.contains(&"-q".to_string()), "quits once leased");
    }
}
