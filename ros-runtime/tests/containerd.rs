//! End to end against a private containerd (root only): import an OCI archive built here
//! from the host's static busybox, re-import it, run one-shot and long-running services,
//! list, stop, and wait for exit events.
//!
//! Skips (passes with a message) when not root or when /usr/bin/containerd is missing.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcessStdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use ros_config::service::{Command as ServiceCommand, NamespaceMode};
use ros_config::ServiceSpec;
use ros_runtime::{
    Containerd, ExitEvent, ExitEvents, LocalImages, RuntimeError, ServiceRuntime, ServiceStatus,
    Stdio,
};
use ros_test_support::{busybox_image as build_archive, BUSYBOX};

const CONTAINERD: &str = "/usr/bin/containerd";
const IMAGE: &str = "ros/test:1";
const GZ_IMAGE: &str = "docker.io/ros/test-gz:1";
const DEADLINE: Duration = Duration::from_secs(60);
/// Docker's default capability set as /proc/self/status shows it.
const DEFAULT_CAP_EFF: &str = "00000000a80425fb";

/// A containerd with its own root, state and socket under a temp dir.
struct PrivateContainerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    namespace: String,
    cgroup_parent: String,
}

impl PrivateContainerd {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ros-rt-").tempdir()?;
        let path = dir.path();
        let socket = path.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = "{path}/debug.sock"
  level = "info"

[metrics]
  address = ""
"#,
            root = path.join("root").display(),
            state = path.join("state").display(),
            socket = socket.display(),
            path = path.display(),
        );
        let config_path = path.join("config.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(path.join("containerd.log"))?;
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config_path)
            .stdin(ProcessStdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {CONTAINERD}"))?;
        Ok(Self {
            child: Some(child),
            socket,
            namespace: format!("ros-test-{}", std::process::id()),
            cgroup_parent: format!("/ros-test-{}", std::process::id()),
            dir,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Snapshot and rootfs mounts under our root; runc removes each service's cgroup,
        // the parent is ours to remove.
        ros_test_support::unmount_below(self.path());
        ros_test_support::remove_cgroup(&self.cgroup_parent);
        // The runc shim keeps per-namespace state here, empty once every task is deleted.
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
    }
}

/// containerd's own CLI, only to check what the runtime left in the store.
fn ctr(ctd: &PrivateContainerd, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(&ctd.socket)
        .arg("--namespace")
        .arg(&ctd.namespace)
        .args(args)
        .output()
        .context("running ctr")?;
    ensure!(
        output.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn next_exit(exits: &mut ExitEvents, service: &str) -> anyhow::Result<ExitEvent> {
    let wait = async {
        while let Some(event) = exits.recv().await {
            if event.service == service {
                return Ok(event);
            }
        }
        bail!("exit stream closed before {service} exited")
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .with_context(|| format!("no exit event for {service} within {DEADLINE:?}"))?
}

fn service(argv: &[&str]) -> ServiceSpec {
    ServiceSpec {
        image: IMAGE.into(),
        command: Some(ServiceCommand::Argv(
            argv.iter().map(|s| s.to_string()).collect(),
        )),
        ..Default::default()
    }
}

/// Run a one-shot service to completion and return its output.
async fn run_to_exit(
    runtime: &Containerd,
    exits: &mut ExitEvents,
    dir: &Path,
    name: &str,
    spec: &ServiceSpec,
) -> anyhow::Result<(u32, String)> {
    let log = dir.join(format!("{name}.log"));
    let pid = runtime.run(name, spec, &Stdio::File(log.clone())).await?;
    ensure!(pid > 0, "{name}: pid {pid}");
    let exit = next_exit(exits, name).await?;
    ensure!(
        exit.pid == pid,
        "{name}: exit event for pid {} not {pid}",
        exit.pid
    );
    // Deleting the task waits for the shim to finish copying output.
    runtime.stop(name, Duration::from_secs(5)).await?;
    let output =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    Ok((exit.exit_status, output))
}

async fn scenario(ctd: &PrivateContainerd) -> anyhow::Result<()> {
    let runtime = Containerd::wait_ready(&ctd.socket, &ctd.namespace, Duration::from_secs(30))
        .await?
        .with_cgroup_parent(Some(ctd.cgroup_parent.clone()));
    eprintln!("containerd {}", runtime.version().await?);

    let archive = ctd.path().join("test.tar");
    let digest = build_archive(&archive, IMAGE, false)?;
    let first = runtime.import_archive(&archive).await?;
    ensure!(
        first.name == IMAGE && first.manifest_digest == digest && !first.skipped,
        "{first:?}"
    );
    // The lease is gone and garbage collected: what survives is what the image references.
    let content = ctr(ctd, &["content", "ls", "-q"])?;
    ensure!(
        content.contains(&digest),
        "manifest collected; content: {content}"
    );
    ensure!(
        content.lines().count() == 3,
        "expected manifest, config, layer: {content}"
    );
    let snapshots = ctr(ctd, &["snapshots", "--snapshotter", "overlayfs", "ls"])?;
    ensure!(
        snapshots.lines().count() == 2,
        "expected one committed layer: {snapshots}"
    );

    let again = runtime.import_archive(&archive).await?;
    ensure!(again.skipped, "second import not skipped: {again:?}");

    // Same blobs under another name, gzip-compressed archive: nothing to write but the record.
    let gz_archive = ctd.path().join("test.tar.gz");
    build_archive(&gz_archive, GZ_IMAGE, true)?;
    let gz = runtime.import_archive(&gz_archive).await?;
    ensure!(
        gz.name == GZ_IMAGE && gz.manifest_digest == digest && !gz.skipped,
        "{gz:?}"
    );

    let mut exits = runtime.exits().await?;

    let tty = ServiceSpec {
        tty: true,
        ..service(&["echo", "tty"])
    };
    match runtime.run("tty", &tty, &Stdio::Null).await {
        Err(RuntimeError::TtyUnsupported { .. }) => {}
        other => bail!("tty service: {other:?}"),
    }

    let (status, output) = run_to_exit(
        &runtime,
        &mut exits,
        ctd.path(),
        "echo",
        &service(&["echo", "hello"]),
    )
    .await?;
    ensure!(
        status == 0 && output == "hello\n",
        "echo: status {status}, output {output:?}"
    );

    // Least privilege by default: Docker's capability set.
    let caps = service(&["grep", "CapEff", "/proc/self/status"]);
    let (status, output) = run_to_exit(&runtime, &mut exits, ctd.path(), "caps", &caps).await?;
    ensure!(
        status == 0 && output.contains(DEFAULT_CAP_EFF),
        "caps: status {status}, output {output:?}"
    );

    // Privileged with the host's namespaces and a volume, like the console.
    let volume = ctd.path().join("volume");
    std::fs::create_dir(&volume)?;
    let console_like = ServiceSpec {
        privileged: true,
        net: Some(NamespaceMode::Host),
        pid: Some(NamespaceMode::Host),
        ipc: Some(NamespaceMode::Host),
        uts: Some(NamespaceMode::Host),
        volumes: vec![format!("{}:/out", volume.display()).parse().unwrap()],
        ..service(&[
            "sh",
            "-c",
            "grep CapEff /proc/self/status > /out/caps && ls /dev/null",
        ])
    };
    let (status, output) = run_to_exit(
        &runtime,
        &mut exits,
        ctd.path(),
        "privileged",
        &console_like,
    )
    .await?;
    let caps = std::fs::read_to_string(volume.join("caps"))?;
    ensure!(
        status == 0 && output.contains("/dev/null") && !caps.contains(DEFAULT_CAP_EFF),
        "privileged: status {status}, output {output:?}, caps {caps:?}"
    );

    // A stale container (exited, never stopped) is replaced by the next run.
    let log = ctd.path().join("twice.log");
    let once = service(&["echo", "again"]);
    runtime
        .run("twice", &once, &Stdio::File(log.clone()))
        .await?;
    next_exit(&mut exits, "twice").await?;
    let listed = runtime.list().await?;
    let twice = listed
        .iter()
        .find(|s| s.name == "twice")
        .context("twice not listed")?;
    ensure!(
        twice.status == ServiceStatus::Stopped
            && twice.exit_status == Some(0)
            && twice.exited_at.is_some(),
        "{twice:?}"
    );
    runtime
        .run("twice", &once, &Stdio::File(log.clone()))
        .await?;
    next_exit(&mut exits, "twice").await?;
    runtime.stop("twice", Duration::from_secs(5)).await?;
    ensure!(
        std::fs::read_to_string(&log)? == "again\nagain\n",
        "output is appended"
    );

    // Run again unchanged in the same boot (a restart), a service keeps its container and
    // root filesystem, as Docker's restart policy does; changed, it starts from a fresh root.
    let log = ctd.path().join("keep.log");
    let script = "cat /kept 2>/dev/null; echo run > /kept; exit 1";
    let keeper = service(&["sh", "-c", script]);
    for _ in 0..2 {
        runtime
            .run("keep", &keeper, &Stdio::File(log.clone()))
            .await?;
        next_exit(&mut exits, "keep").await?;
    }
    let changed = service(&["sh", "-c", &format!("{script} ")]);
    runtime
        .run("keep", &changed, &Stdio::File(log.clone()))
        .await?;
    next_exit(&mut exits, "keep").await?;
    runtime.stop("keep", Duration::from_secs(5)).await?;
    let kept = std::fs::read_to_string(&log)?;
    ensure!(
        kept == "run\n",
        "the restart should see its first run's file and the changed service not: {kept:?}"
    );

    // Services share one shim: two running ones have the same parent. Removing the first
    // (the shim started in its bundle) leaves the shim serving the other and new ones.
    let parent = |pid: u32| -> anyhow::Result<String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|p| p.trim().to_string())
            .context("no PPid")
    };
    let sleeper = service(&["sleep", "1000"]);
    let g1 = runtime.run("g1", &sleeper, &Stdio::Null).await?;
    let g2 = runtime.run("g2", &sleeper, &Stdio::Null).await?;
    ensure!(
        parent(g1)? == parent(g2)?,
        "g1 and g2 have different shims: {} and {}",
        parent(g1)?,
        parent(g2)?
    );
    runtime.stop("g1", Duration::from_millis(500)).await?;
    next_exit(&mut exits, "g1").await?;
    let (status, output) = run_to_exit(
        &runtime,
        &mut exits,
        ctd.path(),
        "g3",
        &service(&["echo", "grouped"]),
    )
    .await?;
    ensure!(
        status == 0 && output == "grouped\n",
        "g3 after g1 was removed: status {status}, output {output:?}"
    );
    let g2_state = runtime.list().await?;
    ensure!(
        g2_state
            .iter()
            .any(|s| s.name == "g2" && s.status == ServiceStatus::Running && s.pid == Some(g2)),
        "g2 not running any more: {g2_state:?}"
    );
    runtime.stop("g2", Duration::from_millis(500)).await?;
    next_exit(&mut exits, "g2").await?;

    // A long-running service: listed while running, refused twice, killed when it ignores
    // SIGTERM (sleep as pid 1 has no handler), gone afterwards.
    let sleeper = service(&["sleep", "1000"]);
    let pid = runtime.run("sleep", &sleeper, &Stdio::Null).await?;
    let listed = runtime.list().await?;
    let state = listed
        .iter()
        .find(|s| s.name == "sleep")
        .context("sleep not listed")?;
    ensure!(
        state.status == ServiceStatus::Running && state.pid == Some(pid) && state.image == IMAGE,
        "{state:?}"
    );
    match runtime.run("sleep", &sleeper, &Stdio::Null).await {
        Err(RuntimeError::AlreadyRunning { pid: running, .. }) if running == pid => {}
        other => bail!("second run of sleep: {other:?}"),
    }
    runtime.stop("sleep", Duration::from_millis(500)).await?;
    let exit = next_exit(&mut exits, "sleep").await?;
    ensure!(
        exit.exit_status == 128 + 9,
        "sleep exited {}",
        exit.exit_status
    );
    ensure!(
        !runtime.list().await?.iter().any(|s| s.name == "sleep"),
        "sleep still listed after stop"
    );
    runtime.stop("sleep", Duration::from_secs(1)).await?;
    runtime
        .stop("never-existed", Duration::from_secs(1))
        .await?;
    local_store(ctd, &mut exits).await
}

/// An image of the unpacked store (written by ros-image, as the boot image's is) runs on
/// an overlay of the store's layer directories: nothing is imported, the store is never
/// written, a restart keeps the service's files and removal deletes them.
async fn local_store(ctd: &PrivateContainerd, exits: &mut ExitEvents) -> anyhow::Result<()> {
    const LOCAL: &str = "ros/local:1";
    let archive = ctd.path().join("local.tar");
    build_archive(&archive, LOCAL, false)?;
    let store = ctd.path().join("store");
    ros_image::add_to_store(&archive, &store)?;
    let scratch = ctd.path().join("scratch");
    let runtime = Containerd::connect(&ctd.socket, &ctd.namespace)
        .await?
        .with_cgroup_parent(Some(ctd.cgroup_parent.clone()))
        .with_local_images(LocalImages::new(&store, &scratch));
    let log = ctd.path().join("local.log");
    let spec = ServiceSpec {
        image: LOCAL.into(),
        ..service(&[
            "sh",
            "-c",
            "cat /kept 2>/dev/null; echo run > /kept; ls /filler; exit 1",
        ])
    };
    for _ in 0..2 {
        runtime
            .run("local", &spec, &Stdio::File(log.clone()))
            .await?;
        next_exit(exits, "local").await?;
    }
    let output = std::fs::read_to_string(&log)?;
    ensure!(
        output == "/filler\nrun\n/filler\n",
        "the second run should see the first one's file: {output:?}"
    );
    ensure!(
        scratch.join("local/upper/kept").exists(),
        "the service's files are not in its upper directory"
    );
    let images = ctr(ctd, &["images", "ls", "-q"])?;
    ensure!(!images.contains(LOCAL), "{LOCAL} was imported: {images}");
    runtime.stop("local", Duration::from_secs(5)).await?;
    ensure!(
        !scratch.join("local").exists(),
        "the upper directory outlived its container"
    );
    let written: Vec<_> = walk(&store.join("layers"))
        .into_iter()
        .filter(|p| p.ends_with("kept"))
        .collect();
    ensure!(written.is_empty(), "the store was written: {written:?}");
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// Stop whatever the scenario left running, so no shim outlives containerd.
async fn stop_everything(ctd: &PrivateContainerd) -> anyhow::Result<()> {
    let runtime = Containerd::connect(&ctd.socket, &ctd.namespace).await?;
    for state in runtime.list().await? {
        runtime.stop(&state.name, Duration::from_secs(1)).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_end_to_end() {
    // /proc/self belongs to the effective uid.
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    let needed = [CONTAINERD, BUSYBOX, "/usr/bin/ctr"];
    if euid != 0 || !needed.iter().all(|p| Path::new(p).exists()) {
        // The run under CI is made as root, in a root where make deps installed these.
        ros_test_support::skip(
            "containerd_end_to_end",
            &format!("needs root and {needed:?}"),
        );
        return;
    }
    let ctd = PrivateContainerd::start().expect("starting containerd");
    let result = scenario(&ctd).await;
    let stopped = stop_everything(&ctd).await;
    let tail = ctd.log_tail();
    drop(ctd);
    if let Err(e) = result {
        panic!("{e:#}\n--- containerd log (last lines) ---\n{tail}");
    }
    stopped.expect("stopping leftover services");
}
