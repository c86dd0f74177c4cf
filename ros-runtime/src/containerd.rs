//! The gRPC implementation of [`ServiceRuntime`]: every containerd call rOS makes is here.
//!
//! Every request carries the client's namespace (`containerd-namespace`); image imports
//! also carry their lease (`containerd-lease`) so nothing written is garbage-collected
//! before the image record and its GC labels reference it.

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

/// One Content.Write session: Stat, Write..., Commit, each answered before the next.
struct BlobUpload {
    tx: mpsc::Sender<api::WriteContentRequest>,
    responses: Streaming<api::WriteContentResponse>,
    reference: String,
    digest: String,
    total: i64,
    offset: i64,
}

impl BlobUpload {
    /// Open a write session; `None` when containerd already has the blob.
    async fn start(
        client: &Containerd,
        lease: &str,
        digest: &str,
        total: u64,
    ) -> Result<Option<Self>> {
        let write_error = |message: String| RuntimeError::WriteBlob {
            digest: digest.to_string(),
            message,
        };
        let reference = format!("ros-import-{digest}");
        let (tx, rx) = mpsc::channel(2);
        // Queue the first message before making the call: tonic waits for response headers,
        // and containerd sends them only after it has read a message.
        tx.send(api::WriteContentRequest {
            action: api::WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total: total as i64,
            expected: digest.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|_| write_error("request stream closed".into()))?;
        let request = client.leased(ReceiverStream::new(rx), lease);
        let responses = match client.content().write(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(None),
            Err(s) => return Err(write_error(status_text(&s))),
        };
        let mut upload = Self {
            tx,
            responses,
            reference,
            digest: digest.to_string(),
            total: total as i64,
            offset: 0,
        };
        match upload.answer().await {
            Ok(_) => Ok(Some(upload)),
            Err(s) if s.code() == Code::AlreadyExists => Ok(None),
            Err(s) => Err(write_error(status_text(&s))),
        }
    }

    async fn exchange(
        &mut self,
        request: api::WriteContentRequest,
    ) -> Result<api::WriteContentResponse, Status> {
        // A failed send means containerd ended the stream; its status comes from the answer.
        let _ = self.tx.send(request).await;
        self.answer().await
    }

    async fn answer(&mut self) -> Result<api::WriteContentResponse, Status> {
        self.responses
            .message()
            .await?
            .ok_or_else(|| Status::unknown("write stream ended without an answer"))
    }

    fn error(&self, message: String) -> RuntimeError {
        RuntimeError::WriteBlob {
            digest: self.digest.clone(),
            message,
        }
    }

    async fn write(&mut self, data: Vec<u8>) -> Result<()> {
        let len = data.len() as i64;
        let answer = self
            .exchange(api::WriteContentRequest {
                action: api::WriteAction::Write as i32,
                r#ref: self.reference.clone(),
                offset: self.offset,
                data,
                ..Default::default()
            })
            .await
            .map_err(|s| self.error(status_text(&s)))?;
        self.offset += len;
        if answer.offset != self.offset {
            return Err(self.error(format!(
                "containerd is at offset {}, expected {}",
                answer.offset, self.offset
            )));
        }
        Ok(())
    }

    async fn commit(mut self) -> Result<()> {
        let request = api::WriteContentRequest {
            action: api::WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.digest.clone(),
            ..Default::default()
        };
        match self.exchange(request).await {
            Ok(answer) if answer.digest == self.digest => Ok(()),
            Ok(answer) => Err(self.error(format!("containerd computed {}", answer.digest))),
            // Written meanwhile by a concurrent import: same bytes.
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(self.error(status_text(&s))),
        }
    }
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

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        let request = self.request(api::InfoRequest {
            digest: digest.to_string(),
        });
        match self.content().info(request).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(RuntimeError::ReadBlob {
                digest: digest.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// A metadata blob's bytes, checked against its digest.
    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let error = |message: String| RuntimeError::ReadBlob {
            digest: digest.to_string(),
            message,
        };
        let request = self.request(api::ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        });
        let mut stream = self
            .content()
            .read(request)
            .await
            .map_err(|s| error(status_text(&s)))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(piece) = stream.message().await.map_err(|s| error(status_text(&s)))? {
            data.extend_from_slice(&piece.data);
            if data.len() > METADATA_LIMIT {
                return Err(error(format!("larger than {METADATA_LIMIT} bytes")));
            }
        }
        if sha256_digest(&data) != digest {
            return Err(error("content does not match its digest".into()));
        }
        Ok(data)
    }

    async fn write_blob_from_memory(&self, lease: &str, digest: &str, data: &[u8]) -> Result<()> {
        let Some(mut upload) = BlobUpload::start(self, lease, digest, data.len() as u64).await?
        else {
            return Ok(());
        };
        for chunk in data.chunks(CHUNK_SIZE) {
            upload.write(chunk.to_vec()).await?;
        }
        upload.commit().await
    }

    /// Stream `wanted` blobs out of the archive into the content store; the archive is read
    /// on a blocking thread, one chunk ahead of the gRPC writes.
    async fn write_blobs_from_archive(
        &self,
        lease: &str,
        archive_path: &Path,
        wanted: HashSet<String>,
    ) -> Result<()> {
        let (tx, mut rx) = mpsc::channel(4);
        let path = archive_path.to_path_buf();
        let wanted_by_reader = wanted.clone();
        let reader = tokio::task::spawn_blocking(move || {
            archive::stream_blobs(&path, &wanted_by_reader, &tx)
        });
        let mut written = HashSet::new();
        let upload_result = async {
            let mut upload: Option<BlobUpload> = None;
            let mut current = String::new();
            while let Some(piece) = rx.recv().await {
                match piece {
                    BlobPiece::Start { digest, size } => {
                        upload = BlobUpload::start(self, lease, &digest, size).await?;
                        current = digest;
                    }
                    BlobPiece::Data(data) => {
                        if let Some(upload) = upload.as_mut() {
                            upload.write(data).await?;
                        }
                    }
                    BlobPiece::End => {
                        if let Some(upload) = upload.take() {
                            upload.commit().await?;
                        }
                        written.insert(std::mem::take(&mut current));
                    }
                }
            }
            Ok::<_, RuntimeError>(())
        }
        .await;
        // Unblocks the reader if the upload stopped early.
        drop(rx);
        let read_result = reader.await.map_err(|e| RuntimeError::ReadArchive {
            path: archive_path.to_path_buf(),
            message: e.to_string(),
        })?;
        upload_result?;
        read_result?;
        if let Some(digest) = wanted.difference(&written).next() {
            return Err(RuntimeError::InvalidArchive {
                path: archive_path.to_path_buf(),
                reason: format!("blob {digest} disappeared between reads"),
            });
        }
        Ok(())
    }

    async fn label_blob(&self, digest: &str, labels: HashMap<String, String>) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let request = self.request(api::UpdateRequest {
            info: Some(api::Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths }),
        });
        self.content()
            .update(request)
            .await
            .map_err(|s| RuntimeError::LabelBlob {
                digest: digest.to_string(),
                message: status_text(&s),
            })?;
        Ok(())
    }

    // ---- leases ----

    async fn create_lease(&self, image: &str) -> Result<String> {
        let id = format!("ros-import-{}", unique_suffix());
        let labels = HashMap::from([(
            "containerd.io/gc.expire".to_string(),
            rfc3339(SystemTime::now() + LEASE_EXPIRY),
        )]);
        self.leases()
            .create(self.request(api::CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| RuntimeError::CreateLease {
                image: image.to_string(),
                message: status_text(&s),
            })?;
        Ok(id)
    }

    /// Hold something that already existed (and might be unreferenced) for the import.
    async fn lease_resource(&self, lease: &str, image: &str, id: &str, kind: &str) -> Result<()> {
        let request = self.request(api::AddResourceRequest {
            id: lease.to_string(),
            resource: Some(api::Resource {
                id: id.to_string(),
                r#type: kind.to_string(),
            }),
        });
        self.leases()
            .add_resource(request)
            .await
            .map_err(|s| RuntimeError::CreateLease {
                image: image.to_string(),
                message: format!("holding {kind} {id}: {}", status_text(&s)),
            })?;
        Ok(())
    }

    async fn delete_lease(&self, image: &str, lease: &str) -> Result<()> {
        // `sync`: collect garbage before answering, so a missing GC reference shows up as
        // missing content right after the import rather than at some later boot.
        let request = self.request(api::DeleteRequest {
            id: lease.to_string(),
            sync: true,
        });
        match self.leases().delete(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(RuntimeError::DeleteLease {
                image: image.to_string(),
                lease: lease.to_string(),
                message: status_text(&s),
            }),
        }
    }

    // ---- snapshots ----

    async fn snapshot_exists(&self, key: &str) -> Result<bool, Status> {
        let request = self.request(snap::StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        });
        match self.snapshots().stat(request).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(s),
        }
    }

    async fn remove_snapshot(&self, key: &str) -> Result<(), Status> {
        let request = self.request(snap::RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        });
        match self.snapshots().remove(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(s),
        }
    }

    /// Apply each layer onto its parent's snapshot and commit it under its chain id,
    /// skipping layers already unpacked.
    async fn unpack(&self, lease: &str, plan: &ImagePlan) -> Result<()> {
        let mut parent = String::new();
        for ((layer, chain_id), diff_id) in
            plan.layers.iter().zip(&plan.chain_ids).zip(&plan.diff_ids)
        {
            let error = |message: String| RuntimeError::Unpack {
                image: plan.name.clone(),
                layer: layer.digest().to_string(),
                chain_id: chain_id.clone(),
                message,
            };
            let exists = self
                .snapshot_exists(chain_id)
                .await
                .map_err(|s| error(format!("stat: {}", status_text(&s))))?;
            if exists {
                let kind = format!("snapshots/{SNAPSHOTTER}");
                self.lease_resource(lease, &plan.name, chain_id, &kind)
                    .await?;
            } else {
                let key = format!("ros-unpack-{}-{chain_id}", unique_suffix());
                let applied = self.apply_layer(lease, &key, &parent, layer, chain_id, diff_id);
                if let Err(message) = applied.await {
                    if let Err(s) = self.remove_snapshot(&key).await {
                        log::warn!(
                            "snapshot {key}: removing after failed unpack: {}",
                            status_text(&s)
                        );
                    }
                    return Err(error(message));
                }
            }
            parent = chain_id.clone();
        }
        Ok(())
    }

    /// Prepare `key` on `parent`, apply `layer`, check it unpacked to `diff_id`, commit as
    /// `chain_id`. The active snapshot `key` is left for the caller to remove on error.
    async fn apply_layer(
        &self,
        lease: &str,
        key: &str,
        parent: &str,
        layer: &Descriptor,
        chain_id: &str,
        diff_id: &str,
    ) -> Result<(), String> {
        let prepared = self
            .snapshots()
            .prepare(self.leased(
                snap::PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| format!("prepare: {}", status_text(&s)))?
            .into_inner();
        let mut differ = api::diff_client::DiffClient::new(self.channel.clone());
        let applied = differ
            .apply(self.leased(
                api::ApplyRequest {
                    diff: Some(api_descriptor(layer)),
                    mounts: prepared.mounts,
                    ..Default::default()
                },
                lease,
            ))
            .await
            .map_err(|s| format!("apply: {}", status_text(&s)))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if applied != diff_id {
            return Err(format!(
                "layer unpacked to {applied:?}; the config says {diff_id}"
            ));
        }
        let committed = self
            .snapshots()
            .commit(self.leased(
                snap::CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    name: chain_id.to_string(),
                    key: key.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await;
        match committed {
            Ok(_) => Ok(()),
            // A concurrent unpack committed the same chain id first; ours is redundant.
            Err(s) if s.code() == Code::AlreadyExists => {
                if let Err(s) = self.remove_snapshot(key).await {
                    log::warn!("snapshot {key}: removing duplicate: {}", status_text(&s));
                }
                Ok(())
            }
            Err(s) => Err(format!("commit: {}", status_text(&s))),
        }
    }

    // ---- images ----

    async fn get_image(&self, name: &str) -> Result<Option<api::Image>> {
        let request = self.request(api::GetImageRequest {
            name: name.to_string(),
        });
        match self.images().get(request).await {
            Ok(answer) => Ok(answer.into_inner().image),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::GetImage {
                image: name.to_string(),
                message: status_text(&s),
            }),
        }
    }

    async fn save_image(&self, plan: &ImagePlan) -> Result<()> {
        let image = api::Image {
            name: plan.name.clone(),
            target: Some(api_descriptor(&plan.target)),
            ..Default::default()
        };
        let error = |s: Status| RuntimeError::SaveImage {
            image: plan.name.clone(),
            message: status_text(&s),
        };
        let created = self
            .images()
            .create(self.request(api::CreateImageRequest {
                image: Some(image.clone()),
                ..Default::default()
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                self.images()
                    .update(self.request(api::UpdateImageRequest {
                        image: Some(image),
                        ..Default::default()
                    }))
                    .await
                    .map_err(error)?;
                Ok(())
            }
            Err(s) => Err(error(s)),
        }
    }

    async fn import(&self, path: &Path) -> Result<ImportOutcome> {
        let owned = path.to_path_buf();
        let scan = tokio::task::spawn_blocking(move || archive::scan(&owned))
            .await
            .map_err(|e| RuntimeError::ReadArchive {
                path: path.to_path_buf(),
                message: e.to_string(),
            })??;
        let plan = scan.plan()?;
        let top = plan
            .top_chain_id()
            .ok_or_else(|| RuntimeError::InvalidArchive {
                path: path.to_path_buf(),
                reason: "the image has no layers".into(),
            })?
            .to_string();
        let digest = plan.target.digest().to_string();
        let outcome = |skipped| ImportOutcome {
            name: plan.name.clone(),
            manifest_digest: digest.clone(),
            skipped,
        };
        if let Some(existing) = self.get_image(&plan.name).await? {
            let same = existing.target.is_some_and(|t| t.digest == digest);
            let unpacked = self
                .snapshot_exists(&top)
                .await
                .map_err(|s| RuntimeError::Unpack {
                    image: plan.name.clone(),
                    layer: plan
                        .layers
                        .last()
                        .map(|l| l.digest().to_string())
                        .unwrap_or_default(),
                    chain_id: top.clone(),
                    message: status_text(&s),
                })?;
            if same && unpacked {
                log::info!("image {}: {digest} already imported", plan.name);
                return Ok(outcome(true));
            }
        }
        let lease = self.create_lease(&plan.name).await?;
        let imported = self.import_leased(&lease, &scan, &plan, &top).await;
        let released = self.delete_lease(&plan.name, &lease).await;
        imported?;
        released?;
        log::info!("image {}: imported {digest}", plan.name);
        Ok(outcome(false))
    }

    async fn import_leased(
        &self,
        lease: &str,
        scan: &ArchiveScan,
        plan: &ImagePlan,
        top: &str,
    ) -> Result<()> {
        let mut from_archive = HashSet::new();
        for blob in plan.blobs() {
            let digest = blob.digest().to_string();
            if self.blob_exists(&digest).await? {
                self.lease_resource(lease, &plan.name, &digest, "content")
                    .await?;
            } else if let Some(data) = scan.in_memory(&digest) {
                self.write_blob_from_memory(lease, &digest, data).await?;
            } else {
                from_archive.insert(digest);
            }
        }
        if !from_archive.is_empty() {
            log::debug!(
                "image {}: streaming {} blobs from {}{}",
                plan.name,
                from_archive.len(),
                scan.path().display(),
                if scan.is_gzip() { " (gzip)" } else { "" }
            );
            self.write_blobs_from_archive(lease, scan.path(), from_archive)
                .await?;
        }

        // GC references: image -> [index ->] manifest -> config + layers; config -> snapshot.
        if !plan.index_children.is_empty() {
            let labels = plan
                .index_children
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    (
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        d.digest().to_string(),
                    )
                })
                .collect();
            self.label_blob(plan.target.digest().as_ref(), labels)
                .await?;
        }
        let mut labels: HashMap<String, String> = plan
            .layers
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    d.digest().to_string(),
                )
            })
            .collect();
        labels.insert(
            "containerd.io/gc.ref.content.config".into(),
            plan.config.digest().to_string(),
        );
        self.label_blob(plan.manifest.digest().as_ref(), labels)
            .await?;
        let labels = HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
            top.to_string(),
        )]);
        self.label_blob(plan.config.digest().as_ref(), labels)
            .await?;

        self.unpack(lease, plan).await?;
        self.save_image(plan).await
    }

    /// Look the image up (as named, then in docker.io form) and read its config.
    async fn resolve_image(&self, reference: &str) -> Result<ResolvedImage> {
        let mut found = None;
        for name in archive::name_candidates(reference) {
            if let Some(image) = self.get_image(&name).await? {
                found = Some((name, image));
                break;
            }
        }
        let Some((name, image)) = found else {
            return Err(RuntimeError::ImageMissing {
                image: reference.to_string(),
            });
        };
        let invalid = |reason: String| RuntimeError::InvalidImage {
            image: name.clone(),
            reason,
        };
        let target = image
            .target
            .ok_or_else(|| invalid("the image record has no target".into()))?;
        let mut manifest_digest = target.digest.clone();
        if archive::is_index(&target.media_type) {
            let data = self.read_blob(&target.digest).await?;
            let index: ImageIndex = serde_json::from_slice(&data)
                .map_err(|e| invalid(format!("index {}: {e}", target.digest)))?;
            let chosen = archive::select_platform(index.manifests()).ok_or_else(|| {
                invalid(format!("no manifest for linux/{}", archive::host_arch()))
            })?;
            manifest_digest = chosen.digest().to_string();
        }
        let data = self.read_blob(&manifest_digest).await?;
        let manifest: ImageManifest = serde_json::from_slice(&data)
            .map_err(|e| invalid(format!("manifest {manifest_digest}: {e}")))?;
        let config_digest = manifest.config().digest().to_string();
        let data = self.read_blob(&config_digest).await?;
        let config: ImageConfiguration = serde_json::from_slice(&data)
            .map_err(|e| invalid(format!("config {config_digest}: {e}")))?;
        let top_chain_id = archive::chain_ids(config.rootfs().diff_ids())
            .pop()
            .ok_or_else(|| invalid("the image has no layers".into()))?;
        Ok(ResolvedImage {
            name,
            config,
            top_chain_id,
        })
    }

    // ---- services ----

    fn lookup_env(&self, name: &str) -> Option<String> {
        self.environment
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    async fn task(&self, service: &str) -> Result<Option<containerd_client::types::v1::Process>> {
        let request = self.request(api::GetRequest {
            container_id: service.to_string(),
            exec_id: String::new(),
        });
        match self.tasks().get(request).await {
            Ok(answer) => Ok(answer.into_inner().process),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::KillTask {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// `service`'s container record, if there is one.
    async fn container(&self, service: &str) -> Result<Option<api::Container>> {
        let request = self.request(api::GetContainerRequest {
            id: service.to_string(),
        });
        match self.containers().get(request).await {
            Ok(answer) => Ok(answer.into_inner().container),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::CreateContainer {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// Delete `service`'s task, if it has one.
    async fn delete_task(&self, service: &str) -> Result<()> {
        let request = self.request(api::DeleteTaskRequest {
            container_id: service.to_string(),
        });
        match self.tasks().delete(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(RuntimeError::DeleteTask {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// Delete the task, container and root snapshot of `service`, whichever exist.
    async fn delete_service(&self, service: &str) -> Result<()> {
        self.delete_task(service).await?;
        let request = self.request(api::DeleteContainerRequest {
            id: service.to_string(),
        });
        match self.containers().delete(request).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                return Err(RuntimeError::DeleteContainer {
                    service: service.to_string(),
                    message: status_text(&s),
                })
            }
        }
        self.remove_root(service, true).await
    }

    /// Refuse if `service`'s task is running.
    async fn refuse_running(&self, service: &str) -> Result<()> {
        if let Some(process) = self.task(service).await? {
            let status = ProcessStatus::try_from(process.status).unwrap_or(ProcessStatus::Unknown);
            if matches!(
                status,
                ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing
            ) {
                return Err(RuntimeError::AlreadyRunning {
                    service: service.to_string(),
                    pid: process.pid,
                });
            }
        }
        Ok(())
    }

    /// Remove `service`'s root: its snapshot if `snapshot` (with no container left, only
    /// when this run needs one under the same key: a removal that did not finish), and the
    /// unpacked store's overlay directories.
    async fn remove_root(&self, service: &str, snapshot: bool) -> Result<()> {
        if snapshot {
            self.remove_snapshot(service)
                .await
                .map_err(|s| RuntimeError::RemoveSnapshot {
                    service: service.to_string(),
                    message: status_text(&s),
                })?;
        }
        match &self.local {
            Some(local) => local.remove(service),
            None => Ok(()),
        }
    }

    /// Restart `service` keeping its container and root snapshot, as Docker's restart
    /// policy does: only a new task is created. Done only when the container was created
    /// in this boot (a reboot starts from a fresh root) with the very same spec, image and
    /// labels (a changed service is recreated). `Ok(None)`: not applicable, create anew.
    async fn restart_in_place(
        &self,
        existing: &api::Container,
        image: &str,
        labels: &HashMap<String, String>,
        oci: &oci_spec::runtime::Spec,
        root: &RootSource,
        output: &str,
    ) -> Result<Option<u32>> {
        let service = existing.id.as_str();
        if !labels.contains_key(LABEL_BOOT) {
            return Ok(None);
        }
        // Compared as specs: capability sets and maps are serialised in any order.
        let same_spec = existing
            .spec
            .as_ref()
            .and_then(|any| serde_json::from_slice::<oci_spec::runtime::Spec>(&any.value).ok())
            .is_some_and(|stored| stored == *oci);
        let same_root = match root {
            RootSource::Snapshot { .. } => existing.snapshot_key == service,
            RootSource::Local(_) => existing.snapshot_key.is_empty(),
        };
        if existing.image != image || existing.labels != *labels || !same_spec || !same_root {
            return Ok(None);
        }
        let kept_overlay = match (root, &self.local) {
            (RootSource::Local(image), Some(local)) => match local.kept_root(service, image)? {
                Some(overlay) => Some(overlay),
                None => return Ok(None),
            },
            (RootSource::Local(_), None) => return Ok(None),
            (RootSource::Snapshot { .. }, _) => None,
        };
        self.delete_task(service).await?;
        if let Some(overlay) = kept_overlay {
            return self
                .create_and_start_task(service, vec![overlay_mount(&overlay)], output)
                .await
                .map(Some);
        }
        let mounts = match self
            .snapshots()
            .mounts(self.request(snap::MountsRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: service.to_string(),
            }))
            .await
        {
            Ok(answer) => answer.into_inner().mounts,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => {
                return Err(RuntimeError::PrepareSnapshot {
                    service: service.to_string(),
                    parent: service.to_string(),
                    message: status_text(&s),
                })
            }
        };
        self.create_and_start_task(service, mounts, output)
            .await
            .map(Some)
    }

    async fn run_service(&self, service: &str, spec: &ServiceSpec, stdio: &Stdio) -> Result<u32> {
        if spec.tty {
            return Err(RuntimeError::TtyUnsupported {
                service: service.to_string(),
            });
        }
        let output = match stdio {
            Stdio::Null => String::new(),
            Stdio::File(path) if path.is_absolute() => format!("file://{}", path.display()),
            Stdio::File(path) => {
                return Err(RuntimeError::InvalidStdio {
                    service: service.to_string(),
                    path: path.clone(),
                })
            }
        };
        // One lookup decides the path: without a container there is no task to refuse or
        // delete, and nothing to restart in place (a fresh start makes no other calls).
        let existing = self.container(service).await?;
        if existing.is_some() {
            self.refuse_running(service).await?;
        }
        let local = match &self.local {
            Some(store) => store.find(&spec.image)?,
            None => None,
        };
        let (image_name, config, root) = match local {
            Some(image) => (
                image.name.clone(),
                image.config.clone(),
                RootSource::Local(Box::new(image)),
            ),
            None => {
                let image = self.resolve_image(&spec.image).await?;
                let parent = image.top_chain_id;
                (image.name, image.config, RootSource::Snapshot { parent })
            }
        };
        let mut oci = runtime_spec(service, spec, &config, |k| self.lookup_env(k))?;
        // containerd and its shims run with init's bounding set (all of them on a real boot;
        // fewer in a sandbox), and runc refuses to grant more.
        if let Some(bounding) = own_bounding_set() {
            restrict_capabilities(&mut oci, bounding);
        }
        if !spec.privileged {
            let devices = crate::devices::resolve(service, &spec.devices).map_err(|e| {
                RuntimeError::CreateContainer {
                    service: service.to_string(),
                    message: e.to_string(),
                }
            })?;
            crate::devices::add_to_spec(&mut oci, &devices);
        }
        if let Some(file) = self.kernel_cmdline.as_ref().filter(|_| !spec.privileged) {
            let mut mounts = oci.mounts().clone().unwrap_or_default();
            mounts.push(kernel_cmdline_mount(file));
            oci.set_mounts(Some(mounts));
        }
        if let Some(linux) = oci.linux_mut() {
            let path = self
                .cgroup_parent
                .as_ref()
                .map(|parent| PathBuf::from(format!("{parent}/{service}")));
            linux.set_cgroups_path(path);
        }
        // One shim process for every service instead of one each (runc v2 shim grouping,
        // what CRI does for the containers of a pod): a Go shim costs several MiB and a
        // process start under emulation, and a restarted task reuses the running shim.
        let mut annotations = oci.annotations().clone().unwrap_or_default();
        annotations.insert(SHIM_GROUP_ANNOTATION.into(), SHIM_GROUP.into());
        oci.set_annotations(Some(annotations));
        let create_error = |message: String| RuntimeError::CreateContainer {
            service: service.to_string(),
            message,
        };
        create_bind_sources(&oci).map_err(create_error)?;
        let spec_json = serde_json::to_vec(&oci).map_err(|e| create_error(e.to_string()))?;
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_SERVICE.into(), service.into());
        labels.insert(LABEL_IMAGE.into(), spec.image.clone());
        if let Some(boot) = boot_id() {
            labels.insert(LABEL_BOOT.into(), boot.to_string());
        }
        match &existing {
            Some(existing) => {
                match self
                    .restart_in_place(existing, &image_name, &labels, &oci, &root, &output)
                    .await
                {
                    Ok(Some(pid)) => {
                        log::info!("service {service}: restarted pid {pid} in its container");
                        return Ok(pid);
                    }
                    Ok(None) => log::info!("service {service}: removing stale container"),
                    Err(e) => {
                        log::warn!("service {service}: restart in place failed ({e}); recreating")
                    }
                }
                self.delete_service(service).await?;
            }
            // No container, so no task either: only a root may be left.
            None => {
                let snapshot = matches!(root, RootSource::Snapshot { .. });
                self.remove_root(service, snapshot).await?
            }
        }
        // The container record references the snapshot key, which keeps the root snapshot
        // from being collected between Prepare and the task's creation. An overlay root
        // of the unpacked store is ours: no snapshotter, no key.
        let (snapshotter, snapshot_key) = match root {
            RootSource::Snapshot { .. } => (SNAPSHOTTER.to_string(), service.to_string()),
            RootSource::Local(_) => (String::new(), String::new()),
        };
        let container = api::Container {
            id: service.to_string(),
            labels,
            image: image_name.clone(),
            runtime: Some(api::container::Runtime {
                name: RUNTIME.to_string(),
                options: self.runtime_binary.as_ref().map(|binary| Any {
                    type_url: RUNC_OPTIONS_TYPE_URL.to_string(),
                    value: prost::Message::encode_to_vec(&RuncOptions {
                        binary_name: binary.clone(),
                    }),
                }),
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec_json,
            }),
            snapshotter,
            snapshot_key,
            ..Default::default()
        };
        self.containers()
            .create(self.request(api::CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|s| create_error(status_text(&s)))?;
        let started = match &root {
            RootSource::Snapshot { parent } => self.start_task(service, parent, &output).await,
            RootSource::Local(image) => self.start_local_task(service, image, &output).await,
        };
        if started.is_err() {
            if let Err(e) = self.delete_service(service).await {
                log::warn!("service {service}: cleaning up after failed start: {e}");
            }
        }
        let pid = started?;
        log::info!("service {service}: started pid {pid} from {image_name}");
        Ok(pid)
    }

    /// Create and start `service`'s task on a fresh overlay root of an unpacked-store image.
    async fn start_local_task(
        &self,
        service: &str,
        image: &LocalImage,
        output: &str,
    ) -> Result<u32> {
        let Some(local) = &self.local else {
            return Err(RuntimeError::CreateContainer {
                service: service.to_string(),
                message: "no unpacked image store is configured".into(),
            });
        };
        let overlay = local.fresh_root(service, image)?;
        self.create_and_start_task(service, vec![overlay_mount(&overlay)], output)
            .await
    }

    async fn start_task(&self, service: &str, parent: &str, output: &str) -> Result<u32> {
        let mounts: Vec<ApiMount> = self
            .snapshots()
            .prepare(self.request(snap::PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: service.to_string(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| RuntimeError::PrepareSnapshot {
                service: service.to_string(),
                parent: parent.to_string(),
                message: status_text(&s),
            })?
            .into_inner()
            .mounts;
        self.create_and_start_task(service, mounts, output).await
    }

    async fn create_and_start_task(
        &self,
        service: &str,
        mounts: Vec<ApiMount>,
        output: &str,
    ) -> Result<u32> {
        self.tasks()
            .create(self.request(api::CreateTaskRequest {
                container_id: service.to_string(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: output.to_string(),
                stderr: output.to_string(),
                ..Default::default()
            }))
            .await
            .map_err(|s| RuntimeError::CreateTask {
                service: service.to_string(),
                message: status_text(&s),
            })?;
        let started = self
            .tasks()
            .start(self.request(api::StartRequest {
                container_id: service.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| RuntimeError::StartTask {
                service: service.to_string(),
                message: status_text(&s),
            })?;
        Ok(started.into_inner().pid)
    }

    async fn kill(&self, service: &str, signal: u32, all: bool) -> Result<()> {
        let request = self.request(api::KillRequest {
            container_id: service.to_string(),
            exec_id: String::new(),
            signal,
            all,
        });
        match self.tasks().kill(request).await {
            Ok(_) => Ok(()),
            // The process exited meanwhile.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(RuntimeError::KillTask {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// Whether the task exited within `limit`.
    async fn wait_exit(&self, service: &str, limit: Duration) -> Result<bool> {
        let request = self.request(api::WaitRequest {
            container_id: service.to_string(),
            exec_id: String::new(),
        });
        let mut tasks = self.tasks();
        match timeout(limit, tasks.wait(request)).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(true),
            Ok(Err(s)) => Err(RuntimeError::KillTask {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    async fn stop_service(&self, service: &str, grace: Duration) -> Result<()> {
        if let Some(process) = self.task(service).await? {
            let status = ProcessStatus::try_from(process.status).unwrap_or(ProcessStatus::Unknown);
            if status != ProcessStatus::Stopped {
                self.kill(service, SIGTERM, false).await?;
                if !self.wait_exit(service, grace).await? {
                    log::warn!("service {service}: still running {grace:?} after SIGTERM; killing");
                    // `all`: with `pid: host` the init's children do not die with it.
                    self.kill(service, SIGKILL, true).await?;
                    if !self.wait_exit(service, KILL_GRACE).await? {
                        return Err(RuntimeError::StopTimeout {
                            service: service.to_string(),
                            waited: KILL_GRACE,
                        });
                    }
                }
            }
        }
        self.delete_service(service).await
    }

    async fn list_services(&self) -> Result<Vec<ServiceState>> {
        let error = |s: Status| RuntimeError::List {
            namespace: self.namespace.clone(),
            message: status_text(&s),
        };
        let containers = self
            .containers()
            .list(self.request(api::ListContainersRequest::default()))
            .await
            .map_err(error)?
            .into_inner()
            .containers;
        let mut tasks: HashMap<String, containerd_client::types::v1::Process> = self
            .tasks()
            .list(self.request(api::ListTasksRequest::default()))
            .await
            .map_err(error)?
            .into_inner()
            .tasks
            .into_iter()
            // containerd 1.6 fills in only `id` (= the container id for a task's init).
            .map(|p| {
                let id = if p.container_id.is_empty() {
                    p.id.clone()
                } else {
                    p.container_id.clone()
                };
                (id, p)
            })
            .collect();
        let mut states: Vec<ServiceState> = containers
            .into_iter()
            .map(|c| {
                let task = tasks.remove(&c.id);
                let status = match &task {
                    None => ServiceStatus::NoTask,
                    Some(p) => match ProcessStatus::try_from(p.status) {
                        Ok(ProcessStatus::Created) => ServiceStatus::Created,
                        Ok(ProcessStatus::Running) => ServiceStatus::Running,
                        Ok(ProcessStatus::Stopped) => ServiceStatus::Stopped,
                        Ok(ProcessStatus::Paused) => ServiceStatus::Paused,
                        Ok(ProcessStatus::Pausing) => ServiceStatus::Pausing,
                        Ok(ProcessStatus::Unknown) | Err(_) => ServiceStatus::Unknown,
                    },
                };
                let stopped = status == ServiceStatus::Stopped;
                ServiceState {
                    image: c.labels.get(LABEL_IMAGE).cloned().unwrap_or(c.image),
                    name: c.id,
                    pid: task.as_ref().map(|p| p.pid).filter(|&pid| pid > 0),
                    status,
                    exit_status: task.as_ref().filter(|_| stopped).map(|p| p.exit_status),
                    exited_at: task
                        .filter(|_| stopped)
                        .and_then(|p| system_time(p.exited_at)),
                }
            })
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }

    async fn publish_marker(&self, token: &str) -> Result<()> {
        let mut events = api::events_client::EventsClient::new(self.channel.clone());
        events
            .publish(self.request(api::PublishRequest {
                topic: SYNC_TOPIC.to_string(),
                event: Some(Any {
                    type_url: SYNC_TYPE_URL.to_string(),
                    value: token.as_bytes().to_vec(),
                }),
            }))
            .await
            .map_err(|s| RuntimeError::Subscribe {
                namespace: self.namespace.clone(),
                message: format!("publishing marker: {}", status_text(&s)),
            })?;
        Ok(())
    }

    async fn subscribe_exits(&self) -> Result<ExitEvents> {
        let token = unique_suffix();
        let namespace = &self.namespace;
        let filters = vec![
            format!(r#"topic=="{EXIT_TOPIC}",namespace=="{namespace}""#),
            format!(r#"topic=="{SYNC_TOPIC}",namespace=="{namespace}""#),
        ];
        let (tx, rx) = mpsc::channel(256);
        let (live_tx, mut live_rx) = oneshot::channel();
        let client = api::events_client::EventsClient::new(self.channel.clone());
        tokio::spawn(forward_exits(
            client,
            self.request(api::SubscribeRequest { filters }),
            tx,
            token.clone(),
            live_tx,
        ));
        // containerd registers the subscription when it receives the call but says nothing
        // until the first event, so publish a marker until it comes back through the stream.
        let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
        loop {
            self.publish_marker(&token).await?;
            let wait =
                Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now()));
            match timeout(wait, &mut live_rx).await {
                Ok(Ok(Ok(()))) => return Ok(rx),
                Ok(Ok(Err(message))) => {
                    return Err(RuntimeError::Subscribe {
                        namespace: namespace.clone(),
                        message,
                    })
                }
                Ok(Err(_)) => {
                    return Err(RuntimeError::Subscribe {
                        namespace: namespace.clone(),
                        message: "event stream ended".into(),
                    })
                }
                Err(_) if Instant::now() >= deadline => {
                    return Err(RuntimeError::Subscribe {
                        namespace: namespace.clone(),
                        message: format!("not live after {SUBSCRIBE_TIMEOUT:?}"),
                    })
                }
                Err(_) => {}
            }
        }
    }
}

/// Drive one Events.Subscribe stream: report liveness when our marker comes back, forward
/// task exits, and end when the receiver is dropped or containerd closes the stream.
async fn forward_exits(
    mut client: api::events_client::EventsClient<Channel>,
    request: Request<api::SubscribeRequest>,
    tx: mpsc::Sender<ExitEvent>,
    token: String,
    live: oneshot::Sender<Result<(), String>>,
) {
    let mut live = Some(live);
    let subscribed = tokio::select! {
        _ = tx.closed() => return,
        answer = client.subscribe(request) => answer,
    };
    let mut stream = match subscribed {
        Ok(answer) => answer.into_inner(),
        Err(s) => {
            if let Some(live) = live.take() {
                let _ = live.send(Err(status_text(&s)));
            }
            return;
        }
    };
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            next = stream.message() => next,
        };
        let envelope = match next {
            Ok(Some(envelope)) => envelope,
            Ok(None) => {
                log::warn!("containerd events: stream ended");
                return;
            }
            Err(s) => {
                match live.take() {
                    Some(live) => {
                        let _ = live.send(Err(status_text(&s)));
                    }
                    None => log::warn!("containerd events: {}", status_text(&s)),
                }
                return;
            }
        };
        let Some(payload) = envelope.event else {
            continue;
        };
        match envelope.topic.as_str() {
            SYNC_TOPIC if payload.value == token.as_bytes() => {
                if let Some(live) = live.take() {
                    let _ = live.send(Ok(()));
                }
            }
            EXIT_TOPIC => {
                let exit = match TaskExit::decode(payload.value.as_slice()) {
                    Ok(exit) => exit,
                    Err(e) => {
                        log::warn!("containerd events: undecodable {}: {e}", payload.type_url);
                        continue;
                    }
                };
                // Exits of exec'd processes carry their exec id; only the task's own matters.
                if exit.id != exit.container_id {
                    continue;
                }
                let event = ExitEvent {
                    service: exit.container_id,
                    pid: exit.pid,
                    exit_status: exit.exit_status,
                    exited_at: system_time(exit.exited_at),
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
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

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once.
/// The rootfs mount of a task on an overlay root.
fn overlay_mount(root: &OverlayRoot) -> ApiMount {
    ApiMount {
        r#type: "overlay".to_string(),
        source: "overlay".to_string(),
        options: root.options(),
        ..Default::default()
    }
}

fn boot_id() -> Option<&'static str> {
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
        })
        .as_deref()
}

/// Create the host directories of bind mounts that do not exist yet (as Docker does for
/// `-v /host:/container`), so that a service can share a fresh directory such as
/// `/run/docker-engine`. Existing paths, files included, are left as they are.
fn create_bind_sources(oci: &oci_spec::runtime::Spec) -> std::result::Result<(), String> {
    let binds = oci
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() == Some("bind"));
    for source in binds.filter_map(|m| m.source().as_ref()) {
        if source.is_absolute() && fs::symlink_metadata(source).is_err() {
            fs::create_dir_all(source)
                .map_err(|e| format!("creating bind source {}: {e}", source.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
