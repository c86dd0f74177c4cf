//! OCI image-layout archives and image metadata: scanning an archive, choosing the image and
//! platform manifest, chain ids, image-name normalisation, and streaming blobs out of the
//! archive without holding it in memory.
//!
//! Blocking file I/O only (callers use `spawn_blocking`); must not talk to containerd.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};

use crate::error::RuntimeError;

/// JSON blobs up to this size are kept in memory during the scan: manifests, indexes and
/// configs are a few KiB; layers are never JSON.
const SMALL_BLOB_LIMIT: u64 = 1 << 20;

/// Size of the pieces a blob is streamed in (containerd accepts gRPC messages up to 16 MiB).
pub(crate) const CHUNK_SIZE: usize = 1 << 20;

pub(crate) use ros_store::NAME_ANNOTATIONS;

const INDEX_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// What one pass over the archive found.
#[derive(Debug)]
pub(crate) struct ArchiveScan {
    path: PathBuf,
    gzip: bool,
    index: Option<Vec<u8>>,
    /// digest -> size of every blob in the archive.
    blob_sizes: HashMap<String, u64>,
    /// digest -> content of the small JSON blobs.
    small_blobs: HashMap<String, Vec<u8>>,
}

/// The image an archive holds, resolved down to one platform's manifest and config.
#[derive(Debug, Clone)]
pub(crate) struct ImagePlan {
    pub name: String,
    /// What the image record points at: the manifest, or an index holding it.
    pub target: Descriptor,
    /// The index the target is, with the children present in the archive.
    pub index_children: Vec<Descriptor>,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Chain id of each layer, base first.
    pub chain_ids: Vec<String>,
    pub diff_ids: Vec<String>,
}

impl ImagePlan {
    /// Chain id of the whole image: the snapshot a container's root is prepared on.
    pub fn top_chain_id(&self) -> Option<&str> {
        self.chain_ids.last().map(String::as_str)
    }

    /// Every blob the image needs, metadata first.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut blobs = vec![&self.target];
        blobs.extend(
            self.index_children
                .iter()
                .filter(|d| d.digest() != self.target.digest()),
        );
        if self.manifest.digest() != self.target.digest()
            && !self
                .index_children
                .iter()
                .any(|d| d.digest() == self.manifest.digest())
        {
            blobs.push(&self.manifest);
        }
        blobs.push(&self.config);
        blobs.extend(self.layers.iter());
        blobs
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidArchive {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::ReadArchive {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The archive as a byte stream, gunzipped when it starts with the gzip magic.
fn open(path: &Path) -> Result<(Box<dyn Read>, bool), RuntimeError> {
    let mut file = File::open(path).map_err(|e| read_error(path, e))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| read_error(path, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| read_error(path, e))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        let gz = flate2::read::GzDecoder::new(BufReader::new(file));
        Ok((Box::new(gz), true))
    } else {
        Ok((Box::new(BufReader::new(file)), false))
    }
}

/// `blobs/sha256/<hex>` (with or without a leading `./`) as `sha256:<hex>`.
fn blob_digest(entry_path: &str) -> Option<String> {
    let rest = entry_path.trim_start_matches("./").strip_prefix("blobs/")?;
    let (algorithm, hex) = rest.split_once('/')?;
    (!hex.is_empty() && !hex.contains('/')).then(|| format!("{algorithm}:{hex}"))
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// An OCI image layout unpacked in a directory (as the root image ships them, so that
/// squashfs stores a layer shared by several images once): the same scan, from files.
fn scan_dir(path: &Path) -> Result<ArchiveScan, RuntimeError> {
    let mut scan = ArchiveScan {
        path: path.to_path_buf(),
        gzip: false,
        index: None,
        blob_sizes: HashMap::new(),
        small_blobs: HashMap::new(),
    };
    if !path.join("oci-layout").is_file() {
        return Err(invalid(path, "no oci-layout file: not an OCI image layout"));
    }
    scan.index = Some(std::fs::read(path.join("index.json")).map_err(|e| read_error(path, e))?);
    let blobs = path.join("blobs");
    for algorithm in std::fs::read_dir(&blobs).map_err(|e| read_error(&blobs, e))? {
        let algorithm = algorithm.map_err(|e| read_error(&blobs, e))?;
        let dir = algorithm.path();
        if !dir.is_dir() {
            continue;
        }
        for blob in std::fs::read_dir(&dir).map_err(|e| read_error(&dir, e))? {
            let blob = blob.map_err(|e| read_error(&dir, e))?;
            let file = blob.path();
            let meta = std::fs::metadata(&file).map_err(|e| read_error(&file, e))?;
            if !meta.is_file() {
                continue;
            }
            let digest = format!(
                "{}:{}",
                algorithm.file_name().to_string_lossy(),
                blob.file_name().to_string_lossy()
            );
            scan.blob_sizes.insert(digest.clone(), meta.len());
            if meta.len() <= SMALL_BLOB_LIMIT {
                let data = std::fs::read(&file).map_err(|e| read_error(&file, e))?;
                if data.first() == Some(&b'{') {
                    scan.small_blobs.insert(digest, data);
                }
            }
        }
    }
    Ok(scan)
}

/// One pass over the archive (a tar, gzipped or not, or an unpacked layout directory):
/// blob sizes, index.json, and the small JSON blobs.
pub(crate) fn scan(path: &Path) -> Result<ArchiveScan, RuntimeError> {
    if path.is_dir() {
        return scan_dir(path);
    }
    let (reader, gzip) = open(path)?;
    let mut archive = tar::Archive::new(reader);
    let mut scan = ArchiveScan {
        path: path.to_path_buf(),
        gzip,
        index: None,
        blob_sizes: HashMap::new(),
        small_blobs: HashMap::new(),
    };
    let mut saw_layout = false;
    for entry in archive.entries().map_err(|e| read_error(path, e))? {
        let mut entry = entry.map_err(|e| read_error(path, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(|e| read_error(path, e))?;
        let name = name.to_string_lossy().trim_start_matches("./").to_string();
        let size = entry.size();
        if name == "index.json" {
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| read_error(path, e))?;
            scan.index = Some(data);
        } else if name == "oci-layout" {
            saw_layout = true;
        } else if let Some(digest) = blob_digest(&name) {
            scan.blob_sizes.insert(digest.clone(), size);
            if size <= SMALL_BLOB_LIMIT {
                let mut data = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| read_error(path, e))?;
                if data.first() == Some(&b'{') {
                    scan.small_blobs.insert(digest, data);
                }
            }
        }
    }
    if !saw_layout {
        return Err(invalid(path, "no oci-layout file: not an OCI image layout"));
    }
    Ok(scan)
}

impl ArchiveScan {
    /// Path of the scanned archive.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the archive is gzip-compressed (each pass decompresses it again).
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// A blob's content if the scan kept it (small JSON); others need a second pass.
    pub fn in_memory(&self, digest: &str) -> Option<&[u8]> {
        self.small_blobs.get(digest).map(Vec::as_slice)
    }

    fn json_blob(&self, descriptor: &Descriptor) -> Result<&[u8], RuntimeError> {
        let digest = descriptor.digest().to_string();
        let data = self.small_blobs.get(&digest).ok_or_else(|| {
            invalid(
                &self.path,
                format!("blob {digest} is missing or is not a JSON document"),
            )
        })?;
        if sha256_digest(data) != digest {
            return Err(invalid(
                &self.path,
                format!("blob {digest} does not match its digest"),
            ));
        }
        Ok(data)
    }

    /// Choose the archive's one image and resolve it to the host platform's manifest.
    pub fn plan(&self) -> Result<ImagePlan, RuntimeError> {
        let path = &self.path;
        let index_json = self
            .index
            .as_ref()
            .ok_or_else(|| invalid(path, "no index.json"))?;
        let index: ImageIndex = serde_json::from_slice(index_json)
            .map_err(|e| invalid(path, format!("index.json: {e}")))?;
        let [target] = index.manifests().as_slice() else {
            return Err(invalid(
                path,
                format!(
                    "index.json lists {} images; expected exactly one",
                    index.manifests().len()
                ),
            ));
        };
        let name = target
            .annotations()
            .as_ref()
            .and_then(|a| NAME_ANNOTATIONS.iter().find_map(|k| a.get(*k)))
            .filter(|n| !n.is_empty())
            .cloned()
            .ok_or_else(|| {
                invalid(
                    path,
                    format!(
                        "the image has no {} annotation",
                        NAME_ANNOTATIONS.join(" or ")
                    ),
                )
            })?;

        let (manifest, index_children) =
            if INDEX_MEDIA_TYPES.contains(&target.media_type().to_string().as_str()) {
                let nested: ImageIndex = serde_json::from_slice(self.json_blob(target)?)
                    .map_err(|e| invalid(path, format!("index {}: {e}", target.digest())))?;
                let chosen = select_platform(nested.manifests()).ok_or_else(|| {
                    invalid(
                        path,
                        format!(
                            "no manifest for linux/{} in {}",
                            host_arch(),
                            target.digest()
                        ),
                    )
                })?;
                let present = nested
                    .manifests()
                    .iter()
                    .filter(|d| self.blob_sizes.contains_key(&d.digest().to_string()))
                    .cloned()
                    .collect();
                (chosen.clone(), present)
            } else {
                (target.clone(), Vec::new())
            };

        let parsed: ImageManifest = serde_json::from_slice(self.json_blob(&manifest)?)
            .map_err(|e| invalid(path, format!("manifest {}: {e}", manifest.digest())))?;
        let config_desc = parsed.config().clone();
        let config: ImageConfiguration = serde_json::from_slice(self.json_blob(&config_desc)?)
            .map_err(|e| invalid(path, format!("config {}: {e}", config_desc.digest())))?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != parsed.layers().len() {
            return Err(invalid(
                path,
                format!(
                    "config {} lists {} diff ids for {} layers",
                    config_desc.digest(),
                    diff_ids.len(),
                    parsed.layers().len()
                ),
            ));
        }
        let plan = ImagePlan {
            name,
            target: target.clone(),
            index_children,
            manifest,
            config: config_desc,
            layers: parsed.layers().clone(),
            chain_ids: chain_ids(&diff_ids),
            diff_ids,
        };
        for blob in plan.blobs() {
            let digest = blob.digest().to_string();
            match self.blob_sizes.get(&digest) {
                None => {
                    return Err(invalid(
                        path,
                        format!("blob {digest} is not in the archive"),
                    ))
                }
                Some(&size) if size != blob.size() => {
                    return Err(invalid(
                        path,
                        format!(
                            "blob {digest} is {size} bytes; its descriptor says {}",
                            blob.size()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(plan)
    }
}

/// A piece of a blob streamed out of the archive.
#[derive(Debug)]
pub(crate) enum BlobPiece {
    Start { digest: String, size: u64 },
    Data(Vec<u8>),
    End,
}

/// Second pass: send every blob in `wanted` as Start, Data..., End, in archive order.
/// Stops quietly when the receiver goes away (the async side failed and reports why).
pub(crate) fn stream_blobs(
    path: &Path,
    wanted: &HashSet<String>,
    tx: &tokio::sync::mpsc::Sender<BlobPiece>,
) -> Result<(), RuntimeError> {
    if path.is_dir() {
        let mut digests: Vec<&String> = wanted.iter().collect();
        digests.sort();
        for digest in digests {
            let Some((algorithm, hex)) = digest.split_once(':') else {
                continue;
            };
            let file = path.join("blobs").join(algorithm).join(hex);
            let mut blob = File::open(&file).map_err(|e| read_error(&file, e))?;
            let size = blob.metadata().map_err(|e| read_error(&file, e))?.len();
            if !send_blob(&mut blob, digest.clone(), size, &file, tx)? {
                return Ok(());
            }
        }
        return Ok(());
    }
    let (reader, _) = open(path)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| read_error(path, e))? {
        let mut entry = entry.map_err(|e| read_error(path, e))?;
        let name = entry.path().map_err(|e| read_error(path, e))?;
        let Some(digest) = blob_digest(&name.to_string_lossy()) else {
            continue;
        };
        if !wanted.contains(&digest) {
            continue;
        }
        let size = entry.size();
        if !send_blob(&mut entry, digest, size, path, tx)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Send one blob as Start, Data..., End; false when the receiver went away.
fn send_blob(
    entry: &mut impl Read,
    digest: String,
    size: u64,
    path: &Path,
    tx: &tokio::sync::mpsc::Sender<BlobPiece>,
) -> Result<bool, RuntimeError> {
    {
        if tx.blocking_send(BlobPiece::Start { digest, size }).is_err() {
            return Ok(false);
        }
        loop {
            let mut chunk = vec![0u8; CHUNK_SIZE];
            let mut filled = 0;
            while filled < CHUNK_SIZE {
                let n = entry
                    .read(&mut chunk[filled..])
                    .map_err(|e| read_error(path, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            chunk.truncate(filled);
            if tx.blocking_send(BlobPiece::Data(chunk)).is_err() {
                return Ok(false);
            }
        }
        if tx.blocking_send(BlobPiece::End).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Chain ids of a layer stack: chain(L0) = diff(L0); chain(Ln) = sha256(chain(Ln-1) + " " +
/// diff(Ln)), as containerd names committed snapshots.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chains.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        chains.push(next);
    }
    chains
}

/// GOARCH of this build.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The manifest for linux on this architecture; a descriptor without a platform matches.
pub(crate) fn select_platform(manifests: &[Descriptor]) -> Option<&Descriptor> {
    manifests.iter().find(|d| match d.platform() {
        None => true,
        Some(p) => p.os().to_string() == "linux" && p.architecture().to_string() == host_arch(),
    })
}

/// Whether a media type is an index (manifest list) rather than a manifest.
pub(crate) fn is_index(media_type: &str) -> bool {
    INDEX_MEDIA_TYPES.contains(&media_type)
}

/// Names to look an image up by: as written, then Docker's normalised form
/// (`busybox` -> `docker.io/library/busybox:latest`) when that differs.
pub(crate) fn name_candidates(name: &str) -> Vec<String> {
    let mut candidates = vec![name.to_string()];
    let (first, rest) = match name.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    let has_domain =
        rest.is_some() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = match (has_domain, rest) {
        (true, _) => name.to_string(),
        (false, Some(_)) => format!("docker.io/{name}"),
        (false, None) => format!("docker.io/library/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    if full != name {
        candidates.push(full);
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A blob: its bytes and digest.
    fn blob(data: Vec<u8>) -> (String, Vec<u8>) {
        (sha256_digest(&data), data)
    }

    fn json_blob(value: serde_json::Value) -> (String, Vec<u8>) {
        blob(serde_json::to_vec(&value).unwrap())
    }

    fn write_archive(files: &[(String, Vec<u8>)]) -> tempfile::NamedTempFile {
        let out = tempfile::NamedTempFile::new().unwrap();
        let mut builder = tar::Builder::new(out.reopen().unwrap());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            builder
                .append_data(&mut header, path, data.as_slice())
                .unwrap();
        }
        builder.finish().unwrap();
        out
    }

    fn blob_file((digest, data): &(String, Vec<u8>)) -> (String, Vec<u8>) {
        (format!("blobs/sha256/{}", &digest[7..]), data.clone())
    }

    fn descriptor(media_type: &str, (digest, data): &(String, Vec<u8>)) -> serde_json::Value {
        json!({ "mediaType": media_type, "digest": digest, "size": data.len() })
    }

    /// A one-layer image: (layer, config, manifest) blobs.
    fn image() -> [(String, Vec<u8>); 3] {
        let layer = blob(vec![0x1f, 0x8b, 1, 2, 3]);
        let diff_id = sha256_digest(b"uncompressed");
        let config = json_blob(json!({
            "architecture": host_arch(), "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        }));
        let manifest = json_blob(json!({
            "schemaVersion": 2,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer)],
        }));
        [layer, config, manifest]
    }

    fn layout(index: serde_json::Value, blobs: &[&(String, Vec<u8>)]) -> tempfile::NamedTempFile {
        let mut files = vec![
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (
                "index.json".to_string(),
                serde_json::to_vec(&index).unwrap(),
            ),
        ];
        files.extend(blobs.iter().map(|b| blob_file(b)));
        write_archive(&files)
    }

    fn named(media_type: &str, blob: &(String, Vec<u8>), name: &str) -> serde_json::Value {
        let mut d = descriptor(media_type, blob);
        d["annotations"] = json!({ "io.containerd.image.name": name });
        d
    }

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn plan_error(file: &tempfile::NamedTempFile) -> String {
        match scan(file.path()).and_then(|s| s.plan()) {
            Ok(plan) => panic!("expected an error, got {plan:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plan_of_one_image() {
        let [layer, config, manifest] = image();
        let index =
            json!({ "schemaVersion": 2, "manifests": [named(MANIFEST, &manifest, "ros/a:1")] });
        let file = layout(index, &[&layer, &config, &manifest]);
        let scan = scan(file.path()).unwrap();
        let plan = scan.plan().unwrap();
        assert_eq!(plan.name, "ros/a:1");
        assert_eq!(plan.target.digest().to_string(), manifest.0);
        assert_eq!(plan.chain_ids, vec![sha256_digest(b"uncompressed")]);
        let blobs: Vec<String> = plan
            .blobs()
            .iter()
            .map(|d| d.digest().to_string())
            .collect();
        assert_eq!(
            blobs,
            vec![manifest.0.clone(), config.0.clone(), layer.0.clone()]
        );
        assert!(scan.in_memory(&config.0).is_some());
        assert!(
            scan.in_memory(&layer.0).is_none(),
            "layers are streamed, not kept"
        );
    }

    #[test]
    fn an_unpacked_layout_directory_plans_and_streams_like_its_archive() {
        let [layer, config, manifest] = image();
        let index =
            json!({ "schemaVersion": 2, "manifests": [named(MANIFEST, &manifest, "ros/a:1")] });
        let file = layout(index, &[&layer, &config, &manifest]);
        let dir = tempfile::tempdir().unwrap();
        tar::Archive::new(File::open(file.path()).unwrap())
            .unpack(dir.path())
            .unwrap();
        let from_dir = scan(dir.path()).unwrap().plan().unwrap();
        let from_tar = scan(file.path()).unwrap().plan().unwrap();
        assert_eq!(from_dir.name, from_tar.name);
        assert_eq!(from_dir.chain_ids, from_tar.chain_ids);
        assert_eq!(from_dir.blobs(), from_tar.blobs());

        let wanted: HashSet<String> = [layer.0.clone()].into();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        stream_blobs(dir.path(), &wanted, &tx).unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Ok(piece) = rx.try_recv() {
            match piece {
                BlobPiece::Start { digest, size } => {
                    assert_eq!(digest, layer.0);
                    assert_eq!(size, layer.1.len() as u64);
                }
                BlobPiece::Data(d) => got.extend(d),
                BlobPiece::End => {}
            }
        }
        assert_eq!(got, layer.1);
        // Without oci-layout it is not a layout.
        std::fs::remove_file(dir.path().join("oci-layout")).unwrap();
        assert!(scan(dir.path()).is_err());
    }

    #[test]
    fn nested_index_resolves_to_this_platform() {
        let [layer, config, manifest] = image();
        let mut ours = descriptor(MANIFEST, &manifest);
        ours["platform"] = json!({ "os": "linux", "architecture": host_arch() });
        let other = json!({
            "mediaType": MANIFEST, "digest": sha256_digest(b"other"), "size": 5,
            "platform": { "os": "linux", "architecture": "s390x" },
        });
        let nested = json_blob(json!({ "schemaVersion": 2, "manifests": [other, ours] }));
        let index = json!({ "schemaVersion": 2, "manifests": [
            named("application/vnd.oci.image.index.v1+json", &nested, "ros/multi:1")
        ] });
        let file = layout(index, &[&layer, &config, &manifest, &nested]);
        let plan = scan(file.path()).unwrap().plan().unwrap();
        assert_eq!(plan.target.digest().to_string(), nested.0);
        assert_eq!(plan.manifest.digest().to_string(), manifest.0);
        assert_eq!(
            plan.index_children.len(),
            1,
            "only children present in the archive"
        );
    }

    #[test]
    fn bad_archives_name_their_problem() {
        let [layer, config, manifest] = image();
        let one = json!({ "schemaVersion": 2, "manifests": [named(MANIFEST, &manifest, "a")] });
        let two = json!({ "schemaVersion": 2, "manifests": [
            named(MANIFEST, &manifest, "a"), named(MANIFEST, &manifest, "b")
        ] });
        let unnamed = json!({ "schemaVersion": 2, "manifests": [descriptor(MANIFEST, &manifest)] });
        let cases = [
            (
                "two images",
                layout(two, &[&layer, &config, &manifest]),
                "lists 2 images",
            ),
            (
                "no name",
                layout(unnamed, &[&layer, &config, &manifest]),
                "annotation",
            ),
            (
                "missing layer",
                layout(one.clone(), &[&config, &manifest]),
                "not in the archive",
            ),
            (
                "missing config",
                layout(one.clone(), &[&layer, &manifest]),
                "is missing",
            ),
            (
                "not a layout",
                write_archive(&[("index.json".into(), b"{}".to_vec())]),
                "oci-layout",
            ),
        ];
        for (name, file, want) in cases {
            let err = plan_error(&file);
            assert!(err.contains(want), "{name}: {err}");
            assert!(
                err.contains(&file.path().display().to_string()),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn gzip_archives_are_read_and_streamed() {
        let [layer, config, manifest] = image();
        let index = json!({ "schemaVersion": 2, "manifests": [named(MANIFEST, &manifest, "a")] });
        let plain = layout(index, &[&layer, &config, &manifest]);
        let gz = tempfile::NamedTempFile::new().unwrap();
        let mut encoder =
            flate2::write::GzEncoder::new(gz.reopen().unwrap(), flate2::Compression::fast());
        std::io::copy(&mut File::open(plain.path()).unwrap(), &mut encoder).unwrap();
        encoder.finish().unwrap();

        let scan = scan(gz.path()).unwrap();
        assert!(scan.is_gzip());
        scan.plan().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let wanted = HashSet::from([layer.0.clone()]);
        stream_blobs(gz.path(), &wanted, &tx).unwrap();
        drop(tx);
        let mut pieces = Vec::new();
        while let Ok(piece) = rx.try_recv() {
            pieces.push(piece);
        }
        assert!(matches!(&pieces[0], BlobPiece::Start { digest, size: 5 } if *digest == layer.0));
        assert!(matches!(&pieces[1], BlobPiece::Data(d) if *d == layer.1));
        assert!(matches!(pieces[2], BlobPiece::End));
        assert_eq!(pieces.len(), 3);
    }

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        let d0 = "sha256:".to_string() + &"a".repeat(64);
        assert_eq!(chain_ids(std::slice::from_ref(&d0)), vec![d0]);
    }

    #[test]
    fn chain_ids_of_a_stack() {
        // Computed with coreutils: printf '%s %s' "$CHAIN" "$DIFF" | sha256sum
        let l0 = "sha256:4fc242d58285699eca05db3cc7c7122a2b8e014d9481f323bd9277baacfa0628";
        let l1 = "sha256:5e5b1a5e1a5f8bb6c1a4f6f4cf4b8e4e1e6e1f5b0b7f1a7a3c3e3d3c3b3a3938";
        let chains = chain_ids(&[l0.to_string(), l1.to_string(), l1.to_string()]);
        assert_eq!(chains[0], l0);
        assert_eq!(
            chains[1],
            "sha256:d424ad85941eff640f18803fafa4eb0c98e5b79cf553d46bbb4c0000eaf50fc0"
        );
        assert_eq!(
            chains[2],
            "sha256:ca5c0c1b778817f21dd346b1794b720a5085e61386685b26b17088b269e493a9"
        );
    }

    #[test]
    fn blob_paths() {
        let cases = [
            ("blobs/sha256/abc", Some("sha256:abc")),
            ("./blobs/sha256/abc", Some("sha256:abc")),
            ("blobs/sha256/", None),
            ("blobs/sha256", None),
            ("index.json", None),
            ("blobs/sha256/a/b", None),
        ];
        for (path, want) in cases {
            assert_eq!(blob_digest(path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn name_normalisation() {
        let cases: [(&str, &[&str]); 6] = [
            ("busybox", &["busybox", "docker.io/library/busybox:latest"]),
            (
                "ros/console:0.1.0",
                &["ros/console:0.1.0", "docker.io/ros/console:0.1.0"],
            ),
            (
                "docker.io/ros/console:0.1.0",
                &["docker.io/ros/console:0.1.0"],
            ),
            ("localhost/x", &["localhost/x", "localhost/x:latest"]),
            ("reg:5000/a/b:1", &["reg:5000/a/b:1"]),
            (
                "a@sha256:00",
                &["a@sha256:00", "docker.io/library/a@sha256:00"],
            ),
        ];
        for (name, want) in cases {
            assert_eq!(name_candidates(name), want, "{name}");
        }
    }
}
