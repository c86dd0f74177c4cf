//! The process-level tier (STYLE 18): the real `init` binary as a child subreaper
//! (`init --subreaper`) below a temporary root, with a containerd of its own (the host's
//! /usr/bin/containerd, as ros-runtime's tests use it), services from a busybox image in
//! the root's image store, and `ros` over the real control socket. What a QEMU boot takes
//! minutes to check, in seconds: boot markers, reaping, `ros service`, a reload, and the
//! shutdown's order on SIGTERM.
//!
//! Needs root, containerd, runc and busybox (make deps installs them), and the `ros`
//! binary beside `init` (`cargo test --workspace` builds it): skipped without them, a
//! failure under CI.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const INIT: &str = env!("CARGO_BIN_EXE_init");
const CONTAINERD: &str = "/usr/bin/containerd";
const IMAGE: &str = "ros/test:1";
/// How long any one step may take (the slowest is containerd's first start).
const DEADLINE: Duration = Duration::from_secs(60);

/// The runc the host has, which the root's `crun` points at. The image's runtime is crun;
/// this machine's (a cgroup v2 hierarchy holding a controller beside v1's) makes crun
/// refuse every container, and either speaks the OCI runtime's command line.
fn runc() -> Option<PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn ros_binary() -> PathBuf {
    Path::new(INIT).with_file_name("ros")
}

/// What init wrote on its "console" (stderr), line by line, as it comes.
#[derive(Default)]
struct Console {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Console {
    fn follow(self: &Arc<Self>, stderr: std::process::ChildStderr) {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                me.lines.lock().unwrap().push(line);
                me.grew.notify_all();
            }
        });
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The index of the first line from `from` on that contains `text`, waiting for it up
    /// to [`DEADLINE`]; on timeout, the test fails with the console's last lines.
    fn wait_for(&self, text: &str, from: usize) -> usize {
        let deadline = Instant::now() + DEADLINE;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(i) = lines.iter().skip(from).position(|l| l.contains(text)) {
                return from + i;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no `{text}` on init's console within {DEADLINE:?}; last lines:\n{}",
                tail(&lines)
            );
            lines = self.grew.wait_timeout(lines, left).unwrap().0;
        }
    }
}

fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A temporary root with what init reads, and init running in it.
struct Subreaper {
    root: tempfile::TempDir,
    child: Option<Child>,
    /// init's pid (kept after it exits: its namespace and cgroup are named after it).
    pid: u32,
    console: Arc<Console>,
}

impl Subreaper {
    fn path(&self, well_known: &str) -> PathBuf {
        self.root.path().join(well_known.trim_start_matches('/'))
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// `ros ARGS` as the console's root would type it, with this root's paths.
    fn ros(&self, args: &[&str]) -> Output {
        #[allow(clippy::disallowed_methods)] // a test process, not PID 1: no reaper here
        Command::new(ros_binary())
            .args(args)
            .env(ros_config::paths::ROOT_ENV, self.root.path())
            .output()
            .expect("running ros")
    }

    /// Wait for init to exit, up to [`DEADLINE`]; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let child = self.child.as_mut().expect("init runs");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for init") {
                self.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "init did not exit within {DEADLINE:?}; last lines:\n{}",
                tail(&self.console.snapshot())
            );
            // A poll of the exit with a deadline, not a synchronisation: nothing else to wait on.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        let pid = self.pid();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            #[allow(clippy::disallowed_methods)] // a test process, not PID 1
            let _ = child.wait();
        }
        // What a killed init leaves: its containerd and shims (children of the test now),
        // the services' overlay mounts below the root, their cgroup parent.
        let root = self.root.path().to_string_lossy().to_string();
        for (pid, cmdline) in processes() {
            if cmdline.contains(&root) {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                // The test is their subreaper once init is gone (see `start`).
                let _ = nix::sys::wait::waitpid(pid, None);
            }
        }
        // runc's state for init's namespace, and what a killed init left running there.
        // init's containerd namespace and cgroup parent are both `ros-subreaper-PID`.
        let own = format!("ros-subreaper-{pid}");
        let state = Path::new("/run/containerd/runc").join(&own);
        for entry in std::fs::read_dir(&state).into_iter().flatten().flatten() {
            if let Some(runc) = runc() {
                #[allow(clippy::disallowed_methods)] // a test process, not PID 1
                let _ = Command::new(runc)
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "-f"])
                    .arg(entry.file_name())
                    .status();
            }
        }
        ros_test_support::unmount_below(self.root.path());
        // The services' cgroup parent; the runtime removed the services' own unless init
        // was killed.
        ros_test_support::remove_cgroup(&own);
        let _ = std::fs::remove_dir(&state);
    }
}

/// Every process: pid and command line (NULs as spaces).
fn processes() -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A long-running service of the test image that says when it starts and, on TERM, when
/// it stops (in `/shared/order`, a directory of the root bound into every service).
/// Privileged: runc refuses the bind of the redacted kernel line over `/proc/cmdline`
/// that an unprivileged service gets (the image's crun makes it; the boot tests check it).
fn service(name: &str, after: Option<&str>, shared: &Path) -> String {
    let after = after.map_or(String::new(), |a| format!("\n    io.rancher.os.after: {a}"));
    format!(
        r#"{name}:
  image: {IMAGE}
  command: ["sh", "-c", "trap 'echo {name} stopping >> /shared/order; exit 0' TERM; echo {name} up >> /shared/order; sleep 3600 & wait $!"]
  labels:
    io.rancher.os.scope: system{after}
  privileged: true
  net: none
  restart: always
  volumes: ["{shared}:/shared"]
"#,
        shared = shared.display()
    )
}

/// A root with what every test here needs: the os-config, the test image in the image
/// store, the host's containerd and runc where init looks for them (runc as its crun),
/// `/shared`, bound into the services, the kernel line ([`KERNEL_LINE`]), and the test's
/// own files: `files` gets the root's paths (`at("/shared")`) and may write more.
fn make_root(files: impl FnOnce(&dyn Fn(&str) -> PathBuf) -> TestFiles) -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("ros-subreaper-")
        .tempdir()
        .unwrap();
    let at = |p: &str| root.path().join(p.trim_start_matches('/'));
    let test = files(&at);
    write(
        &at(ros_config::paths::SERVICES_DIR).join("test.yml"),
        &test.services,
        0o644,
    );
    write(
        &at(ros_config::paths::USER_CONFIG),
        &test.user_config,
        0o600,
    );
    write(&at("/proc/cmdline"), KERNEL_LINE, 0o644);
    write(
        &at(ros_config::paths::OS_CONFIG),
        "rancher:\n  shutdown_timeout: 20\n  cloud_init:\n    datasources: []\n",
        0o644,
    );
    std::fs::create_dir_all(at("/shared")).unwrap();
    let archive = root.path().join("test-image.tar");
    ros_test_support::busybox_image(&archive, IMAGE, false).unwrap();
    ros_image::add_to_store(&archive, &at("/usr/share/ros/image-store")).unwrap();
    std::fs::remove_file(&archive).unwrap();
    let bin = at("/usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(CONTAINERD, bin.join("containerd")).unwrap();
    std::os::unix::fs::symlink(runc().unwrap(), bin.join("crun")).unwrap();
    // What the machine's root always has: /dev (init links /dev/log there) and /run
    // (its syslog directory, the control socket, containerd's state).
    for dir in ["/dev", "/run"] {
        std::fs::create_dir_all(at(dir)).unwrap();
    }
    root
}

/// What a test puts in its root: its services (one built-in file) and the user config.
struct TestFiles {
    services: String,
    user_config: String,
}

/// The kernel line every test here boots with.
const KERNEL_LINE: &str = "console=ttyS0";

/// Whether this machine can run the tests here; if not, the test is skipped (a failure
/// under CI).
fn can_run(test: &str) -> bool {
    let euid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    let needed = [CONTAINERD, ros_test_support::BUSYBOX];
    if euid != 0 || !needed.iter().all(|p| Path::new(p).exists()) || runc().is_none() {
        ros_test_support::skip(test, &format!("needs root, {needed:?} and runc"));
        return false;
    }
    if !ros_binary().exists() {
        let why = format!(
            "no {} (cargo test --workspace builds it)",
            ros_binary().display()
        );
        ros_test_support::skip(test, &why);
        return false;
    }
    true
}

fn start(root: tempfile::TempDir) -> Subreaper {
    // What a killed init leaves (containerd, shims) is the test's to reap, not the machine's.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let console = Arc::new(Console::default());
    let mut child = Command::new(INIT)
        .arg("--subreaper")
        .env(ros_config::paths::ROOT_ENV, root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting init --subreaper");
    console.follow(child.stderr.take().unwrap());
    Subreaper {
        root,
        pid: child.id(),
        child: Some(child),
        console,
    }
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn init_as_a_subreaper_boots_reaps_serves_reloads_and_shuts_down_in_order() {
    if !can_run("init_as_a_subreaper_boots_reaps_serves_reloads_and_shuts_down_in_order") {
        return;
    }
    let root = make_root(|at| TestFiles {
        services: format!(
            "{}{}",
            service("first", None, &at("/shared")),
            service("second", Some("first"), &at("/shared"))
        ),
        user_config: format!(
            "#cloud-config\nbootcmd:\n  - [sh, -c, 'sleep 600 & echo $! > {}']\n",
            at("/orphan").display()
        ),
    });
    let mut init = start(root);
    let console = init.console.clone();

    // The boot, in its order, as the console shows it.
    let mut at = 0;
    for marker in [
        "ROS BOOT init ",
        "ROS BOOT state ",
        "ROS BOOT containerd-ready ",
        "ROS BOOT images-imported ",
        "ROS BOOT service-started ",
        "ROS BOOT service-started ",
        "ROS BOOT boot-complete ",
    ] {
        at = console.wait_for(marker, at) + 1;
    }
    let lines = console.snapshot();
    let started: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("ROS BOOT service-started"))
        .collect();
    assert!(
        started[0].ends_with(" first") && started[1].ends_with(" second"),
        "io.rancher.os.after: first, so first starts first: {started:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("ROS BOOT fatal") || l.contains("ERROR")),
        "errors on the console:\n{}",
        tail(&lines)
    );

    // Reaping: the bootcmd's shell exited and left its `sleep` behind; the subreaper is
    // its parent now, and reaps it once it is killed (a zombie would keep /proc/PID).
    let orphan: u32 = std::fs::read_to_string(init.path("/orphan"))
        .expect("the bootcmd ran")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        ppid(orphan),
        Some(init.pid()),
        "the orphan's parent is init"
    );
    kill9(orphan);
    let deadline = Instant::now() + DEADLINE;
    while Path::new(&format!("/proc/{orphan}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the orphan {orphan} was not reaped"
        );
        // A poll with a deadline: a reaped process leaves no event to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }

    // `ros service` over the real control socket.
    let ps = init.ros(&["service", "ps"]);
    let out = text(&ps);
    assert!(ps.status.success(), "ros service ps: {out}");
    for name in ["first", "second"] {
        assert!(
            out.lines().any(|l| l.contains(name) && l.contains("Up")),
            "ros service ps shows {name} up:\n{out}"
        );
    }

    // A reload: a service added to the user's config starts on `ros service up`.
    let shared = init.path("/shared");
    let user = init.path(ros_config::paths::USER_CONFIG);
    let mut config = std::fs::read_to_string(&user).unwrap();
    let third = service("third", None, &shared).replace('\n', "\n    ");
    config.push_str(&format!("rancher:\n  services:\n    {third}\n"));
    write(&user, &config, 0o600);
    let from = console.snapshot().len();
    let up = init.ros(&["service", "up", "third"]);
    assert!(up.status.success(), "ros service up third: {}", text(&up));
    console.wait_for("ROS BOOT service-started ", from);
    let list = text(&init.ros(&["service", "list"]));
    assert!(
        list.lines()
            .any(|l| l.contains("enabled") && l.contains("third")),
        "ros service list shows the new service:\n{list}"
    );

    // SIGTERM: a power-off; the services stop in reverse order, then init exits 0 and
    // leaves no process behind.
    let from = console.snapshot().len();
    signal(init.pid(), nix::sys::signal::Signal::SIGTERM);
    console.wait_for("ROS BOOT shutdown ", from);
    let code = init.wait_exit();
    let lines = console.snapshot();
    assert_eq!(code, Some(0), "init's exit; last lines:\n{}", tail(&lines));
    let order = std::fs::read_to_string(shared.join("order")).unwrap();
    let position = |line: &str| {
        order
            .lines()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no `{line}` in the services' log:\n{order}"))
    };
    assert!(
        position("second stopping") < position("first stopping"),
        "second (after first) stops before first:\n{order}"
    );
    position("third stopping");
    let root = init.root.path().to_string_lossy().to_string();
    let left: Vec<(u32, String)> = processes()
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains(&root))
        .collect();
    assert!(
        left.is_empty(),
        "processes left after init's exit: {left:?}"
    );
}

impl Subreaper {
    /// Run `ros ARGS` until its output satisfies `done`, up to [`DEADLINE`]; that output.
    fn ros_until(&self, args: &[&str], what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = text(&self.ros(args));
            if done(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "ros {}: never {what}; last output:\n{out}\nconsole:\n{}",
                args.join(" "),
                tail(&self.console.snapshot())
            );
            // A poll with a deadline, as the boot tests' `until`: `ros` answers, it does
            // not notify.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The `ros service ps` row of `name`, split in fields.
fn ps_row(ps: &str, name: &str) -> Vec<String> {
    ps.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// The pid a `... started pid N ...` or `... (pid N)` console line names.
fn pid_in(line: &str) -> u32 {
    let after = line.split("pid ").nth(1).expect("a pid on the line");
    after
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

fn kill9(pid: u32) {
    signal(pid, nix::sys::signal::Signal::SIGKILL);
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// The supervisor as a user meets it through `ros service` (the QEMU test of the same
/// checks the console container's view): restart of a killed service, a crash loop's
/// backoff, stop and logs, one catalog for PID 1 and `ros` on a partly broken file,
/// unknown services, `rancher.debug` from a cloud-config, and a containerd killed under
/// running services.
#[test]
fn services_are_restarted_backed_off_and_managed_over_the_control_socket() {
    if !can_run("services_are_restarted_backed_off_and_managed_over_the_control_socket") {
        return;
    }
    let root = make_root(|at| {
        let bars = at("/conf/bars.yml");
        write(
            &bars,
            &format!("bars-good:\n  image: {IMAGE}\n  command: [sh, -c, \"trap 'exit 0' TERM; sleep 1000 & wait $!\"]\n  privileged: true\n  net: none\n"),
            0o644,
        );
        TestFiles {
            services: format!(
                r#"ticker:
  image: {IMAGE}
  command: ["sh", "-c", "trap 'exit 0' TERM; echo tick; sleep 3600 & wait $!"]
  privileged: true
  net: none
  restart: always
crasher:
  image: {IMAGE}
  command: ["sh", "-c", "echo crashing; exit 1"]
  privileged: true
  net: none
  restart: always
"#
            ),
            // Debug from the user's config, not the kernel line.
            user_config: format!(
                "#cloud-config\nrancher:\n  debug: true\n  services_include:\n    {}: true\n",
                bars.display()
            ),
        }
    });
    let mut init = start(root);
    let console = init.console.clone();
    console.wait_for("debug logging on (rancher.debug)", 0);
    console.wait_for("ROS BOOT boot-complete", 0);

    // A crash loop backs off: 1 s, then 2 s between restarts; stopped, it stays stopped,
    // and its log keeps what it printed.
    let mut at_line = 0;
    for delay in ["1s", "2s"] {
        at_line = console.wait_for(
            &format!("service crasher: exited (1), restarting in {delay}"),
            at_line,
        );
    }
    let stop = init.ros(&["service", "stop", "crasher"]);
    assert!(stop.status.success(), "{}", text(&stop));
    init.ros_until(&["service", "ps"], "shows crasher Exited", |ps| {
        ps_row(ps, "crasher").iter().any(|f| f == "Exited")
    });
    let log = text(&init.ros(&["service", "logs", "crasher"]));
    assert!(log.contains("crashing"), "ros service logs crasher:\n{log}");

    // A killed service is restarted, and the restart counted.
    let lines = console.snapshot();
    let ticker = lines
        .iter()
        .find(|l| l.contains("service ticker: started pid"))
        .map(|l| pid_in(l))
        .expect("ticker started");
    let ps = text(&init.ros(&["service", "ps"]));
    assert_eq!(
        ps_row(&ps, "ticker").last().map(String::as_str),
        Some("0"),
        "{ps}"
    );
    let from = console.snapshot().len();
    kill9(ticker);
    console.wait_for("service ticker: restarted pid", from);
    init.ros_until(&["service", "ps"], "counts ticker's restart", |ps| {
        let row = ps_row(ps, "ticker");
        row.iter().any(|f| f == "Up") && row.last().map(String::as_str) == Some("1")
    });

    // One catalog: the file's good service runs; a broken one added beside it is named
    // with its line and left out, alone. PID 1 and `ros service list` agree.
    init.ros_until(&["service", "ps"], "shows bars-good Up", |ps| {
        ps_row(ps, "bars-good").iter().any(|f| f == "Up")
    });
    let bars = init.path("/conf/bars.yml");
    let mut file = std::fs::read_to_string(&bars).unwrap();
    file.push_str("bars-bad:\n  image: ros/test:1\n  restart: sometimes\n");
    write(&bars, &file, 0o644);
    let from = console.snapshot().len();
    let up = init.ros(&["service", "up", "bars-good"]);
    assert!(up.status.success(), "{}", text(&up));
    console.wait_for("bars.yml:8:12: bars-bad.restart", from);
    let list = text(&init.ros(&["service", "list"]));
    assert!(list.contains("enabled  bars-good"), "{list}");
    let ps = text(&init.ros(&["service", "ps"]));
    assert!(ps_row(&ps, "bars-good").iter().any(|f| f == "Up"), "{ps}");

    // Unknown services: exit code 5.
    let unknown = init.ros(&["service", "start", "no-such-service"]);
    assert_eq!(unknown.status.code(), Some(5), "{}", text(&unknown));

    // containerd killed under running services: PID 1 starts it again and re-attaches;
    // ticker keeps its process, and new work goes through the new containerd.
    let lines = console.snapshot();
    let ticker = lines
        .iter()
        .rev()
        .find(|l| l.contains("service ticker: ") && l.contains("started pid"))
        .map(|l| pid_in(l))
        .unwrap();
    let containerd = lines
        .iter()
        .find(|l| l.contains("containerd: started (pid"))
        .map(|l| pid_in(l))
        .unwrap();
    let from = lines.len();
    kill9(containerd);
    // A request made while containerd is down waits for PID 1 to re-attach (containerd's
    // restart backs off at least 0.5 s), then is carried out through the new containerd.
    console.wait_for("supervisor: containerd exit events ended", from);
    let during = init.ros(&["service", "restart", "bars-good"]);
    assert!(during.status.success(), "{}", text(&during));
    let waited = console.wait_for(
        "supervisor: waiting for containerd before the request",
        from,
    );
    let attached = console.wait_for("supervisor: re-attached to containerd", from);
    console.wait_for("service-started ", attached);
    assert!(waited < attached, "{}", tail(&console.snapshot()));
    let ps = text(&init.ros(&["service", "ps"]));
    assert!(ps_row(&ps, "bars-good").iter().any(|f| f == "Up"), "{ps}");
    let ps = text(&init.ros(&["service", "ps"]));
    assert!(ps_row(&ps, "ticker").iter().any(|f| f == "Up"), "{ps}");
    assert!(
        Path::new(&format!("/proc/{ticker}")).exists(),
        "ticker's process {ticker} did not survive containerd's restart"
    );
    let ps = text(&init.ros(&["service", "ps"]));
    assert_eq!(
        ps_row(&ps, "ticker").last().map(String::as_str),
        Some("1"),
        "{ps}"
    );
    let from = console.snapshot().len();
    let restart = init.ros(&["service", "restart", "ticker"]);
    assert!(restart.status.success(), "{}", text(&restart));
    console.wait_for("ROS BOOT service-started ", from);

    // SIGINT (Ctrl-Alt-Del) asks for a reboot: PID 1 stops everything and, a subreaper,
    // exits 0. (Not `ros reboot`: it signals the machine's PID 1.)
    let from = console.snapshot().len();
    signal(init.pid(), nix::sys::signal::Signal::SIGINT);
    console.wait_for("ROS BOOT shutdown ", from);
    let code = init.wait_exit();
    assert_eq!(code, Some(0), "{}", tail(&console.snapshot()));
    assert!(
        console
            .snapshot()
            .iter()
            .any(|l| l.ends_with(" reboot") && l.contains("ROS BOOT shutdown")),
        "the shutdown is a reboot"
    );
}

/// A user config with a bad value and an unknown key still boots: each problem is named on
/// the console with its file, line and column, and kept in config.log; the rest of the
/// file applies. Its hostname is refused in subreaper mode (the machine running the test
/// keeps its own name), and said so.
#[test]
fn a_broken_user_config_boots_and_says_where_and_the_machine_keeps_its_name() {
    if !can_run("a_broken_user_config_boots_and_says_where_and_the_machine_keeps_its_name") {
        return;
    }
    let root = make_root(|at| {
        TestFiles {
        services: service("only", None, &at("/shared")),
        user_config: "#cloud-config\nhostname: not-this-machine\nrancher:\n  shutdown_timeout: soon\n  no_such_key: 1\n  environment:\n    KEPT: yes\n".into(),
    }
    });
    let machine = nix::unistd::gethostname().unwrap();
    let init = start(root);
    let console = init.console.clone();
    console.wait_for("ROS BOOT boot-complete", 0);
    let lines = console.snapshot();
    let file = init
        .path(ros_config::paths::USER_CONFIG)
        .display()
        .to_string();
    let said = |severity: &str, place: &str, text: &str| {
        lines
            .iter()
            .any(|l| l.contains(&format!("{severity}config: {file}:{place}")) && l.contains(text))
    };
    assert!(
        said("ERROR ", "4:21: rancher.shutdown_timeout", ""),
        "the bad value, at its line and column:\n{}",
        tail(&lines)
    );
    assert!(
        said("WARN ", "5:3: rancher.no_such_key", "ignored"),
        "the unknown key, at its line and column:\n{}",
        tail(&lines)
    );
    let log = std::fs::read_to_string(init.path("/var/log/ros/config.log")).unwrap();
    assert!(
        log.contains("rancher.shutdown_timeout") && log.contains("rancher.no_such_key"),
        "config.log:\n{log}"
    );
    // The rest of the file applies (`ros` names the problem too, on stderr).
    let get = init.ros(&["config", "get", "rancher.environment.KEPT"]);
    assert_eq!(
        String::from_utf8_lossy(&get.stdout),
        "yes\n",
        "{}",
        text(&get)
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("sethostname: not done in subreaper mode")),
        "the hostname is refused, and said so:\n{}",
        tail(&lines)
    );
    assert_eq!(nix::unistd::gethostname().unwrap(), machine);
}
