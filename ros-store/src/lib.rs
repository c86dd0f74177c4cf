//! The unpacked image store (`/usr/share/ros/image-store`): `layers/<diff_id hex>/` per
//! layer, and `images/<name>.json` per image, a [`StoreRecord`]. `ros-image store` writes
//! it when the image is built; PID 1 (`ros-runtime`) reads it to run built-in images
//! without importing them. Also the annotations that name an image in an OCI archive,
//! which both read.

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

/// Annotation containerd reads for the image name on `ctr import`.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// Standard OCI annotation for the reference name.
pub const OCI_REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The name annotations, in order of preference.
pub const NAME_ANNOTATIONS: [&str; 2] = [CONTAINERD_NAME_ANNOTATION, OCI_REF_NAME_ANNOTATION];

/// The record of one image in a store.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreRecord {
    /// The image reference.
    pub name: String,
    /// The image's OCI config.
    pub config: ImageConfiguration,
    /// diff_ids of the layers, base first; `layers/<hex>` holds each.
    pub layers: Vec<String>,
}

/// The directory of the records in `store`.
pub fn records_dir(store: &Path) -> PathBuf {
    store.join("images")
}

/// The record file for image `name` in `store` (characters other than letters, digits,
/// `.`, `-` and `_` become `_`).
pub fn record_path(store: &Path, name: &str) -> PathBuf {
    let file: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    records_dir(store).join(format!("{file}.json"))
}

/// The hex digest of a layer's `diff_id` (`sha256:HEX`), when it is one: the name of its
/// directory in the store.
pub fn layer_hex(diff_id: &str) -> Option<&str> {
    let hex = diff_id.trim_start_matches("sha256:");
    (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The directory of layer `diff_id` in `store`.
pub fn layer_path(store: &Path, diff_id: &str) -> PathBuf {
    store
        .join("layers")
        .join(diff_id.trim_start_matches("sha256:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names_in_the_store() {
        let store = Path::new("/s");
        assert_eq!(
            record_path(store, "ros/console:0.1.0"),
            Path::new("/s/images/ros_console_0.1.0.json")
        );
        assert_eq!(
            layer_path(store, "sha256:ab12"),
            Path::new("/s/layers/ab12")
        );
        assert_eq!(layer_hex("sha256:ab12"), Some("ab12"));
        assert_eq!(layer_hex("sha256:"), None);
        assert_eq!(layer_hex("sha256:../x"), None);
    }

    #[test]
    fn a_record_round_trips_as_the_store_holds_it() {
        let json = serde_json::json!({
            "name": "ros/x:1",
            "config": {"architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": ["sha256:ab"]}},
            "layers": ["sha256:ab"],
        });
        let record: StoreRecord = serde_json::from_value(json).unwrap();
        assert_eq!(record.layers, ["sha256:ab"]);
        let again: StoreRecord =
            serde_json::from_value(serde_json::to_value(&record).unwrap()).unwrap();
        assert_eq!(again, record);
    }
}
