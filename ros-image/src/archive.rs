//! Assembles layers, config, manifest and index into one OCI image-layout tar; owns no layer logic.
//!
//! Archive layout (the OCI image layout, plus Docker's `manifest.json` so the classic
//! `docker load` also accepts it; containerd ignores that file when `oci-layout` is present):
//! `oci-layout`, `index.json`, `manifest.json`, `blobs/sha256/<hex>`.

use crate::hashing::{sha256_of, HashingWriter};
use crate::layer::{write_layer_tar, LayerError};
use crate::{BuiltImage, ImageSpec};
use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder,
    RootFsBuilder,
};
use oci_spec::OciSpecError;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub(crate) use ros_store::{CONTAINERD_NAME_ANNOTATION, OCI_REF_NAME_ANNOTATION};
/// Fixed so that output does not depend on flate2's default; 6 is gzip's own default.
const GZIP_LEVEL: u32 = 6;
const OCI_LAYOUT_VERSION: &str = "1.0.0";

/// Why an image archive could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The spec has problems; all of them are listed.
    #[error("image {image}: invalid spec: {}", problems.join("; "))]
    InvalidSpec {
        /// The image name as given.
        image: String,
        /// Every problem found, one sentence each.
        problems: Vec<String>,
    },
    /// Packing a layer directory failed.
    #[error("image {image}: building layer from {layer}")]
    Layer {
        /// The image name.
        image: String,
        /// The layer directory.
        layer: PathBuf,
        /// What went wrong inside the layer.
        #[source]
        source: LayerError,
    },
    /// Writing the compressed layer to its staging file failed.
    #[error("image {image}: staging compressed layer from {layer} in {staging}")]
    StageLayer {
        /// The image name.
        image: String,
        /// The layer directory.
        layer: PathBuf,
        /// The directory holding temporary files (the output file's directory).
        staging: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An OCI document (config, manifest, index, layout) could not be described or encoded.
    #[error("image {image}: encoding {document}")]
    Describe {
        /// The image name.
        image: String,
        /// Which document: "config", "manifest", "index", ...
        document: &'static str,
        /// The underlying error.
        #[source]
        source: OciSpecError,
    },
    /// Writing the archive file failed.
    #[error("image {image}: writing archive {path}")]
    WriteArchive {
        /// The image name.
        image: String,
        /// The output path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// One compressed layer waiting in an anonymous staging file.
struct StagedLayer {
    digest: String,
    diff_id: String,
    size: u64,
    file: File,
}

/// Builds the image described by `spec` and writes it to `out` as an OCI image-layout tar.
///
/// The archive is written to a temporary file next to `out` and renamed into place, so a failed
/// build never leaves a truncated archive behind. Compressed layers are staged in anonymous
/// temporary files in the same directory; only one read buffer of file data is held in memory.
pub fn build_archive(spec: &ImageSpec, out: &Path) -> Result<BuiltImage, BuildError> {
    let image = spec.name.clone();
    let problems = validate(spec);
    if !problems.is_empty() {
        return Err(BuildError::InvalidSpec { image, problems });
    }
    let staging = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let mut layers = Vec::with_capacity(spec.layers.len());
    for dir in &spec.layers {
        layers.push(stage_layer(&image, dir, &staging)?);
    }

    let describe = |document: &'static str| {
        let image = image.clone();
        move |source: OciSpecError| BuildError::Describe {
            image,
            document,
            source,
        }
    };

    let config_bytes = config_json(spec, &layers).map_err(describe("config"))?;
    let config_digest = sha256_of(&config_bytes);
    let config_desc = descriptor(
        MediaType::ImageConfig,
        &config_digest,
        config_bytes.len() as u64,
    )
    .map_err(describe("config descriptor"))?;

    let layer_descs = layers
        .iter()
        .map(|l| descriptor(MediaType::ImageLayerGzip, &l.digest, l.size))
        .collect::<Result<Vec<_>, _>>()
        .map_err(describe("layer descriptors"))?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layer_descs)
        .build()
        .map_err(describe("manifest"))?;
    let manifest_bytes = canonical_json(&manifest).map_err(describe("manifest"))?;
    let manifest_digest = sha256_of(&manifest_bytes);

    let index_bytes = index_json(&spec.name, &manifest_digest, manifest_bytes.len() as u64)
        .map_err(describe("index"))?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version(OCI_LAYOUT_VERSION)
        .build()
        .map_err(describe("oci-layout"))?;
    let layout_bytes = canonical_json(&layout).map_err(describe("oci-layout"))?;
    let docker_bytes = docker_manifest_json(&spec.name, &config_digest, &layers)
        .map_err(describe("manifest.json"))?;

    let write_err = |source: io::Error| BuildError::WriteArchive {
        image: image.clone(),
        path: out.to_path_buf(),
        source,
    };
    let tmp = tempfile::NamedTempFile::new_in(&staging).map_err(write_err)?;
    let mut tar = tar::Builder::new(BufWriter::new(tmp.as_file()));
    for (path, bytes) in [
        ("oci-layout", &layout_bytes),
        ("index.json", &index_bytes),
        ("manifest.json", &docker_bytes),
    ] {
        append_bytes(&mut tar, path, bytes).map_err(write_err)?;
    }
    append_dir(&mut tar, "blobs/").map_err(write_err)?;
    append_dir(&mut tar, "blobs/sha256/").map_err(write_err)?;
    append_blobs(
        &mut tar,
        &mut layers,
        [
            (&config_digest, &config_bytes),
            (&manifest_digest, &manifest_bytes),
        ],
    )
    .map_err(write_err)?;
    let buffered = tar.into_inner().map_err(write_err)?;
    buffered
        .into_inner()
        .map_err(io::IntoInnerError::into_error)
        .map_err(write_err)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    let archive_size = tmp.as_file().metadata().map_err(write_err)?.len();
    tmp.persist(out).map_err(|e| write_err(e.error))?;

    Ok(BuiltImage {
        manifest_digest,
        config_digest,
        layer_digests: layers.into_iter().map(|l| l.digest).collect(),
        archive_size,
    })
}

/// Every problem with the spec, so the Makefile author fixes them in one go.
fn validate(spec: &ImageSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.name.trim().is_empty() {
        problems.push("name is empty".to_owned());
    } else if spec.name.chars().any(char::is_whitespace) {
        problems.push(format!("name {:?} contains whitespace", spec.name));
    }
    if spec.layers.is_empty() {
        problems.push("no layers given".to_owned());
    }
    for var in &spec.env {
        match var.split_once('=') {
            Some((key, _)) if !key.is_empty() => {}
            _ => problems.push(format!("env entry {var:?} is not KEY=VALUE")),
        }
    }
    if let Some(dir) = &spec.working_dir {
        if !dir.starts_with('/') {
            problems.push(format!("working dir {dir:?} is not absolute"));
        }
    }
    problems
}

/// Packs `dir` into a gzip layer in an anonymous file under `staging`, hashing both forms on the fly.
fn stage_layer(image: &str, dir: &Path, staging: &Path) -> Result<StagedLayer, BuildError> {
    let stage_err = |source: io::Error| BuildError::StageLayer {
        image: image.to_owned(),
        layer: dir.to_path_buf(),
        staging: staging.to_path_buf(),
        source,
    };
    let file = tempfile::tempfile_in(staging).map_err(stage_err)?;
    let compressed = HashingWriter::new(BufWriter::new(file));
    let gzip = GzBuilder::new()
        .mtime(0)
        .write(compressed, Compression::new(GZIP_LEVEL));
    let uncompressed = HashingWriter::new(gzip);
    let uncompressed = write_layer_tar(dir, uncompressed).map_err(|source| BuildError::Layer {
        image: image.to_owned(),
        layer: dir.to_path_buf(),
        source,
    })?;
    let (gzip, diff_id, _) = uncompressed.finish();
    let compressed = gzip.finish().map_err(stage_err)?;
    let (buffered, digest, size) = compressed.finish();
    let mut file = buffered
        .into_inner()
        .map_err(io::IntoInnerError::into_error)
        .map_err(stage_err)?;
    file.seek(SeekFrom::Start(0)).map_err(stage_err)?;
    Ok(StagedLayer {
        digest,
        diff_id,
        size,
        file,
    })
}

fn descriptor(media_type: MediaType, digest: &str, size: u64) -> Result<Descriptor, OciSpecError> {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(Digest::from_str(digest)?)
        .size(size)
        .build()
}

fn config_json(spec: &ImageSpec, layers: &[StagedLayer]) -> Result<Vec<u8>, OciSpecError> {
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let mut config = ConfigBuilder::default();
    if let Some(v) = non_empty(&spec.entrypoint) {
        config = config.entrypoint(v);
    }
    if let Some(v) = non_empty(&spec.cmd) {
        config = config.cmd(v);
    }
    if let Some(v) = non_empty(&spec.env) {
        config = config.env(v);
    }
    if let Some(dir) = &spec.working_dir {
        config = config.working_dir(dir.clone());
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
        .build()?;
    let image_config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config.build()?)
        .rootfs(rootfs)
        .build()?;
    canonical_json(&image_config)
}

fn index_json(
    name: &str,
    manifest_digest: &str,
    manifest_size: u64,
) -> Result<Vec<u8>, OciSpecError> {
    let annotations = HashMap::from([
        (OCI_REF_NAME_ANNOTATION.to_owned(), name.to_owned()),
        (CONTAINERD_NAME_ANNOTATION.to_owned(), name.to_owned()),
    ]);
    let platform = PlatformBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .build()?;
    let manifest_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(Digest::from_str(manifest_digest)?)
        .size(manifest_size)
        .platform(platform)
        .annotations(annotations)
        .build()?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()?;
    canonical_json(&index)
}

/// Docker's own archive manifest, so `docker load` without the containerd image store works too.
fn docker_manifest_json(
    name: &str,
    config_digest: &str,
    layers: &[StagedLayer],
) -> Result<Vec<u8>, OciSpecError> {
    let doc = serde_json::json!([{
        "Config": blob_path(config_digest),
        "RepoTags": [name],
        "Layers": layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
    }]);
    canonical_json(&doc)
}

/// Compact JSON with every object's keys sorted.
///
/// oci-spec keeps annotations in a `HashMap`, whose iteration order changes from run to run;
/// going through `serde_json::Value` and sorting makes the bytes (and so the digests) stable.
pub(crate) fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, OciSpecError> {
    let mut value = serde_json::to_value(value)?;
    value.sort_all_objects();
    Ok(serde_json::to_vec(&value)?)
}

pub(crate) fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn archive_header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut header = archive_header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut header, path, io::empty())
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = archive_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    tar.append_data(&mut header, path, bytes)
}

/// Appends every blob once, in digest order; identical layers share one blob.
fn append_blobs<'a, W: Write>(
    tar: &mut tar::Builder<W>,
    layers: &mut [StagedLayer],
    json_blobs: [(&'a String, &'a Vec<u8>); 2],
) -> io::Result<()> {
    enum Source<'b> {
        Bytes(&'b [u8]),
        Layer(usize),
    }
    let mut blobs: BTreeMap<&str, Source<'_>> = BTreeMap::new();
    for (digest, bytes) in json_blobs {
        blobs.insert(digest.as_str(), Source::Bytes(bytes));
    }
    let layer_digests: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    for (i, digest) in layer_digests.iter().enumerate() {
        blobs.entry(digest.as_str()).or_insert(Source::Layer(i));
    }
    for (digest, source) in blobs {
        let path = blob_path(digest);
        match source {
            Source::Bytes(bytes) => append_bytes(tar, &path, bytes)?,
            Source::Layer(i) => {
                let layer = &mut layers[i];
                let mut header = archive_header(tar::EntryType::Regular, 0o644, layer.size);
                tar.append_data(&mut header, &path, (&mut layer.file).take(layer.size))?;
            }
        }
    }
    Ok(())
}
