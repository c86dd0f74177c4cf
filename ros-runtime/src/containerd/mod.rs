//! The gRPC implementation of [`ServiceRuntime`]: every containerd call rOS makes is here.
//!
//! Every request carries the client's namespace (`containerd-namespace`); image imports
//! also carry their lease (`containerd-lease`) so nothing written is garbage-collected
//! before the image record and its GC labels reference it.
//!
//! This file holds the connection (dialling, the namespace and lease headers, the
//! clients); `content`, `leases` (and unpacking), `images`, `lifecycle` (containers and
//! tasks) and `events` each add their part of [`Containerd`]'s methods.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::events::TaskExit;
use containerd_client::services::v1 as api;
use containerd_client::services::v1::snapshots as snap;
use containerd_client::tonic::metadata::AsciiMetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status, Streaming};
use containerd_client::types::v1::Status as ProcessStatus;
use containerd_client::types::{Descriptor as ApiDescriptor, Mount as ApiMount};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use prost::Message as _;
use prost_types::{Any, FieldMask};
use ros_config::ServiceSpec;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tokio_stream::wrappers::ReceiverStream;

use crate::archive::{self, ArchiveScan, BlobPiece, ImagePlan, CHUNK_SIZE};
use crate::error::RuntimeError;
use crate::local::{LocalImage, LocalImages, OverlayRoot};
use crate::spec::{kernel_cmdline_mount, restrict_capabilities, runtime_spec, CGROUP_PARENT};
use crate::{
    ExitEvent, ExitEvents, ImportOutcome, Result, ServiceRuntime, ServiceState, ServiceStatus,
    Stdio, LABEL_BOOT, LABEL_IMAGE, LABEL_SERVICE,
};

mod content;
mod events;
mod images;
mod leases;
mod lifecycle;
mod reuse;

const NAMESPACE_HEADER: &str = "containerd-namespace";
const LEASE_HEADER: &str = "containerd-lease";
/// The snapshotter images are unpacked into and container roots are prepared on.
const SNAPSHOTTER: &str = "overlayfs";
const RUNTIME: &str = "io.containerd.runc.v2";
/// The OCI annotation by which runc's v2 shim serves several containers from one process.
const SHIM_GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";
/// The group every service of a namespace shares (the shim socket is per namespace too).
const SHIM_GROUP: &str = "ros-services";
/// The runc shim's per-container options (containerd's `api/types/runc/options/oci.proto`).
const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const EXIT_TOPIC: &str = "/tasks/exit";
/// Our own marker event, published to learn when a subscription is live.
const SYNC_TOPIC: &str = "/ros/subscription-live";
const SYNC_TYPE_URL: &str = "types.rancher.io/ros/SubscriptionLive";
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;
/// How long a task may take to die after SIGKILL before stop gives up.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long an exit subscription may take to become live.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// A crashed import's lease is collected after this long.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);
/// Manifests, indexes and configs larger than this are refused.
const METADATA_LIMIT: usize = 4 << 20;

/// A containerd client bound to one namespace. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    socket: PathBuf,
    namespace: String,
    namespace_header: AsciiMetadataValue,
    cgroup_parent: Option<String>,
    environment: BTreeMap<String, String>,
    local: Option<LocalImages>,
    runtime_binary: Option<String>,
    kernel_cmdline: Option<PathBuf>,
}

/// The one field of containerd's `containerd.runc.v1.Options` we set: which OCI runtime
/// binary the runc shim runs in place of `runc`.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(string, tag = "6")]
    binary_name: String,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("socket", &self.socket)
            .field("namespace", &self.namespace)
            .field("cgroup_parent", &self.cgroup_parent)
            .finish_non_exhaustive()
    }
}

fn status_text(status: &Status) -> String {
    format!("{} ({:?})", status.message(), status.code())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// containerd's rule: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most 76 characters.
fn namespace_header(namespace: &str) -> Result<AsciiMetadataValue> {
    let invalid = |reason| RuntimeError::InvalidNamespace {
        namespace: namespace.to_string(),
        reason,
    };
    if namespace.is_empty() || namespace.len() > 76 {
        return Err(invalid("must be 1 to 76 characters"));
    }
    let separator = |c: char| matches!(c, '.' | '_' | '-');
    if !namespace
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || separator(c))
        || namespace.starts_with(separator)
        || namespace.ends_with(separator)
        || namespace
            .as_bytes()
            .windows(2)
            .any(|w| separator(w[0] as char) && separator(w[1] as char))
    {
        return Err(invalid(
            "must be letters and digits joined by single '.', '_' or '-'",
        ));
    }
    namespace
        .parse()
        .map_err(|_| invalid("not valid gRPC metadata"))
}

/// A name no other import or unpack in this or another process is using.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:x}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// RFC 3339 UTC, for the lease's `containerd.io/gc.expire` label.
fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// containerd reports "not exited yet" as Go's zero time (year 1).
fn system_time(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.filter(|t| t.seconds > 0)
        .and_then(|t| SystemTime::try_from(t).ok())
}

/// This process's capability bounding set (`CapBnd`), if /proc says.
fn own_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

fn api_descriptor(d: &Descriptor) -> ApiDescriptor {
    ApiDescriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        annotations: d.annotations().clone().unwrap_or_default(),
    }
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// An image found in containerd, resolved to what a container needs.
struct ResolvedImage {
    name: String,
    config: ImageConfiguration,
    top_chain_id: String,
}

/// Where a service's root filesystem comes from.
enum RootSource {
    /// A snapshot of containerd's snapshotter on top of the image's unpacked layers.
    Snapshot { parent: String },
    /// An overlay of an unpacked-store image's layer directories.
    Local(Box<LocalImage>),
}

/// "Something was created in this directory", from inotify: what
/// [`Containerd::wait_ready`] waits for between tries instead of a timer alone.
struct DirCreated(std::sync::Arc<nix::sys::inotify::Inotify>);

impl DirCreated {
    /// Watch `dir`; `None` if it cannot be watched (no such directory, no inotify).
    fn watch(dir: &Path) -> Option<Self> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        inotify
            .add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
            .ok()?;
        Some(Self(std::sync::Arc::new(inotify)))
    }

    /// Wait until something is created in the directory or `limit` passes (on a blocking
    /// thread: at most `limit`); consumes the events, so the next wait waits for a new one.
    async fn next(&self, limit: Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let inotify = self.0.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0) {
                let _ = inotify.read_events();
            }
        })
        .await;
    }
}

impl Containerd {
    /// Connect to containerd's gRPC socket; requests go to `namespace`
    /// ([`crate::SYSTEM_NAMESPACE`] for the system services).
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self> {
        let namespace_header = namespace_header(namespace)?;
        let channel =
            containerd_client::connect(socket)
                .await
                .map_err(|e| RuntimeError::Connect {
                    socket: socket.to_path_buf(),
                    message: error_chain(&e),
                })?;
        Ok(Self {
            channel,
            socket: socket.to_path_buf(),
            namespace: namespace.to_string(),
            namespace_header,
            cgroup_parent: Some(CGROUP_PARENT.to_string()),
            environment: BTreeMap::new(),
            local: None,
            runtime_binary: None,
            kernel_cmdline: None,
        })
    }

    /// Connect and call Version until containerd answers or `timeout` passes. A failed try
    /// waits for something to be created in the socket's directory (containerd binds its
    /// socket once its plugins are loaded), or for a short backoff where that cannot be
    /// watched or the socket exists before containerd listens on it.
    pub async fn wait_ready(socket: &Path, namespace: &str, timeout: Duration) -> Result<Self> {
        namespace_header(namespace)?;
        let deadline = Instant::now() + timeout;
        // Watched before the first try, so a socket made in between still wakes the wait.
        let created = socket.parent().and_then(DirCreated::watch);
        let mut backoff = Duration::from_millis(10);
        loop {
            let attempt = async {
                let client = Self::connect(socket, namespace).await?;
                client.version().await?;
                Ok::<_, RuntimeError>(client)
            };
            let last_error = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_string(),
            };
            if Instant::now() + backoff >= deadline {
                return Err(RuntimeError::NotReady {
                    socket: socket.to_path_buf(),
                    waited: timeout,
                    message: last_error,
                });
            }
            match &created {
                Some(created) => created.next(backoff).await,
                None => tokio::time::sleep(backoff).await,
            }
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Put each service in cgroup `<parent>/<service>` (default [`CGROUP_PARENT`]), or, with
    /// `None`, leave `cgroupsPath` unset so runc picks its default.
    pub fn with_cgroup_parent(mut self, parent: Option<String>) -> Self {
        self.cgroup_parent = parent;
        self
    }

    /// Values for the bare `NAME` entries of services' `environment` (RancherOS's
    /// `rancher.environment`); names not found here fall back to init's own environment.
    pub fn with_environment(mut self, environment: BTreeMap<String, String>) -> Self {
        self.environment = environment;
        self
    }

    /// Serve the images of this unpacked store without containerd's content store or
    /// snapshotter (see [`LocalImages`]); other images still come from containerd.
    pub fn with_local_images(mut self, local: LocalImages) -> Self {
        self.local = Some(local);
        self
    }

    /// Have the shim run this OCI runtime (a runc-compatible CLI such as crun, by absolute
    /// path) instead of `runc` from its PATH.
    pub fn with_runtime_binary(mut self, binary: impl Into<String>) -> Self {
        self.runtime_binary = Some(binary.into());
        self
    }

    /// Show unprivileged services this file, bound read-only, as their `/proc/cmdline`
    /// (the kernel line with its secrets hidden). Privileged services, which can read the
    /// disks anyway, see the kernel's own.
    pub fn with_kernel_cmdline(mut self, file: impl Into<PathBuf>) -> Self {
        self.kernel_cmdline = Some(file.into());
        self
    }

    /// The namespace every request goes to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's version string.
    pub async fn version(&self) -> Result<String> {
        let mut client = api::version_client::VersionClient::new(self.channel.clone());
        let answer = client
            .version(self.request(()))
            .await
            .map_err(|s| RuntimeError::Connect {
                socket: self.socket.clone(),
                message: status_text(&s),
            })?;
        Ok(answer.into_inner().version)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace_header.clone());
        request
    }

    fn leased<T>(&self, message: T, lease: &str) -> Request<T> {
        let mut request = self.request(message);
        if let Ok(value) = lease.parse() {
            request.metadata_mut().insert(LEASE_HEADER, value);
        }
        request
    }

    fn content(&self) -> api::content_client::ContentClient<Channel> {
        api::content_client::ContentClient::new(self.channel.clone())
    }

    fn snapshots(&self) -> snap::snapshots_client::SnapshotsClient<Channel> {
        snap::snapshots_client::SnapshotsClient::new(self.channel.clone())
    }

    fn tasks(&self) -> api::tasks_client::TasksClient<Channel> {
        api::tasks_client::TasksClient::new(self.channel.clone())
    }

    fn containers(&self) -> api::containers_client::ContainersClient<Channel> {
        api::containers_client::ContainersClient::new(self.channel.clone())
    }

    fn images(&self) -> api::images_client::ImagesClient<Channel> {
        api::images_client::ImagesClient::new(self.channel.clone())
    }

    fn leases(&self) -> api::leases_client::LeasesClient<Channel> {
        api::leases_client::LeasesClient::new(self.channel.clone())
    }

    // ---- content ----
}

impl ServiceRuntime for Containerd {
    async fn import_archive(&self, archive: &Path) -> Result<ImportOutcome> {
        self.import(archive).await
    }

    async fn run(&self, service: &str, spec: &ServiceSpec, stdio: &Stdio) -> Result<u32> {
        self.run_service(service, spec, stdio).await
    }

    async fn stop(&self, service: &str, timeout: Duration) -> Result<()> {
        self.stop_service(service, timeout).await
    }

    async fn list(&self) -> Result<Vec<ServiceState>> {
        self.list_services().await
    }

    async fn exits(&self) -> Result<ExitEvents> {
        self.subscribe_exits().await
    }
}

#[cfg(test)]
mod tests {
    use super::lifecycle::create_bind_sources;
    use super::*;

    #[tokio::test]
    async fn a_file_created_after_the_watch_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let created = DirCreated::watch(dir.path()).expect("inotify on a temp dir");
        fs::write(dir.path().join("containerd.sock"), b"").unwrap();
        let started = std::time::Instant::now();
        // The event is queued: the wait ends at once, not after its (long) limit.
        created.next(Duration::from_secs(60)).await;
        assert!(started.elapsed() < Duration::from_secs(60));
        // It was consumed: without a new file the next wait runs to its limit.
        let started = std::time::Instant::now();
        created.next(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_missing_directory_cannot_be_watched() {
        assert!(DirCreated::watch(Path::new("/nonexistent/ros-runtime")).is_none());
    }

    #[test]
    fn runtime_binary_is_field_6_of_the_runc_options() {
        // containerd's oci.proto: `string binary_name = 6;` (wire type 2, length-delimited).
        let bytes = prost::Message::encode_to_vec(&RuncOptions {
            binary_name: "/usr/bin/crun".into(),
        });
        assert_eq!(bytes[..2], [6 << 3 | 2, 13]);
        assert_eq!(&bytes[2..], b"/usr/bin/crun");
    }

    #[test]
    fn missing_bind_sources_are_created_existing_ones_kept() {
        let dir = std::env::temp_dir().join(format!("ros-bind-{}", std::process::id()));
        let file = dir.join("file");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&file, "x").unwrap();
        let fresh = dir.join("a/b");
        let bind = |src: &Path| {
            oci_spec::runtime::MountBuilder::default()
                .destination("/x")
                .typ("bind")
                .source(src)
                .build()
                .unwrap()
        };
        let proc_mount = oci_spec::runtime::MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source(dir.join("not-a-bind"))
            .build()
            .unwrap();
        let mut oci = oci_spec::runtime::Spec::default();
        oci.set_mounts(Some(vec![bind(&fresh), bind(&file), proc_mount]));
        create_bind_sources(&oci).unwrap();
        assert!(fresh.is_dir());
        assert_eq!(fs::read_to_string(&file).unwrap(), "x");
        assert!(!dir.join("not-a-bind").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn namespaces() {
        for good in ["ros", "ros-test-1", "a.b_c", "A1"] {
            assert!(namespace_header(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a--b", "a b", "a/b", &"x".repeat(77)] {
            assert!(namespace_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn go_zero_time_is_none() {
        let zero = prost_types::Timestamp {
            seconds: -62_135_596_800,
            nanos: 0,
        };
        assert_eq!(system_time(Some(zero)), None);
        let t = prost_types::Timestamp {
            seconds: 10,
            nanos: 0,
        };
        assert_eq!(
            system_time(Some(t)),
            Some(UNIX_EPOCH + Duration::from_secs(10))
        );
    }
}
