//! Boot tests for atomic upgrades with a health-gated rollback (issue 19): an installed
//! disk of two slots, upgraded from signed bundles on a second disk. Each failure ends in
//! the good slot with nobody typing anything, and `ros os list` says why.
//!
//! The bundles are made here from the build's own: its root image with another release
//! in its manifest (and, for the bundle that must fail its health gate, a service that
//! keeps exiting 1), or an initrd the kernel cannot use (it panics; `panic=10` reboots).
//! QEMU runs with `-no-reboot`, so every reboot ends it and the test boots the same disk
//! again, as the machine would.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use boot_tests::{
    blank_qcow2, image_dir, private_ca, BootOptions, HttpServer, StalledServer, TempDir, Vm,
};

const BOOT: Duration = Duration::from_secs(300);
/// A whole trial that fails its health gate: boot, the gate's window, the reboot.
const TRIAL: Duration = Duration::from_secs(600);

/// The build's release (its manifest's `release` line).
fn built_release() -> String {
    let manifest = fs::read_to_string(image_dir().join("manifest")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("release\tros\t"))
        .and_then(|rest| rest.split('\t').next())
        .expect("a release line in build/out/manifest")
        .to_string()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the good slot says after a hardware watchdog ended a hung trial.
const WATCHDOG_RESET: &str = "the trial boot hung: the hardware watchdog reset the machine";

/// How a test bundle differs from the build.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// The same system, another release.
    Healthy,
    /// PID 1 comes up, but a service keeps exiting 1: the health gate fails.
    BrokenService,
    /// An initrd the kernel cannot use: it panics before PID 1.
    Panics,
    /// A service pins every CPU at real-time priority: userspace, PID 1 included, never
    /// runs again, and only the watchdog can end the trial.
    Hangs,
}

/// The `Hangs` variant's program: real-time throttling off, then one SCHED_FIFO 99 busy
/// loop pinned to each CPU.
const HOG_C: &str = r#"
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
    FILE *f = fopen("/proc/sys/kernel/sched_rt_runtime_us", "w");
    if (!f || fputs("-1\n", f) < 0 || fclose(f) != 0) { perror("hog: rt throttling"); return 1; }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long c = 0; c < n; c++) {
        if (c + 1 < n && fork() != 0) continue;
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(c, &set);
        struct sched_param p = { .sched_priority = 99 };
        if (sched_setaffinity(0, sizeof set, &set) || sched_setscheduler(0, SCHED_FIFO, &p)) {
            perror("hog"); return 1;
        }
        for (volatile unsigned long i = 0;; i++) {}
    }
    return 0;
}
"#;

/// A signed bundle of release `version` (with the build tree's key), in `dir`.
fn bundle(dir: &Path, version: &str, variant: Variant) -> PathBuf {
    let build = image_dir().join("..");
    let work = dir.join(format!("root-{version}"));
    let _ = fs::remove_dir_all(&work);
    run(Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&work)
        .arg(build.join("stage/root.img")));
    let manifest_path = work.join("usr/share/ros/manifest");
    let manifest = fs::read_to_string(&manifest_path).unwrap();
    let manifest: String = manifest
        .lines()
        .map(|l| match l.strip_prefix("release\tros\t") {
            Some(rest) => {
                let detail = rest.split_once('\t').map_or("", |(_, d)| d);
                format!("release\tros\t{version}\t{detail}\n")
            }
            None => format!("{l}\n"),
        })
        .collect();
    fs::write(&manifest_path, &manifest).unwrap();
    if variant == Variant::BrokenService {
        fs::write(
            work.join("usr/share/ros/services/zz-broken.yml"),
            "broken:\n  image: ros/syslog:0.1.0\n  command: [/bin/sh, -c, \"exit 1\"]\n  \
             labels:\n    io.rancher.os.scope: system\n  net: none\n  restart: always\n",
        )
        .unwrap();
    }
    if variant == Variant::Hangs {
        let src = dir.join("hog.c");
        fs::write(&src, HOG_C).unwrap();
        run(Command::new("cc")
            .args(["-static", "-O1", "-o"])
            .arg(work.join("usr/lib/ros/hog"))
            .arg(&src));
        fs::write(
            work.join("usr/share/ros/services/zz-hog.yml"),
            "hog:\n  image: ros/syslog:0.1.0\n  command: [/hog]\n  labels:\n    \
             io.rancher.os.scope: system\n  net: none\n  privileged: true\n  \
             restart: \"no\"\n  volumes:\n    - /usr/lib/ros/hog:/hog:ro\n",
        )
        .unwrap();
    }
    let root = dir.join(format!("root-{version}.img"));
    let _ = fs::remove_file(&root);
    run(Command::new("mksquashfs").arg(&work).arg(&root).args([
        "-comp",
        "zstd",
        "-Xcompression-level",
        "3",
        "-all-root",
        "-noappend",
        "-quiet",
    ]));
    let initrd = if variant == Variant::Panics {
        let junk = dir.join("junk-initrd");
        fs::write(&junk, vec![0x5a; 64 << 10]).unwrap();
        junk
    } else {
        image_dir().join("initrd")
    };
    let manifest_file = dir.join(format!("manifest-{version}"));
    fs::write(&manifest_file, manifest).unwrap();
    let out = dir.join(format!("ros-{version}.upgrade"));
    run(Command::new(build.join("../target/release/ros-bundle"))
        .arg("pack")
        .arg("--key")
        .arg(build.join("keys/ros-signing.key"))
        .args(["--version", version, "--kernel"])
        .arg(image_dir().join("vmlinuz"))
        .arg("--initrd")
        .arg(&initrd)
        .arg("--root")
        .arg(&root)
        .arg("--manifest")
        .arg(&manifest_file)
        .arg("--out")
        .arg(&out));
    fs::remove_dir_all(&work).unwrap();
    out
}

/// Boot the installed `disk` under BIOS, with `bundle` attached as the raw disk /dev/vdb.
fn boot_disk(disk: &Path, bundle: Option<&Path>) -> Vm {
    boot_machine(
        disk,
        Machine {
            bundle,
            ..Machine::default()
        },
    )
}

/// How a test machine around the installed disk differs from [`boot_disk`]'s.
#[derive(Default)]
struct Machine<'a> {
    /// Attached as the raw disk /dev/vdb.
    bundle: Option<&'a Path>,
    /// The firmware's QEMU arguments (none: SeaBIOS).
    firmware: &'a [String],
    /// Boots again by itself after a reset (the same QEMU).
    reboots: bool,
    /// The bundle's disk reads at most this many bytes a second (QEMU's throttling), so
    /// that a power cut can land at a chosen point of an upgrade.
    bundle_read_bps: Option<u64>,
}

fn boot_machine(disk: &Path, m: Machine) -> Vm {
    // A hardware watchdog, as a server has: a trial boot arms it.
    let mut qemu_args: Vec<String> = ["-device", "i6300esb", "-action", "watchdog=reset"]
        .map(String::from)
        .into_iter()
        .chain(m.firmware.iter().cloned())
        .collect();
    if let Some(b) = m.bundle {
        let throttle = m
            .bundle_read_bps
            .map_or(String::new(), |bps| format!(",throttling.bps-read={bps}"));
        qemu_args.extend([
            "-drive".to_string(),
            format!(
                "file={},if=virtio,format=raw,readonly=on{throttle}",
                b.display()
            ),
        ]);
    }
    Vm::boot(&BootOptions {
        boot_disk: Some(disk.to_path_buf()),
        qemu_args,
        reboots: m.reboots,
        ..Default::default()
    })
}

/// A disk in `dir` as `ros install` leaves it: a copy-on-write overlay of one installed
/// once per run of these tests ([`install`]), so that each test starts from a fresh install
/// without paying for one.
fn installed_disk(dir: &Path) -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    fn base_dir() -> PathBuf {
        std::env::temp_dir().join(format!("ros-boot-installed-{}", std::process::id()))
    }
    // Removed when the test process exits (a static is never dropped).
    extern "C" fn remove_base() {
        let _ = fs::remove_dir_all(base_dir());
    }
    let base = BASE.get_or_init(|| {
        let dir = base_dir();
        fs::create_dir_all(&dir).unwrap();
        // SAFETY: registers a function that takes and returns nothing.
        unsafe { libc::atexit(remove_base) };
        install(&dir)
    });
    let disk = dir.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(&disk));
    disk
}

/// Install the image on a new disk in `dir` (automatic login on ttyS0, for the test).
fn install(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.qcow2");
    blank_qcow2(&disk, "2G");
    let mut vm = Vm::boot(&BootOptions {
        bios: true,
        qemu_args: vec![
            "-drive".into(),
            format!("file={},if=virtio,format=qcow2", disk.display()),
        ],
        ..Default::default()
    });
    vm.console_up(BOOT);
    // Healthy after 5 s of stable services, not 20: each of these tests boots a trial or a
    // slot's first boot several times, and the gate's rule is the same at any length.
    vm.sh("printf 'hostname: slotted\\nrancher:\\n  upgrade:\\n    healthy_after: 5\\n' > /tmp/cc.yml");
    let (out, status) = vm.run(
        "ros install -d /dev/vdb -c /tmp/cc.yml -f --no-reboot -a rancher.autologin=ttyS0 2>&1",
        Duration::from_secs(600),
    );
    assert_eq!(status, 0, "{out}");
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());
    disk
}

/// Wait for the console as [`Vm::console_up`] does, then for `needle` anywhere since the
/// boot began (PID 1 may say it before the console is up).
fn console_up_and_saw(vm: &mut Vm, needle: &str) {
    let start = vm.cursor();
    vm.console_up(BOOT);
    let after = vm.cursor();
    vm.rewind(start);
    vm.wait_for(needle, BOOT);
    vm.forward_to(after);
}

/// `ros os upgrade -i /dev/vdb` in `vm`; it reboots, which ends QEMU.
fn upgrade_and_reboot(vm: &mut Vm) -> String {
    upgrade_with_and_reboot(vm, "")
}

/// [`upgrade_and_reboot`] with `-f`: a release rolled back before is tried again.
fn upgrade_and_reboot_forced(vm: &mut Vm) -> String {
    upgrade_with_and_reboot(vm, " -f")
}

fn upgrade_with_and_reboot(vm: &mut Vm, flags: &str) -> String {
    let out = vm.sh(&format!(
        "ros os upgrade -i /dev/vdb{flags} --no-reboot 2>&1"
    ));
    assert!(out.contains("armed for one trial boot"), "{out}");
    vm.send("reboot");
    assert!(vm.wait_exit(Duration::from_secs(180)).success());
    out
}

fn last_upgrade(vm: &mut Vm) -> String {
    vm.sh("ros os list | grep '^last upgrade'")
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn upgrades_commit_when_healthy_and_roll_back_by_themselves_when_not() {
    let tmp = TempDir::new("upgrade");
    let v1 = built_release();
    let v2 = format!("{v1}.next");
    let good = bundle(tmp.path(), &v2, Variant::Healthy);
    let panics = bundle(tmp.path(), &format!("{v1}.panics"), Variant::Panics);
    let broken = bundle(tmp.path(), &format!("{v1}.broken"), Variant::BrokenService);
    let disk = installed_disk(tmp.path());

    // A fresh install: slot a, healthy once booted.
    let mut vm = boot_disk(&disk, Some(&good));
    vm.console_up(BOOT);
    assert_eq!(vm.sh("ros os version"), format!("v{v1} (slot a)"));
    vm.until("ros os list --format json | grep -q '\"booted_healthy\": true'");
    // A bundle changed by one byte, and one cut short: refused, nothing changed. (Copies
    // on the state disk: the guest's RAM is small.)
    vm.sh("mkdir -p /var/lib/rancher/t && cat /dev/vdb > /var/lib/rancher/t/b");
    vm.sh("cd /var/lib/rancher/t && cp b tampered && \
         printf X | dd of=tampered bs=1 seek=3000000 conv=notrunc 2>/dev/null && \
         head -c 20000000 b > short && rm b");
    let (out, status) = vm.run(
        "ros os upgrade -i /var/lib/rancher/t/tampered --no-reboot 2>&1",
        Duration::from_secs(120),
    );
    assert_eq!(status, 3, "{out}");
    assert!(
        out.contains("signed sha256") && out.contains("nothing was changed"),
        "{out}"
    );
    let (out, status) = vm.run(
        "ros os upgrade -i /var/lib/rancher/t/short --no-reboot 2>&1",
        Duration::from_secs(120),
    );
    assert_eq!(status, 3, "{out}");
    assert!(out.contains("truncated"), "{out}");
    vm.sh("rm -r /var/lib/rancher/t");
    let list = vm.sh("ros os list");
    assert!(
        list.contains("(empty)") && list.contains("last upgrade: none"),
        "{list}"
    );

    // v1 -> v2, from the second disk with the network down: the trial boot commits.
    assert_eq!(
        vm.sh(
            "for i in /sys/class/net/*; do i=${i##*/}; [ $i = lo ] || ip link set $i down; \
             done; ip route show default | wc -l"
        ),
        "0"
    );
    upgrade_and_reboot(&mut vm);
    let mut vm = boot_disk(&disk, None);
    console_up_and_saw(&mut vm, &format!("upgrade: {v2} committed"));
    assert_eq!(vm.sh("ros os version"), format!("v{v2} (slot b)"));
    assert_eq!(
        last_upgrade(&mut vm),
        format!("last upgrade: {v2} (slot b): committed")
    );
    // The boot-once was consumed by the bootloader; b is the default now.
    assert!(vm
        .sh("ros os list --format json")
        .contains("\"next_boot\": \"b\""));

    // `ros os rollback`: back to v1 in slot a, which booted healthy before.
    let out = vm.sh("ros os rollback");
    assert!(out.contains("slot a"), "{out}");
    vm.send("reboot");
    assert!(vm.wait_exit(Duration::from_secs(180)).success());

    // The same disk under UEFI (GRUB from its EFI system partition; the boot-once in
    // grubenv). A kernel that panics before PID 1: GRUB spent the boot-once, so the next
    // boot is the good slot, which says why.
    let uefi = boot_tests::uefi_args(tmp.path());
    let mut vm = boot_machine(
        &disk,
        Machine {
            bundle: Some(&panics),
            firmware: &uefi,
            ..Machine::default()
        },
    );
    vm.console_up(BOOT);
    assert!(vm.output().contains("GNU GRUB"), "{}", vm.tail(40));
    assert_eq!(vm.sh("test -d /sys/firmware/efi && echo uefi"), "uefi");
    assert_eq!(vm.sh("ros os version"), format!("v{v1} (slot a)"));
    let out = vm.sh("ros os upgrade -i /dev/vdb --no-reboot 2>&1");
    assert!(out.contains("armed for one trial boot"), "{out}");
    assert!(vm
        .sh("ros os list --format json")
        .contains("\"next_boot\": \"b\""));
    vm.send("reboot");
    assert!(vm.wait_exit(Duration::from_secs(180)).success());
    let mut vm = boot_machine(
        &disk,
        Machine {
            firmware: &uefi,
            ..Machine::default()
        },
    );
    // The trial boot: the kernel panics and reboots by itself (QEMU exits).
    let _ = vm.wait_exit(TRIAL);
    assert!(
        vm.output().contains("Kernel panic") && !vm.output().contains("ROS BOOT init"),
        "the trial did not panic before PID 1: {}",
        vm.tail(40)
    );
    let mut vm = boot_machine(
        &disk,
        Machine {
            firmware: &uefi,
            ..Machine::default()
        },
    );
    vm.console_up(BOOT);
    let out = vm.output();
    assert!(
        out.contains("was rolled back: the new kernel or initrd never reached PID 1"),
        "{}",
        vm.tail(40)
    );
    assert_eq!(vm.sh("ros os version"), format!("v{v1} (slot a)"));
    assert!(
        last_upgrade(&mut vm).contains("rolled back: the new kernel or initrd never reached PID 1")
    );
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());

    // PID 1 up, but a service keeps failing: the health gate fails, PID 1 records which
    // service and reboots into the good slot.
    let mut vm = boot_disk(&disk, Some(&broken));
    vm.console_up(BOOT);
    upgrade_and_reboot(&mut vm);
    let mut vm = boot_disk(&disk, None);
    vm.wait_for("upgrade: trial boot of", BOOT);
    vm.wait_for("health check: service broken is not up", TRIAL);
    assert!(vm.wait_exit(Duration::from_secs(180)).success());
    let mut vm = boot_disk(&disk, Some(&broken));
    vm.console_up(BOOT);
    assert_eq!(vm.sh("ros os version"), format!("v{v1} (slot a)"));
    assert!(last_upgrade(&mut vm).contains("health check: service broken is not up"));
    // Not tried again by itself: without -f, the same release is refused.
    let (out, status) = vm.run(
        "ros os upgrade -i /dev/vdb --no-reboot 2>&1",
        Duration::from_secs(120),
    );
    assert_ne!(status, 0, "{out}");
    assert!(
        out.contains("was rolled back after a failed trial"),
        "{out}"
    );
    // The console warns of the rollback at every boot until it is acknowledged.
    vm.sh("ros os list --acknowledge >/dev/null");
    assert!(vm
        .sh("ros os list --format json")
        .contains("\"acknowledged\": true"));
    // Nothing half-written is left in the slots.
    assert_eq!(
        vm.sh("ls /proc/1/root/run/ros/boot-disk/boot/slot-b/ | grep -c '\\.new$' || true"),
        "0"
    );
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn a_single_slot_disk_is_migrated_by_its_first_upgrade_and_keeps_its_state() {
    let tmp = TempDir::new("migrate");
    let v1 = built_release();
    let v2 = format!("{v1}.next");
    let good = bundle(tmp.path(), &v2, Variant::Healthy);
    let disk = installed_disk(tmp.path());
    // Turn it into what the single-slot `ros install` wrote: boot/{vmlinuz,initrd,
    // root.img}, one entry `ros`, no state file; and leave a file in the state.
    let mut vm = boot_disk(&disk, Some(&good));
    vm.console_up(BOOT);
    vm.sh(
        "cd /run/ros/boot-disk/boot && mv slot-a/vmlinuz slot-a/initrd slot-a/root.img . && \
         rmdir slot-a && rm ros-os.json && \
         printf 'SERIAL 0 115200\\nDEFAULT ros\\nPROMPT 0\\nTIMEOUT 10\\n\\nLABEL ros\\n  KERNEL /boot/vmlinuz\\n  INITRD /boot/initrd\\n  APPEND console=tty0 console=ttyS0 quiet root=LABEL=RANCHER_STATE rootimg=/boot/root.img rancher.autologin=ttyS0\\n' > syslinux/syslinux.cfg && sync",
    );
    vm.sh("echo kept > /var/lib/rancher/conf/kept && ros config set rancher.environment.KEPT yes");
    vm.send("reboot");
    assert!(vm.wait_exit(Duration::from_secs(180)).success());
    let mut vm = boot_disk(&disk, None);
    vm.console_up(BOOT);
    assert_eq!(vm.sh("ros os version"), format!("v{v1}"));
    // This time the bundle comes from an https URL: the test's server on the host's
    // loopback (the guest's 10.0.2.2), with a certificate from a private CA. Refused with
    // the public roots, changing nothing; fetched once rancher.upgrade.ca_certs has the CA.
    let tls = tmp.path().join("tls");
    fs::create_dir(&tls).unwrap();
    let (ca, cert, key) = private_ca(&tls);
    let server = HttpServer::serve_tls(good.parent().unwrap(), &cert, &key);
    let name = good.file_name().unwrap().to_string_lossy().to_string();
    let url = format!("https://10.0.2.2:{}/{name}", server.port);
    let (out, status) = vm.run(
        &format!("ros os upgrade -i {url} --no-reboot 2>&1"),
        Duration::from_secs(120),
    );
    assert_ne!(status, 0, "{out}");
    assert!(out.contains("UnknownIssuer"), "{out}");
    assert_eq!(
        vm.sh("ls /run/ros/boot-disk/boot/ros-os.json 2>/dev/null | wc -l"),
        "0",
        "a refused download changed the disk"
    );
    vm.sh(&format!(
        "ros config set rancher.upgrade.ca_certs '[\"{}\"]'",
        ca.trim_end().replace('\n', "\\n")
    ));
    let out = vm.sh(&format!("ros os upgrade -i {url} --no-reboot 2>&1"));
    assert!(out.contains("single-slot layout"), "{out}");
    assert!(
        out.contains("downloaded ") && out.contains("armed for one trial boot"),
        "{out}"
    );
    drop(server);
    vm.send("reboot");
    assert!(vm.wait_exit(Duration::from_secs(180)).success());
    let mut vm = boot_disk(&disk, None);
    console_up_and_saw(&mut vm, &format!("upgrade: {v2} committed"));
    assert_eq!(vm.sh("ros os version"), format!("v{v2} (slot b)"));
    assert_eq!(vm.sh("cat /var/lib/rancher/conf/kept"), "kept");
    assert_eq!(vm.sh("ros config get rancher.environment.KEPT"), "yes");
    assert_eq!(vm.sh("hostname"), "slotted");
    let list = vm.sh("ros os list");
    assert!(list.contains(&v1) && list.contains(&v2), "{list}");
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn power_cuts_during_an_upgrade_leave_a_disk_that_boots_and_upgrades_later() {
    let tmp = TempDir::new("powercut");
    let v1 = built_release();
    let v2 = format!("{v1}.next");
    let good = bundle(tmp.path(), &v2, Variant::Healthy);
    let disk = installed_disk(tmp.path());

    // Each boot below checks what the cut before it left, then sets up the next cut. The
    // bundle's disk is read at 8 MiB/s, so that a cut lands where the test wants it.
    let throttled = || {
        boot_machine(
            &disk,
            Machine {
                bundle: Some(&good),
                bundle_read_bps: Some(8 << 20),
                ..Machine::default()
            },
        )
    };
    let mut vm = throttled();
    vm.console_up(BOOT);
    vm.until("ros os list --format json | grep -q '\"booted_healthy\": true'");
    let slot_a_boots = |vm: &mut Vm| {
        assert_eq!(vm.sh("ros os version"), format!("v{v1} (slot a)"));
        assert!(vm
            .sh("ros os list --format json")
            .contains("\"next_boot\": \"a\""));
    };

    // 1. Download: cut twice while a URL's bundle is coming (a quarter of it, then three
    //    quarters, on the partition). The good slot boots, nothing is armed, and the
    //    partial download is removed.
    for percent in [25, 75] {
        let server = StalledServer::serve(&good, percent);
        vm.sh(&format!(
            "(ros os upgrade -i http://10.0.2.2:{}/v2.upgrade --no-reboot >/tmp/up.log 2>&1 &)",
            server.port
        ));
        vm.until(&format!(
            "[ $(stat -c %s /run/ros/boot-disk/boot/upgrade.download 2>/dev/null || echo 0) -ge {} ]",
            server.sent
        ));
        // On the disk, not only in the page cache, when the power goes.
        vm.sh("sync");
        drop(vm); // SIGKILL: the power cut
        vm = throttled();
        console_up_and_saw(
            &mut vm,
            "upgrade: removed what an interrupted upgrade left: \
             /run/ros/boot-disk/boot/upgrade.download",
        );
        slot_a_boots(&mut vm);
    }

    // 2. Write: cut while the slot is being written, at three points: in the kernel's
    //    part, and twice in the root image's (what was written is synced first, so there
    //    is something to leave behind). Each time the good slot boots, nothing is armed,
    //    and the half-written files are removed.
    for (i, mib) in [2, 24, 44].into_iter().enumerate() {
        vm.sh("(ros os upgrade -i /dev/vdb --no-reboot >/tmp/up.log 2>&1 &)");
        vm.until(&format!(
            "[ $(stat -c %s /run/ros/boot-disk/boot/slot-b/*.new 2>/dev/null | \
             awk '{{s += $1}} END {{print s + 0}}') -ge {} ]",
            mib << 20
        ));
        vm.sh("sync");
        drop(vm); // SIGKILL: the power cut
        vm = if i < 2 {
            throttled()
        } else {
            boot_disk(&disk, Some(&good))
        };
        console_up_and_saw(
            &mut vm,
            "upgrade: removed what an interrupted upgrade left: ",
        );
        slot_a_boots(&mut vm);
        assert_eq!(
            vm.sh("ls /run/ros/boot-disk/boot/slot-b 2>/dev/null | grep -c '[.]new$' || true"),
            "0"
        );
    }

    // 3. Arm: `ros os upgrade` writes the state (arming), then the ADV (extlinux --once),
    //    then the state again (armed). Its writes take milliseconds, so the first two cuts
    //    leave, by hand, what a cut there leaves: the state file of a finished arming with
    //    the phase set back to arming, with or without the ADV.
    let state = "/run/ros/boot-disk/boot/ros-os.json";
    let arming = format!(
        "sed 's/\"phase\": \"armed\"/\"phase\": \"arming\"/' /tmp/armed.json > {state}.cut \
         && mv {state}.cut {state} && sync"
    );
    //    a. After the state, before the ADV: the good slot boots and cancels the upgrade.
    //       (`ros os rollback` clears the ADV; the state is put back.)
    let out = vm.sh("ros os upgrade -i /dev/vdb --no-reboot 2>&1");
    assert!(out.contains("armed for one trial boot"), "{out}");
    vm.sh(&format!(
        "cp {state} /tmp/armed.json && ros os rollback && {arming}"
    ));
    assert!(vm
        .sh("ros os list --format json")
        .contains("\"next_boot\": \"a\""));
    drop(vm);
    vm = boot_disk(&disk, Some(&good));
    console_up_and_saw(
        &mut vm,
        "upgrade: an upgrade was being armed when this machine went down: cancelled",
    );
    slot_a_boots(&mut vm);
    //    b. After the ADV, before the state says armed: the trial boots, and commits.
    //       Cut the moment it says so: the commit was on the disk before it did.
    let out = vm.sh("ros os upgrade -i /dev/vdb --no-reboot 2>&1");
    assert!(out.contains("armed for one trial boot"), "{out}");
    vm.sh(&format!("cp {state} /tmp/armed.json && {arming}"));
    drop(vm);
    let mut vm = boot_disk(&disk, None);
    vm.wait_for(&format!("upgrade: {v2} committed"), BOOT);
    drop(vm);
    let mut vm = boot_disk(&disk, None);
    vm.console_up(BOOT);
    assert_eq!(vm.sh("ros os version"), format!("v{v2} (slot b)"));

    // 4. Commit: cut between its two writes: the state says b is good, syslinux.cfg
    //    still says ros-a (one byte written in place, as the bootloader reads it). The
    //    old slot boots, complete; its PID 1 writes the entries the state implies, and
    //    the next boot is the committed release.
    vm.sh("f=/run/ros/boot-disk/boot/syslinux/syslinux.cfg; \
         o=$(awk '/^DEFAULT ros-b$/ {print n; exit} {n += length($0) + 1}' $f); \
         printf a | dd of=$f bs=1 seek=$((o + 12)) conv=notrunc 2>/dev/null; sync");
    drop(vm);
    let mut vm = boot_disk(&disk, None);
    console_up_and_saw(&mut vm, "upgrade: the boot entries did not match the state");
    assert_eq!(vm.sh("ros os version"), format!("v{v1} (slot a)"));
    vm.send("reboot");
    assert!(vm.wait_exit(Duration::from_secs(180)).success());
    let mut vm = boot_disk(&disk, Some(&good));
    vm.console_up(BOOT);
    assert_eq!(vm.sh("ros os version"), format!("v{v2} (slot b)"));

    //    c. Arm, the third cut: after arming, before the reboot (a real cut). The next
    //       boot is the trial (its user check marks when it runs, then waits).
    vm.sh("ros config set rancher.upgrade.health_checks \
           '[touch /tmp/checking; sleep 600]'");
    let out = vm.sh("ros os upgrade -i /dev/vdb -f --no-reboot 2>&1");
    assert!(out.contains("armed for one trial boot"), "{out}");
    drop(vm);

    // 5. Trial: cut twice, before its health gate decides: the bootloader's boot-once is
    //    spent, so the good slot boots and says the trial ended early.
    //    a. As soon as the trial's PID 1 says so (services still starting).
    let mut vm = boot_disk(&disk, None);
    vm.wait_for("upgrade: trial boot of", BOOT);
    drop(vm);
    let cut_short = |vm: &mut Vm| {
        console_up_and_saw(
            vm,
            "was rolled back: the trial boot ended before its health check finished",
        );
        // A power cut is not taken for the watchdog's reset.
        assert!(!vm.output().contains(WATCHDOG_RESET));
        assert_eq!(vm.sh("ros os version"), format!("v{v2} (slot b)"));
    };
    let mut vm = boot_disk(&disk, Some(&good));
    cut_short(&mut vm);
    vm.sh("rm -f /tmp/checking");
    upgrade_and_reboot_forced(&mut vm);
    //    b. While the user's check runs: every service is up, the gate is waiting on it.
    let mut vm = boot_disk(&disk, None);
    vm.console_up(BOOT);
    vm.until_within("[ -e /tmp/checking ]", BOOT);
    drop(vm);
    // (The build's own bundle, release v1, on the second disk this time.)
    let v1_bundle = image_dir().join(format!("ros-{v1}.upgrade"));
    let mut vm = boot_disk(&disk, Some(&v1_bundle));
    cut_short(&mut vm);
    vm.sh("ros config set rancher.upgrade.health_checks '[]'");
    // And a later upgrade still works: v1 -> v2 -> v1, the second upgrade writing the
    // other slot (a) with the build's own bundle.
    upgrade_and_reboot(&mut vm);
    let mut vm = boot_disk(&disk, None);
    console_up_and_saw(&mut vm, &format!("upgrade: {v1} committed"));
    assert_eq!(vm.sh("ros os version"), format!("v{v1} (slot a)"));
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn a_failed_user_health_check_or_a_hung_trial_ends_in_the_good_slot() {
    let tmp = TempDir::new("hang");
    let v1 = built_release();
    let v2 = format!("{v1}.next");
    let good = bundle(tmp.path(), &v2, Variant::Healthy);
    let hangs = bundle(tmp.path(), &format!("{v1}.hangs"), Variant::Hangs);
    let disk = installed_disk(tmp.path());

    // The user's own check (rancher.upgrade.health_checks) fails in the trial: every
    // service is up, but the upgrade is rolled back, naming the check.
    let mut vm = boot_disk(&disk, Some(&good));
    vm.console_up(BOOT);
    vm.until("ros os list --format json | grep -q '\"booted_healthy\": true'");
    vm.sh("ros config set rancher.upgrade.health_checks '[ls /run/no-such-file]'");
    upgrade_and_reboot(&mut vm);
    let mut vm = boot_disk(&disk, None);
    vm.wait_for("watchdog: armed for this trial boot (i6300esb", BOOT);
    vm.wait_for("health check: `ls /run/no-such-file`: exit status 1", TRIAL);
    assert!(vm.wait_exit(Duration::from_secs(180)).success());
    let mut vm = boot_disk(&disk, Some(&hangs));
    console_up_and_saw(
        &mut vm,
        "was rolled back: health check: `ls /run/no-such-file`",
    );
    assert_eq!(vm.sh("ros os version"), format!("v{v1} (slot a)"));
    vm.sh("ros config set rancher.upgrade.health_checks '[]'");

    // A trial whose userspace hangs (no panic, nothing on the console): the watchdog
    // resets the machine, which boots the good slot by itself; the chip's flag tells
    // that reset from a power cut.
    upgrade_and_reboot(&mut vm);
    let mut vm = boot_machine(
        &disk,
        Machine {
            reboots: true,
            ..Machine::default()
        },
    );
    vm.wait_for("watchdog: armed for this trial boot (i6300esb", BOOT);
    vm.wait_for(
        &format!("was rolled back: {}", WATCHDOG_RESET),
        TRIAL + BOOT,
    );
    vm.console_up(BOOT);
    assert_eq!(vm.sh("ros os version"), format!("v{v1} (slot a)"));
    // A normal boot (this one, after the trial's in the same console) arms no watchdog.
    let out = vm.output();
    let this_boot = &out[out.rfind(WATCHDOG_RESET).unwrap_or(0)..];
    assert!(!this_boot.contains("watchdog: armed"), "{}", vm.tail(40));
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());
}
