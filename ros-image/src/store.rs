//! The unpacked image store: built-in images as plain directory trees that the system
//! runtime stacks as overlayfs lower layers, so a boot neither imports nor unpacks them.
//!
//! Layout (read by `ros_runtime`'s local image store; keep the two in step):
//! - `layers/<hex>/`: one layer's files, `<hex>` its diff_id (the digest of its uncompressed
//!   tar), so a layer shared by several images is stored once;
//! - `images/<file>.json`: `{"name": REF, "config": <OCI image config>, "layers": [DIFF_ID..]}`,
//!   layers base first; the file name is derived from REF but readers match on `name`.

use crate::inspect::{for_each_entry, inspect_archive, InspectError};
use flate2::read::GzDecoder;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Why an archive could not be added to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The archive did not verify.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// The archive's manifest carries no image name.
    #[error("archive {archive}: the manifest has no image name annotation")]
    Unnamed {
        /// The archive path.
        archive: PathBuf,
    },
    /// A layer holds something the store does not represent (a whiteout: the store's
    /// layers are independent trees, not diffs against each other).
    #[error("archive {archive}: layer {layer}: {entry}: whiteouts are not supported")]
    Whiteout {
        /// The archive path.
        archive: PathBuf,
        /// The layer's diff_id.
        layer: String,
        /// The entry path.
        entry: String,
    },
    /// Writing into the store failed.
    #[error("store {path}: {action}")]
    Write {
        /// What was being written.
        path: PathBuf,
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another image of a different name maps to the same record file.
    #[error("store {path}: already holds image {existing}, cannot also hold {name}")]
    NameClash {
        /// The record file.
        path: PathBuf,
        /// The name in it.
        existing: String,
        /// The name being added.
        name: String,
    },
}

pub use ros_store::StoreRecord;

/// What [`add_to_store`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The image reference.
    pub name: String,
    /// Layers unpacked by this call (diff_ids); the others were already in the store.
    pub unpacked: Vec<String>,
    /// The record file written.
    pub record: PathBuf,
}

pub use ros_store::{layer_path, record_path};

/// Verify `archive` (as [`inspect_archive`] does), unpack the layers `store` lacks and
/// write the image's record. A layer is unpacked into a temporary directory and renamed
/// into place, so an interrupted run leaves no half layer under its final name.
pub fn add_to_store(archive: &Path, store: &Path) -> Result<Stored, StoreError> {
    let report = inspect_archive(archive)?;
    let name = report.name.clone().ok_or_else(|| StoreError::Unnamed {
        archive: archive.to_path_buf(),
    })?;
    let layers_dir = store.join("layers");
    fs::create_dir_all(&layers_dir).map_err(write(&layers_dir, "creating"))?;
    let images_dir = store.join("images");
    fs::create_dir_all(&images_dir).map_err(write(&images_dir, "creating"))?;

    // Blob digest -> (diff_id, gzipped) for the layers still to unpack.
    let wanted: HashMap<String, (String, bool)> = report
        .layers
        .iter()
        .filter(|l| !layer_path(store, &l.diff_id).exists())
        .map(|l| {
            let gzipped = l.media_type.contains("gzip");
            (l.digest.clone(), (l.diff_id.clone(), gzipped))
        })
        .collect();
    let mut unpacked = Vec::new();
    let mut failure = None;
    for_each_entry(archive, |path, _, reader| {
        let Some(hex) = path.strip_prefix("blobs/sha256/") else {
            return Ok(());
        };
        let Some((diff_id, gzipped)) = wanted.get(&format!("sha256:{hex}")) else {
            return Ok(());
        };
        let final_dir = layer_path(store, diff_id);
        if final_dir.exists() || unpacked.contains(diff_id) {
            return Ok(());
        }
        let result = if *gzipped {
            unpack_layer(archive, diff_id, GzDecoder::new(reader), store, &final_dir)
        } else {
            unpack_layer(archive, diff_id, reader, store, &final_dir)
        };
        match result {
            Ok(()) => unpacked.push(diff_id.clone()),
            Err(e) if failure.is_none() => failure = Some(e),
            Err(_) => {}
        }
        Ok(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }

    let record = StoreRecord {
        name: name.clone(),
        config: report.config.clone(),
        layers: report.layers.iter().map(|l| l.diff_id.clone()).collect(),
    };
    let record_file = record_path(store, &name);
    if let Ok(bytes) = fs::read(&record_file) {
        if let Ok(existing) = serde_json::from_slice::<StoreRecord>(&bytes) {
            if existing.name != name {
                return Err(StoreError::NameClash {
                    path: record_file,
                    existing: existing.name,
                    name,
                });
            }
        }
    }
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|e| write(&record_file, "serialising")(io::Error::other(e)))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&images_dir)
        .map_err(write(&images_dir, "creating a temporary file"))?;
    tmp.write_all(&json)
        .map_err(write(&record_file, "writing"))?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(write(&record_file, "setting its mode"))?;
    tmp.persist(&record_file)
        .map_err(|e| write(&record_file, "renaming into place")(e.error))?;
    Ok(Stored {
        name,
        unpacked,
        record: record_file,
    })
}

/// Maps an I/O error to [`StoreError::Write`] naming `path` and what was being done.
fn write(path: &Path, action: &str) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    let action = action.to_string();
    move |source| StoreError::Write {
        path,
        action,
        source,
    }
}

fn unpack_layer(
    archive: &Path,
    diff_id: &str,
    reader: impl Read,
    store: &Path,
    final_dir: &Path,
) -> Result<(), StoreError> {
    let layers_dir = store.join("layers");
    let tmp = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(&layers_dir)
        .map_err(write(&layers_dir, "creating a temporary directory"))?;
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    // Ownership is not restored: image layers are root's, and the root image is squashed
    // with -all-root.
    for entry in tar
        .entries()
        .map_err(write(final_dir, "reading the layer"))?
    {
        let mut entry = entry.map_err(write(final_dir, "reading the layer"))?;
        let path = entry
            .path()
            .map_err(write(final_dir, "reading the layer"))?
            .into_owned();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
        {
            return Err(StoreError::Whiteout {
                archive: archive.to_path_buf(),
                layer: diff_id.to_string(),
                entry: path.display().to_string(),
            });
        }
        entry
            .unpack_in(tmp.path())
            .map_err(write(&tmp.path().join(&path), "unpacking"))?;
    }
    // tempdir creates 0700; a layer's root is the container's /.
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(write(tmp.path(), "setting its mode"))?;
    let kept = tmp.keep();
    fs::rename(&kept, final_dir).map_err(|e| {
        let _ = fs::remove_dir_all(&kept);
        write(final_dir, "renaming the unpacked layer into place")(e)
    })
}
