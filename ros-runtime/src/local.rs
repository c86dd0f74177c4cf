//! Built-in images served from an unpacked image store on the read-only root: a service's
//! root is an overlay of the image's layer directories with a writable upper directory of
//! its own, so a boot neither imports nor unpacks these images and their files are
//! page cache of the root image, not copies in the state disk or RAM.
//!
//! The store is written at build time by `ros-image store` (see `ros_image::store` for the
//! layout): `layers/<hex>/` per layer diff_id, and `images/*.json` records
//! `{"name", "config", "layers"}`. Images not in the store come from containerd as before.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

use crate::archive;
use crate::error::RuntimeError;
use crate::Result;

use ros_store::StoreRecord as Record;

/// An image found in the store.
#[derive(Debug, Clone)]
pub(crate) struct LocalImage {
    /// The name as the store records it.
    pub name: String,
    /// The image's OCI config.
    pub config: ImageConfiguration,
    /// Layer directories, base first.
    pub layers: Vec<PathBuf>,
}

/// The store of unpacked images, and where service roots get their writable layers.
#[derive(Debug, Clone)]
pub struct LocalImages {
    store: PathBuf,
    scratch: PathBuf,
}

/// A service's overlay root: what a task's rootfs mount is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OverlayRoot {
    /// Layer directories, base first.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl OverlayRoot {
    /// overlayfs mount options; `lowerdir` lists the top layer first.
    pub fn options(&self) -> Vec<String> {
        let lower: Vec<String> = self
            .lower
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        vec![
            format!("lowerdir={}", lower.join(":")),
            format!("upperdir={}", self.upper.display()),
            format!("workdir={}", self.work.display()),
        ]
    }
}

impl LocalImages {
    /// Images from `store`; each service's writable layer in `scratch/<service>`.
    pub fn new(store: impl Into<PathBuf>, scratch: impl Into<PathBuf>) -> Self {
        Self {
            store: store.into(),
            scratch: scratch.into(),
        }
    }

    /// The image `reference` (as named, then in its docker.io form), if the store has it.
    /// A store that does not exist holds nothing; a broken record or a missing layer is an
    /// error naming the file.
    pub(crate) fn find(&self, reference: &str) -> Result<Option<LocalImage>> {
        let dir = ros_store::records_dir(&self.store);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(invalid(reference, &dir, e.to_string())),
        };
        let candidates = archive::name_candidates(reference);
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for file in files {
            let bytes = fs::read(&file).map_err(|e| invalid(reference, &file, e.to_string()))?;
            let record: Record = serde_json::from_slice(&bytes)
                .map_err(|e| invalid(reference, &file, e.to_string()))?;
            if !candidates.contains(&record.name) {
                continue;
            }
            if record.layers.is_empty() {
                return Err(invalid(reference, &file, "no layers".into()));
            }
            let mut layers = Vec::with_capacity(record.layers.len());
            for diff_id in &record.layers {
                if ros_store::layer_hex(diff_id).is_none() {
                    return Err(invalid(reference, &file, format!("layer {diff_id:?}")));
                }
                let layer = ros_store::layer_path(&self.store, diff_id);
                if !layer.is_dir() {
                    return Err(invalid(
                        reference,
                        &file,
                        format!("layer {} is missing", layer.display()),
                    ));
                }
                layers.push(layer);
            }
            return Ok(Some(LocalImage {
                name: record.name,
                config: record.config,
                layers,
            }));
        }
        Ok(None)
    }

    fn service_dir(&self, service: &str) -> Result<PathBuf> {
        // Container ids are checked by containerd too, but this one becomes a path first.
        let valid = !service.is_empty()
            && !service.starts_with('.')
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(RuntimeError::CreateContainer {
                service: service.to_string(),
                message: "not a valid container name".into(),
            });
        }
        Ok(self.scratch.join(service))
    }

    fn overlay(&self, service: &str, image: &LocalImage) -> Result<OverlayRoot> {
        let dir = self.service_dir(service)?;
        Ok(OverlayRoot {
            lower: image.layers.clone(),
            upper: dir.join("upper"),
            work: dir.join("work"),
        })
    }

    /// The overlay root `service` had on `image`, with its files, if it is still there (a
    /// restart that keeps the container's files).
    pub(crate) fn kept_root(
        &self,
        service: &str,
        image: &LocalImage,
    ) -> Result<Option<OverlayRoot>> {
        let root = self.overlay(service, image)?;
        Ok((root.upper.is_dir() && root.work.is_dir()).then_some(root))
    }

    /// A new overlay root for `service` on `image`, from an empty upper directory.
    pub(crate) fn fresh_root(&self, service: &str, image: &LocalImage) -> Result<OverlayRoot> {
        let root = self.overlay(service, image)?;
        let failed = |what: &str, path: &Path, e: io::Error| RuntimeError::CreateContainer {
            service: service.to_string(),
            message: format!("{what} {}: {e}", path.display()),
        };
        self.remove(service)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.scratch)
            .map_err(|e| failed("creating", &self.scratch, e))?;
        // The scratch directory holds every service's files: root only.
        fs::set_permissions(&self.scratch, fs::Permissions::from_mode(0o700))
            .map_err(|e| failed("restricting", &self.scratch, e))?;
        for d in [&root.upper, &root.work] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(d)
                .map_err(|e| failed("creating", d, e))?;
        }
        Ok(root)
    }

    /// Remove `service`'s writable layer, if any (its task must be gone).
    pub(crate) fn remove(&self, service: &str) -> Result<()> {
        let dir = self.service_dir(service)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::RemoveSnapshot {
                service: service.to_string(),
                message: format!("removing {}: {e}", dir.display()),
            }),
        }
    }
}

fn invalid(reference: &str, file: &Path, reason: String) -> RuntimeError {
    RuntimeError::InvalidImage {
        image: reference.to_string(),
        reason: format!("{}: {reason}", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(store: &Path, file: &str, name: &str, layers: &[&str]) {
        fs::create_dir_all(store.join("images")).unwrap();
        let json = serde_json::json!({
            "name": name,
            "config": {"architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": layers}},
            "layers": layers,
        });
        fs::write(store.join("images").join(file), json.to_string()).unwrap();
        for l in layers {
            fs::create_dir_all(store.join("layers").join(l.trim_start_matches("sha256:"))).unwrap();
        }
    }

    #[test]
    fn found_by_name_or_docker_io_form_with_layers_base_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        record(&store, "a.json", "ros/udev:1", &["sha256:aa", "sha256:bb"]);
        let images = LocalImages::new(&store, tmp.path().join("scratch"));
        let found = images.find("ros/udev:1").unwrap().expect("found");
        assert_eq!(
            found.layers,
            [store.join("layers/aa"), store.join("layers/bb")]
        );
        assert!(images.find("ros/other:1").unwrap().is_none());
        record(
            &store,
            "b.json",
            "docker.io/library/busybox:latest",
            &["sha256:cc"],
        );
        assert!(images.find("busybox").unwrap().is_some());
        assert!(LocalImages::new(tmp.path().join("none"), tmp.path())
            .find("ros/udev:1")
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_missing_layer_or_broken_record_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        record(&store, "a.json", "ros/udev:1", &["sha256:aa"]);
        fs::remove_dir(store.join("layers/aa")).unwrap();
        let images = LocalImages::new(&store, tmp.path().join("scratch"));
        let err = images.find("ros/udev:1").unwrap_err().to_string();
        assert!(err.contains("a.json") && err.contains("missing"), "{err}");
        fs::write(store.join("images/a.json"), "{").unwrap();
        let err = images.find("ros/udev:1").unwrap_err().to_string();
        assert!(err.contains("a.json"), "{err}");
    }

    #[test]
    fn a_fresh_root_is_empty_a_kept_one_keeps_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        record(&store, "a.json", "ros/udev:1", &["sha256:aa", "sha256:bb"]);
        let scratch = tmp.path().join("scratch");
        let images = LocalImages::new(&store, &scratch);
        let image = images.find("ros/udev:1").unwrap().unwrap();
        assert!(images.kept_root("udev", &image).unwrap().is_none());
        let root = images.fresh_root("udev", &image).unwrap();
        assert_eq!(
            root.options()[0],
            format!(
                "lowerdir={}:{}",
                store.join("layers/bb").display(),
                store.join("layers/aa").display()
            )
        );
        fs::write(root.upper.join("kept"), "x").unwrap();
        let again = images.kept_root("udev", &image).unwrap().unwrap();
        assert!(again.upper.join("kept").exists());
        let fresh = images.fresh_root("udev", &image).unwrap();
        assert!(!fresh.upper.join("kept").exists());
        assert_eq!(
            fs::metadata(&scratch).unwrap().permissions().mode() & 0o777,
            0o700
        );
        images.remove("udev").unwrap();
        assert!(!scratch.join("udev").exists());
        assert!(images.fresh_root("../x", &image).is_err());
    }
}
