//! Boot tests for the state disk (issue 6): a blank disk is formatted on first boot,
//! and config and files written on it survive a reboot; it is mounted nosuid,nodev and
//! left clean by a reboot; two volumes with its label are refused, and so is a disk that only
//! looks blank at its start (issue 20).

use std::time::Duration;

use boot_tests::{blank_qcow2, BootOptions, TempDir, Vm};

const BOOT: Duration = Duration::from_secs(240);

const AUTOFORMAT: &str = "rancher.state.autoformat=[/dev/vdb]";

/// Boot with `append` on the kernel line and `drives` (QEMU `-drive` options) as virtio
/// disks /dev/vdb, /dev/vdc..., up to the console.
fn boot_with(append: &str, drives: &[String]) -> Vm {
    let mut vm = Vm::boot(&BootOptions {
        append: append.into(),
        qemu_args: drives
            .iter()
            .flat_map(|d| ["-drive".to_string(), format!("{d},if=virtio")])
            .collect(),
        ..Default::default()
    });
    vm.console_up(BOOT);
    vm
}

/// The boot refused the state disks it was given (the console says `why`) and runs
/// from RAM; then power it off.
fn refused_and_ran_from_ram(mut vm: Vm, why: &str) {
    assert!(
        vm.output().contains(why) && vm.output().contains("running from RAM"),
        "{}",
        vm.tail(40)
    );
    assert_eq!(vm.sh("grep -c ' /mnt/state ' /proc/1/mounts || true"), "0");
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn a_blank_disk_becomes_the_state_and_survives_a_reboot() {
    let tmp = TempDir::new("state");
    let path = tmp.path().join("state.qcow2");
    blank_qcow2(&path, "256M");
    let disk = format!("file={},format=qcow2", path.display());

    let mut vm = boot_with(AUTOFORMAT, std::slice::from_ref(&disk));
    assert!(vm.output().contains("ROS BOOT state ") && vm.output().contains(" /dev/vdb"));
    let mounts = vm.sh("awk '$2==\"/mnt/state\"{print $1, $3}' /proc/1/mounts");
    assert_eq!(mounts, "/dev/vdb ext4", "{}", vm.sh("cat /proc/1/mounts"));
    // No set-user-ID programs or device nodes from the state disk.
    let options = vm.sh("awk '$2==\"/mnt/state\"{print $4}' /proc/1/mounts");
    assert!(
        options.split(',').any(|o| o == "nosuid") && options.split(',').any(|o| o == "nodev"),
        "{options}"
    );
    vm.sh("ros config set rancher.shutdown_timeout 42");
    vm.sh("mkdir -p /home/rancher && echo kept >/home/rancher/note");
    vm.send("reboot");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());

    // Second boot on the same disk: found by label, not formatted again.
    let mut vm = boot_with(AUTOFORMAT, std::slice::from_ref(&disk));
    assert!(!vm.output().contains("state: formatted"), "formatted twice");
    assert_eq!(vm.sh("ros config get rancher.shutdown_timeout"), "42");
    assert_eq!(vm.sh("cat /home/rancher/note"), "kept");
    // The reboot left the filesystem clean (read-only before the power went): no journal
    // to replay at this mount.
    let ext4 = vm.sh("dmesg | grep 'EXT4-fs (vdb)'");
    assert!(
        ext4.contains("mounted filesystem") && !ext4.contains("recovery complete"),
        "{ext4}"
    );
    // The system containerd's images persist too: nothing is imported again.
    assert!(
        vm.output().contains("imported=0 present="),
        "images were imported again"
    );
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());

    // A copy of the state disk attached beside it: two volumes labelled RANCHER_STATE,
    // neither on the disk the root came from. Neither is used (either could hold a
    // runcmd): the boot says so and runs from RAM.
    let copy = tmp.path().join("copy.qcow2");
    std::fs::copy(&path, &copy).unwrap();
    let copy = format!("file={},format=qcow2", copy.display());
    let vm = boot_with("", &[disk, copy]);
    refused_and_ran_from_ram(vm, "LABEL=RANCHER_STATE is on 2 devices");

    // A disk whose first 64 KiB are zero, but which ends in a GPT backup header (its
    // primary header wiped), holds data: autoformat refuses it and writes nothing.
    let gpt = tmp.path().join("gpt.img");
    let size = 64 << 20;
    let mut bytes = vec![0u8; size];
    bytes[size - 512..size - 504].copy_from_slice(b"EFI PART");
    std::fs::write(&gpt, &bytes).unwrap();
    let vm = boot_with(AUTOFORMAT, &[format!("file={},format=raw", gpt.display())]);
    refused_and_ran_from_ram(vm, "is not blank (GPT backup header");
    assert!(
        std::fs::read(&gpt).unwrap() == bytes,
        "the refused disk was written"
    );
}
