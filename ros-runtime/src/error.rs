//! The runtime's one error type: each variant names the action that failed and its subject.
//! containerd's answers are carried as text (`message (Code)`) so no tonic type leaks out.

use std::path::PathBuf;
use std::time::Duration;

use crate::spec::SpecError;

/// A runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The namespace is not a valid containerd namespace name.
    #[error("containerd namespace {namespace:?} is invalid: {reason}")]
    InvalidNamespace {
        namespace: String,
        reason: &'static str,
    },
    /// Could not open the gRPC connection.
    #[error("connecting to containerd at {socket}: {message}")]
    Connect { socket: PathBuf, message: String },
    /// containerd did not answer the Version call before the deadline.
    #[error("containerd at {socket} not ready after {waited:?}: {message}")]
    NotReady {
        socket: PathBuf,
        waited: Duration,
        message: String,
    },
    /// The image archive could not be read.
    #[error("reading image archive {path}: {message}")]
    ReadArchive { path: PathBuf, message: String },
    /// The image archive is not an OCI image layout we can import.
    #[error("image archive {path}: {reason}")]
    InvalidArchive { path: PathBuf, reason: String },
    /// Leases.Create or Leases.AddResource failed.
    #[error("image {image}: creating import lease: {message}")]
    CreateLease { image: String, message: String },
    /// Leases.Delete failed.
    #[error("image {image}: deleting import lease {lease}: {message}")]
    DeleteLease {
        image: String,
        lease: String,
        message: String,
    },
    /// Content.Write failed or returned something unexpected.
    #[error("writing blob {digest}: {message}")]
    WriteBlob { digest: String, message: String },
    /// Content.Read or Content.Info failed.
    #[error("reading blob {digest}: {message}")]
    ReadBlob { digest: String, message: String },
    /// Content.Update (GC labels) failed.
    #[error("labelling blob {digest}: {message}")]
    LabelBlob { digest: String, message: String },
    /// Preparing, applying or committing a layer snapshot failed.
    #[error("image {image}: unpacking layer {layer} (chain {chain_id}): {message}")]
    Unpack {
        image: String,
        layer: String,
        chain_id: String,
        message: String,
    },
    /// Images.Create/Update failed.
    #[error("image {image}: saving image record: {message}")]
    SaveImage { image: String, message: String },
    /// Images.Get failed for a reason other than absence.
    #[error("image {image}: looking up: {message}")]
    GetImage { image: String, message: String },
    /// No image of this name (nor its docker.io form) is in the namespace.
    #[error("image {image} is not imported")]
    ImageMissing { image: String },
    /// The image's manifest or config is unusable.
    #[error("image {image}: {reason}")]
    InvalidImage { image: String, reason: String },
    /// The service definition cannot become a runtime spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// `Stdio::File` must be absolute: the shim resolves it in its own working directory.
    #[error("service {service}: output file {path} is not an absolute path")]
    InvalidStdio { service: String, path: PathBuf },
    /// `tty: true`: the runc shim copies a terminal only to a FIFO someone reads, which
    /// this runtime does not provide yet.
    #[error("service {service}: tty: true is not supported yet (the shim needs a FIFO reader)")]
    TtyUnsupported { service: String },
    /// The service's task is already running.
    #[error("service {service} is already running (pid {pid})")]
    AlreadyRunning { service: String, pid: u32 },
    /// Containers.Get/Create failed.
    #[error("service {service}: creating container: {message}")]
    CreateContainer { service: String, message: String },
    /// Snapshots.Prepare for the container's root failed.
    #[error("service {service}: preparing root snapshot on {parent}: {message}")]
    PrepareSnapshot {
        service: String,
        parent: String,
        message: String,
    },
    /// Tasks.Create failed (runc or the shim refused the container).
    #[error("service {service}: creating task: {message}")]
    CreateTask { service: String, message: String },
    /// Tasks.Start failed.
    #[error("service {service}: starting task: {message}")]
    StartTask { service: String, message: String },
    /// Tasks.Get/Kill/Wait failed.
    #[error("service {service}: signalling task: {message}")]
    KillTask { service: String, message: String },
    /// The task survived SIGKILL for this long.
    #[error("service {service}: still running {waited:?} after SIGKILL")]
    StopTimeout { service: String, waited: Duration },
    /// Tasks.Delete failed.
    #[error("service {service}: deleting task: {message}")]
    DeleteTask { service: String, message: String },
    /// Containers.Delete failed.
    #[error("service {service}: deleting container: {message}")]
    DeleteContainer { service: String, message: String },
    /// Snapshots.Remove failed.
    #[error("service {service}: removing snapshot: {message}")]
    RemoveSnapshot { service: String, message: String },
    /// Containers.List or Tasks.List failed.
    #[error("listing services in namespace {namespace}: {message}")]
    List { namespace: String, message: String },
    /// Events.Subscribe failed or did not become live.
    #[error("subscribing to task exits in namespace {namespace}: {message}")]
    Subscribe { namespace: String, message: String },
}
