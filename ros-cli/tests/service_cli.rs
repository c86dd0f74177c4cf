//! Process tests of `ros service`: the real binary, with `ROS_ROOT` pointing at a temp dir
//! laid out like the running system and `ROS_CONTROL_SOCKET` at a fake PID 1 served by a
//! thread of the test (one connection, one answer).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ros_control::{
    decode_request, encode_response, ErrorKind, Request, Response, ServiceRow, ServiceState,
};

const USER_CONFIG: &str = "var/lib/rancher/conf/cloud-config.yml";
/// Bound on every wait for the fake PID 1 or a child's output.
const DEADLINE: Duration = Duration::from_secs(10);

struct Root {
    dir: tempfile::TempDir,
}

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
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
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

/// PID 1 stand-in: answers one request with `answer` and reports the request it got.
struct FakePid1 {
    requests: mpsc::Receiver<Request>,
}

impl FakePid1 {
    fn serve(socket: &Path, answer: Response) -> FakePid1 {
        let listener = UnixListener::bind(socket).unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).unwrap();
            let reply = match decode_request(&line) {
                Ok(req) => {
                    let _ = tx.send(req);
                    answer
                }
                Err(resp) => resp,
            };
            (&conn)
                .write_all(encode_response(&reply).as_bytes())
                .unwrap();
        });
        FakePid1 { requests: rx }
    }

    #[track_caller]
    fn request(&self) -> Request {
        self.requests
            .recv_timeout(DEADLINE)
            .expect("ros sent no request to the fake PID 1")
    }
}

impl Root {
    fn new() -> Root {
        let root = Root {
            dir: tempfile::tempdir().unwrap(),
        };
        let defaults = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/os-config.yml");
        root.write(
            "usr/share/ros/os-config.yml",
            &fs::read_to_string(defaults).unwrap(),
        );
        // The console, and ntp, which it starts after.
        for name in ["console.yml", "ntp.yml"] {
            let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../services")
                .join(name);
            root.write(
                &format!("usr/share/ros/services/{name}"),
                &fs::read_to_string(file).unwrap(),
            );
        }
        root.write(
            "usr/share/ros/service-index/kernel-headers.yml",
            "kernel-headers:\n  image: ros/kernel-headers:1\n  labels:\n    io.rancher.os.detach: \"false\"\n",
        );
        root.write("proc/cmdline", "quiet");
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

    fn socket(&self) -> PathBuf {
        self.path("control.sock")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ros"));
        cmd.arg("service")
            .args(args)
            .env("ROS_ROOT", self.dir.path())
            .env("ROS_CONTROL_SOCKET", self.socket())
            .stdin(Stdio::null());
        cmd
    }

    fn ros(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    fn user_config(&self) -> ros_config::Value {
        let text = fs::read_to_string(self.path(USER_CONFIG)).unwrap();
        ros_config::Layer::parse("user", &text).unwrap().value()
    }
}

fn include(value: &ros_config::Value, key: &str) -> Option<bool> {
    value
        .get("rancher")?
        .get("services_include")?
        .get(key)?
        .as_bool()
}

#[test]
fn list_shows_builtin_index_and_config_services() {
    let root = Root::new();
    root.write(
        USER_CONFIG,
        "rancher:\n  services:\n    hello:\n      image: busybox\n",
    );
    let run = root.ros(&["list"]).ok();
    assert_eq!(
        run.stdout,
        "enabled  console\nenabled  hello\ndisabled kernel-headers\nenabled  ntp\n"
    );
    let all = root.ros(&["list", "-a"]).ok();
    assert!(all.stdout.contains("index "), "{}", all.stdout);
    assert!(all.stdout.contains("builtin "), "{}", all.stdout);
}

#[test]
fn enable_by_name_records_the_include_and_asks_pid1_to_reload() {
    let root = Root::new();
    let pid1 = FakePid1::serve(
        &root.socket(),
        Response::Ok {
            messages: vec!["kernel-headers: started".into()],
        },
    );
    let run = root.ros(&["enable", "kernel-headers"]).ok();
    assert_eq!(pid1.request(), Request::Reload);
    assert_eq!(
        run.stdout,
        "enabled kernel-headers\nkernel-headers: started\n"
    );
    assert_eq!(include(&root.user_config(), "kernel-headers"), Some(true));
    let mode = fs::metadata(root.path(USER_CONFIG))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let list = root.ros(&["list"]).ok();
    assert!(
        list.stdout.contains("enabled  kernel-headers\n"),
        "{}",
        list.stdout
    );
}

#[test]
fn enable_without_pid1_records_and_says_when_it_applies() {
    let root = Root::new();
    let run = root.ros(&["enable", "kernel-headers"]).ok();
    assert!(
        run.stderr
            .contains("applies at the next `ros service up` or boot"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&root.socket().display().to_string()),
        "{}",
        run.stderr
    );
    assert_eq!(include(&root.user_config(), "kernel-headers"), Some(true));
}

#[test]
fn enable_of_an_unknown_name_exits_5_and_writes_nothing() {
    let root = Root::new();
    let run = root.ros(&["enable", "kernel-headerz"]).fails_with(5);
    assert!(
        run.stderr
            .contains("service kernel-headerz: not in the service index"),
        "{}",
        run.stderr
    );
    assert!(!root.path(USER_CONFIG).exists());
}

#[test]
fn enable_of_a_bad_file_exits_3_naming_file_and_line() {
    let root = Root::new();
    root.write(
        "own/web.yml",
        "web:\n  image: nginx\n  prots: [\"80:80\"]\n",
    );
    let file = root.path("own/web.yml");
    let run = root.ros(&["enable", file.to_str().unwrap()]).fails_with(3);
    let want = format!("{}:3:3: web.prots: unknown key `prots`", file.display());
    assert!(run.stderr.contains(&want), "{}", run.stderr);
    assert!(!root.path(USER_CONFIG).exists());
}

#[test]
fn enable_of_a_good_file_records_its_absolute_path() {
    let root = Root::new();
    root.write(
        "own/web.yml",
        "web:\n  image: nginx\n  log_driver: json-file\n",
    );
    let pid1 = FakePid1::serve(&root.socket(), Response::Ok { messages: vec![] });
    let run = root
        .command(&["enable", "web.yml"])
        .current_dir(root.path("own"))
        .output()
        .unwrap();
    let run = Run::from(run).ok();
    assert_eq!(pid1.request(), Request::Reload);
    // The Docker-only key is a warning, not a refusal.
    assert!(
        run.stderr
            .contains("web.log_driver: `log_driver` only tunes Docker"),
        "{}",
        run.stderr
    );
    let key = root.path("own/web.yml").display().to_string();
    assert_eq!(include(&root.user_config(), &key), Some(true));
    // `disable web` finds the file that defines it and disables that.
    let run = root.ros(&["disable", "web"]).ok();
    assert!(run.stdout.contains("disabled web"), "{}", run.stdout);
    assert_eq!(include(&root.user_config(), &key), Some(false));
}

#[test]
fn disable_and_delete_edit_services_include() {
    let root = Root::new();
    root.ros(&["disable", "console"]).ok();
    assert_eq!(include(&root.user_config(), "console"), Some(false));
    assert!(root
        .ros(&["list"])
        .ok()
        .stdout
        .contains("disabled console\n"));
    root.ros(&["delete", "console"]).ok();
    assert_eq!(include(&root.user_config(), "console"), None);
    root.ros(&["delete", "console"]).fails_with(5);
    root.ros(&["disable", "nope"]).fails_with(5);
}

fn unix_ms_ago(secs: u64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (now - Duration::from_secs(secs)).as_millis() as u64
}

fn rows() -> Vec<ServiceRow> {
    vec![
        ServiceRow {
            name: "console".into(),
            image: "ros/console:0.1.0".into(),
            command: "/usr/libexec/ros/console-entry".into(),
            state: ServiceState::Running,
            pid: Some(42),
            exit_status: None,
            since_unix_ms: Some(unix_ms_ago(9 * 60 + 5)),
            restarts: 1,
            oneshot: false,
        },
        ServiceRow {
            name: "udev-cold".into(),
            image: "ros/udev:0.1.0".into(),
            command: "ros udev-settle".into(),
            state: ServiceState::Exited,
            pid: None,
            exit_status: Some(0),
            since_unix_ms: Some(unix_ms_ago(150)),
            restarts: 0,
            oneshot: true,
        },
    ]
}

#[test]
fn ps_prints_the_table_and_json() {
    let root = Root::new();
    let pid1 = FakePid1::serve(&root.socket(), Response::Ps { services: rows() });
    let run = root.ros(&["ps"]).ok();
    assert_eq!(pid1.request(), Request::Ps);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines[0].starts_with("NAME "), "{}", run.stdout);
    assert!(
        lines[0].ends_with("STATE                      RESTARTS"),
        "{}",
        run.stdout
    );
    assert!(lines[1].starts_with("console "), "{}", run.stdout);
    assert!(
        lines[1].contains("\"/usr/libexec/ros/co…\""),
        "{}",
        run.stdout
    );
    assert!(lines[1].contains("   Up 9 minutes   "), "{}", run.stdout);
    assert!(
        lines[2].contains("   Exited (0) 2 minutes ago   "),
        "{}",
        run.stdout
    );

    fs::remove_file(root.socket()).unwrap();
    let pid1 = FakePid1::serve(&root.socket(), Response::Ps { services: rows() });
    let run = root.ros(&["ps", "--format", "json"]).ok();
    assert_eq!(pid1.request(), Request::Ps);
    let parsed: Vec<ServiceRow> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(parsed, rows_with_times(&parsed));
}

/// `rows()` again, with the times of `got` (they were computed at another instant).
fn rows_with_times(got: &[ServiceRow]) -> Vec<ServiceRow> {
    rows()
        .into_iter()
        .zip(got)
        .map(|(mut r, g)| {
            r.since_unix_ms = g.since_unix_ms;
            r
        })
        .collect()
}

#[test]
fn requests_map_answers_to_exit_codes() {
    let root = Root::new();
    let pid1 = FakePid1::serve(
        &root.socket(),
        Response::Ok {
            messages: vec!["ntp: stopped".into()],
        },
    );
    let run = root.ros(&["stop", "-t", "3", "ntp"]).ok();
    assert_eq!(
        pid1.request(),
        Request::Stop {
            services: vec!["ntp".into()],
            timeout_secs: Some(3)
        }
    );
    assert_eq!(run.stdout, "ntp: stopped\n");

    fs::remove_file(root.socket()).unwrap();
    let pid1 = FakePid1::serve(
        &root.socket(),
        Response::error(ErrorKind::NotFound, "service ntpd: not defined"),
    );
    let run = root.ros(&["restart", "ntpd"]).fails_with(5);
    assert_eq!(
        pid1.request(),
        Request::Restart {
            services: vec!["ntpd".into()]
        }
    );
    assert!(
        run.stderr.contains("restart: service ntpd: not defined"),
        "{}",
        run.stderr
    );

    fs::remove_file(root.socket()).unwrap();
    let pid1 = FakePid1::serve(&root.socket(), Response::Ok { messages: vec![] });
    root.ros(&["up"]).ok();
    assert_eq!(pid1.request(), Request::Up { services: vec![] });

    root.ros(&["start"]).fails_with(2);
}

#[test]
fn stop_without_pid1_exits_4_naming_the_socket() {
    let root = Root::new();
    let run = root.ros(&["stop", "ntp"]).fails_with(4);
    assert!(
        run.stderr.contains(&root.socket().display().to_string()),
        "{}",
        run.stderr
    );
}

#[test]
fn logs_prints_the_last_lines_across_rotation() {
    let root = Root::new();
    root.write("var/log/ros/ntp.log", "three\nfour\n");
    root.write("var/log/ros/ntp.log.1", "one\ntwo\n");
    assert_eq!(
        root.ros(&["logs", "--lines", "2", "ntp"]).ok().stdout,
        "three\nfour\n"
    );
    assert_eq!(
        root.ros(&["logs", "--lines", "3", "ntp"]).ok().stdout,
        "two\nthree\nfour\n"
    );
    assert_eq!(
        root.ros(&["logs", "ntp"]).ok().stdout,
        "one\ntwo\nthree\nfour\n"
    );
    let run = root.ros(&["logs", "nope"]).fails_with(5);
    assert!(
        run.stderr.contains("service nope: no log at"),
        "{}",
        run.stderr
    );
}

#[test]
fn logs_follow_prints_what_is_appended() {
    let root = Root::new();
    let log = root.path("var/log/ros/ntp.log");
    root.write("var/log/ros/ntp.log", "before\n");
    let mut child = root
        .command(&["logs", "-f", "--lines", "1", "ntp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(DEADLINE);
    if first.as_deref() != Ok("before") {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "{first:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"after\n").unwrap();
    let second = rx.recv_timeout(DEADLINE);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(second.as_deref(), Ok("after"));
}
