//! Datasources end to end in a temp root: config-drive detection on image files, config
//! drive directories, file:, url: against a local server (ok, 404, retries, a server that
//! never answers), cmdline, gzip, scripts, and what the config loader then sees.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{config, gunzip, gzip, mode_of, put, serve, Answer};
use ros_cloudinit::fake::{Call, RecordingHost, RecordingModules, RecordingRunner};
use ros_cloudinit::{
    detect_label, fetch_user_data, find_config_drive, http_get, run_user_scripts, FetchOptions,
    FsKind, HttpError, MsFlags, Owner, RetryPolicy, StdRunner, Step,
};

const DROP_INS: &str = "var/lib/rancher/conf/cloud-config.d";
const SCRIPTS: &str = "var/lib/rancher/conf/scripts";

fn fast(timeout: Duration) -> FetchOptions {
    FetchOptions {
        http: RetryPolicy {
            timeout,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
        },
    }
}

fn drop_ins(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join(DROP_INS))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn testdata(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    gunzip(&fs::read(p).unwrap())
}

#[test]
fn labels_of_real_image_heads() {
    assert_eq!(
        detect_label(&testdata("config-2.iso.head.gz")),
        Some((FsKind::Iso9660, "config-2".into()))
    );
    assert_eq!(
        detect_label(&testdata("cidata.fat16.head.gz")),
        Some((FsKind::Fat, "cidata".into()))
    );
    assert_eq!(
        detect_label(&testdata("CONFIG-2.fat32.head.gz")),
        Some((FsKind::Fat32, "CONFIG-2".into()))
    );
}

/// A root with block devices `vda` (blank), `vdb` (the given image head) and `sr0`
/// (listed in sysfs, no device node: an unreadable drive).
fn root_with_devices(vdb: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["vda", "vdb", "sr0", "ram0"] {
        fs::create_dir_all(dir.path().join("sys/class/block").join(name)).unwrap();
    }
    put(dir.path(), "dev/vda", vec![0u8; 70_000]);
    put(dir.path(), "dev/vdb", vdb);
    dir
}

#[test]
fn config_drive_is_detected_mounted_read_and_unmounted() {
    let dir = root_with_devices(&testdata("config-2.iso.head.gz"));
    let root = dir.path();
    let device = root.join("dev/vdb");
    assert_eq!(
        find_config_drive(root).map(|d| (d.device, d.kind, d.label)),
        Some((device.clone(), FsKind::Iso9660, "config-2".to_string()))
    );

    let mut host = RecordingHost::new();
    host.mount_contents.insert(
        device.display().to_string(),
        vec![(
            "openstack/latest/user_data".into(),
            b"#cloud-config\nhostname: from-drive\n".to_vec(),
        )],
    );
    // The default list is empty: detection plus the kernel's cloud-config-url (none here).
    let modules = RecordingModules::default();
    let report = fetch_user_data(
        root,
        &config(""),
        None,
        &host,
        &modules,
        &fast(Duration::from_secs(5)),
    );
    assert!(report.is_ok(), "{:?}", report.problem_lines());
    // The drive's filesystem is loaded for the mount, and only it.
    assert_eq!(modules.loaded(), [("isofs".to_string(), String::new())]);

    let mount_point = root.join("run/ros/cloud-init/vdb");
    let mounting: Vec<Call> = host
        .calls()
        .into_iter()
        .filter(|c| !matches!(c, Call::WriteFile { .. } | Call::Remove(_)))
        .collect();
    assert_eq!(
        mounting,
        [
            Call::CreateDir {
                path: mount_point.clone(),
                mode: 0o700,
                owner: Owner::ROOT
            },
            Call::Mount {
                source: device.display().to_string(),
                target: mount_point.clone(),
                fstype: Some("iso9660".into()),
                flags: (MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC)
                    .bits(),
                data: None,
            },
            Call::Umount(mount_point.clone()),
        ]
    );
    assert!(host.calls().contains(&Call::Remove(mount_point)));
    let saved = root.join(DROP_INS).join("zz-datasource-00-configdrive.yml");
    assert_eq!(
        fs::read_to_string(&saved).unwrap(),
        "#cloud-config\nhostname: from-drive\n"
    );
    assert_eq!(mode_of(&saved), 0o600);
}

#[test]
fn fat_config_drive_mounts_as_vfat_and_no_drive_is_not_a_problem() {
    let dir = root_with_devices(&testdata("cidata.fat16.head.gz"));
    let host = RecordingHost::new();
    let modules = RecordingModules::default();
    let report = fetch_user_data(
        dir.path(),
        // RancherOS's usual entry: nothing mounts /media/config-2 here, so it is detected.
        &config("rancher: {cloud_init: {datasources: ['configdrive:/media/config-2']}}"),
        None,
        &host,
        &modules,
        &fast(Duration::from_secs(5)),
    );
    let loaded: Vec<String> = modules.loaded().into_iter().map(|(m, _)| m).collect();
    assert_eq!(loaded, ["vfat", "nls_cp437", "nls_ascii", "nls_utf8"]);
    // Mounted (as vfat) but the fake device shows no files: nothing to save, no problem.
    assert!(report.is_ok(), "{:?}", report.problem_lines());
    assert!(host
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Mount { fstype: Some(f), .. } if f == "vfat")));
    assert!(drop_ins(dir.path()).is_empty());

    let blank = root_with_devices(&[0u8; 4096]);
    let host = RecordingHost::new();
    let report = fetch_user_data(
        blank.path(),
        &config(""),
        None,
        &host,
        &RecordingModules::default(),
        &fast(Duration::from_secs(5)),
    );
    assert!(report.is_ok(), "{:?}", report.problem_lines());
    assert!(!host.calls().iter().any(|c| matches!(c, Call::Mount { .. })));
    assert!(report
        .applied_lines()
        .contains(&"cloud-init: datasource configdrive: no config drive found".to_string()));
}

#[test]
fn config_drive_directory_prefers_openstack_user_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(
        root,
        "media/config-2/openstack/latest/user_data",
        "#cloud-config\nhostname: openstack\n",
    );
    put(
        root,
        "media/config-2/user-data",
        "#cloud-config\nhostname: nocloud\n",
    );
    put(
        root,
        "media/cidata/user-data",
        "#cloud-config\nhostname: nocloud\n",
    );
    let cfg = config("rancher: {cloud_init: {datasources: [configdrive:/media/config-2, configdrive:/media/cidata]}}");
    let report = fetch_user_data(
        root,
        &cfg,
        None,
        &RecordingHost::new(),
        &RecordingModules::default(),
        &fast(Duration::from_secs(5)),
    );
    assert!(report.is_ok(), "{:?}", report.problem_lines());
    let dir = root.join(DROP_INS);
    assert_eq!(
        fs::read_to_string(dir.join("zz-datasource-00-configdrive.yml")).unwrap(),
        "#cloud-config\nhostname: openstack\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("zz-datasource-01-configdrive.yml")).unwrap(),
        "#cloud-config\nhostname: nocloud\n"
    );
}

#[test]
fn file_datasource_with_gzip_and_script() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(
        root,
        "srv/cc.yml.gz",
        gzip(b"#cloud-config\nhostname: zipped\n"),
    );
    let script = b"#!/bin/sh\necho \"ran with $GREETING\" > \"$OUT\"\n";
    put(root, "srv/setup.sh", script);
    let cfg =
        config("rancher: {cloud_init: {datasources: [file:/srv/cc.yml.gz, file:/srv/setup.sh]}}");
    let report = fetch_user_data(
        root,
        &cfg,
        None,
        &RecordingHost::new(),
        &RecordingModules::default(),
        &fast(Duration::from_secs(5)),
    );
    assert!(report.is_ok(), "{:?}", report.problem_lines());
    assert_eq!(
        fs::read_to_string(root.join(DROP_INS).join("zz-datasource-00-file.yml")).unwrap(),
        "#cloud-config\nhostname: zipped\n"
    );
    let saved = root.join(SCRIPTS).join("datasource-01-file");
    assert_eq!(fs::read(&saved).unwrap(), script);
    assert_eq!(mode_of(&saved), 0o700);
    assert_eq!(drop_ins(root), ["zz-datasource-00-file.yml"]);

    // The saved script runs (really, with std: this test process is not PID 1).
    let out = root.join("out.txt");
    let env_cfg = config(&format!(
        "rancher: {{environment: {{GREETING: hi, OUT: {}}}}}",
        out.display()
    ));
    let log = root.join("var/log/cloud-init.log");
    let report = run_user_scripts(root, &env_cfg, &StdRunner, &log);
    assert!(report.is_ok(), "{:?}", report.problem_lines());
    assert_eq!(fs::read_to_string(&out).unwrap(), "ran with hi\n");

    // With the fake runner: one invocation, the script itself as argv.
    let runner = RecordingRunner::default();
    run_user_scripts(root, &env_cfg, &runner, &log);
    assert_eq!(runner.argvs(), [vec![saved.display().to_string()]]);
}

#[test]
fn bad_entries_and_failures_are_reported_and_the_rest_still_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, "srv/good.yml", "#cloud-config\nhostname: good\n");
    put(root, "srv/plain.txt", "hostname: no-header\n");
    // Left by an earlier boot: a copy for slot 01 (kept when that fetch fails) and one for
    // a datasource no longer listed (removed).
    put(
        root,
        &format!("{DROP_INS}/zz-datasource-01-file.yml"),
        "#cloud-config\nhostname: old\n",
    );
    put(
        root,
        &format!("{DROP_INS}/zz-datasource-07-url.yml"),
        "#cloud-config\n",
    );
    put(root, &format!("{DROP_INS}/50-user.yml"), "hostname: mine\n");
    let cfg = config(
        "rancher: {cloud_init: {datasources: [ec2, file:/srv/good.yml, file:/srv/missing.yml, file:/srv/plain.txt, cmdline, 'file:relative']}}",
    );
    let report = fetch_user_data(
        root,
        &cfg,
        None,
        &RecordingHost::new(),
        &RecordingModules::default(),
        &fast(Duration::from_secs(5)),
    );
    let lines = report.problem_lines();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(
        lines[0].starts_with("cloud-init: datasource ec2: datasource `ec2` is not supported"),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1],
        "cloud-init: datasource file:relative: `relative` is not an absolute path"
    );
    assert!(
        lines[2].starts_with(&format!(
            "cloud-init: datasource file:/srv/missing.yml: reading {}: ",
            root.join("srv/missing.yml").display()
        )),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].ends_with("; keeping the user-data an earlier boot saved"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3]
            .contains("file:/srv/plain.txt: reading user-data: starts with `hostname: no-header"),
        "{}",
        lines[3]
    );
    assert_eq!(
        lines[4],
        "cloud-init: datasource cmdline: no cloud-config-url= on the kernel command line"
    );
    assert_eq!(
        drop_ins(root),
        [
            "50-user.yml",
            "zz-datasource-00-file.yml",
            "zz-datasource-01-file.yml"
        ]
    );
}

#[test]
fn datasource_user_data_layers_above_drop_ins_and_below_the_kernel_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(
        root,
        "var/lib/rancher/conf/cloud-config.yml",
        "rancher: {console: user, log: true}\n",
    );
    put(
        root,
        &format!("{DROP_INS}/50-ros.yml"),
        "rancher: {console: dropin, debug: true}\n",
    );
    put(
        root,
        "srv/a.yml",
        "#cloud-config\nhostname: first\nrancher: {console: datasource}\n",
    );
    put(root, "srv/b.yml", "#cloud-config\nhostname: second\n");
    let cfg = config("rancher: {cloud_init: {datasources: [file:/srv/a.yml, file:/srv/b.yml]}}");
    let report = fetch_user_data(
        root,
        &cfg,
        None,
        &RecordingHost::new(),
        &RecordingModules::default(),
        &fast(Duration::from_secs(5)),
    );
    assert!(report.is_ok(), "{:?}", report.problem_lines());

    let loaded = ros_config::load(root, Some(""), ros_config::Mode::Boot);
    let c = &loaded.config;
    assert_eq!(c.rancher.console.as_deref(), Some("datasource"));
    assert_eq!(c.hostname.as_ref().map(|h| h.as_str()), Some("second"));
    assert!(c.rancher.debug && c.rancher.log);
    let loaded = ros_config::load(
        root,
        Some("rancher.console=cmdline"),
        ros_config::Mode::Boot,
    );
    assert_eq!(loaded.config.rancher.console.as_deref(), Some("cmdline"));
}

#[test]
fn url_ok_is_saved() {
    let server = serve(
        Answer::Ok(b"#cloud-config\nhostname: from-url\n".to_vec()),
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "rancher: {{cloud_init: {{datasources: ['url:{}']}}}}",
        server.url
    ));
    let report = fetch_user_data(
        dir.path(),
        &cfg,
        None,
        &RecordingHost::new(),
        &RecordingModules::default(),
        &fast(Duration::from_secs(10)),
    );
    assert!(report.is_ok(), "{:?}", report.problem_lines());
    let saved = dir.path().join(DROP_INS).join("zz-datasource-00-url.yml");
    assert_eq!(
        fs::read_to_string(saved).unwrap(),
        "#cloud-config\nhostname: from-url\n"
    );
}

#[test]
fn cmdline_url_is_used_when_no_datasource_is_listed() {
    let server = serve(Answer::Ok(gzip(b"#!/bin/sh\ntrue\n")), 4);
    let dir = tempfile::tempdir().unwrap();
    let report = fetch_user_data(
        dir.path(),
        &config(""),
        Some(&server.url),
        &RecordingHost::new(),
        &RecordingModules::default(),
        &fast(Duration::from_secs(10)),
    );
    assert!(report.is_ok(), "{:?}", report.problem_lines());
    let script: PathBuf = dir.path().join(SCRIPTS).join("datasource-01-cmdline");
    assert_eq!(fs::read(&script).unwrap(), b"#!/bin/sh\ntrue\n");
    assert_eq!(mode_of(&script), 0o700);
}

#[test]
fn url_404_is_reported_at_once() {
    let server = serve(Answer::Status(404), 4);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "rancher: {{cloud_init: {{datasources: ['url:{}']}}}}",
        server.url
    ));
    let start = Instant::now();
    let report = fetch_user_data(
        dir.path(),
        &cfg,
        None,
        &RecordingHost::new(),
        &RecordingModules::default(),
        &fast(Duration::from_secs(30)),
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        report.problem_lines(),
        [format!(
            "cloud-init: datasource url:{0}: GET {0}: HTTP status 404",
            server.url
        )]
    );
    assert!(drop_ins(dir.path()).is_empty());
}

#[test]
fn url_5xx_is_retried_with_backoff() {
    let server = serve(Answer::FailThenOk(2, b"#cloud-config\n".to_vec()), 8);
    let policy = RetryPolicy {
        timeout: Duration::from_secs(20),
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
    };
    assert_eq!(
        http_get(&server.url, &policy, &[]).unwrap(),
        b"#cloud-config\n"
    );
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

#[test]
fn url_that_never_answers_is_bounded_by_the_timeout() {
    let server = serve(Answer::Hang, 64);
    let timeout = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    // Two dead URLs share the one timeout: boot waits for it once, not twice.
    let cfg = config(&format!(
        "rancher: {{cloud_init: {{datasources: ['url:{0}', 'url:{0}?again']}}}}",
        server.url
    ));
    let start = Instant::now();
    let report = fetch_user_data(
        dir.path(),
        &cfg,
        None,
        &RecordingHost::new(),
        &RecordingModules::default(),
        &fast(timeout),
    );
    let elapsed = start.elapsed();
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
    let problems = report.problems_of(Step::Datasource);
    assert_eq!(problems.len(), 2, "{:?}", report.problem_lines());
    assert!(
        problems[0].message.contains("gave up after")
            && problems[0].message.contains("timeout 1.5s"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].message.contains("no time left"),
        "{}",
        problems[1]
    );

    // And the same through the client directly: a timeout, not a status.
    let err = http_get(&server.url, &fast(Duration::from_millis(300)).http, &[]).unwrap_err();
    assert!(matches!(err, HttpError::TimedOut { .. }), "{err}");
}

#[test]
fn refused_connection_retries_until_the_timeout() {
    // Bind then drop: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/x");
    let start = Instant::now();
    let err = http_get(&url, &fast(Duration::from_millis(600)).http, &[]).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_millis(1600),
        "{:?}",
        start.elapsed()
    );
    match err {
        HttpError::TimedOut { attempts, .. } => assert!(attempts >= 2, "{attempts}"),
        other => panic!("{other}"),
    }
}

/// An https server (python3's ssl module) for a certificate of a fresh private CA: its
/// port and the CA's PEM. Killed on drop.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    ca: String,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cc.yml"), "#cloud-config\n").unwrap();
        // server.pem and server.key, which the server script reads from `dir`.
        let (ca, _, _) = ros_test_support::private_ca(dir.path(), "127.0.0.1");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = "import functools, http.server, ssl, sys\n\
            d, port = sys.argv[1:]\n\
            h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d)\n\
            s = http.server.HTTPServer(('127.0.0.1', int(port)), h)\n\
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
            c.load_cert_chain(d + '/server.pem', d + '/server.key')\n\
            s.socket = c.wrap_socket(s.socket, server_side=True)\n\
            s.serve_forever()\n";
        let child = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(dir.path())
            .arg(port.to_string())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 (make deps installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the https server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsServer {
            child,
            port,
            ca,
            _dir: dir,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_trusts_the_given_ca_and_refuses_an_unknown_one_at_once() {
    let server = TlsServer::start();
    let url = format!("https://127.0.0.1:{}/cc.yml", server.port);
    let policy = fast(Duration::from_secs(20)).http;
    assert_eq!(
        http_get(&url, &policy, std::slice::from_ref(&server.ca)).unwrap(),
        b"#cloud-config\n"
    );
    // The public roots do not know this CA: final at once, not retried for 20 s.
    let start = Instant::now();
    let err = http_get(&url, &policy, &[]).unwrap_err().to_string();
    assert!(start.elapsed() < Duration::from_secs(5), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
}
