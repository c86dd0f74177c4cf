//! Packs one directory tree into a deterministic, uncompressed layer tar stream; it only reads the tree.
//!
//! Determinism rules: entries sorted by path bytes, mtime 0, uid/gid 0 with empty user and group
//! names, permission bits (including setuid/setgid/sticky) kept from disk, GNU headers and no pax
//! records. Hard links become independent copies; device nodes, sockets and fifos are skipped.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// Why a layer directory could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The layer path does not exist or is not a directory.
    #[error("layer {layer}: not a directory")]
    NotADirectory {
        /// The layer directory as given.
        layer: PathBuf,
    },
    /// Listing or stat-ing something inside the layer failed.
    #[error("layer {layer}: reading {path}")]
    ReadTree {
        /// The layer directory as given.
        layer: PathBuf,
        /// The file or directory that could not be read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing one entry into the layer tar failed (including the file changing under us).
    #[error("layer {layer}: archiving {path}")]
    AppendEntry {
        /// The layer directory as given.
        layer: PathBuf,
        /// The file being archived.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing the tar trailer failed.
    #[error("layer {layer}: finishing the tar stream")]
    Finish {
        /// The layer directory as given.
        layer: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// One filesystem object found under the layer root.
struct TreeEntry {
    /// Path relative to the layer root; this is the name inside the tar.
    rel: PathBuf,
    /// Path on disk.
    abs: PathBuf,
    /// `lstat` result: symlinks are not followed.
    meta: Metadata,
}

/// Writes the layer tar for `layer` into `out` and returns `out` once the trailer is written.
pub(crate) fn write_layer_tar<W: Write>(layer: &Path, out: W) -> Result<W, LayerError> {
    let is_dir = fs::metadata(layer).map(|m| m.is_dir()).unwrap_or(false);
    if !is_dir {
        return Err(LayerError::NotADirectory {
            layer: layer.to_path_buf(),
        });
    }
    let entries = collect_tree(layer)?;
    let mut builder = tar::Builder::new(out);
    for entry in &entries {
        append_entry(&mut builder, entry).map_err(|source| LayerError::AppendEntry {
            layer: layer.to_path_buf(),
            path: entry.abs.clone(),
            source,
        })?;
    }
    builder.into_inner().map_err(|source| LayerError::Finish {
        layer: layer.to_path_buf(),
        source,
    })
}

/// Lists everything under `layer` (not the root itself), sorted by the bytes of the relative path.
///
/// A full-path byte sort keeps every directory ahead of its contents (a prefix sorts first) and
/// does not depend on `read_dir` order, which differs between filesystems.
fn collect_tree(layer: &Path) -> Result<Vec<TreeEntry>, LayerError> {
    let read_err = |path: &Path, source: io::Error| LayerError::ReadTree {
        layer: layer.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel_dir) = pending.pop() {
        let abs_dir = layer.join(&rel_dir);
        let listing = fs::read_dir(&abs_dir).map_err(|e| read_err(&abs_dir, e))?;
        for item in listing {
            let item = item.map_err(|e| read_err(&abs_dir, e))?;
            let abs = item.path();
            let meta = fs::symlink_metadata(&abs).map_err(|e| read_err(&abs, e))?;
            let rel = rel_dir.join(item.file_name());
            if meta.is_dir() {
                pending.push(rel.clone());
            }
            entries.push(TreeEntry { rel, abs, meta });
        }
    }
    entries.sort_by(|a, b| {
        a.rel
            .as_os_str()
            .as_bytes()
            .cmp(b.rel.as_os_str().as_bytes())
    });
    Ok(entries)
}

/// A header with every field that could vary between machines or builds pinned.
fn base_header(meta: &Metadata, entry_type: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(meta.permissions().mode() & 0o7777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(0);
    header
}

fn append_entry<W: Write>(builder: &mut tar::Builder<W>, entry: &TreeEntry) -> io::Result<()> {
    let file_type = entry.meta.file_type();
    if file_type.is_dir() {
        let mut header = base_header(&entry.meta, EntryType::Directory);
        // Joining "" adds the trailing slash that tar tools conventionally give directories.
        builder.append_data(&mut header, entry.rel.join(""), io::empty())
    } else if file_type.is_symlink() {
        let target = fs::read_link(&entry.abs)?;
        let mut header = base_header(&entry.meta, EntryType::Symlink);
        builder.append_link(&mut header, &entry.rel, target)
    } else if file_type.is_file() {
        let len = entry.meta.len();
        let mut header = base_header(&entry.meta, EntryType::Regular);
        header.set_size(len);
        let mut reader = ExactReader {
            inner: File::open(&entry.abs)?,
            remaining: len,
        };
        builder.append_data(&mut header, &entry.rel, &mut reader)?;
        // The header already promised `len` bytes; a file that grew would be silently cut.
        let mut probe = [0u8; 1];
        if reader.inner.read(&mut probe)? != 0 {
            return Err(io::Error::other(
                "file grew while being archived; rebuild once it is stable",
            ));
        }
        Ok(())
    } else {
        log::warn!(
            "{}: skipped (device nodes, sockets and fifos are not put in image layers)",
            entry.abs.display()
        );
        Ok(())
    }
}

/// Yields exactly `remaining` bytes, failing rather than padding if the file shrank after `lstat`.
struct ExactReader {
    inner: File,
    remaining: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let cap = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = self.inner.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived; rebuild once it is stable",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entries_of(tar_bytes: &[u8]) -> Vec<(String, EntryType, u32, Option<String>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for entry in archive.entries().expect("tar entries") {
            let entry = entry.expect("tar entry");
            let header = entry.header();
            let path = entry.path().expect("entry path").display().to_string();
            let link = entry
                .link_name()
                .expect("link name")
                .map(|l| l.display().to_string());
            out.push((
                path,
                header.entry_type(),
                header.mode().expect("mode"),
                link,
            ));
        }
        out
    }

    #[test]
    fn entries_are_sorted_with_modes_and_symlinks_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        fs::write(root.join("a.txt"), "x").expect("write");
        fs::write(root.join("a/b/run"), "#!/bin/sh\n").expect("write");
        fs::set_permissions(root.join("a/b/run"), fs::Permissions::from_mode(0o4755))
            .expect("chmod");
        symlink("/bin/busybox", root.join("sh")).expect("symlink");

        let bytes = write_layer_tar(root, Vec::new()).expect("layer tar");
        let entries = entries_of(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        // Directories carry a trailing slash but sort by their bare name, so parents come first.
        assert_eq!(names, ["a/", "a.txt", "a/b/", "a/b/run", "sh"]);
        assert_eq!(entries[0].1, EntryType::Directory);
        assert_eq!(entries[3].2, 0o4755);
        assert_eq!(entries[4].1, EntryType::Symlink);
        assert_eq!(entries[4].3.as_deref(), Some("/bin/busybox"));
    }

    #[test]
    fn long_paths_survive_the_gnu_long_name_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = "d".repeat(90) + "/" + &"f".repeat(90);
        fs::create_dir(dir.path().join("d".repeat(90))).expect("mkdir");
        fs::write(dir.path().join(&deep), "x").expect("write");
        let bytes = write_layer_tar(dir.path(), Vec::new()).expect("layer tar");
        let names: Vec<String> = entries_of(&bytes).into_iter().map(|e| e.0).collect();
        assert_eq!(names.last(), Some(&deep));
    }

    #[test]
    fn a_missing_layer_directory_is_named_in_the_error() {
        let err = write_layer_tar(Path::new("/nonexistent/ros-layer"), Vec::new())
            .expect_err("missing dir must fail");
        assert!(err.to_string().contains("/nonexistent/ros-layer"), "{err}");
    }

    #[test]
    fn fifos_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success());
        fs::write(dir.path().join("kept"), "x").expect("write");
        let bytes = write_layer_tar(dir.path(), Vec::new()).expect("layer tar");
        let names: Vec<String> = entries_of(&bytes).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["kept"]);
    }
}
