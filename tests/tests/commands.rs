//! Boot tests for `bootcmd` and `runcmd` under the real PID 1 (issues 20 and 22): the
//! string and argv forms, a program that is not there, the user Docker engine from
//! `runcmd` (`wait-for-docker`, `docker load`, `docker run`), and a `runcmd` that never
//! ends, which must not hold `poweroff`.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use boot_tests::{config_drive, test_image, BootOptions, TempDir, Vm};

const BOOT: Duration = Duration::from_secs(240);
const DOCKER_READY: Duration = Duration::from_secs(300);
/// `rancher.shutdown_timeout` in this test's config.
const SHUTDOWN_TIMEOUT: u64 = 10;
/// What PID 1 allows a whole shutdown beyond it (init's power::SHUTDOWN_MARGIN), plus
/// QEMU's own exit.
const SHUTDOWN_MARGIN: u64 = 30 + 10;

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn bootcmd_and_runcmd_run_with_the_consoles_tools_and_never_hold_a_poweroff() {
    let tmp = TempDir::new("commands");
    // The image for `docker run`, on a raw disk holding a tar of it (/dev/vdc).
    let bundle = tmp.path().join("bundle");
    fs::create_dir_all(&bundle).unwrap();
    test_image(
        tmp.path(),
        "ros-test/web:1",
        "hello\n",
        &bundle.join("web.tar"),
    );
    let archives = tmp.path().join("archives.tar");
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&archives)
        .arg("-C")
        .arg(&bundle)
        .arg("web.tar")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let user_data = format!(
        "#cloud-config\n\
         rancher:\n\
         \x20 shutdown_timeout: {SHUTDOWN_TIMEOUT}\n\
         bootcmd:\n\
         \x20 - echo BC-STRING-OK > /dev/console\n\
         \x20 - [sh, -c, \"echo BC-ARGV-$(basename $(readlink /bin/sleep)) > /dev/console\"]\n\
         runcmd:\n\
         \x20 - echo RC-STRING-OK > /dev/console\n\
         \x20 - [sh, -c, \"echo RC-ARGV-SH-OK > /dev/console\"]\n\
         \x20 - [sleep, \"1\"]\n\
         \x20 - [ros-no-such-program, x]\n\
         \x20 - mkdir -p /var/lib/rancher/preload/docker && tar -xf /dev/vdc -C /var/lib/rancher/preload/docker\n\
         \x20 - wait-for-docker 240 && docker load -i /var/lib/rancher/preload/docker/web.tar\n\
         \x20 - docker run --rm ros-test/web:1 /bin/busybox echo RC-DOCKER-RUN-OK > /dev/console 2>&1\n\
         \x20 - echo RC-BEFORE-SLEEP > /dev/console\n\
         \x20 - [sleep, infinity]\n\
         \x20 - echo RC-AFTER-SLEEP > /dev/console\n"
    );
    let mut qemu_args = config_drive(tmp.path(), "config-2", &user_data);
    qemu_args.extend([
        "-drive".to_string(),
        format!(
            "file={},if=virtio,format=raw,readonly=on",
            archives.display()
        ),
    ]);
    let mut vm = Vm::boot(&BootOptions {
        qemu_args,
        mem_mb: 768,
        ..Default::default()
    });
    // bootcmd: before the services, in PID 1's root, whose busybox has its applets.
    vm.wait_for("BC-STRING-OK", BOOT);
    vm.wait_for("BC-ARGV-busybox", BOOT);
    // runcmd starts at boot-complete, while the console comes up.
    let before_console = vm.cursor();
    vm.console_up(BOOT);
    vm.rewind(before_console);
    vm.wait_for("RC-STRING-OK", BOOT);
    vm.wait_for("RC-ARGV-SH-OK", BOOT);
    // A program that is not there: one line naming the entry; the next ones still run.
    let missing = vm.wait_for("ros-no-such-program: command not found in PATH", BOOT);
    assert!(
        missing.contains("cloud-init: runcmd `ros-no-such-program x`: "),
        "{}",
        vm.tail(20)
    );
    vm.wait_for("RC-DOCKER-RUN-OK", DOCKER_READY);
    vm.wait_for("RC-BEFORE-SLEEP", BOOT);
    // Where they ran, and what they said: the console's filesystem, the log.
    let log = vm.sh("cat /var/log/cloud-init.log");
    assert!(log.contains("Loaded image: ros-test/web:1"), "{log}");
    assert!(
        log.contains("cloud-init: runcmd[2]: [\"sleep\", \"1\"]"),
        "{log}"
    );
    // The never-ending one runs in the commands' cgroup, in a session of its own.
    let sleeper = vm.sh("cat /proc/1/root/sys/fs/cgroup/cloud-init/cgroup.procs | head -1");
    assert!(!sleeper.is_empty(), "nothing in the commands' cgroup");
    assert_eq!(
        vm.sh(&format!("awk '{{print $6}}' /proc/{sleeper}/stat")),
        sleeper,
        "not a session leader"
    );
    assert!(vm
        .sh("ros config get rancher.shutdown_timeout")
        .starts_with(&SHUTDOWN_TIMEOUT.to_string()));

    // `poweroff` with `sleep infinity` still running: the machine powers off, in time.
    let asked = Instant::now();
    vm.send("poweroff");
    vm.wait_for("ROS BOOT shutdown ", Duration::from_secs(60));
    let status = vm.wait_exit(Duration::from_secs(SHUTDOWN_TIMEOUT + SHUTDOWN_MARGIN));
    assert!(status.success(), "QEMU exit status {status:?}");
    eprintln!("poweroff took {:?} with runcmd sleeping", asked.elapsed());
    assert!(vm.output().contains("ros-init: poweroff"));
    // What came after it never ran (the console names it only as not run).
    let out = vm.output();
    assert!(
        !out.lines().any(|l| l.trim() == "RC-AFTER-SLEEP"),
        "{}",
        vm.tail(30)
    );
    assert!(
        out.contains("RC-AFTER-SLEEP > /dev/console`: not run: the machine is shutting down"),
        "{}",
        vm.tail(30)
    );
}
