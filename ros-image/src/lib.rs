//! Builds reproducible OCI image archives (for `ctr import` / `docker load`) from directory layers.
//!
//! This crate runs at build time only: it reads layer directories and writes one archive file. It
//! never talks to containerd, never needs root, and never modifies its inputs.
//!
//! The same [`ImageSpec`] and the same layer contents always give a byte-identical archive: file
//! timestamps and ownership on disk do not enter it, only paths, contents, permission bits and
//! symlink targets do.

mod archive;
mod hashing;
mod inspect;
mod layer;
mod store;

pub use archive::{build_archive, BuildError};
pub use inspect::{inspect_archive, ArchiveReport, InspectError, LayerReport};
pub use layer::LayerError;
pub use store::{add_to_store, layer_path, record_path, StoreError, StoreRecord, Stored};

use std::path::PathBuf;

/// What to build: an image reference, its process defaults, and its layer directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// Image reference exactly as containerd should list it, e.g. `ros/console:0.1.0`. It is
    /// stored unchanged in both `org.opencontainers.image.ref.name` and `io.containerd.image.name`.
    pub name: String,
    /// `config.Entrypoint`; empty means unset.
    pub entrypoint: Vec<String>,
    /// `config.Cmd`; empty means unset.
    pub cmd: Vec<String>,
    /// `config.Env`, each `KEY=VALUE`.
    pub env: Vec<String>,
    /// `config.WorkingDir`; must be absolute when set.
    pub working_dir: Option<String>,
    /// Layer directories, base first; each directory's contents become one layer.
    pub layers: Vec<PathBuf>,
}

/// What was written: the digests a test or the Makefile can compare, and the archive size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// Digest of the image manifest, `sha256:<hex>`; this is the image's identity.
    pub manifest_digest: String,
    /// Digest of the image config blob, `sha256:<hex>`.
    pub config_digest: String,
    /// Digests of the compressed layer blobs, base first.
    pub layer_digests: Vec<String>,
    /// Size of the archive file in bytes.
    pub archive_size: u64,
}
