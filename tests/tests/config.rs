//! Boot tests for issue 3: cloud-config from a config drive and the kernel command
//! line applied at boot, and a broken config that must not stop the boot.

use std::time::Duration;

use boot_tests::{config_drive, config_drive_fat, BootOptions, TempDir, Vm};

const BOOT: Duration = Duration::from_secs(240);

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBootTestKeyOnlyNotARealKeyAtAll0000000 test@ros";

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn a_config_drive_is_applied_at_boot() {
    let tmp = TempDir::new("cfgdrive");
    let user_data = format!(
        "#cloud-config\n\
         hostname: drive-host\n\
         ssh_authorized_keys:\n  - {KEY}\n\
         write_files:\n\
         \x20 - path: /etc/ros-test/written\n\
         \x20   permissions: \"0640\"\n\
         \x20   encoding: b64\n\
         \x20   content: aGVsbG8gZnJvbSB0aGUgY29uZmlnIGRyaXZl\n\
         \x20 - path: /etc/inside-console\n\
         \x20   container: console\n\
         \x20   content: written into the console container\n\
         rancher:\n\
         \x20 sysctl:\n\
         \x20   net.ipv4.ip_forward: 1\n\
         \x20 modules: [dummy]\n\
         \x20 debug: true\n"
    );
    let mut vm = Vm::boot(&BootOptions {
        qemu_args: config_drive(tmp.path(), "config-2", &user_data),
        ..Default::default()
    });
    vm.console_up(BOOT);
    assert_eq!(vm.sh("hostname"), "drive-host");
    // rancher.debug from a cloud-config (not the kernel line) turns PID 1's debug lines on.
    assert!(
        vm.output().contains("debug logging on (rancher.debug)"),
        "{}",
        vm.tail(40)
    );
    assert_eq!(vm.sh("ros config get hostname"), "drive-host");
    let keys = vm.sh("cat /home/rancher/.ssh/authorized_keys");
    assert!(keys.contains(KEY), "{keys}");
    assert_eq!(
        vm.sh("stat -c '%a %u' /home/rancher/.ssh/authorized_keys"),
        "600 1100"
    );
    assert_eq!(
        vm.sh("cat /proc/1/root/etc/ros-test/written"),
        "hello from the config drive"
    );
    assert_eq!(
        vm.sh("stat -c '%a' /proc/1/root/etc/ros-test/written"),
        "640"
    );
    assert_eq!(vm.sh("cat /proc/sys/net/ipv4/ip_forward"), "1");
    // `container: console` entries land in the console's own filesystem, not the host's.
    assert_eq!(
        vm.sh("cat /etc/inside-console"),
        "written into the console container"
    );
    let (_, status) = vm.run(
        "test -e /proc/1/root/etc/inside-console",
        Duration::from_secs(30),
    );
    assert_ne!(status, 0, "a container file was written on the host");
    vm.sh("grep -q '^dummy ' /proc/modules");
    // What the datasource delivered was saved as a drop-in, readable by root only.
    let saved = vm.sh("ls /var/lib/rancher/conf/cloud-config.d/");
    assert!(!saved.is_empty(), "no drop-in saved");
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn kernel_command_line_keys_are_applied() {
    let mut vm = Vm::boot(&BootOptions {
        append: "rancher.modules=[dummy] rancher.environment.GREETING=from-cmdline".into(),
        // This boot also checks the warning for a machine without a hardware RNG.
        rng: false,
        ..Default::default()
    });
    let start = vm.cursor();
    vm.console_up(BOOT);
    // Said once the services are up (it may come before or after the console's banner).
    vm.rewind(start);
    vm.wait_for(
        "random number generator is still not initialised",
        Duration::from_secs(30),
    );
    vm.sh("grep -q '^dummy ' /proc/modules");
    assert_eq!(
        vm.sh("ros config get rancher.environment.GREETING"),
        "from-cmdline"
    );
    // Set a value; it is validated and written to the user config, 0600.
    vm.sh("ros config set rancher.shutdown_timeout 30");
    assert_eq!(vm.sh("ros config get rancher.shutdown_timeout"), "30");
    assert_eq!(
        vm.sh("stat -c '%a' /var/lib/rancher/conf/cloud-config.yml"),
        "600"
    );
    let (out, status) = vm.run(
        "ros config set rancher.shutdown_timeout soon",
        Duration::from_secs(30),
    );
    assert_eq!(status, 3, "{out}");
    assert_eq!(vm.sh("ros config get rancher.shutdown_timeout"), "30");
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn a_broken_config_still_boots_and_says_where() {
    let tmp = TempDir::new("broken");
    // Line 3 has a wrong type, line 5 an unknown rancher key; line 6 still applies.
    let user_data = "#cloud-config\n\
                     rancher:\n\
                     \x20 shutdown_timeout: soon\n\
                     \x20 modules: [dummy]\n\
                     \x20 netwrok: {}\n\
                     hostname: still-applied\n";
    let mut vm = Vm::boot(&BootOptions {
        // FAT, as NoCloud drives often are (the ISO case is the test above).
        qemu_args: config_drive_fat(tmp.path(), "cidata", user_data),
        ..Default::default()
    });
    let start = vm.cursor();
    let errors = vm.wait_for("ROS BOOT boot-complete ", BOOT);
    assert!(
        errors.contains(":3:") && errors.contains("rancher.shutdown_timeout"),
        "no file:line error for the wrong type on the console:\n{errors}"
    );
    assert!(
        errors.contains("netwrok"),
        "unknown key not reported:\n{errors}"
    );
    vm.rewind(start);
    vm.wait_for("rOS console on /dev/ttyS0", Duration::from_secs(60));
    vm.sh("true");
    assert_eq!(vm.sh("hostname"), "still-applied");
    vm.sh("grep -q '^dummy ' /proc/modules");
    let log = vm.sh("cat /var/log/ros/config.log");
    assert!(log.contains("rancher.shutdown_timeout"), "{log}");
}
