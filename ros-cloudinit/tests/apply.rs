//! Applying a config against the recording fakes in a temp root (and, where the real
//! implementation is plain std, against the real one): hostname and /etc/hosts, modules,
//! sysctl, write_files, ssh keys, mounts, bootcmd/runcmd, and independence of the steps.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{config, mode_of, put};
use ros_cloudinit::fake::{Call, RecordingHost, RecordingModules, RecordingRunner};
use ros_cloudinit::{
    apply, run_bootcmd, run_runcmd, Exit, MsFlags, Owner, Step, SystemHost, DEFAULT_PATH,
};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nrancher:x:1100:1100::/home/rancher:/bin/sh\n";
const GROUP: &str = "root:x:0:\nrancher:x:1100:\ndocker:x:233:rancher\n";

fn root_with_accounts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "etc/passwd", PASSWD);
    put(dir.path(), "etc/group", GROUP);
    dir
}

const RANCHER: Owner = Owner {
    uid: 1100,
    gid: 1100,
};

#[test]
fn hostname_sets_the_kernel_name_and_both_files() {
    let dir = root_with_accounts();
    let root = dir.path();
    put(
        root,
        "etc/hosts",
        "127.0.0.1 localhost\n127.0.1.1 rancher\n10.1.1.1 db\n",
    );
    let host = RecordingHost::new();
    let out = apply(
        root,
        &config("hostname: node-1.example.com\n"),
        &host,
        &RecordingModules::default(),
    );
    assert!(out.report.is_ok(), "{:?}", out.report.problem_lines());
    assert_eq!(
        host.calls()[0],
        Call::SetHostname("node-1.example.com".into())
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "node-1.example.com\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n127.0.1.1 node-1.example.com node-1\n10.1.1.1 db\n"
    );
    // Applying again changes nothing on disk.
    let again = RecordingHost::new();
    apply(
        root,
        &config("hostname: node-1.example.com\n"),
        &again,
        &RecordingModules::default(),
    );
    assert_eq!(
        again.calls(),
        [Call::SetHostname("node-1.example.com".into())]
    );
}

#[test]
fn modules_and_sysctl() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut cfg = config(
        "rancher:\n  modules: [br_netfilter, nbd max_part=8]\n  sysctl:\n    net.ipv4.ip_forward: 1\n    net:\n      bridge: {bridge-nf-call-iptables: 1}\n    kernel/printk: 4 4 1 7\n",
    );
    // ros-config already drops such keys; cloud-init must refuse them on its own too.
    cfg.rancher
        .sysctl
        .insert("../../etc/shadow".into(), "x".into());
    let host = RecordingHost::new();
    let modules = RecordingModules::default();
    let out = apply(root, &cfg, &host, &modules);
    assert_eq!(
        modules.loaded(),
        [
            ("br_netfilter".to_string(), String::new()),
            ("nbd".to_string(), "max_part=8".to_string())
        ]
    );
    let sysctl: Vec<(String, String)> = host
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Sysctl { path, value } => Some((
                path.strip_prefix(root).unwrap().display().to_string(),
                value,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        sysctl,
        [
            ("proc/sys/kernel/printk".to_string(), "4 4 1 7".to_string()),
            (
                "proc/sys/net/bridge/bridge-nf-call-iptables".into(),
                "1".into()
            ),
            ("proc/sys/net/ipv4/ip_forward".into(), "1".into()),
        ]
    );
    let problems = out.report.problem_lines();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("cloud-init: sysctl ../../etc/shadow: invalid key"),
        "{}",
        problems[0]
    );
}

#[test]
fn write_files_decode_set_mode_and_owner_and_hand_back_container_files() {
    let dir = root_with_accounts();
    let root = dir.path();
    let cfg = config(
        r#"
write_files:
  - path: /etc/plain.conf
    content: "hello\n"
  - path: /opt/app/b64.bin
    encoding: b64
    content: aGVsbG8=
    permissions: "0640"
    owner: rancher:rancher
  - path: /etc/app/gz.txt
    encoding: gz+b64
    content: H4sIAAAAAAAC/8tIzcnJ5wIAIDA6NgYAAAA=
    owner: rancher:docker
  - path: /etc/ntp.conf
    container: ntp
    content: "server pool.ntp.org\n"
  - path: /etc/bad-owner
    content: x
    owner: nobody
"#,
    );
    let host = RecordingHost::new();
    let out = apply(root, &cfg, &host, &RecordingModules::default());

    let call = |p: &str| host.writes_to(&root.join(p)).pop();
    assert_eq!(
        call("etc/plain.conf"),
        Some(Call::WriteFile {
            path: root.join("etc/plain.conf"),
            bytes: b"hello\n".to_vec(),
            mode: 0o644,
            owner: Owner::ROOT
        })
    );
    assert_eq!(
        call("opt/app/b64.bin"),
        Some(Call::WriteFile {
            path: root.join("opt/app/b64.bin"),
            bytes: b"hello".to_vec(),
            mode: 0o640,
            owner: RANCHER
        })
    );
    assert_eq!(
        call("etc/app/gz.txt"),
        Some(Call::WriteFile {
            path: root.join("etc/app/gz.txt"),
            bytes: b"hello\n".to_vec(),
            mode: 0o644,
            owner: Owner {
                uid: 1100,
                gid: 233
            }
        })
    );
    // The container's file is returned, not written on the host.
    assert_eq!(call("etc/ntp.conf"), None);
    assert!(!root.join("etc/ntp.conf").exists());
    let for_containers = ros_cloudinit::container_files(&cfg);
    assert_eq!(for_containers.len(), 1);
    assert_eq!(for_containers[0].container.as_deref(), Some("ntp"));
    assert_eq!(&*for_containers[0].path, "/etc/ntp.conf");
    // An unknown owner is that entry's problem only.
    assert_eq!(call("etc/bad-owner"), None);
    let problems = out.report.problem_lines();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0],
        format!(
            "cloud-init: write_files /etc/bad-owner: owner `nobody`: no user `nobody` in {}",
            root.join("etc/passwd").display()
        )
    );
}

#[test]
fn write_files_for_real_in_a_temp_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let me = format!(
        "{}:{}",
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw()
    );
    put(root, "etc/app/old.conf", "old");
    fs::set_permissions(
        root.join("etc/app/old.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let cfg = config(&format!(
        "write_files:\n  - {{path: /etc/app/old.conf, content: new, permissions: '0640', owner: '{me}'}}\n  - {{path: /var/lib/x/secret, encoding: b64, content: c2VjcmV0, permissions: '0600', owner: '{me}'}}\n"
    ));
    let out = apply(root, &cfg, &SystemHost, &RecordingModules::default());
    assert!(out.report.is_ok(), "{:?}", out.report.problem_lines());
    assert_eq!(
        fs::read_to_string(root.join("etc/app/old.conf")).unwrap(),
        "new"
    );
    assert_eq!(mode_of(&root.join("etc/app/old.conf")), 0o640);
    assert_eq!(
        fs::read_to_string(root.join("var/lib/x/secret")).unwrap(),
        "secret"
    );
    assert_eq!(mode_of(&root.join("var/lib/x/secret")), 0o600);
}

#[test]
fn container_write_files_refuse_dot_dot_and_resolve_inside_the_root() {
    let host_dir = tempfile::tempdir().unwrap();
    // The container's root, with its own accounts and an absolute symlink `etc/conf -> /srv`.
    let root = host_dir.path().join("root");
    put(
        &root,
        "etc/passwd",
        "root:x:0:0::/:/bin/sh\nntp:x:123:124::/:/bin/false\n",
    );
    fs::create_dir_all(root.join("srv")).unwrap();
    std::os::unix::fs::symlink("/srv", root.join("etc/conf")).unwrap();
    let cfg = config(
        r#"
write_files:
  - path: /../../../var/lib/rancher/conf/cloud-config.yml
    container: ntp
    content: "pwned\n"
  - path: /etc/conf/ntp.conf
    container: ntp
    owner: ntp
    permissions: "0640"
    content: "server pool.ntp.org\n"
"#,
    );
    let host = RecordingHost::new();
    let mut report = ros_cloudinit::Report::default();
    ros_cloudinit::apply_container_write_files(&root, &cfg.write_files, &host, &mut report);
    let problems = report.problem_lines();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "cloud-init: write_files /../../../var/lib/rancher/conf/cloud-config.yml (container ntp): "
        ),
        "{}",
        problems[0]
    );
    assert!(problems[0].contains("`..`"), "{}", problems[0]);
    // The owner comes from the container's passwd; the path is handed on relative.
    assert_eq!(
        host.calls(),
        [Call::WriteFileInRoot {
            root: root.clone(),
            path: "etc/conf/ntp.conf".into(),
            bytes: b"server pool.ntp.org\n".to_vec(),
            mode: 0o640,
            owner: Owner { uid: 123, gid: 124 },
        }]
    );
    assert_eq!(
        fs::read_to_string(root.join("srv/ntp.conf")).unwrap(),
        "server pool.ntp.org\n"
    );

    // The real host: the symlink resolves to the container's /srv, not the host's.
    let me = format!(
        "{}:{}",
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw()
    );
    let cfg = config(&format!(
        "write_files:\n  - {{path: /etc/conf/ntp.conf, container: ntp, owner: \"{me}\", content: x}}\n"
    ));
    let mut report = ros_cloudinit::Report::default();
    ros_cloudinit::apply_container_write_files(&root, &cfg.write_files, &SystemHost, &mut report);
    assert!(report.is_ok(), "{:?}", report.problem_lines());
    assert_eq!(fs::read_to_string(root.join("srv/ntp.conf")).unwrap(), "x");
}

#[test]
fn ssh_keys_go_to_rancher_only() {
    let dir = root_with_accounts();
    let root = dir.path();
    put(
        root,
        "home/rancher/.ssh/authorized_keys",
        "ssh-rsa BYHAND me@laptop\n",
    );
    let cfg = config("ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3Nza one@example\n  - ssh-rsa BYHAND me@laptop\n");
    let host = RecordingHost::new();
    let out = apply(root, &cfg, &host, &RecordingModules::default());
    assert!(out.report.is_ok(), "{:?}", out.report.problem_lines());
    let ssh = root.join("home/rancher/.ssh");
    assert_eq!(
        host.calls(),
        [Call::UpdateHomeFile {
            home: root.join("home/rancher"),
            dir: (".ssh".into(), 0o700),
            file: ("authorized_keys".into(), 0o600),
            owner: RANCHER,
            bytes: b"ssh-rsa BYHAND me@laptop\nssh-ed25519 AAAAC3Nza one@example\n".to_vec(),
        }]
    );
    assert_eq!(mode_of(&ssh), 0o700);
    assert_eq!(mode_of(&ssh.join("authorized_keys")), 0o600);
    assert!(!root.join("root/.ssh").exists());

    // No passwd entry and no home yet: uid/gid 1100, home created for rancher too.
    let bare = tempfile::tempdir().unwrap();
    let host = RecordingHost::new();
    apply(bare.path(), &cfg, &host, &RecordingModules::default());
    assert_eq!(
        host.calls()[0],
        Call::CreateDir {
            path: bare.path().join("home/rancher"),
            mode: 0o755,
            owner: RANCHER
        }
    );
    assert_eq!(
        fs::read_to_string(bare.path().join("home/rancher/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAAC3Nza one@example\nssh-rsa BYHAND me@laptop\n"
    );
}

#[test]
fn ssh_keys_never_follow_a_symlinked_ssh_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // rancher is whoever runs the test, so the real host may give it files.
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    put(
        &root,
        "etc/passwd",
        format!("rancher:x:{uid}:{gid}::/home/rancher:/bin/sh\n"),
    );
    fs::create_dir_all(root.join("home/rancher")).unwrap();
    let elsewhere = dir.path().join("var");
    fs::create_dir(&elsewhere).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("home/rancher/.ssh")).unwrap();
    let cfg = config("ssh_authorized_keys: [ssh-ed25519 AAAA k]\n");
    // Only this step, for real: nothing else of the machine's is touched.
    let mut report = ros_cloudinit::Report::default();
    ros_cloudinit::authorize_ssh_keys(&root, &cfg, &SystemHost, &mut report);
    let problems = report.problem_lines();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&format!(
            "refusing {}: a symlink",
            root.join("home/rancher/.ssh").display()
        )),
        "{}",
        problems[0]
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(mode_of(&elsewhere), 0o755);
}

#[test]
fn mounts_create_the_mount_point_and_split_options() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, "proc/filesystems", "nodev\ttmpfs\n\text4\n\tvfat\n");
    put(
        root,
        "proc/self/mountinfo",
        "25 1 0:22 / /already rw,relatime - tmpfs tmpfs rw\n",
    );
    fs::create_dir_all(root.join("tmp")).unwrap();
    let cfg = config(
        r#"
mounts:
  - [/dev/vdb1, /mnt/data, ext4, "defaults,noatime,nofail"]
  - [tmpfs, /tmp, tmpfs, "size=64m,mode=1777"]
  - [/dev/vdc, /mnt/auto]
  - [/dev/vdd, /already, ext4]
  - [/dev/vde, none, swap, sw]
  - [/dev/vdf, /mnt/later, ext4, noauto]
"#,
    );
    let host = RecordingHost::new();
    let out = apply(root, &cfg, &host, &RecordingModules::default());
    let mount = |source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>| {
        Call::Mount {
            source: source.into(),
            target: root.join(target),
            fstype: Some(fstype.into()),
            flags: flags.bits(),
            data: data.map(str::to_string),
        }
    };
    assert_eq!(
        host.calls(),
        [
            Call::CreateDir {
                path: root.join("mnt/data"),
                mode: 0o755,
                owner: Owner::ROOT
            },
            mount("/dev/vdb1", "mnt/data", "ext4", MsFlags::MS_NOATIME, None),
            // /tmp exists: its mode is left alone.
            mount(
                "tmpfs",
                "tmp",
                "tmpfs",
                MsFlags::empty(),
                Some("size=64m,mode=1777")
            ),
            Call::CreateDir {
                path: root.join("mnt/auto"),
                mode: 0o755,
                owner: Owner::ROOT
            },
            // fstype auto: the first block filesystem the kernel lists.
            mount("/dev/vdc", "mnt/auto", "ext4", MsFlags::empty(), None),
        ]
    );
    assert_eq!(
        out.report.problem_lines(),
        ["cloud-init: mounts none: swap is not supported"]
    );
    assert!(out
        .report
        .applied_lines()
        .contains(&"cloud-init: mounts /already: already mounted".to_string()));
}

#[test]
fn a_failing_step_does_not_stop_the_next() {
    let dir = root_with_accounts();
    let root = dir.path();
    let cfg = config(
        r#"
hostname: node
rancher:
  modules: [missing_mod, loop]
  sysctl: {vm.swappiness: 10, net.core.somaxconn: 1024}
write_files:
  - {path: /etc/a, content: a}
  - {path: /etc/b, content: b}
ssh_authorized_keys: [ssh-ed25519 AAAA k]
"#,
    );
    let mut host = RecordingHost::new();
    host.fail_hostname = true;
    host.fail = vec![
        root.join("etc/hostname"),
        root.join("proc/sys/vm/swappiness"),
        root.join("etc/a"),
    ];
    let modules = RecordingModules::failing(&["missing_mod"]);
    let out = apply(root, &cfg, &host, &modules);
    let problems = out.report.problem_lines();
    let step_of = |s: Step| out.report.problems_of(s).len();
    assert_eq!(step_of(Step::Modules), 1, "{problems:#?}");
    assert_eq!(step_of(Step::Sysctl), 1, "{problems:#?}");
    assert_eq!(step_of(Step::Hostname), 2, "{problems:#?}");
    assert_eq!(step_of(Step::WriteFiles), 1, "{problems:#?}");
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert_eq!(
        problems[0],
        "cloud-init: modules missing_mod: module missing_mod: not found in modules.dep (fake)"
    );
    assert!(
        problems[1].starts_with("cloud-init: sysctl vm.swappiness: writing \"10\": "),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].starts_with("cloud-init: hostname node: sethostname: "),
        "{}",
        problems[2]
    );
    // Everything after each failure still happened.
    assert_eq!(modules.loaded().len(), 2);
    assert!(host.calls().contains(&Call::Sysctl {
        path: root.join("proc/sys/net/core/somaxconn"),
        value: "1024".into()
    }));
    assert_eq!(
        fs::read_to_string(root.join("etc/hosts"))
            .unwrap()
            .lines()
            .last(),
        Some("127.0.1.1 node")
    );
    assert_eq!(fs::read_to_string(root.join("etc/b")).unwrap(), "b");
    assert!(root.join("home/rancher/.ssh/authorized_keys").exists());
}

#[test]
fn bootcmd_and_runcmd_through_the_runner() {
    let cfg = config(
        r#"
rancher:
  environment: {HTTP_PROXY: "http://proxy:3128", PATH: /opt/bin:/usr/bin}
bootcmd:
  - echo early > /tmp/early
  - [modprobe, -q, zram]
runcmd:
  - "false"
  - [/no/such/tool]
  - [touch, /tmp/done]
"#,
    );
    let log = Path::new("/var/log/cloud-init.log");
    let runner = RecordingRunner::with_results(vec![
        ("false".into(), Ok(Exit::Code(1))),
        (
            "/no/such/tool".into(),
            Err("running /no/such/tool: No such file or directory".into()),
        ),
    ]);
    let boot = run_bootcmd(&cfg, &runner, log);
    assert!(boot.is_ok(), "{:?}", boot.problem_lines());
    let run = run_runcmd(&cfg, &runner, log);
    assert_eq!(
        runner.argvs(),
        [
            vec!["sh", "-c", "echo early > /tmp/early"],
            vec!["modprobe", "-q", "zram"],
            vec!["sh", "-c", "false"],
            vec!["/no/such/tool"],
            vec!["touch", "/tmp/done"],
        ]
    );
    let first = &runner.runs()[0];
    assert_eq!(first.label, "bootcmd[0]");
    assert_eq!(first.log, log);
    assert_eq!(
        first.env,
        [
            ("PATH".to_string(), DEFAULT_PATH.to_string()),
            ("HTTP_PROXY".into(), "http://proxy:3128".into()),
            ("PATH".into(), "/opt/bin:/usr/bin".into()),
        ]
    );
    assert_eq!(
        run.problem_lines(),
        [
            "cloud-init: runcmd `false`: exit status 1 (output in /var/log/cloud-init.log)",
            "cloud-init: runcmd `/no/such/tool`: running /no/such/tool: No such file or directory",
        ]
    );
    assert_eq!(run.applied.len(), 1);
}

#[test]
fn runcmd_for_real_with_the_std_runner() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("log/cloud-init.log");
    let cfg = config(&format!(
        "rancher: {{environment: {{WHO: rancher}}}}\nruncmd:\n  - echo hello $WHO > {0}\n  - [sh, -c, 'echo to-log; exit 4']\n  - [sh, -c, 'echo again >> {0}']\n",
        out.display()
    ));
    let report = run_runcmd(&cfg, &ros_cloudinit::StdRunner, &log);
    assert_eq!(fs::read_to_string(&out).unwrap(), "hello rancher\nagain\n");
    assert_eq!(
        report.problem_lines(),
        [format!(
            "cloud-init: runcmd `sh -c echo to-log; exit 4`: exit status 4 (output in {})",
            log.display()
        )]
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cloud-init: runcmd[1]: [\"sh\", \"-c\", \"echo to-log; exit 4\"]\nto-log\n"),
        "{text}"
    );
}
