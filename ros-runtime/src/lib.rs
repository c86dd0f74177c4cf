//! The one seam between rOS and the system containerd: import preloaded OCI image archives,
//! turn service definitions into OCI runtime specs, run, stop and list service containers,
//! and report task exits.
//!
//! This is the only crate that imports `containerd_client`/`tonic`; nothing of theirs
//! appears in its public API. Init codes against [`ServiceRuntime`] and tests it with
//! `fake::FakeRuntime` (feature `test-util`); [`Containerd`] is the gRPC implementation. It must not run `ctr`
//! or any other binary, and must not reap processes (containerd's shims own their children).

mod archive;
mod containerd;
pub mod devices;
mod error;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
mod local;
pub mod spec;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ros_config::ServiceSpec;

pub use containerd::Containerd;
pub use error::RuntimeError;
pub use local::LocalImages;
pub use spec::{restrict_capabilities, runtime_spec, SpecError};

/// The containerd namespace holding every rOS system service and image.
pub const SYSTEM_NAMESPACE: &str = "ros";

/// Container label holding the service name.
pub const LABEL_SERVICE: &str = "io.rancher.os.service";

/// Container label holding the image reference the service was started from.
pub const LABEL_IMAGE: &str = "io.rancher.os.image";

/// Container label holding the boot id of the boot that created the container; an
/// automatic restart reuses only a container of the current boot.
pub const LABEL_BOOT: &str = "io.rancher.os.boot-id";

/// Result of every runtime operation.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// What [`ServiceRuntime::import_archive`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    /// The image name, from the archive's `io.containerd.image.name` or
    /// `org.opencontainers.image.ref.name` annotation.
    pub name: String,
    /// Digest of what the image record points at (the manifest, or the index for a
    /// multi-platform archive), `sha256:<hex>`.
    pub manifest_digest: String,
    /// The image already existed with this digest and its layers were unpacked, so nothing
    /// was written.
    pub skipped: bool,
}

/// Where a service's output goes.
///
/// containerd's runc shim opens a `file://` stdout in append mode and sends stderr to the
/// same file whatever stderr says, so one file holds both streams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stdio {
    /// stdin, stdout and stderr are /dev/null.
    #[default]
    Null,
    /// stdout and stderr are appended to this absolute path; stdin is /dev/null.
    File(PathBuf),
}

/// Task state of a service container, as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStatus {
    /// The container exists but has no task (never started, or its task was deleted).
    NoTask,
    /// The task is created but not started.
    Created,
    /// The task's init process is running.
    Running,
    /// The task's init process has exited; see `exit_status`.
    Stopped,
    /// The task is frozen.
    Paused,
    /// The task is being frozen.
    Pausing,
    /// containerd could not tell (e.g. the shim is gone).
    Unknown,
}

/// One service container, from [`ServiceRuntime::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// Service name (= container id).
    pub name: String,
    /// Image reference the container was created from.
    pub image: String,
    /// Host pid of the task's init process, when there is a task.
    pub pid: Option<u32>,
    /// Task state.
    pub status: ServiceStatus,
    /// Exit status once `status` is [`ServiceStatus::Stopped`].
    pub exit_status: Option<u32>,
    /// When the task exited, once `status` is [`ServiceStatus::Stopped`].
    pub exited_at: Option<SystemTime>,
}

/// A service's init process exited (containerd's `/tasks/exit` for the task itself, not for
/// exec'd processes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    /// Service name (= container id).
    pub service: String,
    /// Host pid of the process that exited.
    pub pid: u32,
    /// Exit status; 128 + n when killed by signal n.
    pub exit_status: u32,
    /// When it exited, if containerd said.
    pub exited_at: Option<SystemTime>,
}

/// Exit events, in the order containerd published them. Closes when the subscription ends
/// (containerd went away); the subscription ends when this is dropped.
pub type ExitEvents = tokio::sync::mpsc::Receiver<ExitEvent>;

/// What init needs from the container runtime. [`Containerd`] talks gRPC to containerd;
/// `fake::FakeRuntime` (feature `test-util`) records calls for tests.
pub trait ServiceRuntime: Send + Sync {
    /// Import an OCI image-layout tar archive (optionally gzip-compressed) and unpack its
    /// layers, unless the image is already there with the same digest.
    fn import_archive(&self, archive: &Path) -> impl Future<Output = Result<ImportOutcome>> + Send;

    /// Create and start the container for `service`; returns the task's host pid.
    /// Fails with [`RuntimeError::AlreadyRunning`] if its task is running. A container of
    /// the same name created in this boot with the same spec is kept, with its root
    /// filesystem, and only gets a new task (a restart, as Docker's restart policy does);
    /// any other stale container of the same name is removed first.
    fn run(
        &self,
        service: &str,
        spec: &ServiceSpec,
        stdio: &Stdio,
    ) -> impl Future<Output = Result<u32>> + Send;

    /// SIGTERM the service, SIGKILL it after `timeout`, then delete its task, container and
    /// snapshot. A service that does not exist is already stopped.
    fn stop(&self, service: &str, timeout: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Every service container and its task state.
    fn list(&self) -> impl Future<Output = Result<Vec<ServiceState>>> + Send;

    /// Subscribe to service exits. The subscription is live when this returns: call it
    /// before starting anything whose exit you will wait for.
    fn exits(&self) -> impl Future<Output = Result<ExitEvents>> + Send;
}
