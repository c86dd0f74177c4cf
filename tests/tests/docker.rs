//! Boot tests for issue 6: the user Docker engine in its system container, isolated from
//! the system runtime, with images that persist on the state disk and a preload directory.
//! Two boots on one state disk; the test's image archives reach the guest on a raw disk
//! holding a tar of them.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use boot_tests::{blank_qcow2, test_image, BootOptions, TempDir, Vm};

const BOOT: Duration = Duration::from_secs(240);
const DOCKER_READY: Duration = Duration::from_secs(180);

/// The system services that must stay Up whatever the user does to Docker.
const SYSTEM: [&str; 7] = [
    "udev", "syslog", "network", "ntp", "acpid", "console", "docker",
];

fn boot(state: &Path, archives: &Path) -> Vm {
    let mut vm = Vm::boot(&BootOptions {
        // A password on the kernel line: user containers must not see it.
        append: "rancher.state.autoformat=[/dev/vdb] rancher.password=engine-line-secret".into(),
        qemu_args: vec![
            "-drive".into(),
            format!("file={},if=virtio,format=qcow2", state.display()),
            "-drive".into(),
            format!(
                "file={},if=virtio,format=raw,readonly=on",
                archives.display()
            ),
        ],
        ..Default::default()
    });
    vm.console_up(BOOT);
    vm.until_within("docker version >/dev/null 2>&1", DOCKER_READY);
    vm
}

/// Every system service Up in `ros service ps`; returns the table.
fn system_services_up(vm: &mut Vm) -> String {
    let cond: Vec<String> = SYSTEM
        .iter()
        .map(|s| format!("ros service ps | grep -q '^{s} .*Up '"))
        .collect();
    vm.until(&cond.join(" && "));
    vm.sh("ros service ps")
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn user_docker_runs_publishes_persists_preloads_and_cannot_touch_the_system() {
    let tmp = TempDir::new("docker");
    let state = tmp.path().join("state.qcow2");
    blank_qcow2(&state, "1G");
    let bundle = tmp.path().join("bundle");
    fs::create_dir_all(&bundle).unwrap();
    test_image(
        tmp.path(),
        "ros-test/web:1",
        "hello from rOS docker\n",
        &bundle.join("web.tar"),
    );
    test_image(
        tmp.path(),
        "ros-test/preloaded:1",
        "preloaded\n",
        &bundle.join("preload.tar"),
    );
    let archives = tmp.path().join("archives.tar");
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&archives)
        .args(["-C"])
        .arg(&bundle)
        .args(["web.tar", "preload.tar"])
        .status()
        .unwrap()
        .success();
    assert!(ok);

    let mut vm = boot(&state, &archives);
    // The console's docker CLI talks to the user engine, not to the system containerd.
    let info = vm.sh("docker info --format '{{.Driver}} {{.DockerRootDir}} {{.CgroupVersion}}'");
    assert_eq!(info, "overlay2 /var/lib/docker 2", "{}", vm.tail(30));
    vm.sh("mkdir -p /tmp/t && tar -xf /dev/vdc -C /tmp/t");
    let loaded = vm.sh("docker load -i /tmp/t/web.tar");
    assert!(loaded.contains("Loaded image: ros-test/web:1"), "{loaded}");
    let said = vm.sh("docker run --rm ros-test/web:1 /bin/busybox echo docker-run-works");
    assert_eq!(said, "docker-run-works");

    // The kernel line's secret is hidden from a container whose /proc Docker confines
    // (the engine's runc binds the redacted copy over /proc/cmdline); the rest is there.
    let seen = vm.sh("docker run --rm ros-test/web:1 sh -c 'cat /proc/cmdline'");
    assert!(
        seen.contains("rancher.password=(hidden)")
            && !seen.contains("engine-line-secret")
            && seen.contains("rancher.state.autoformat=[/dev/vdb]"),
        "a user container's /proc/cmdline: {seen}"
    );
    assert_eq!(
        vm.sh("docker run --rm ros-test/web:1 sh -c '{ echo x >/proc/cmdline; } 2>/dev/null || echo refused'"),
        "refused"
    );

    // Port publishing: iptables DNAT (userland_proxy: false) from the host's loopback.
    vm.sh("docker run -d --name web -p 8080:80 ros-test/web:1");
    let get = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080";
    vm.until(&format!(
        "{get} 2>/dev/null | grep -q 'hello from rOS docker'"
    ));
    // The engine's runc is crun: exec into a running container, pause and unpause it.
    assert_eq!(
        vm.sh("docker exec web /bin/busybox echo exec-works"),
        "exec-works"
    );
    vm.sh("docker pause web && docker unpause web");
    assert_eq!(
        vm.sh("docker inspect -f '{{.State.Status}}' web"),
        "running"
    );

    // Isolation: a privileged container with the docker socket and --pid=host sees the
    // docker service's processes (tini is its PID 1), and no socket anywhere in its view
    // of the engine's filesystem is the system containerd's.
    let system_socket = vm.sh("stat -c '%d:%i' /run/system-containerd/containerd.sock");
    let probe = vm.sh(
        "docker run --rm --privileged --pid=host -v /:/host -v /var/run/docker.sock:/var/run/docker.sock \
         ros-test/web:1 sh -c 'cat /proc/1/comm; \
         find /host /var/run/ \\( -path /host/proc -o -path /host/sys \\) -prune -o -type s -print \
         2>/dev/null | xargs -r stat -c \"%d:%i %n\"'",
    );
    eprintln!("system socket {system_socket}; sockets seen from a user container:\n{probe}");
    let mut lines = probe.lines();
    assert_eq!(lines.next(), Some("tini-static"), "{probe}");
    assert!(
        !probe.contains(&format!("{system_socket} ")),
        "the system containerd socket is reachable from a user container:\n{probe}"
    );
    assert!(
        probe.contains("/var/run/docker.sock"),
        "the docker socket bound into the container is not visible:\n{probe}"
    );

    // Paths, not only sockets: a plain `docker run -v` (no --privileged) of the places the
    // system keeps its state sees none of it. /mnt (the state disk's mount point) is
    // empty; of /var/lib/rancher only the config (read-only), the TLS material and the
    // preload directory; no system containerd data under /var/lib; no PID 1 logs.
    vm.sh("ls -A /proc/1/root/mnt/state | grep -q .");
    let seen = vm.sh(
        "docker run --rm -v /mnt:/m -v /var/lib/rancher:/r -v /var/lib:/vl -v /var/log:/l \
         ros-test/web:1 sh -c 'echo m: $(ls -A /m); echo r: $(ls -A /r); echo vl: $(ls -A /vl); \
         echo l: $(ls -A /l); if touch /r/conf/x 2>/dev/null; then echo conf-writable; fi'",
    );
    eprintln!("what a user container sees:\n{seen}");
    let listed = |dir: &str| -> Vec<String> {
        let line = seen
            .lines()
            .find(|l| l.starts_with(&format!("{dir}:")))
            .unwrap_or("");
        line[line.find(':').map_or(line.len(), |i| i + 1)..]
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert!(listed("m").is_empty(), "/mnt is not empty:\n{seen}");
    let mut rancher = listed("r");
    rancher.sort();
    assert_eq!(rancher, ["conf", "preload", "tls"], "{seen}");
    let var_lib = listed("vl");
    assert!(
        !var_lib
            .iter()
            .any(|d| d.contains("containerd") || d == "ros"),
        "{seen}"
    );
    assert!(listed("l").is_empty(), "/var/log is not empty:\n{seen}");
    assert!(
        !seen.contains("conf-writable"),
        "the config is writable:\n{seen}"
    );

    // Removing every user container leaves every system service running.
    vm.sh("docker rm -f $(docker ps -qa)");
    assert_eq!(vm.sh("docker ps -qa"), "");
    let ps = system_services_up(&mut vm);
    eprintln!("after docker rm -f of every container:\n{ps}");
    assert!(!ps.contains("ros-test"), "{ps}");

    // TLS on tcp/2376 from the next boot on (read when the engine starts).
    vm.sh("ros config set rancher.docker.tls true");
    // Preload for the next boot.
    vm.sh("mkdir -p /var/lib/rancher/preload/docker && cp /tmp/t/preload.tar /var/lib/rancher/preload/docker/");
    vm.send("reboot");
    assert!(vm.wait_exit(Duration::from_secs(180)).success());

    let mut vm = boot(&state, &archives);
    // Images live on the state disk; the preloaded one was loaded at boot.
    vm.until("docker images --format '{{.Repository}}:{{.Tag}}' | grep -qx ros-test/preloaded:1");
    let images = vm.sh("docker images --format '{{.Repository}}:{{.Tag}}' | sort");
    assert_eq!(images, "ros-test/preloaded:1\nros-test/web:1", "{images}");
    assert!(vm
        .sh("cat /var/log/ros/docker.log")
        .contains("preload: loaded preload.tar"));
    // TLS: generated CA, server certificate for the DHCP address, client certificate for
    // rancher; a client without a certificate is turned away.
    let tls = "docker --tlsverify -H tcp://10.0.2.15:2376";
    vm.until_within(
        &format!("DOCKER_CERT_PATH=/home/rancher/.docker {tls} version >/dev/null 2>&1"),
        DOCKER_READY,
    );
    let version = vm.sh(&format!(
        "DOCKER_CERT_PATH=/home/rancher/.docker {tls} version --format '{{{{.Server.Version}}}}'"
    ));
    assert!(version.starts_with("20.10."), "{version}");
    let (out, status) = vm.run(
        &format!("{tls} --tlscacert /home/rancher/.docker/ca.pem version 2>&1"),
        Duration::from_secs(60),
    );
    assert_ne!(status, 0, "a client without a certificate got in: {out}");
    assert_eq!(
        vm.sh("stat -c '%a %u' /home/rancher/.docker/key.pem /var/lib/rancher/tls /var/lib/rancher/tls/ca-key.pem"),
        "600 1100\n700 0\n600 0"
    );
    // Loaded once: a restart of the engine finds it unchanged.
    vm.sh("ros service restart docker");
    vm.until_within(
        "grep -q 'preload.tar unchanged' /var/log/ros/docker.log",
        DOCKER_READY,
    );

    vm.until_within("docker version >/dev/null 2>&1", DOCKER_READY);
    vm.sh("docker system prune -af");
    assert_eq!(vm.sh("docker images -q"), "");
    system_services_up(&mut vm);
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(180)).success());
}
