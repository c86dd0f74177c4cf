//! Layering from a root directory: defaults < OEM < user < drop-ins < kernel command line,
//! with each problem reported against the file (or command-line word) it came from.

use std::fs;
use std::path::Path;
use std::time::Duration;

use ros_config::{get, load, paths, Mode, Severity, Value, MAX_FILE_BYTES};

fn write(root: &Path, well_known: &str, text: &str) {
    let p = paths::under(root, well_known);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn defaults() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/os-config.yml"))
        .unwrap()
}

#[test]
fn layers_merge_lowest_first_and_the_command_line_wins() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(r, paths::OS_CONFIG, &defaults());
    write(
        r,
        paths::OEM_CONFIG,
        "rancher:\n  console: oemconsole\n  ssh:\n    port: 2200\n",
    );
    write(
        r,
        paths::USER_CONFIG,
        "#cloud-config\nhostname: user-box\nrancher:\n  ssh:\n    port: 2222\n  shutdown_timeout: soon\n  network:\n    dns:\n      nameservers: [1.1.1.1]\n",
    );
    let d = paths::DROP_IN_DIR;
    write(r, &format!("{d}/10-a.yml"), "rancher:\n  modules: [a]\n");
    write(r, &format!("{d}/15-bad.yml"), "rancher:\n  modules: [x\n");
    write(r, &format!("{d}/20-b.yml"), "rancher:\n  modules: [b, c]\n");
    write(r, &format!("{d}/.hidden.yml"), "hostname: hidden\n");
    write(r, &format!("{d}/notes.txt"), "hostname: notes\n");

    let cmdline = "BOOT_IMAGE=/vmlinuz quiet rancher.ssh.port=2022 \
                   rancher.network.interfaces.eth0.dhcp=false rancher.password=pw \
                   cloud-config-url=http://10.0.0.2/cc.yml";
    let loaded = load(r, Some(cmdline), Mode::Boot);
    let cfg = &loaded.config;
    assert_eq!(cfg.hostname.as_ref().map(|h| h.as_str()), Some("user-box"));
    assert_eq!(cfg.rancher.ssh.port, Some(2022));
    assert_eq!(cfg.rancher.console.as_deref(), Some("oemconsole"));
    // The user's bad value is dropped from the user layer only: the default still applies.
    assert_eq!(cfg.shutdown_timeout(), Duration::from_secs(60));
    let modules: Vec<&str> = cfg.rancher.modules.iter().map(|m| m.as_ref()).collect();
    assert_eq!(modules, ["b", "c"]);
    assert_eq!(cfg.rancher.network.interfaces["eth0"].dhcp, Some(false));
    assert_eq!(cfg.rancher.network.dns.nameservers.len(), 1);
    assert_eq!(
        cfg.rancher.docker.storage_driver.as_deref(),
        Some("overlay2")
    );
    assert_eq!(loaded.cmdline.password(), Some("pw"));
    assert_eq!(
        loaded.cmdline.cloud_config_url().as_deref(),
        Some("http://10.0.0.2/cc.yml")
    );
    assert_eq!(
        get(&loaded.value, "rancher.ssh.port"),
        Some(&Value::from(2022))
    );
    assert_eq!(
        get(&loaded.value, "rancher.shutdown_timeout"),
        Some(&Value::from(60))
    );

    let user = paths::under(r, paths::USER_CONFIG).display().to_string();
    let bad = paths::under(r, &format!("{d}/15-bad.yml"))
        .display()
        .to_string();
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            format!("{bad}:3:1: did not find expected ',' or ']', while parsing a flow sequence at line 2 column 12; file skipped"),
            format!("{user}:6:21: rancher.shutdown_timeout: invalid type: string \"soon\", expected u64"),
        ]
    );
}

#[test]
fn command_line_errors_point_at_the_word() {
    let root = tempfile::tempdir().unwrap();
    let loaded = load(
        root.path(),
        Some("quiet rancher.ssh.port=abc rancher.sshd=1"),
        Mode::Boot,
    );
    let got: Vec<(Severity, String)> = loaded
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Severity::Error, "/proc/cmdline:1:24: rancher.ssh.port: invalid type: string \"abc\", expected u16".to_string()),
            (Severity::Warning, "/proc/cmdline:1:28: rancher.sshd: unknown key `sshd` (did you mean `ssh`?); ignored".to_string()),
        ]
    );
}

#[test]
fn missing_files_give_the_empty_config() {
    let root = tempfile::tempdir().unwrap();
    let loaded = load(root.path(), None, Mode::Boot);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.config, Default::default());
}

#[test]
fn unreadable_files_are_skipped_and_named() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(
        r,
        paths::OS_CONFIG,
        &format!("hostname: a\n#{}\n", "x".repeat(MAX_FILE_BYTES)),
    );
    fs::create_dir_all(paths::under(r, paths::OEM_CONFIG)).unwrap(); // a directory, not a file
    let user = paths::under(r, paths::USER_CONFIG);
    fs::create_dir_all(user.parent().unwrap()).unwrap();
    fs::write(&user, b"hostname: b\xff\n").unwrap();
    let loaded = load(r, None, Mode::Boot);
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got[0].ends_with("os-config.yml: larger than 1024 KiB; file refused"),
        "{}",
        got[0]
    );
    assert!(got[1].contains("oem-config.yml: reading: "), "{}", got[1]);
    assert!(
        got[2].ends_with("cloud-config.yml: not UTF-8 text (byte 11); file skipped"),
        "{}",
        got[2]
    );
    assert_eq!(loaded.config.hostname, None);
}

#[test]
fn services_merge_across_layers_and_incomplete_ones_are_dropped() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(
        r,
        paths::OS_CONFIG,
        "rancher:\n  services:\n    web:\n      image: nginx:1\n      environment:\n        HOME:\n        A: b\n",
    );
    write(
        r,
        paths::USER_CONFIG,
        "rancher:\n  services:\n    web:\n      restart: always\n    broken:\n      privileged: true\n",
    );
    let loaded = load(r, None, Mode::Boot);
    let services = &loaded.config.rancher.services;
    assert_eq!(services["web"].image, "nginx:1");
    assert_eq!(
        services["web"].restart,
        ros_config::service::RestartPolicy::Always
    );
    assert!(!services.contains_key("broken"));
    // An empty value in a service's environment map passes the host's value through.
    let env = services["web"]
        .environment
        .resolve(|k| (k == "HOME").then(|| "/root".into()));
    assert_eq!(env, ["A=b", "HOME=/root"]);
    let user = paths::under(r, paths::USER_CONFIG).display().to_string();
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![format!(
            "{user}:6:7: rancher.services.broken: missing field `image`"
        )]
    );
}

#[test]
fn docker_only_service_keys_in_cloud_config_warn_but_keep_the_service() {
    let text = "rancher:\n  services:\n    web:\n      image: ros/console:0.1.0\n      log_driver: json-file\n";
    let diags = ros_config::validate_text("cc.yml", text, ros_config::Mode::Strict);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].severity, ros_config::Severity::Warning);
    let shown = diags[0].to_string();
    assert!(shown.starts_with("cc.yml:5:"), "{shown}");
    assert!(shown.contains("log_driver"), "{shown}");
    let layer = ros_config::Layer::parse("cc.yml", text).unwrap();
    let resolved = ros_config::resolve(vec![layer], ros_config::Mode::Boot);
    assert!(resolved.config.rancher.services.contains_key("web"));
}
