//! Boot tests for issue 4: services as containers under PID 1's supervisor, driven
//! with `ros service` from the console: what needs the image and its console container
//! (paths as the console sees them, its own /tmp, the cgroups). The supervisor's own
//! behaviour (restarts and their count, a crash loop's backoff, stop and logs, a partly
//! broken file, unknown services, a killed containerd) is checked in seconds by the
//! process tier, init/tests/subreaper.rs.

use std::time::Duration;

use boot_tests::{BootOptions, Vm};

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

    // A service added from the console runs beside the console.
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
