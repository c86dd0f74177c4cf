//! Boot tests for issue 5: the system services (udev-cold, udev, syslog, network, ntp,
//! acpid, console with getty and ssh) as containers built from Debian packages.
//! Two boots: DHCP on eth0 with syslog, NTP, hotplug and the power button; a static address on
//! a second NIC with ssh through QEMU's port forward.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use boot_tests::{config_drive, monitor, monitor_args, BootOptions, TempDir, Vm, SYSTEM_SERVICES};

const BOOT: Duration = Duration::from_secs(240);
const STEP: Duration = Duration::from_secs(60);

/// How far ahead of the host's clock the fake NTP server's time is.
const NTP_OFFSET: Duration = Duration::from_secs(300);

/// A minimal SNTP server (RFC 4330) on 127.0.0.1:123, where QEMU's user network takes
/// the guest's 10.0.2.2:123, answering with the host's clock plus `NTP_OFFSET`: enough for
/// chronyd to select it and step the guest's clock. Serves until the test process exits.
fn fake_ntp_server() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:123")
        .expect("binding 127.0.0.1:123 for the fake NTP server (root, and no ntpd running?)");
    std::thread::spawn(move || {
        let mut req = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut req) {
            if n < 48 {
                continue;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                + NTP_OFFSET;
            // NTP timestamps: seconds since 1900, then a 32-bit binary fraction.
            let secs = (now.as_secs() + 2_208_988_800) as u32;
            let frac = ((u64::from(now.subsec_nanos()) << 32) / 1_000_000_000) as u32;
            let mut ts = [0u8; 8];
            ts[..4].copy_from_slice(&secs.to_be_bytes());
            ts[4..].copy_from_slice(&frac.to_be_bytes());
            let mut reply = [0u8; 48];
            // Leap 0, version 4, mode 4 (server); stratum 2; the client's poll; precision 2^-20.
            reply[..4].copy_from_slice(&[0x24, 2, req[2], 0xEC]);
            reply[12..16].copy_from_slice(b"LOCL");
            reply[16..24].copy_from_slice(&ts); // reference
            reply[24..32].copy_from_slice(&req[40..48]); // origin: the client's transmit
            reply[32..40].copy_from_slice(&ts); // receive
            reply[40..48].copy_from_slice(&ts); // transmit
            let _ = sock.send_to(&reply, peer);
        }
    });
}

/// A port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// An ed25519 key pair in `dir/name`; returns the public key line.
fn keygen(dir: &Path, name: &str) -> String {
    let key = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("running ssh-keygen (make deps installs openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
    std::fs::read_to_string(key.with_extension("pub"))
        .expect("reading the public key")
        .trim()
        .to_string()
}

/// `ssh -p port rancher@127.0.0.1 cmd` with `key`: (stdout + stderr, success).
fn ssh(key: &Path, port: u16, cmd: &str) -> (String, bool) {
    let out = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-p",
            &port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
            "rancher@127.0.0.1",
            cmd,
        ])
        .output()
        .expect("running ssh (make deps installs openssh-client)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn system_services_dhcp_syslog_hotplug_and_power_button() {
    let tmp = TempDir::new("sysvc");
    let mon = tmp.path().join("monitor.sock");
    fake_ntp_server();
    let mut qemu_args = config_drive(
        tmp.path(),
        "config-2",
        "#cloud-config\nrancher:\n  environment:\n    NTP_SERVERS: 10.0.2.2\n",
    );
    qemu_args.extend(monitor_args(&mon));
    let mut vm = Vm::boot(&BootOptions {
        qemu_args,
        ..Default::default()
    });
    vm.console_up(BOOT);
    let ps = vm.all_services_up();
    for s in SYSTEM_SERVICES {
        assert!(
            ps.lines()
                .any(|l| l.starts_with(&format!("{s} ")) && l.contains("Up ")),
            "{s} is not Up:\n{ps}"
        );
    }

    // network: a DHCP lease from QEMU's user network, its default route and its DNS.
    vm.until("ip -4 -o addr show eth0 | grep -q ' 10.0.2.15/24 '");
    assert!(
        vm.sh("ip route show default")
            .contains("default via 10.0.2.2 dev eth0"),
        "{}",
        vm.sh("ip route")
    );
    vm.until("grep -q '^nameserver 10.0.2.3$' /etc/resolv.conf");

    // ntp: chronyd takes its server from rancher.environment, and steps the guest's clock
    // to the server's time (which is ahead of the host's).
    vm.until("ros service logs ntp | grep -q 'System clock was stepped'");
    let guest: u64 = vm.sh("date +%s").trim().parse().expect("date +%s");
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    assert!(
        guest >= host + NTP_OFFSET.as_secs() - 60,
        "guest clock {guest} is not ahead of the host's {host}:\n{}",
        vm.sh("ros service logs ntp")
    );

    // syslog: the host's /dev/log links to the socket in /run/syslog, the only host
    // directory syslog writes besides /var/log (none of the host's /dev is bound into it);
    // messages land in /var/log/messages, and so does the kernel log.
    assert_eq!(vm.sh("readlink /proc/1/root/dev/log"), "/run/syslog/log");
    vm.sh("test -S /run/syslog/log");
    let syslog_dev = vm.sh("ls /proc/$(pidof syslogd)/root/dev");
    assert!(
        !syslog_dev.contains("vda") && !syslog_dev.contains("ttyS0"),
        "the host's /dev is in the syslog container: {syslog_dev}"
    );
    vm.sh("logger -t boot-test hello-from-test");
    vm.until("grep -q 'boot-test: hello-from-test' /var/log/messages");
    vm.until("grep -q ' kernel: ' /var/log/messages");

    // The user engine serves on a diskless boot too: its nat table needs libcrc32c, whose
    // crc32c no state disk's ext4 has loaded here (dockerd exits without the table).
    vm.until_within("docker info >/dev/null 2>&1", Duration::from_secs(180));
    vm.sh("grep -q '^iptable_nat ' /proc/modules");

    // udev: coldplug loaded the power button's modules; a disk hot-added through the
    // monitor gets its node and udev's by-id link.
    vm.sh("grep -q '^evdev ' /proc/modules");
    let disk = tmp.path().join("hot.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(8 << 20))
        .expect("creating the hotplug disk");
    let out = monitor(
        &mon,
        &format!(
            "drive_add 0 if=none,id=d1,format=raw,file={}",
            disk.display()
        ),
    );
    assert!(out.contains("OK"), "drive_add: {out}");
    monitor(
        &mon,
        "device_add virtio-blk-pci,drive=d1,id=dev1,serial=rostest",
    );
    vm.until("[ -L /dev/disk/by-id/virtio-rostest ]");
    let node = vm.sh("readlink -f /dev/disk/by-id/virtio-rostest");
    vm.sh(&format!("[ -b {node} ]"));

    // acpid: not privileged. No capabilities, and of the host's devices only the input
    // devices (the power button's event node among them).
    let acpid = vm.sh("pidof acpid");
    assert_eq!(
        vm.sh(&format!("awk '/^CapEff/{{print $2}}' /proc/{acpid}/status")),
        "0000000000000000"
    );
    let dev = vm.sh(&format!(
        "ls /proc/{acpid}/root/dev /proc/{acpid}/root/dev/input"
    ));
    assert!(
        dev.contains("event0") && !dev.contains("vda") && !dev.contains("ttyS0"),
        "acpid's /dev: {dev}"
    );
    // The ACPI power button is an orderly shutdown, and QEMU exits cleanly.
    let t = Instant::now();
    monitor(&mon, "system_powerdown");
    vm.wait_for("ROS BOOT shutdown ", STEP);
    vm.wait_for("poweroff", STEP);
    let status = vm.wait_exit(STEP);
    assert!(status.success(), "QEMU exited with {status}");
    assert!(t.elapsed() < STEP);
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn static_address_on_a_second_nic_and_ssh_with_the_configured_key() {
    let tmp = TempDir::new("sysvc-ssh");
    let key = keygen(tmp.path(), "good");
    keygen(tmp.path(), "wrong");
    let port = free_port();
    let user_data = format!(
        "#cloud-config\n\
         ssh_authorized_keys:\n  - {key}\n\
         rancher:\n\
         \x20 network:\n\
         \x20   dns:\n\
         \x20     nameservers: [10.0.3.3, 192.0.2.53]\n\
         \x20     search: [example.test]\n\
         \x20   interfaces:\n\
         \x20     eth1:\n\
         \x20       dhcp: false\n\
         \x20       address: 10.0.3.15/24\n\
         \x20       mtu: 1400\n"
    );
    let mut qemu_args = config_drive(tmp.path(), "config-2", &user_data);
    qemu_args.extend([
        "-netdev".to_string(),
        format!("user,id=n1,net=10.0.3.0/24,hostfwd=tcp:127.0.0.1:{port}-10.0.3.15:22"),
        "-device".to_string(),
        "virtio-net-pci,netdev=n1".to_string(),
    ]);
    let mut vm = Vm::boot(&BootOptions {
        qemu_args,
        ..Default::default()
    });
    vm.console_up(BOOT);
    vm.all_services_up();

    // Exactly the configured address and MTU on eth1; eth0 still has its DHCP lease.
    vm.until("ip -4 -o addr show eth1 | grep -q ' 10.0.3.15/24 '");
    assert_eq!(
        vm.sh("ip -4 -o addr show eth1 | awk '{print $4}'"),
        "10.0.3.15/24"
    );
    assert!(vm.sh("ip link show eth1").contains("mtu 1400"));
    vm.until("ip -4 -o addr show eth0 | grep -q ' 10.0.2.15/24 '");
    // The configured name servers win over DHCP's.
    vm.until("grep -q '^nameserver 10.0.3.3$' /etc/resolv.conf");
    let resolv = vm.sh("cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 192.0.2.53"), "{resolv}");
    assert!(resolv.contains("search example.test"), "{resolv}");
    assert!(!resolv.contains("10.0.2.3"), "{resolv}");

    // ssh as rancher with the key from cloud-config; sudo for `ros` (its socket is root's).
    let good = tmp.path().join("good");
    vm.until("netstat -ltn | grep -q ':22 '");
    let (out, ok) = ssh(&good, port, "id -un && sudo ros service ps");
    assert!(
        ok,
        "ssh with the configured key failed: {out}\n{}",
        vm.tail(30)
    );
    assert!(out.starts_with("rancher\n"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("console ") && l.contains("Up ")),
        "{out}"
    );
    let (out, ok) = ssh(&tmp.path().join("wrong"), port, "true");
    assert!(!ok, "a key not in cloud-config was accepted: {out}");
    assert!(out.contains("Permission denied"), "{out}");
    // Host keys are generated once, kept with rancher's state.
    vm.sh("test -s /var/lib/rancher/ssh/dropbear_ed25519_host_key");

    vm.send("poweroff");
    vm.wait_for("ROS BOOT shutdown ", STEP);
    vm.wait_for("poweroff", STEP);
    assert!(vm.wait_exit(STEP).success());
}
