//! Boot test for the image and `ros install` (issue 6): boot the image (`ros.img`)
//! through its own bootloader, install from it onto a blank disk, then boot QEMU from
//! that disk alone (its own bootloader, kernel, initrd and root image), reach the console
//! with the installed cloud-config applied, and install again from the installed system.

use std::time::Duration;

use boot_tests::{blank_qcow2, BootOptions, TempDir, Vm};

const BOOT: Duration = Duration::from_secs(300);

/// The rancher user's password in the installed cloud-config: an installed disk has no
/// automatic login.
const PASSWORD: &str = "t3st-Pw";

/// The target disk's first 64 KiB are still all zero.
const UNTOUCHED: &str = "[ \"$(head -c 65536 /dev/vdb | tr -d '\\000' | wc -c)\" = 0 ]";

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn ros_install_makes_a_disk_that_boots_by_itself() {
    let tmp = TempDir::new("install");
    let target = tmp.path().join("target.qcow2");
    blank_qcow2(&target, "1G");

    // The image as a machine boots it: SeaBIOS, the MBR, syslinux on the FAT boot
    // partition, the kernel line it holds (so the user engine runs too).
    let mut vm = Vm::boot(&BootOptions {
        bios: true,
        qemu_args: vec![
            "-drive".into(),
            format!("file={},if=virtio,format=qcow2", target.display()),
        ],
        ..Default::default()
    });
    vm.console_up(BOOT);
    let cmdline = vm.sh("cat /proc/cmdline");
    assert!(cmdline.contains("root=PARTUUID=524f5330-02"), "{cmdline}");
    let root = vm.sh("awk '$2==\"/\" {print $1, $3}' /proc/1/mounts");
    assert_eq!(root, "/dev/vda2 squashfs");
    vm.sh(&format!(
        "printf 'hostname: installed\\nrancher:\\n  password: {PASSWORD}\\n  environment:\\n    \
         FROM_INSTALL: \"yes\"\\n' > /tmp/cc.yml"
    ));

    // A broken cloud-config: named with its line, exit 3, nothing written.
    vm.sh("printf 'hostname: ok\\nrancher:\\n  shutdown_timeout: soon\\n' > /tmp/bad.yml");
    let (out, status) = vm.run(
        "ros install -d /dev/vdb -c /tmp/bad.yml -f 2>&1",
        Duration::from_secs(60),
    );
    assert_eq!(status, 3, "{out}");
    assert!(
        out.contains("/tmp/bad.yml:3:") && out.contains("rancher.shutdown_timeout"),
        "{out}"
    );
    vm.sh(UNTOUCHED);
    // Not confirmed: nothing written.
    let (out, status) = vm.run(
        "echo n | ros install -d /dev/vdb -c /tmp/cc.yml 2>&1",
        Duration::from_secs(60),
    );
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("will be erased"), "{out}");
    vm.sh(UNTOUCHED);
    // The disk the system runs from is refused.
    let (out, status) = vm.run(
        "ros install -d /dev/vda -c /tmp/cc.yml -f 2>&1",
        Duration::from_secs(60),
    );
    assert_ne!(status, 0, "{out}");
    assert!(out.contains("in use"), "{out}");
    // Also when named through a link (as /dev/disk/by-id/... names it; in /dev, which
    // the console shares with the host).
    let (out, status) = vm.run(
        "ln -sf vda /dev/boot-disk && ros install -d /dev/boot-disk -c /tmp/cc.yml -f 2>&1",
        Duration::from_secs(60),
    );
    assert_ne!(status, 0, "{out}");
    assert!(out.contains("in use"), "{out}");

    let (out, status) = vm.run(
        "ros install -d /dev/vdb -c /tmp/cc.yml -f --no-reboot \
         -a rancher.environment.INSTALL_ARG=passed 2>&1",
        Duration::from_secs(600),
    );
    assert_eq!(status, 0, "{out}\n{}", vm.tail(30));
    assert!(out.contains("installed to /dev/vdb"), "{out}");
    // The kernel and initrd come from the image's boot partition, mounted for the copy.
    assert!(
        out.contains("copying /run/ros/install-boot-") && out.contains("/boot/initrd"),
        "{out}"
    );
    assert_eq!(vm.sh("grep -c install-boot /proc/1/mounts || true"), "0");
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());

    // The installed disk alone: SeaBIOS -> extlinux -> our kernel and initrd -> the root
    // image on the RANCHER_STATE partition, which is also the state disk.
    let again = tmp.path().join("again.qcow2");
    blank_qcow2(&again, "1G");
    let mut vm = Vm::boot(&BootOptions {
        boot_disk: Some(target.clone()),
        qemu_args: vec![
            "-drive".into(),
            format!("file={},if=virtio,format=qcow2", again.display()),
        ],
        ..Default::default()
    });
    // No root shell for whoever reaches the serial console: a login prompt, and no
    // automatic login on the kernel line `ros install` wrote.
    let before = vm.login_as_root("rancher", PASSWORD, BOOT);
    // (The banner is /etc/issue, the same words as the automatic login's: what tells
    // them apart is the prompt that follows.)
    assert!(
        !before.contains("[root@"),
        "a root shell before anyone logged in:\n{before}"
    );
    assert!(before.contains("installed login: "), "no login prompt");
    assert!(!vm.sh("cat /proc/cmdline").contains("autologin"));
    assert_eq!(vm.sh("hostname"), "installed");
    assert_eq!(
        vm.sh("ros config get rancher.environment.FROM_INSTALL"),
        "yes"
    );
    assert_eq!(
        vm.sh("ros config get rancher.environment.INSTALL_ARG"),
        "passed"
    );
    // The root partition named by the disk signature ros install wrote: another volume
    // labelled RANCHER_STATE cannot stand in for it.
    let cmdline = vm.sh("cat /proc/cmdline");
    let signature = vm.sh("od -An -tx4 -j440 -N4 /dev/vda | tr -d ' '");
    assert_eq!(signature.len(), 8, "{signature}");
    assert!(
        cmdline.contains(&format!(
            " root=PARTUUID={signature}-01 rootimg=/boot/slot-a/root.img ros.slot=a"
        )),
        "{cmdline} (disk signature {signature})"
    );
    let mounts = vm.sh("awk '$2==\"/\" || $2==\"/mnt/state\" {print $1, $2, $3}' /proc/1/mounts");
    assert!(mounts.contains("/dev/loop0 / squashfs"), "{mounts}");
    assert!(mounts.contains("/dev/vda1 /mnt/state ext4"), "{mounts}");
    assert_eq!(
        vm.sh("stat -c %a /var/lib/rancher/conf/cloud-config.yml"),
        "600"
    );
    vm.until("ros service ps | grep -q '^console .*Up '");

    // An installed system installs itself: the kernel and initrd from its /boot, beside
    // the root image its loop device reads.
    vm.sh("printf 'hostname: again\\n' > /tmp/again.yml");
    let (out, status) = vm.run(
        "ros install -d /dev/vdb -c /tmp/again.yml -f --no-reboot 2>&1",
        Duration::from_secs(600),
    );
    assert_eq!(status, 0, "{out}\n{}", vm.tail(30));
    assert!(
        out.contains("copying /run/ros/boot-disk/boot/slot-a/vmlinuz")
            && out.contains("installed to /dev/vdb"),
        "{out}"
    );
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(180)).success());
}
