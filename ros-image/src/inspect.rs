//! Reads an image archive back and verifies it; never writes. Used by `ros-image inspect` and tests.
//!
//! Verification: every `blobs/sha256/<hex>` entry hashes to its name, every descriptor's size
//! matches its blob, and every layer's uncompressed tar hashes to the config's `diff_id`.

use crate::archive::{blob_path, CONTAINERD_NAME_ANNOTATION, OCI_REF_NAME_ANNOTATION};
use crate::hashing::{hash_reader, sha256_of};
use flate2::read::GzDecoder;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType, OciLayout};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// JSON documents bigger than this are not loaded into memory; real ones are a few KiB.
const DOCUMENT_LIMIT: u64 = 4 << 20;

/// Why an archive could not be read or failed verification.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The archive file could not be opened or read as a tar.
    #[error("archive {archive}: reading")]
    Read {
        /// The archive path.
        archive: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A required entry or blob is absent.
    #[error("archive {archive}: {entry} is missing")]
    Missing {
        /// The archive path.
        archive: PathBuf,
        /// The entry path or blob digest.
        entry: String,
    },
    /// A JSON document did not parse as the OCI type it should be.
    #[error("archive {archive}: parsing {entry}")]
    Parse {
        /// The archive path.
        archive: PathBuf,
        /// The entry path.
        entry: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A blob's content does not hash to its file name.
    #[error("archive {archive}: {entry} has digest {actual}")]
    DigestMismatch {
        /// The archive path.
        archive: PathBuf,
        /// The blob entry path.
        entry: String,
        /// What the content hashes to.
        actual: String,
    },
    /// A descriptor's size disagrees with its blob.
    #[error("archive {archive}: blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The archive path.
        archive: PathBuf,
        /// The blob digest.
        digest: String,
        /// Size in the descriptor.
        expected: u64,
        /// Size of the blob.
        actual: u64,
    },
    /// A layer's uncompressed content does not match the config's diff_id.
    #[error("archive {archive}: layer {layer} uncompresses to {actual}, config says {expected}")]
    DiffIdMismatch {
        /// The archive path.
        archive: PathBuf,
        /// The layer blob digest.
        layer: String,
        /// diff_id from the config.
        expected: String,
        /// Digest of the uncompressed layer.
        actual: String,
    },
    /// The archive uses something this reader does not handle (or is internally inconsistent).
    #[error("archive {archive}: {what}")]
    Unsupported {
        /// The archive path.
        archive: PathBuf,
        /// What was found.
        what: String,
    },
}

/// A verified archive, described.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveReport {
    /// `io.containerd.image.name` (or else `org.opencontainers.image.ref.name`) of the manifest.
    pub name: Option<String>,
    /// Digest of the (first) manifest in `index.json`.
    pub manifest_digest: String,
    /// Digest of the image config blob.
    pub config_digest: String,
    /// The parsed image config.
    pub config: ImageConfiguration,
    /// Layers, base first.
    pub layers: Vec<LayerReport>,
    /// Size of the archive file in bytes.
    pub archive_size: u64,
}

/// One verified layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    /// Digest of the blob as stored (compressed).
    pub digest: String,
    /// Media type from the manifest.
    pub media_type: String,
    /// Stored (compressed) size in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar; equals the config's diff_id.
    pub diff_id: String,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
}

struct Blob {
    size: u64,
    /// Kept only for blobs small enough to be JSON documents.
    bytes: Option<Vec<u8>>,
}

/// Reads `archive`, verifies every digest, size and diff_id, and describes the image.
pub fn inspect_archive(archive: &Path) -> Result<ArchiveReport, InspectError> {
    let read_err = |source: io::Error| InspectError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    let archive_size = fs::metadata(archive).map_err(read_err)?.len();

    let mut layout_bytes = None;
    let mut index_bytes = None;
    let mut blobs: HashMap<String, Blob> = HashMap::new();
    for_each_entry(archive, |path, size, reader| {
        if path == "oci-layout" || path == "index.json" {
            let bytes = read_document(reader, size).map_err(read_err)?;
            if path == "oci-layout" {
                layout_bytes = Some(bytes);
            } else {
                index_bytes = Some(bytes);
            }
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            let (digest, blob) = if size <= DOCUMENT_LIMIT {
                let bytes = read_document(reader, size).map_err(read_err)?;
                let digest = sha256_of(&bytes);
                let size = bytes.len() as u64;
                (
                    digest,
                    Blob {
                        size,
                        bytes: Some(bytes),
                    },
                )
            } else {
                let (digest, size) = hash_reader(reader).map_err(read_err)?;
                (digest, Blob { size, bytes: None })
            };
            if digest.strip_prefix("sha256:") != Some(hex) {
                return Err(InspectError::DigestMismatch {
                    archive: archive.to_path_buf(),
                    entry: path.to_owned(),
                    actual: digest,
                });
            }
            blobs.insert(digest, blob);
        }
        Ok(())
    })?;

    let missing = |entry: &str| InspectError::Missing {
        archive: archive.to_path_buf(),
        entry: entry.to_owned(),
    };
    let unsupported = |what: String| InspectError::Unsupported {
        archive: archive.to_path_buf(),
        what,
    };
    let layout: OciLayout = parse(archive, "oci-layout", layout_bytes.as_deref())?;
    if layout.image_layout_version() != "1.0.0" {
        return Err(unsupported(format!(
            "image layout version {}",
            layout.image_layout_version()
        )));
    }
    let index: ImageIndex = parse(archive, "index.json", index_bytes.as_deref())?;
    let manifest_desc = index
        .manifests()
        .first()
        .ok_or_else(|| unsupported("index.json lists no manifest".to_owned()))?;
    let name = manifest_desc.annotations().as_ref().and_then(|a| {
        a.get(CONTAINERD_NAME_ANNOTATION)
            .or_else(|| a.get(OCI_REF_NAME_ANNOTATION))
            .cloned()
    });

    let document = |digest: String, expected: u64| -> Result<(String, &[u8]), InspectError> {
        let blob = blobs
            .get(&digest)
            .ok_or_else(|| missing(&blob_path(&digest)))?;
        check_size(archive, &digest, expected, blob.size)?;
        let bytes = blob.bytes.as_deref().ok_or_else(|| {
            unsupported(format!("document {digest} is over {DOCUMENT_LIMIT} bytes"))
        })?;
        Ok((digest, bytes))
    };
    let (manifest_digest, bytes) =
        document(manifest_desc.digest().to_string(), manifest_desc.size())?;
    let manifest: ImageManifest = parse(archive, &blob_path(&manifest_digest), Some(bytes))?;
    let (config_digest, bytes) = document(
        manifest.config().digest().to_string(),
        manifest.config().size(),
    )?;
    let config: ImageConfiguration = parse(archive, &blob_path(&config_digest), Some(bytes))?;

    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(unsupported(format!(
            "manifest has {} layers but config has {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let mut gzipped_by_digest: HashMap<String, bool> = HashMap::new();
    for layer in manifest.layers() {
        let digest = layer.digest().to_string();
        let blob = blobs
            .get(&digest)
            .ok_or_else(|| missing(&blob_path(&digest)))?;
        check_size(archive, &digest, layer.size(), blob.size)?;
        let gzipped = match layer.media_type() {
            MediaType::ImageLayerGzip => true,
            MediaType::ImageLayer => false,
            MediaType::Other(t) if t.ends_with(".tar.gzip") || t.ends_with("+gzip") => true,
            other => {
                return Err(unsupported(format!(
                    "layer {digest} has media type {other}"
                )))
            }
        };
        gzipped_by_digest.insert(digest, gzipped);
    }

    // Second pass: only now do we know which blobs are layers and how they are compressed.
    let mut uncompressed: HashMap<String, (String, u64)> = HashMap::new();
    for_each_entry(archive, |path, _, reader| {
        let Some(hex) = path.strip_prefix("blobs/sha256/") else {
            return Ok(());
        };
        let digest = format!("sha256:{hex}");
        if let Some(&gzipped) = gzipped_by_digest.get(&digest) {
            let hashed = if gzipped {
                hash_reader(GzDecoder::new(reader))
            } else {
                hash_reader(reader)
            };
            uncompressed.insert(digest, hashed.map_err(read_err)?);
        }
        Ok(())
    })?;

    let mut layers = Vec::with_capacity(diff_ids.len());
    for (layer, expected) in manifest.layers().iter().zip(diff_ids) {
        let digest = layer.digest().to_string();
        let (diff_id, uncompressed_size) = uncompressed
            .get(&digest)
            .cloned()
            .ok_or_else(|| missing(&blob_path(&digest)))?;
        if &diff_id != expected {
            return Err(InspectError::DiffIdMismatch {
                archive: archive.to_path_buf(),
                layer: digest,
                expected: expected.clone(),
                actual: diff_id,
            });
        }
        layers.push(LayerReport {
            media_type: layer.media_type().to_string(),
            size: layer.size(),
            digest,
            diff_id,
            uncompressed_size,
        });
    }

    Ok(ArchiveReport {
        name,
        manifest_digest,
        config_digest,
        config,
        layers,
        archive_size,
    })
}

/// Calls `visit(path, size, content)` for each regular entry, with any leading `./` removed.
pub(crate) fn for_each_entry(
    archive: &Path,
    mut visit: impl FnMut(&str, u64, &mut dyn Read) -> Result<(), InspectError>,
) -> Result<(), InspectError> {
    let read_err = |source: io::Error| InspectError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    let file = File::open(archive).map_err(read_err)?;
    let mut tar = tar::Archive::new(BufReader::new(file));
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(read_err)?
            .to_string_lossy()
            .into_owned();
        let size = entry.size();
        visit(path.trim_start_matches("./"), size, &mut entry)?;
    }
    Ok(())
}

fn read_document(reader: &mut dyn Read, size: u64) -> io::Result<Vec<u8>> {
    if size > DOCUMENT_LIMIT {
        return Err(io::Error::other(format!(
            "JSON document of {size} bytes is over the {DOCUMENT_LIMIT}-byte limit"
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    reader.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn parse<T: serde::de::DeserializeOwned>(
    archive: &Path,
    entry: &str,
    bytes: Option<&[u8]>,
) -> Result<T, InspectError> {
    let bytes = bytes.ok_or_else(|| InspectError::Missing {
        archive: archive.to_path_buf(),
        entry: entry.to_owned(),
    })?;
    serde_json::from_slice(bytes).map_err(|source| InspectError::Parse {
        archive: archive.to_path_buf(),
        entry: entry.to_owned(),
        source,
    })
}

fn check_size(
    archive: &Path,
    digest: &str,
    expected: u64,
    actual: u64,
) -> Result<(), InspectError> {
    if expected == actual {
        Ok(())
    } else {
        Err(InspectError::SizeMismatch {
            archive: archive.to_path_buf(),
            digest: digest.to_owned(),
            expected,
            actual,
        })
    }
}
