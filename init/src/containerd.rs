//! The system containerd as a supervised child of PID 1.
//!
//! Generates its config, starts it, restarts it with backoff if it dies (its shims,
//! and so the service containers, survive that), and stops it at shutdown.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::logfile::{LogDir, LogFileError};
use crate::reaper::{Exit, Reaper};

/// Where the system containerd keeps things.
#[derive(Debug, Clone)]
pub struct ContainerdPaths {
    /// The containerd binary.
    pub bin: PathBuf,
    /// Generated config file.
    pub config: PathBuf,
    /// Persistent root (content, snapshots).
    pub root: PathBuf,
    /// Runtime state (tmpfs).
    pub state: PathBuf,
    /// gRPC socket.
    pub socket: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// Errors starting the system containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// Preparing directories or the config failed.
    #[error("system containerd: preparing {path}: {source}")]
    Prepare {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The process could not be started.
    #[error("system containerd: starting {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Plugins the system runtime doesn't need; disabling them saves memory and start time.
/// The image's containerd is built without most of them (initramfs/from-source.sh); the
/// list still holds for one that has them, such as Debian's.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// The containerd config (TOML, version 2) for these paths.
pub fn config_toml(p: &ContainerdPaths) -> String {
    let mut grpc = toml::Table::new();
    grpc.insert("address".into(), p.socket.display().to_string().into());
    grpc.insert("uid".into(), 0.into());
    grpc.insert("gid".into(), 0.into());
    let mut ttrpc = toml::Table::new();
    ttrpc.insert(
        "address".into(),
        format!("{}.ttrpc", p.socket.display()).into(),
    );
    let mut doc = toml::Table::new();
    doc.insert("version".into(), 2.into());
    doc.insert("root".into(), p.root.display().to_string().into());
    doc.insert("state".into(), p.state.display().to_string().into());
    doc.insert("oom_score".into(), (-999).into());
    doc.insert(
        "disabled_plugins".into(),
        toml::Value::Array(DISABLED_PLUGINS.iter().map(|s| (*s).into()).collect()),
    );
    doc.insert("grpc".into(), grpc.into());
    doc.insert("ttrpc".into(), ttrpc.into());
    toml::to_string(&doc).unwrap_or_default()
}

/// Create the directories (state dir 0700: the socket is root-only) and write the config.
pub fn prepare(p: &ContainerdPaths) -> Result<(), ContainerdError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContainerdError::Prepare { path, source }
    };
    for dir in [&p.root, &p.state] {
        fs::create_dir_all(dir).map_err(err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err(dir))?;
    }
    // The log's directory is made by LogDir when the log is opened (spawn_once).
    fs::write(&p.config, config_toml(p)).map_err(err(&p.config))
}

/// Make the socket root-only (containerd creates it 0660).
pub fn restrict_socket(socket: &Path) -> io::Result<()> {
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))
}

/// Handle to the supervised containerd.
#[derive(Debug, Clone)]
pub struct SystemContainerd {
    paths: ContainerdPaths,
    reaper: Reaper,
    pid: Arc<AtomicU32>,
    stopping: Arc<AtomicBool>,
}

/// Restart delays: 0.5 s doubling to 16 s; reset after 60 s of uptime.
pub fn restart_delay(failures_in_a_row: u32) -> Duration {
    Duration::from_millis(500u64 << failures_in_a_row.min(5))
}

impl SystemContainerd {
    /// Start containerd and a thread that restarts it when it dies.
    pub fn start(paths: ContainerdPaths, reaper: Reaper) -> Result<Self, ContainerdError> {
        prepare(&paths)?;
        let this = SystemContainerd {
            paths,
            reaper,
            pid: Arc::new(AtomicU32::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let rx = this.spawn_once()?;
        let sup = this.clone();
        thread::Builder::new()
            .name("containerd-supervisor".into())
            .spawn(move || sup.supervise(rx))
            .map_err(|source| ContainerdError::Spawn {
                bin: this.paths.bin.clone(),
                source,
            })?;
        Ok(this)
    }

    fn open_log(&self) -> Result<fs::File, LogFileError> {
        let log = &self.paths.log;
        let dir = log.parent().unwrap_or(Path::new("."));
        let name = log.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        LogDir::open(dir).and_then(|d| d.open_append(name))
    }

    fn spawn_once(&self) -> Result<std::sync::mpsc::Receiver<Exit>, ContainerdError> {
        // Through LogDir, as root: a symlink planted at the log's name must not choose the
        // file. Best-effort (containerd itself is not): without a log its output is lost.
        let (out, err) = match self.open_log() {
            Ok(log) => {
                let log2 = log.try_clone().map_err(|source| ContainerdError::Prepare {
                    path: self.paths.log.clone(),
                    source,
                })?;
                (Stdio::from(log), Stdio::from(log2))
            }
            Err(e) => {
                log::warn!("containerd: {e} (its output is discarded)");
                (Stdio::null(), Stdio::null())
            }
        };
        let mut cmd = Command::new(&self.paths.bin);
        cmd.arg("--config")
            .arg(&self.paths.config)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let (pid, rx) = self
            .reaper
            .spawn(&mut cmd)
            .map_err(|source| ContainerdError::Spawn {
                bin: self.paths.bin.clone(),
                source,
            })?;
        self.pid.store(pid, Ordering::SeqCst);
        log::info!("containerd: started (pid {pid})");
        Ok(rx)
    }

    fn supervise(&self, mut rx: std::sync::mpsc::Receiver<Exit>) {
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let Ok(exit) = rx.recv() else { return };
            self.pid.store(0, Ordering::SeqCst);
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if started.elapsed() > Duration::from_secs(60) {
                failures = 0;
            }
            let delay = restart_delay(failures);
            failures += 1;
            log::warn!("containerd: exited ({exit:?}), restarting in {delay:?}");
            thread::sleep(delay); // backoff, not synchronisation
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            // A failed spawn (EMFILE, EAGAIN, a log that cannot be opened) is retried
            // with the same backoff, forever: every service depends on containerd.
            let old_socket = {
                use std::os::unix::fs::MetadataExt as _;
                fs::symlink_metadata(&self.paths.socket)
                    .ok()
                    .map(|m| m.ino())
            };
            rx = loop {
                match self.spawn_once() {
                    Ok(new_rx) => {
                        self.restrict_when_ready(old_socket);
                        break new_rx;
                    }
                    Err(e) => {
                        let delay = restart_delay(failures);
                        failures += 1;
                        log::error!("{e}; trying again in {delay:?}");
                        thread::sleep(delay); // backoff, not synchronisation
                        if self.stopping.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                }
            };
        }
    }

    /// Once the restarted containerd has made its new socket (0660: another inode than
    /// `old`, the dead one's), make it root-only, as at boot. Bounded: a containerd that
    /// never makes one is reported by its clients.
    fn restrict_when_ready(&self, old: Option<u64>) {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        let socket = self.paths.socket.clone();
        let spawned = thread::Builder::new()
            .name("containerd-socket".into())
            .spawn(move || {
                let deadline = crate::power::deadline_after(Duration::from_secs(120));
                while Instant::now() < deadline {
                    match fs::symlink_metadata(&socket) {
                        Ok(m) if m.file_type().is_socket() && Some(m.ino()) != old => {
                            if let Err(e) = restrict_socket(&socket) {
                                log::warn!("containerd: restricting {}: {e}", socket.display());
                            }
                            return;
                        }
                        // Polling one file for a bounded time: no inotify thread for it.
                        _ => thread::sleep(Duration::from_millis(50)),
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("containerd: {e}");
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.paths.socket
    }

    /// The current pid, if running.
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Stop for good: SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let Some(pid) = self.pid() else { return };
        let pid = Pid::from_raw(pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let dead = || kill(pid, None).is_err();
        if !self.reaper.wait_until(Instant::now() + grace, dead) {
            log::warn!("containerd: still running after {grace:?}, killing it");
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> ContainerdPaths {
        ContainerdPaths {
            bin: "/usr/bin/containerd".into(),
            config: dir.join("state/config.toml"),
            root: dir.join("root"),
            state: dir.join("state"),
            socket: dir.join("state/containerd.sock"),
            log: dir.join("log/containerd.log"),
        }
    }

    #[test]
    fn config_names_our_socket_and_disables_cri() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let text = config_toml(&p);
        let doc: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(doc["version"].as_integer(), Some(2));
        assert_eq!(
            doc["grpc"]["address"].as_str(),
            Some(p.socket.to_str().unwrap())
        );
        let disabled = doc["disabled_plugins"].as_array().unwrap();
        assert!(disabled
            .iter()
            .any(|v| v.as_str() == Some("io.containerd.grpc.v1.cri")));
    }

    #[test]
    fn state_dir_is_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        prepare(&p).unwrap();
        let mode = fs::metadata(&p.state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(p.config.exists());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let d: Vec<u64> = (0..8)
            .map(|n| restart_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![500, 1000, 2000, 4000, 8000, 16000, 16000, 16000]);
    }
}
