//! The boot sequence of PID 1, from the initramfs to a running console, and the
//! loop that follows it until shutdown.
//!
//! Each step says whether it is fatal (boot can't go on: report and offer the recovery
//! shell) or best-effort (warn and continue), and why.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};

/// ramfs (the initramfs rootfs without tmpfs); nix doesn't name it.
const RAMFS_MAGIC: FsType = FsType(0x858458f6);
use ros_config::{CloudConfig, Mode};
use ros_control::PowerAction;
use ros_runtime::{Containerd, LocalImages, ServiceRuntime, SYSTEM_NAMESPACE};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::cmdline::KernelCmdline;
use crate::console::{self, BootPhase};
use crate::containerd::{ContainerdPaths, SystemContainerd};
use crate::mode;
use crate::modules::{kernel_release, ModuleIndex};
use crate::mounts::{self, PSEUDO_MOUNTS, WRITABLE_MOUNTS};
use crate::paths;
use crate::power;
use crate::reaper::Reaper;
use crate::recovery::{self, fatal};
use crate::root;
use crate::state;
use crate::supervisor::{Supervisor, Timeouts};
use crate::sys::{Host, ModuleLoader};

/// How long the system containerd may take to answer (TCG emulation is slow).
const CONTAINERD_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long PID 1's DHCP for the URL datasources may take (`netboot::up`).
const EARLY_DHCP_TIMEOUT: Duration = Duration::from_secs(30);

fn mountinfo() -> Vec<PathBuf> {
    mounts::mounted_targets(Path::new("/proc/self/mountinfo"))
}

/// Whether `/` is still the initramfs (ramfs/tmpfs rootfs).
fn in_initramfs() -> bool {
    Path::new(paths::NEWROOT).is_dir()
        && statfs("/")
            .map(|s| {
                let t = s.filesystem_type();
                t == RAMFS_MAGIC || t == TMPFS_MAGIC
            })
            .unwrap_or(false)
}

/// Initrd modules that only an installed disk needs: the root image is a file on its ext4
/// partition, attached to a loop device (a boot from RAM attaches its root image too, and
/// needs loop alone). A squashfs root on a block device boots without them (ext4 alone
/// takes a quarter of a second to load under emulation); the state disk loads ext4 from
/// the root image, and only when there is one. crc32c_generic is not one of them: it is the
/// crypto API's crc32c, which libcrc32c (nf_conntrack and nf_nat, for Docker's port
/// publishing) asks for as ext4 does, with no modprobe to answer.
fn unneeded_initrd_modules(installed_disk: bool, live: bool) -> &'static [&'static str] {
    match (installed_disk, live) {
        (true, _) => &[],
        (false, true) => &["ext4"],
        (false, false) => &["ext4", "loop"],
    }
}

/// The initrd's list of disk controllers other than virtio (`initramfs/modules.storage`):
/// loaded only when the root is not found once the rest are in.
const FALLBACK_LIST: &str = "modules.fallback";

/// The initrd's modules this boot loads first: every top-level one (each brings its
/// dependencies), less the fallback disk controllers, the CD-ROM driver (cloud-init's) and
/// those this boot does not need ([`unneeded_initrd_modules`]).
fn initrd_modules(top_level: Vec<String>, fallback: &[String], unneeded: &[&str]) -> Vec<String> {
    top_level
        .into_iter()
        .filter(|n| !unneeded.contains(&n.as_str()))
        .filter(|n| !fallback.contains(n) && n != ros_cloudinit::CDROM_MODULE)
        .collect()
}

/// The initrd's list of the controllers CD-ROMs sit on (IDE, SATA: `initramfs/modules.ata`,
/// a part of [`FALLBACK_LIST`]): a boot from a virtio disk loads them only when the
/// datasources list `configdrive`.
const ATA_LIST: &str = "modules.ata";

/// The names in the initrd's `list` ([`FALLBACK_LIST`], [`ATA_LIST`]; none when it is
/// missing).
fn module_list(dir: &Path, list: &str) -> Vec<String> {
    fs::read_to_string(dir.join(list))
        .map(|text| {
            text.lines()
                .map(|l| l.trim().replace('-', "_"))
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect()
        })
        .unwrap_or_default()
}

/// The initrd's modules, read once: its index and the fallback disk controllers.
struct InitrdModules {
    /// `None`: no index (a kernel with these drivers built in needs no modules).
    index: Option<ModuleIndex>,
    fallback: Vec<String>,
    ata: Vec<String>,
}

impl InitrdModules {
    /// Read the index and [`FALLBACK_LIST`] in `dir`.
    fn open(dir: &Path) -> Self {
        let index = ModuleIndex::open(dir).map_err(|e| log::warn!("{e}")).ok();
        InitrdModules {
            index,
            fallback: module_list(dir, FALLBACK_LIST),
            ata: module_list(dir, ATA_LIST),
        }
    }

    /// Load the modules every boot needs (see [`initrd_modules`]).
    fn load_boot(&self, unneeded: &[&str], loader: &dyn ModuleLoader) {
        if let Some(index) = &self.index {
            self.load(
                initrd_modules(index.top_level(), &self.fallback, unneeded),
                loader,
            );
        }
    }

    /// Load the other disk controllers (IDE, SATA, NVMe, SCSI): the root is not on a virtio
    /// disk, or came in the initramfs. Each probes only hardware that is there.
    fn load_fallback(&self, loader: &dyn ModuleLoader) {
        log::info!(
            "root: loading the other disk drivers ({})",
            self.fallback.join(" ")
        );
        self.load(self.fallback.clone(), loader);
    }

    /// The CD-ROM drive's drivers for a boot from a virtio disk: those of [`ATA_LIST`]
    /// that drive this machine's controllers (by their modaliases), and the CD-ROM driver,
    /// opened here, in the initramfs, which the root switch empties.
    fn cdrom_drivers(&self) -> CdromDrivers {
        let Some(index) = &self.index else {
            return CdromDrivers(Vec::new());
        };
        let mut names: Vec<String> = index
            .drivers_for(Path::new("/sys/bus"), &["pci"], "kernel/drivers/ata/")
            .into_iter()
            .filter(|n| self.ata.contains(n))
            .collect();
        if names.is_empty() {
            return CdromDrivers(Vec::new());
        }
        names.push(ros_cloudinit::CDROM_MODULE.to_string());
        let mut paths: Vec<PathBuf> = Vec::new();
        for name in &names {
            match index.resolve(name) {
                Ok(order) => {
                    for path in order {
                        if !paths.contains(&path) {
                            paths.push(path);
                        }
                    }
                }
                Err(e) => log::warn!("{e}"),
            }
        }
        let files = paths
            .into_iter()
            .filter_map(|p| match fs::File::open(&p) {
                Ok(f) => Some((p, f)),
                Err(e) => {
                    log::warn!("{}: {e}", p.display());
                    None
                }
            })
            .collect();
        CdromDrivers(files)
    }

    fn load(&self, names: Vec<String>, loader: &dyn ModuleLoader) {
        let Some(index) = &self.index else {
            return;
        };
        for name in names {
            match index.load(&name, loader) {
                Ok(()) => log::debug!("module {name}: loaded"),
                Err(e) => log::warn!("{e}"),
            }
        }
    }
}

/// A CD-ROM drive's drivers, opened in the initramfs ([`InitrdModules::cdrom_drivers`]),
/// which the root switch empties, and loaded by cloud-init only when the config lists
/// `configdrive`: under emulation, loading them, probing the ports and the udev events of
/// the devices found cost a boot from a virtio disk a second, which a boot without a
/// config drive on a CD-ROM must not pay.
struct CdromDrivers(Vec<(PathBuf, fs::File)>);

impl CdromDrivers {
    /// Load them, dependencies first, each through its open descriptor.
    fn load(self, loader: &Host) {
        for (path, file) in &self.0 {
            let fd = PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(file)
            ));
            if let Err(e) = loader.load(&fd, "") {
                log::warn!("module {}: {e}", path.display());
            }
        }
    }
}

/// The root device `root=` names (a device, `LABEL=` or `PARTUUID=`), once it is there;
/// the other disk controllers' drivers are loaded when it is not on a virtio disk. Also
/// whether it was there at once (on a virtio disk).
fn found_root(cmdline: &KernelCmdline, modules: &InitrdModules, host: &Host) -> (PathBuf, bool) {
    // Fatal: there is nothing to boot without the root.
    let spec = cmdline.root_device();
    let find = |wait: Duration| {
        if let Some(label) = spec.strip_prefix("LABEL=") {
            root::wait_for_label(label, wait)
        } else if let Some(id) = spec.strip_prefix("PARTUUID=") {
            root::wait_for_partuuid(id, wait)
        } else {
            root::wait_for_device(Path::new(&spec), wait).map(|()| PathBuf::from(&spec))
        }
    };
    // A virtio disk is there once its driver is loaded; any other waits for its own.
    if let Ok(device) = find(Duration::ZERO) {
        return (device, true);
    }
    log::info!("root: {spec} is not on a virtio disk");
    modules.load_fallback(host);
    let found = find(cmdline.root_wait()).unwrap_or_else(|e| fatal(&e.to_string()));
    (found, false)
}

/// Enable every available cgroup v2 controller for the children of the root cgroup.
fn enable_cgroup_controllers(cgroup: &Path) {
    let available = fs::read_to_string(cgroup.join("cgroup.controllers")).unwrap_or_default();
    for c in available.split_whitespace() {
        // One at a time: a controller the kernel refuses must not block the others.
        if let Err(e) = fs::write(cgroup.join("cgroup.subtree_control"), format!("+{c}")) {
            log::warn!("cgroup: enabling {c}: {e}");
        }
    }
}

fn set_hostname(config: &CloudConfig) {
    let name = config
        .hostname
        .as_ref()
        .map(|h| h.to_string())
        .unwrap_or_else(|| "rancher".to_string());
    // Through cloud-init's host, as a configured hostname is: it refuses in subreaper mode.
    if let Err(e) = ros_cloudinit::Host::set_hostname(&crate::cloudinit::BootHost, &name) {
        log::warn!("hostname {name}: {e}");
    }
}

/// Read `files` into the page cache on a background thread (best-effort: a file that
/// cannot be read is paged in on first use instead).
fn warm_page_cache<const N: usize>(files: [PathBuf; N]) {
    let spawned = std::thread::Builder::new()
        .name("warm-cache".into())
        .spawn(move || {
            for file in files {
                if let Ok(mut f) = fs::File::open(file) {
                    let _ = std::io::copy(&mut f, &mut std::io::sink());
                }
            }
        });
    if let Err(e) = spawned {
        log::debug!("warming the page cache: {e}");
    }
}

/// Whether the kernel's random number generator is initialised: `random` (/dev/random)
/// polls readable once it is. Polling, unlike reading, makes the kernel generate nothing.
fn random_ready(random: &Path) -> std::io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let file = fs::File::open(random)?;
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO)?;
    Ok(fds[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLIN)))
}

/// Say on the console when the services are up and the kernel's random number generator
/// still is not: nothing feeds it (no hardware RNG), and every reader of /dev/urandom or
/// getrandom (ntp, ssh host keys) spins the CPU in the kernel until timer jitter has
/// initialised it, seconds under emulation.
fn warn_if_random_unready(random: &Path) {
    match random_ready(random) {
        Ok(true) => {}
        Ok(false) => log::warn!(
            "random: the kernel's random number generator is still not initialised: no \
             hardware RNG feeds it, and ntp and ssh host keys spin the CPU until it is; \
             give the machine one (QEMU: -cpu qemu64,+rdrand or -device virtio-rng-pci)"
        ),
        Err(e) => log::debug!("random: polling {}: {e}", random.display()),
    }
}

/// Mount the state disk over /var, /home and /opt, formatting a blank one if asked.
/// Only the early config can say where it is ([`ros_config::Stage::Early`]: the user's
/// config lives on it). Without one: RAM, said on the console.
fn mount_state(cmdline: &str, modules: &crate::cloudinit::InitModules, reaper: &Reaper) {
    // The filesystem's module, once there is a disk to mount (a diskless boot loads
    // none). ext4 asks the crypto API for crc32c at mount time; there is no modprobe to
    // answer, so the generic implementation comes first (the initrd loaded it already;
    // this covers a boot without one). Best-effort: a kernel with them built in needs
    // neither, and a missing one shows up as the mount's error.
    let load_fs = |fstype: &str| {
        let names: &[&str] = match fstype {
            "ext4" => &["crc32c_generic", "ext4"],
            other => &[other],
        };
        for name in names {
            if let Err(e) = ros_cloudinit::ModuleLoader::load_module(modules, name, "") {
                log::warn!("{e}");
            }
        }
    };
    let early = ros_config::load_stage(
        mode::root(),
        Some(cmdline),
        Mode::Boot,
        ros_config::Stage::Early,
    );
    let settings = state::StateSettings::from_config(&early.config);
    let format = |dev: &Path, label: &str| -> Result<(), String> {
        let mut cmd = std::process::Command::new(state::MKFS);
        cmd.args(["-q", "-F", "-t", "ext4", "-L", label]).arg(dev);
        let (_, rx) = reaper
            .spawn(&mut cmd)
            .map_err(|e| format!("{}: {e}", state::MKFS))?;
        match rx.recv() {
            Ok(crate::reaper::Exit::Code(0)) => Ok(()),
            Ok(other) => Err(format!("{} exited {other:?}", state::MKFS)),
            Err(_) => Err("the reaper went away".into()),
        }
    };
    let ram = "running from RAM: nothing under /var, /home or /opt survives a reboot";
    match state::setup(&settings, Path::new("/"), &Host, &format, &load_fs) {
        Ok(state::StateOutcome::Mounted(dev)) => {
            check_state_space(&dev);
            console::marker(BootPhase::State, &dev.display().to_string());
        }
        Ok(state::StateOutcome::Formatted(dev)) => {
            log::info!("state: formatted {} as {}", dev.display(), settings.dev);
            check_state_space(&dev);
            console::marker(BootPhase::State, &dev.display().to_string());
        }
        // Fatal only when asked: `rancher.state.required` means "never run without it".
        Ok(state::StateOutcome::None) if settings.required => fatal(&format!(
            "state: no {} and rancher.state.required is set",
            settings.dev
        )),
        Ok(state::StateOutcome::None) => {
            log::warn!("state: no state disk ({}); {ram}", settings.dev);
            console::marker(BootPhase::State, "ram");
        }
        Err(e) if settings.required => fatal(&e.to_string()),
        Err(e) => {
            log::error!("{e}; {ram}");
            console::marker(BootPhase::State, "ram");
        }
    }
}

/// Warn on the console when the state disk is (nearly) full, releasing PID 1's reserve
/// so that containerd can still create what the services need.
fn check_state_space(dev: &Path) {
    let mnt = Path::new(state::STATE_MOUNT);
    let mib = |b: u64| b >> 20;
    match state::keep_reserve(mnt, &state::free_bytes) {
        Ok(state::Space::Fine) => {}
        Ok(state::Space::Released { free }) => log::warn!(
            "state: {} is full; released the {} MiB reserve so that the system can start              ({} MiB free now): free space under /var, /home or /opt",
            dev.display(),
            mib(state::RESERVE_BYTES),
            mib(free)
        ),
        Ok(state::Space::Full { free }) => log::warn!(
            "state: {} is full ({} MiB free) and no reserve is left; services may fail to              start: free space under /var, /home or /opt",
            dev.display(),
            mib(free)
        ),
        Err(e) => log::warn!("state: checking free space on {}: {e}", mnt.display()),
    }
}

/// Whether the directory exists and has an entry (a class in /sys with a device).
fn has_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// Fetch user-data from the datasources, load the config, apply it to the host and run
/// `bootcmd`. Every step is best-effort: problems are printed and the boot goes on.
/// `cdrom`: a CD-ROM drive's drivers not loaded yet (a boot from a virtio disk).
fn cloud_init(
    cmdline: &str,
    modules: &crate::cloudinit::InitModules,
    reaper: &Reaper,
    cdrom: CdromDrivers,
) -> CloudConfig {
    let root = mode::root();
    // The datasources to read come from the config itself (every layer there is before
    // them, and the kernel line).
    let first = ros_config::load(root, Some(cmdline), Mode::Boot);
    let layers = ros_config::layer_contents(root);
    if ros_cloudinit::lists_config_drive(&first.config) {
        cdrom.load(&Host);
    }
    // Quietly: the CD-ROM driver, when an adapter a CD-ROM may sit on is there (a missing
    // module only hides that drive). It loads while containerd starts, on the CPUs it
    // needs: only what can find a drive (its filesystem is loaded once one is found).
    if has_entries(Path::new("/sys/class/scsi_host")) {
        let cdrom = ros_cloudinit::CDROM_MODULE;
        if let Err(e) = ros_cloudinit::ModuleLoader::load_module(modules, cdrom, "") {
            log::debug!("{e}");
        }
    }
    let host = crate::cloudinit::BootHost;
    let url = first.cmdline.cloud_config_url();
    let url = url.as_deref();
    // A `url:` or `cmdline` datasource: a network first, for as long as they take.
    let net = ros_cloudinit::needs_network(&first.config, url).then(|| {
        crate::netboot::up(modules, reaper, EARLY_DHCP_TIMEOUT)
            .map_err(|e| log::error!("network: {e}; the URL datasources will fail"))
    });
    let fetched = ros_cloudinit::fetch_user_data(
        root,
        &first.config,
        url,
        &host,
        modules,
        &ros_cloudinit::FetchOptions {
            http: ros_cloudinit::RetryPolicy {
                timeout: first.config.rancher.cloud_init.timeout(),
                ..Default::default()
            },
        },
    );
    if let Some(Ok(net)) = &net {
        crate::netboot::down(net, reaper);
    }
    crate::cloudinit::print(&fetched);
    // Over the network: what each datasource gave, and how long it took, on the console.
    if net.is_some() {
        for line in fetched.applied_lines() {
            log::info!("{line}");
        }
    }
    // Loaded again only when a datasource changed a layer (saved or removed user-data).
    let config = if ros_config::layer_contents(root) != layers {
        crate::desired::load_config(cmdline)
    } else {
        crate::desired::reported(first)
    };
    let applied = ros_cloudinit::apply(root, &config, &host, modules);
    crate::cloudinit::print(&applied.report);
    if config.hostname.is_none() {
        set_hostname(&config);
    }
    let runner = crate::cloudinit::ReaperRunner::for_bootcmd(reaper.clone());
    crate::cloudinit::print_commands(&ros_cloudinit::run_bootcmd(
        &config,
        &runner,
        &crate::cloudinit::command_log(),
    ));
    config
}

/// PID 1's whole life, as a short list of named steps. Never returns.
///
/// The steps only a machine's PID 1 takes (mounts, modules, the root switch, the state
/// disk, cgroup controllers) are skipped in subreaper mode ([`mode::subreaper`]), where
/// every well-known path is below the test root ([`paths::at`]).
pub fn run() -> ! {
    recovery::install_panic_hook();
    console::init_logging(false);
    console::marker(BootPhase::Init, env!("CARGO_PKG_VERSION"));
    let machine = !mode::subreaper();
    let host = Host;
    if machine {
        mount_pseudo_filesystems(&host);
    } else {
        become_subreaper();
    }
    // One reader for PID 1 and `ros`: one stray byte must not empty the whole line.
    let cmdline_text = ros_config::read_cmdline(mode::root())
        .ok()
        .flatten()
        .unwrap_or_default();
    let cmdline = KernelCmdline::parse(&cmdline_text);
    console::init_logging(cmdline.debug());
    // An installed disk: the root image is a file on its ext4 partition.
    let installed_disk = cmdline.root_image().is_some() || cmdline.root_fstype() == "ext4";
    // The ISO and PXE: the root image came in the initramfs, and no `root=` names another.
    let live = cmdline.get("root").is_none() && paths::at(paths::LIVE_ROOT_IMAGE).is_file();
    recovery::set_offer_shell(recovery::offer_shell(cmdline.recovery(), installed_disk));

    let reaper = Reaper::default();
    let (power_tx, power_rx) = listen_for_power_signals(&reaper);
    console::marker(BootPhase::Mounts, "");

    let kver = kernel_release();
    let cdrom = if machine && in_initramfs() {
        switch_to_the_root(&cmdline, &kver, installed_disk, live, &host)
    } else {
        log::info!(
            "root: not in an initramfs, using {} as it is",
            mode::root().display()
        );
        CdromDrivers(Vec::new())
    };
    if machine {
        // Again (idempotent: adds /tmp on the new root).
        mount_pseudo_filesystems(&host);
    }
    // Page in the binaries every service start needs, on a second CPU while this one
    // mounts the state and starts containerd: under emulation, decompressing them from
    // the squashfs as they fault in is a good part of containerd's start-up.
    warm_page_cache([paths::CONTAINERD_BIN, paths::SHIM_BIN, paths::OCI_RUNTIME].map(paths::at));
    // One index of the root's modules for every later load (state disk, cloud-init).
    let root_modules =
        crate::cloudinit::InitModules::new(&paths::at(paths::MODULES_DIR).join(&kver));
    if machine {
        mount_state(&cmdline_text, &root_modules, &reaper);
    } else {
        console::marker(BootPhase::State, "ram");
    }
    // An installed disk of two slots: a trial boot, or the good slot after a failed one.
    let slots = crate::upgrade::at_boot(&cmdline, &root_modules);
    crate::upgrade::arm_trial_deadline(&slots, power_tx.clone());
    if machine {
        mount_writable_filesystems(&host);
        enable_cgroup_controllers(Path::new("/sys/fs/cgroup"));
    }
    prepare_directories();
    // Started before cloud-init (as RancherOS started system-docker first): it needs
    // nothing from the config, and its start-up (seconds under emulation) overlaps the
    // datasources, config and bootcmd.
    let containerd = start_containerd(&reaper);
    let config = cloud_init(&cmdline_text, &root_modules, &reaper, cdrom);
    // `rancher.debug` set in a cloud-config, not only on the kernel line (which the config
    // also holds).
    console::set_debug(cmdline.debug() || config.rancher.debug);

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal(&format!("starting the async runtime: {e}")),
    };
    let action = rt.block_on(serve(
        &containerd,
        (power_rx, power_tx),
        config,
        cmdline_text,
        reaper.clone(),
        slots,
    ));
    containerd.stop(Duration::from_secs(10));
    // Not drop(rt), which waits for every blocking task: a runcmd still waiting for its
    // command (already killed) must not hold the shutdown.
    rt.shutdown_timeout(Duration::from_secs(2));
    power::finish(action, &reaper, &host)
}

/// /proc, /sys, /dev, /run and /tmp. Fatal: without them nothing below can work.
fn mount_pseudo_filesystems(host: &Host) {
    if let Err(e) = mounts::apply(PSEUDO_MOUNTS, Path::new("/"), &mountinfo(), host) {
        fatal(&format!("{e} ({})", e.fatal.unwrap_or("")));
    }
}

/// /var, /home and /opt on tmpfs where the state disk did not provide them. Fatal rows
/// are fatal for the reasons the table gives.
fn mount_writable_filesystems(host: &Host) {
    if let Err(e) = mounts::apply(WRITABLE_MOUNTS, Path::new("/"), &mountinfo(), host) {
        fatal(&format!("{e} ({})", e.fatal.unwrap_or("")));
    }
}

/// Subreaper mode: the processes this init's children leave behind (containerd's shims,
/// a bootcmd's background job) become its children, as they would be PID 1's. Fatal: a
/// test of the reaper without it tests nothing.
fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        fatal(&format!("becoming a child subreaper: {e}"));
    }
    log::info!(
        "subreaper mode: paths below {}; no mounts, modules, hostname or reboot",
        mode::root().display()
    );
}

/// Start the signal thread (SIGCHLD drives the reaper; the power signals become power
/// actions). Returns the power actions' channel, and a sender for the upgrade machinery,
/// which asks for a reboot too (a trial that fails its health gate). Fatal: PID 1 that
/// can't reap or hear signals would fill with zombies.
fn listen_for_power_signals(
    reaper: &Reaper,
) -> (
    mpsc::UnboundedSender<PowerAction>,
    mpsc::UnboundedReceiver<PowerAction>,
) {
    let (power_tx, power_rx) = mpsc::unbounded_channel();
    let (sig_tx, sig_rx) = std::sync::mpsc::channel::<PowerAction>();
    if let Err(e) = power::start_signal_thread(reaper.clone(), sig_tx) {
        fatal(&format!("starting the signal thread: {e}"));
    }
    let forward = power_tx.clone();
    std::thread::spawn(move || {
        while let Ok(a) = sig_rx.recv() {
            let _ = forward.send(a);
        }
    });
    (power_tx, power_rx)
}

/// In the initramfs: load the boot modules, find the root (a disk, an image file on one,
/// or the initramfs's own image), mount it and switch into it. Fatal: there is nothing to
/// boot without the root. Returns the CD-ROM drivers opened for cloud-init (a boot from a
/// virtio disk).
fn switch_to_the_root(
    cmdline: &KernelCmdline,
    kver: &str,
    installed_disk: bool,
    live: bool,
    host: &Host,
) -> CdromDrivers {
    let mut cdrom = CdromDrivers(Vec::new());
    let modules = InitrdModules::open(&Path::new(paths::MODULES_DIR).join(kver));
    modules.load_boot(unneeded_initrd_modules(installed_disk, live), host);
    console::marker(BootPhase::Modules, "");

    let device = if live {
        log::info!(
            "root: {} from the initramfs, in RAM",
            paths::LIVE_ROOT_IMAGE
        );
        // No disk held the root; the state disk, an install target or a CD-ROM config
        // drive may be on any controller.
        modules.load_fallback(host);
        root::attach_loop(Path::new(paths::LIVE_ROOT_IMAGE))
            .unwrap_or_else(|e| fatal(&e.to_string()))
    } else {
        let (disk, on_virtio) = found_root(cmdline, &modules, host);
        if on_virtio {
            cdrom = modules.cdrom_drivers();
        }
        // An installed disk: the root image is a file on it.
        match cmdline.root_image() {
            Some(image) => {
                root::attach_image(&disk, &image, host).unwrap_or_else(|e| fatal(&e.to_string()))
            }
            None => disk,
        }
    };
    let device = device.display().to_string();
    let newroot = Path::new(paths::NEWROOT);
    if let Err(e) = root::mount_root(&device, &cmdline.root_fstype(), newroot, host) {
        fatal(&e.to_string());
    }
    if let Err(e) = root::switch_root(newroot, host) {
        fatal(&e.to_string());
    }
    console::marker(BootPhase::Root, &device);
    cdrom
}

/// The user's config and log directories, and `/dev/log`. Best-effort: a missing one
/// shows up as that feature's own error later.
fn prepare_directories() {
    for dir in [paths::USER_CONF_DIR, paths::LOG_DIR].map(paths::at) {
        if let Err(e) = fs::create_dir_all(&dir) {
            log::warn!("creating {}: {e}", dir.display());
        }
    }
    let dev_log = paths::at(paths::DEV_LOG);
    if let Err(e) = link_syslog_socket(&paths::at(paths::SYSLOG_DIR), &dev_log) {
        log::warn!(
            "{}: {e}; nothing reaches syslog through it",
            dev_log.display()
        );
    }
}

/// The system containerd, supervised. Fatal: every service runs in it.
fn start_containerd(reaper: &Reaper) -> SystemContainerd {
    let cpaths = ContainerdPaths {
        bin: paths::at(paths::CONTAINERD_BIN),
        config: paths::at(paths::CONTAINERD_CONFIG),
        root: paths::at(paths::CONTAINERD_ROOT),
        state: paths::at(paths::CONTAINERD_STATE),
        socket: paths::at(paths::CONTAINERD_SOCKET),
        log: paths::at(paths::LOG_DIR).join("containerd.log"),
    };
    match SystemContainerd::start(cpaths, reaper.clone()) {
        Ok(c) => c,
        Err(e) => fatal(&e.to_string()),
    }
}

/// Bring up containerd's images and services, then supervise until a power action.
async fn serve(
    containerd: &SystemContainerd,
    (mut power, power_tx): (
        mpsc::UnboundedReceiver<PowerAction>,
        mpsc::UnboundedSender<PowerAction>,
    ),
    config: CloudConfig,
    cmdline: String,
    reaper: Reaper,
    slots: crate::upgrade::Boot,
) -> PowerAction {
    let socket = containerd.socket().to_path_buf();
    // Fatal: without the system runtime there is no console to offer.
    let local = LocalImages::new(
        paths::at(paths::IMAGE_STORE),
        paths::at(paths::SERVICE_ROOTS),
    );
    // A subreaper's services get a namespace and a cgroup parent of their own.
    let own = mode::own_name();
    let namespace = own.clone().unwrap_or_else(|| SYSTEM_NAMESPACE.to_string());
    let runtime = match Containerd::wait_ready(&socket, &namespace, CONTAINERD_READY_TIMEOUT).await
    {
        Ok(c) => c
            .with_local_images(local)
            .with_runtime_binary(paths::at(paths::OCI_RUNTIME).display().to_string()),
        Err(e) => fatal(&format!("system containerd never became ready: {e}")),
    };
    let runtime = match own {
        Some(name) => runtime.with_cgroup_parent(Some(format!("/{name}"))),
        None => runtime,
    };
    // Unprivileged services see the kernel line without its secrets (rancher.password).
    // Best-effort: without the file they see the kernel's own, as privileged ones do.
    let redacted = paths::at(ros_config::paths::REDACTED_CMDLINE);
    let runtime = match write_redacted_cmdline(&redacted, &cmdline) {
        Ok(()) => runtime.with_kernel_cmdline(&redacted),
        Err(e) => {
            log::warn!(
                "{}: {e}; services see the whole kernel line",
                redacted.display()
            );
            runtime
        }
    };
    if let Err(e) = crate::containerd::restrict_socket(&socket) {
        log::warn!("containerd: restricting {}: {e}", socket.display());
    }
    console::marker(BootPhase::ContainerdReady, "");

    import_images(&runtime, &paths::at(paths::IMAGES_DIR)).await;

    let rt = Arc::new(runtime);
    let sup = Supervisor::new(
        rt.clone(),
        paths::at(paths::LOG_DIR),
        PathBuf::from("/proc/net/route"),
        Timeouts::default(),
    );
    // Subscribe before starting anything whose exit matters.
    match rt.exits().await {
        Ok(events) => {
            tokio::spawn(sup.clone().dispatch_exits(events));
        }
        Err(e) => {
            log::error!("containerd: subscribing to exits: {e} (services won't be restarted)")
        }
    }
    // What should run: the boot's plan now, and every reload's (`ros service up`,
    // `ros config set`) through the control socket.
    let desired = Arc::new(crate::desired::Desired::new(cmdline.clone()));
    let on_start = desired.clone();
    sup.set_start_hook(Arc::new(move |service, pid| on_start.started(service, pid)));
    crate::logrotate::spawn_watcher(paths::at(paths::LOG_DIR), crate::logrotate::DEFAULT_CAP);
    crate::control::spawn(
        sup.clone(),
        desired.clone(),
        paths::at(ros_control::protocol::CONTROL_SOCKET),
    );
    let console_pid = desired.console_pid();

    let shutdown_timeout = config.shutdown_timeout();
    let plan = desired.plan(&config);
    let booting = sup.clone();
    let late_config = config.clone();
    let reaper_for_deadline = reaper.clone();
    let boot = tokio::spawn(async move {
        let all: Vec<String> = plan.services.keys().cloned().collect();
        booting.converge(plan.services, plan.order, &all).await;
        console::marker(BootPhase::BootComplete, "");
        warn_if_random_unready(Path::new("/dev/random"));
        // The upgrade's health gate, beside runcmd (which may run for long).
        let health_sup = booting.clone();
        let checks = crate::upgrade::UserChecks {
            config: late_config.clone(),
            reaper: reaper.clone(),
            console_pid: console_pid.clone(),
        };
        tokio::spawn(async move {
            crate::upgrade::after_boot_complete(&slots, &health_sup, &power_tx, checks).await;
        });
        // After the services (and so the network): user scripts, then runcmd.
        let _ = tokio::task::spawn_blocking(move || {
            let runner = crate::cloudinit::ReaperRunner::for_runcmd(
                reaper,
                console_pid.load(Ordering::Relaxed),
            );
            let log = crate::cloudinit::command_log();
            crate::cloudinit::print_commands(&ros_cloudinit::run_user_scripts(
                mode::root(),
                &late_config,
                &runner,
                &log,
            ));
            crate::cloudinit::print_commands(&ros_cloudinit::run_runcmd(
                &late_config,
                &runner,
                &log,
            ));
        })
        .await;
    });

    let action = power.recv().await.unwrap_or(PowerAction::PowerOff);
    boot.abort();
    console::marker(BootPhase::Shutdown, action.name());
    // Nothing a runcmd started may hold the shutdown (`sleep infinity`, a foreground
    // `docker run`): those go first.
    crate::cloudinit::kill_commands();
    crate::power::arm_shutdown_deadline(action, shutdown_timeout, reaper_for_deadline);
    sup.stop_all(shutdown_timeout).await;
    action
}

/// `dev_log` (`/dev/log`) as a link to `log` in `dir` (`/run/syslog`, made root-owned 0755),
/// where the syslog service makes its socket: the service binds that directory, not the
/// host's whole /dev (systemd's journal links `/dev/log` into /run the same way). The
/// host's processes and the containers that share its /dev and /run log through the link.
fn link_syslog_socket(dir: &Path, dev_log: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let _ = fs::remove_file(dev_log);
    std::os::unix::fs::symlink(dir.join("log"), dev_log)
}

/// Write the kernel line with its secrets hidden to `path` (0644, in a root-only
/// directory; a symlink planted there is refused, not followed).
fn write_redacted_cmdline(path: &Path, cmdline: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.write_all(ros_config::redacted_cmdline(cmdline).as_bytes())
}

async fn import_images(runtime: &Containerd, dir: &Path) {
    let mut archives: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    // Unpacked OCI layouts (what the root image ships) or archives.
    archives.retain(|p| p.is_dir() || p.extension().is_some_and(|e| e == "tar"));
    archives.sort();
    let (mut imported, mut present) = (0, 0);
    for archive in &archives {
        match runtime.import_archive(archive).await {
            Ok(out) if out.skipped => present += 1,
            // The runtime logs what it imported.
            Ok(_) => imported += 1,
            // Best-effort: only the services of that image are affected.
            Err(e) => log::error!("image {}: {e}", archive.display()),
        }
    }
    // containerd syncs its metadata and content, not the files it unpacks into snapshots:
    // after a power cut those could be empty while the metadata says the image is there,
    // and every service would then fail with "exec format error" on every boot. Make the
    // unpacked layers durable before anything runs from them.
    if imported > 0 {
        let root = paths::at(paths::CONTAINERD_ROOT);
        match fs::File::open(&root).and_then(|f| nix::unistd::syncfs(&f).map_err(Into::into)) {
            Ok(()) => log::debug!("images: synced {}", root.display()),
            Err(e) => log::warn!("images: syncing {}: {e}", root.display()),
        }
    }
    console::marker(
        BootPhase::ImagesImported,
        &format!("imported={imported} present={present}"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The modules this code names are in the initrd's lists (initramfs/modules.*), which
    /// the image build reads: a name changed on one side only fails here, not at boot.
    #[test]
    fn the_modules_named_here_are_in_the_initrds_lists() {
        let list = |name: &str| -> Vec<String> {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../initramfs")
                .join(name);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        let boot = list("modules.boot");
        for (installed, live) in [(false, false), (false, true), (true, false)] {
            for m in unneeded_initrd_modules(installed, live) {
                assert!(boot.iter().any(|b| b == m), "{m} is not in modules.boot");
            }
        }
        // The CD-ROM driver: in the initrd (modules.cdrom) and in the root image.
        let cdrom = ros_cloudinit::CDROM_MODULE;
        for name in ["modules.cdrom", "modules.root"] {
            assert!(
                list(name).iter().any(|b| b == cdrom),
                "{cdrom} is not in {name}"
            );
        }
    }

    #[test]
    fn only_an_installed_disk_loads_ext4_and_loop_from_the_initrd() {
        let top = names(&[
            "crc32c_generic",
            "ext4",
            "loop",
            "overlay",
            "squashfs",
            "virtio_blk",
        ]);
        let load = |installed, live| {
            initrd_modules(top.clone(), &[], unneeded_initrd_modules(installed, live))
        };
        assert_eq!(
            load(false, false),
            names(&["crc32c_generic", "overlay", "squashfs", "virtio_blk"])
        );
        assert_eq!(load(true, false), top);
        // From RAM: the root image is a file of the initramfs, on a loop device.
        assert_eq!(
            load(false, true),
            names(&[
                "crc32c_generic",
                "loop",
                "overlay",
                "squashfs",
                "virtio_blk"
            ])
        );
    }

    #[test]
    fn the_other_disk_controllers_wait_for_a_root_that_is_not_on_virtio() {
        let dir = tempfile::tempdir().unwrap();
        assert!(module_list(dir.path(), FALLBACK_LIST).is_empty());
        fs::write(
            dir.path().join(FALLBACK_LIST),
            "ata_piix\n\n# c\nvmw-pvscsi\n",
        )
        .unwrap();
        let fallback = module_list(dir.path(), FALLBACK_LIST);
        assert_eq!(fallback, names(&["ata_piix", "vmw_pvscsi"]));
        let top = names(&["ata_piix", "squashfs", "sr_mod", "virtio_blk", "vmw_pvscsi"]);
        // The CD-ROM driver is cloud-init's.
        assert_eq!(
            initrd_modules(top, &fallback, &[]),
            names(&["squashfs", "virtio_blk"])
        );
    }

    #[test]
    fn dev_log_links_into_the_syslog_directory() {
        let tmp = std::env::temp_dir().join(format!("ros-devlog-{}", std::process::id()));
        fs::create_dir_all(tmp.join("dev")).unwrap();
        let (dir, dev_log) = (tmp.join("run-syslog"), tmp.join("dev/log"));
        // A stale socket file from before is replaced; twice is the same.
        fs::write(&dev_log, b"").unwrap();
        for _ in 0..2 {
            link_syslog_socket(&dir, &dev_log).unwrap();
            assert_eq!(fs::read_link(&dev_log).unwrap(), dir.join("log"));
            assert!(dir.is_dir());
        }
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_class_directory_counts_once_it_has_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_entries(&dir.path().join("missing")));
        assert!(!has_entries(dir.path()));
        fs::write(dir.path().join("host0"), "").unwrap();
        assert!(has_entries(dir.path()));
    }

    #[test]
    fn random_readiness_is_what_polling_the_device_says() {
        // This machine's pool was initialised long ago; an empty pipe has nothing to read.
        assert!(random_ready(Path::new("/dev/random")).unwrap());
        let (read, _write) = nix::unistd::pipe().unwrap();
        let path = PathBuf::from(format!("/proc/self/fd/{}", read.as_raw_fd()));
        assert!(!random_ready(&path).unwrap());
        assert!(random_ready(Path::new("/nonexistent/random")).is_err());
    }
}
