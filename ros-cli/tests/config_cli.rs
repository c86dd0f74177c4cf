//! Process tests of `ros config`: the real binary, with `ROS_ROOT` pointing at a temp dir
//! that holds the shipped defaults and a kernel command line.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const USER_CONFIG: &str = "var/lib/rancher/conf/cloud-config.yml";

/// A root directory laid out like the running system.
struct Root {
    dir: tempfile::TempDir,
}

/// What one `ros` run did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().expect("ros was killed by a signal"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }

    #[track_caller]
    fn fails_with(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Root {
    fn new(cmdline: &str) -> Root {
        let dir = tempfile::tempdir().unwrap();
        let root = Root { dir };
        let defaults = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/os-config.yml");
        root.write(
            "usr/share/ros/os-config.yml",
            &fs::read_to_string(defaults).unwrap(),
        );
        root.write("proc/cmdline", cmdline);
        root
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn user_config(&self) -> Option<String> {
        fs::read_to_string(self.path(USER_CONFIG)).ok()
    }

    fn ros(&self, args: &[&str]) -> Run {
        self.ros_stdin(args, "")
    }

    fn ros_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ros"))
            .arg("config")
            .args(args)
            .env("ROS_ROOT", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn get_prints_a_default_scalar_plainly() {
    let root = Root::new("quiet\n");
    assert_eq!(root.ros(&["get", "hostname"]).ok().stdout, "rancher\n");
    assert_eq!(root.ros(&["get", "rancher.ssh.port"]).ok().stdout, "22\n");
    assert_eq!(
        root.ros(&["get", "rancher.docker.host"]).ok().stdout,
        "- unix:///var/run/docker.sock\n"
    );
}

#[test]
fn get_without_a_key_prints_the_merged_config() {
    let root = Root::new("rancher.password=hunter2\n");
    let out = root.ros(&["get"]).ok().stdout;
    assert!(out.contains("hostname: rancher\n"), "{out}");
    assert!(!out.contains("hunter2"), "password printed: {out}");
}

#[test]
fn set_then_get_returns_the_new_value() {
    let root = Root::new("");
    root.ros(&["set", "hostname", "box1"]).ok();
    assert_eq!(root.ros(&["get", "hostname"]).ok().stdout, "box1\n");
    root.ros(&["set", "rancher.ssh.port", "2222"]).ok();
    assert_eq!(root.ros(&["get", "rancher.ssh.port"]).ok().stdout, "2222\n");
    assert_eq!(
        root.user_config().unwrap(),
        "hostname: box1\nrancher:\n  ssh:\n    port: 2222\n"
    );
}

#[test]
fn set_creates_the_user_file_with_mode_0600() {
    let root = Root::new("");
    assert_eq!(root.user_config(), None);
    root.ros(&["set", "rancher.debug", "true"]).ok();
    assert_eq!(mode_of(&root.path(USER_CONFIG)), 0o600);
}

#[test]
fn set_of_a_wrong_type_exits_3_and_leaves_the_file_byte_identical() {
    let root = Root::new("");
    let before = "#cloud-config\n# my settings\nhostname: box1\n";
    root.write(USER_CONFIG, before);
    let run = root
        .ros(&["set", "rancher.shutdown_timeout", "soon"])
        .fails_with(3);
    assert!(
        run.stderr.contains("rancher.shutdown_timeout"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&root.path(USER_CONFIG).display().to_string()),
        "diagnostic does not name the file: {}",
        run.stderr
    );
    assert_eq!(root.user_config().unwrap(), before);
    assert_eq!(
        root.ros(&["get", "rancher.shutdown_timeout"]).ok().stdout,
        "60\n"
    );
}

#[test]
fn set_of_a_duration_past_its_bound_exits_3_and_writes_nothing() {
    // A value this large once overflowed PID 1's shutdown deadline at every shutdown.
    let root = Root::new("");
    let run = root
        .ros(&["set", "rancher.shutdown_timeout", "99999999999999999"])
        .fails_with(3);
    assert!(
        run.stderr.contains("rancher.shutdown_timeout")
            && run
                .stderr
                .contains("longer than the most allowed, 3600 seconds"),
        "{}",
        run.stderr
    );
    assert_eq!(root.user_config(), None);
    root.ros(&["set", "rancher.shutdown_timeout", "3600"]).ok();
}

#[test]
fn set_of_an_unknown_rancher_key_exits_3_and_writes_nothing() {
    let root = Root::new("");
    let run = root
        .ros(&["set", "rancher.netwrok.dhcp_timeout", "5"])
        .fails_with(3);
    assert!(
        run.stderr.contains("did you mean `network`"),
        "{}",
        run.stderr
    );
    assert_eq!(root.user_config(), None);
}

#[test]
fn set_of_a_list_stores_a_list() {
    let root = Root::new("");
    root.ros(&["set", "rancher.modules", "[ip_vs,nbd]"]).ok();
    assert_eq!(
        root.ros(&["get", "rancher.modules"]).ok().stdout,
        "- ip_vs\n- nbd\n"
    );
    assert_eq!(
        root.ros(&["get", "rancher.modules[1]"]).ok().stdout,
        "nbd\n"
    );
}

#[test]
fn set_refuses_to_rewrite_a_user_file_that_is_not_yaml() {
    let root = Root::new("");
    let broken = "hostname: box\nrancher:\n  console: alpine\n   debug: true\n";
    root.write(USER_CONFIG, broken);
    let run = root.ros(&["set", "hostname", "other"]).fails_with(3);
    let file = root.path(USER_CONFIG).display().to_string();
    assert!(run.stderr.contains(&format!("{file}:4:")), "{}", run.stderr);
    assert_eq!(root.user_config().unwrap(), broken);
}

#[test]
fn merge_from_stdin_merges_maps_and_replaces_lists() {
    let root = Root::new("");
    root.write(
        USER_CONFIG,
        "hostname: box1\nrancher:\n  modules: [a]\n  ssh:\n    port: 2222\n",
    );
    root.ros_stdin(
        &["merge"],
        "rancher:\n  modules: [b, c]\n  ssh:\n    daemon: false\n",
    )
    .ok();
    assert_eq!(
        root.user_config().unwrap(),
        "hostname: box1\nrancher:\n  modules:\n  - b\n  - c\n  ssh:\n    port: 2222\n    daemon: false\n"
    );
    assert_eq!(
        root.ros(&["get", "rancher.ssh.daemon"]).ok().stdout,
        "false\n"
    );
}

#[test]
fn merge_with_a_syntax_error_exits_3_naming_stdin_line_and_column() {
    let root = Root::new("");
    root.write(USER_CONFIG, "hostname: box1\n");
    let run = root
        .ros_stdin(&["merge"], "rancher:\n  console: alpine\n   debug: true\n")
        .fails_with(3);
    assert!(run.stderr.contains("<stdin>:3:"), "{}", run.stderr);
    assert_eq!(root.user_config().unwrap(), "hostname: box1\n");
}

#[test]
fn merge_from_a_file_validates_it_first() {
    let root = Root::new("");
    root.write("in.yml", "rancher:\n  ssh:\n    port: [22]\n");
    let input = root.path("in.yml").display().to_string();
    let run = root.ros(&["merge", "-i", &input]).fails_with(3);
    assert!(
        run.stderr
            .contains(&format!("{input}:3:11: rancher.ssh.port")),
        "{}",
        run.stderr
    );
    assert_eq!(root.user_config(), None);
    root.ros(&["merge", "-i", "/no/such/file.yml"])
        .fails_with(5);
}

#[test]
fn export_hides_private_keys_unless_asked() {
    let root = Root::new("");
    root.write(
        USER_CONFIG,
        "hostname: box1\nrancher:\n  ssh:\n    keys:\n      ssh_host_rsa_key: SECRET-HOST-KEY\n  docker:\n    tls: true\n    server_key: SECRET-TLS-KEY\n",
    );
    let out = root.ros(&["export"]).ok().stdout;
    assert!(!out.contains("SECRET"), "{out}");
    assert!(out.contains("hostname: box1"), "{out}");
    assert!(out.contains("tls: true"), "{out}");
    let out = root.ros(&["export", "-p"]).ok().stdout;
    assert!(out.contains("SECRET-HOST-KEY"), "{out}");
    assert!(out.contains("SECRET-TLS-KEY"), "{out}");
}

#[test]
fn export_to_a_file_is_mode_0600() {
    let root = Root::new("");
    root.write(USER_CONFIG, "hostname: box1\n");
    let out = root.path("backup.yml");
    let run = root
        .ros(&["export", "-p", "-o", &out.display().to_string()])
        .ok();
    assert_eq!(run.stdout, "");
    assert_eq!(fs::read_to_string(&out).unwrap(), "hostname: box1\n");
    assert_eq!(mode_of(&out), 0o600);
}

#[test]
fn export_full_includes_the_kernel_command_line() {
    let root = Root::new("BOOT_IMAGE=/vmlinuz console=ttyS0 rancher.debug=true\n");
    root.write(USER_CONFIG, "hostname: box1\n");
    let full = root.ros(&["export", "-f"]).ok().stdout;
    assert!(full.contains("debug: true"), "{full}");
    assert!(full.contains("hostname: box1"), "{full}");
    assert!(full.contains("shutdown_timeout: 60"), "{full}");
    let user = root.ros(&["export"]).ok().stdout;
    assert_eq!(user, "hostname: box1\n");
}

#[test]
fn validate_of_an_unknown_rancher_key_exits_3_naming_file_and_line() {
    let root = Root::new("");
    root.write(
        "bad.yml",
        "hostname: box\nrancher:\n  netwrok:\n    dhcp_timeout: 5\n",
    );
    let file = root.path("bad.yml").display().to_string();
    let run = root.ros(&["validate", "-i", &file]).fails_with(3);
    assert!(
        run.stderr.contains(&format!(
            "{file}:3:3: rancher.netwrok: unknown key `netwrok`"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn validate_of_an_unknown_capability_exits_3_naming_file_line_and_key() {
    let root = Root::new("");
    root.write(
        "caps.yml",
        "rancher:\n  services:\n    tool:\n      image: tool:1\n      cap_add: [NOPE]\n",
    );
    let file = root.path("caps.yml").display().to_string();
    let run = root.ros(&["validate", "-i", &file]).fails_with(3);
    assert!(
        run.stderr.contains(&format!("{file}:5:"))
            && run.stderr.contains("rancher.services.tool.cap_add")
            && run.stderr.contains("unknown capability `NOPE`"),
        "{}",
        run.stderr
    );
}

#[test]
fn validate_of_a_good_document_prints_nothing() {
    let root = Root::new("");
    let run = root
        .ros_stdin(
            &["validate"],
            "#cloud-config\nhostname: box\nrancher:\n  debug: true\n",
        )
        .ok();
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
}

#[test]
fn a_missing_key_exits_5_naming_it() {
    let root = Root::new("");
    let run = root.ros(&["get", "rancher.no_such_thing"]).fails_with(5);
    assert!(
        run.stderr.contains("`rancher.no_such_thing`"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn a_malformed_key_is_a_usage_error() {
    let root = Root::new("");
    root.ros(&["get", "rancher..ssh"]).fails_with(2);
    root.ros(&["set", "rancher..ssh", "1"]).fails_with(2);
    assert_eq!(root.user_config(), None);
}
