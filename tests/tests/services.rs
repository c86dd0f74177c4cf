//! Boot tests for issue 4: services as containers under PID 1's supervisor, driven
//! with `ros service` from the console.

use std::time::Duration;

use boot_tests::{BootOptions, Vm, SYSTEM_CONTAINERD_PID};

const BOOT: Duration = Duration::from_secs(240);
const STEP: Duration = Duration::from_secs(60);

/// Type a YAML file into the guest, line by line (single-quoted: no expansion).
fn write_file(vm: &mut Vm, path: &str, lines: &[&str]) {
    let quoted: Vec<String> = lines.iter().map(|l| format!("'{l}'")).collect();
    vm.sh(&format!("printf '%s\\n' {} >{path}", quoted.join(" ")));
}

/// The RESTARTS column of `ros service ps` for `name`.
fn restarts(vm: &mut Vm, name: &str) -> String {
    vm.sh(&format!(
        "ros service ps | awk '$1==\"{name}\"{{print $NF}}'"
    ))
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn services_are_supervised_and_managed_live() {
    let mut vm = Vm::boot(&BootOptions::default());
    vm.console_up(BOOT);

    let ps = vm.sh("ros service ps");
    assert!(
        ps.lines()
            .any(|l| l.starts_with("console") && l.contains("Up ")),
        "{ps}"
    );

    // A service from a YAML file: enable records it and PID 1 converges live; `up` is
    // then a no-op that still succeeds.
    write_file(
        &mut vm,
        "/var/lib/rancher/conf/ticker.yml",
        &[
            "ticker:",
            "  image: ros/console:0.1.0",
            "  command: [\"/bin/sh\", \"-c\", \"i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done\"]",
            "  restart: always",
        ],
    );
    vm.sh("ros service enable /var/lib/rancher/conf/ticker.yml");
    vm.sh("ros service up ticker");
    let list = vm.sh("ros service list");
    assert!(
        list.contains("ticker") || list.contains("/var/lib/rancher/conf/ticker.yml"),
        "{list}"
    );
    vm.until("ros service ps | grep -q '^ticker .*Up '");
    vm.until("ros service logs --lines 2 ticker | grep -q '^tick-[0-9]'");
    assert_eq!(restarts(&mut vm, "ticker"), "0");

    // Kill its process from the console: PID 1 restarts it and counts the restart.
    vm.sh("kill -9 $(head -1 /proc/1/root/sys/fs/cgroup/ros/ticker/cgroup.procs)");
    vm.until("[ \"$(ros service ps | awk '$1==\"ticker\"{print $NF}')\" = 1 ]");
    vm.until("ros service ps | grep -q '^ticker .*Up '");

    // A crash-looping service backs off: 1 s, 2 s, 4 s between restarts (PID 1 says so).
    write_file(
        &mut vm,
        "/var/lib/rancher/conf/crasher.yml",
        &[
            "crasher:",
            "  image: ros/console:0.1.0",
            "  command: [\"/bin/sh\", \"-c\", \"echo crashing; exit 1\"]",
            "  restart: always",
        ],
    );
    let mark = vm.cursor();
    vm.sh("ros service enable /var/lib/rancher/conf/crasher.yml");
    // The first exit may be reported while `enable` is still printing.
    vm.rewind(mark);
    for delay in ["1s", "2s", "4s"] {
        vm.wait_for(
            &format!("service crasher: exited (1), restarting in {delay}"),
            STEP,
        );
    }
    vm.sh("ros service stop crasher");
    vm.until("ros service ps | grep -q '^crasher .*Exited'");
    let log = vm.sh("ros service logs crasher");
    assert!(log.contains("crashing"), "{log}");

    // One catalog for PID 1 and `ros service`: a file whose good service runs, then gets
    // a broken one beside it. The good one stays defined, listed and Up; the broken one is
    // named with its line and left out, alone.
    write_file(
        &mut vm,
        "/var/lib/rancher/conf/bars.yml",
        &[
            "bars-good:",
            "  image: ros/console:0.1.0",
            "  command: [\"sleep\", \"1000\"]",
        ],
    );
    vm.sh("ros service enable /var/lib/rancher/conf/bars.yml");
    vm.until("ros service ps | grep -q '^bars-good .*Up '");
    vm.sh("printf 'bars-bad:\\n  image: ros/console:0.1.0\\n  restart: sometimes\\n' >> /var/lib/rancher/conf/bars.yml");
    let mark = vm.cursor();
    vm.sh("ros service up bars-good");
    vm.rewind(mark);
    vm.wait_for("bars.yml:6:12: bars-bad.restart", STEP);
    assert!(vm.sh("ros service list").contains("enabled  bars-good"));
    vm.until("ros service ps | grep -q '^bars-good .*Up '");
    // A file PID 1 cannot see (the console's /tmp is its own): refused, saying where to
    // put it, instead of "enabled" and a boot log saying it does not exist.
    write_file(
        &mut vm,
        "/tmp/own.yml",
        &["own:", "  image: ros/console:0.1.0"],
    );
    let (out, status) = vm.run("ros service enable /tmp/own.yml 2>&1", STEP);
    assert_eq!(status, 5, "{out}");
    assert!(out.contains("PID 1 does not see /tmp/own.yml"), "{out}");

    // Stop, then disable: it is gone without a reboot.
    vm.sh("ros service stop ticker");
    vm.until("ros service ps | grep -q '^ticker .*Exited'");
    vm.sh("ros service disable ticker");
    vm.until("! ros service ps | grep -q '^ticker '");

    // Unknown services are clear errors with exit code 5.
    let (out, status) = vm.run("ros service start no-such-service", STEP);
    assert_eq!(status, 5, "{out}");

    // SIGKILL the system containerd: PID 1 restarts it, re-attaches, and the console
    // keeps its PID (nothing is started twice).
    let console_pid = vm.sh("cat /proc/1/root/sys/fs/cgroup/ros/console/cgroup.procs | head -1");
    let old = vm.sh(&format!("echo {SYSTEM_CONTAINERD_PID}"));
    vm.sh(&format!("kill -9 {old}"));
    vm.until(&format!(
        "p={SYSTEM_CONTAINERD_PID}; [ -n \"$p\" ] && [ \"$p\" != {old} ]"
    ));
    vm.until("ros service ps | grep -q '^console .*Up '");
    assert_eq!(
        vm.sh("cat /proc/1/root/sys/fs/cgroup/ros/console/cgroup.procs | head -1"),
        console_pid
    );
    assert_eq!(restarts(&mut vm, "console"), "0");
    // And new work still goes through the restarted containerd.
    write_file(
        &mut vm,
        "/var/lib/rancher/conf/sleeper.yml",
        &[
            "sleeper:",
            "  image: ros/console:0.1.0",
            "  command: [\"sleep\", \"1000\"]",
        ],
    );
    vm.sh("ros service enable /var/lib/rancher/conf/sleeper.yml");
    vm.until("ros service ps | grep -q '^sleeper .*Up '");
}
