//! Atomic file replacement for config files: readers see the old file or the new one, never
//! a torn one, even across a power cut. std only (no libc): this crate stays pure.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Mode for new files that may hold secrets (passwords, keys): the cloud-config itself.
pub const SECRET_MODE: u32 = 0o600;

/// Errors from [`write_atomic`], each naming the file it was about.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// The path has no file name (`/`, `..`).
    #[error("writing {path}: not a file path")]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The temporary file could not be created.
    #[error("creating temporary file {path}: {source}")]
    CreateTemp {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing, setting the mode of, or syncing the temporary file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Renaming the temporary file over the target failed.
    #[error("renaming {from} to {to}: {source}")]
    Rename {
        /// The temporary file.
        from: PathBuf,
        /// The target.
        to: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Syncing the directory (to make the rename durable) failed.
    #[error("syncing directory {path}: {source}")]
    SyncDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Replace `path` with `bytes`: write a temporary file in the same directory, fsync it,
/// rename it over `path`, fsync the directory. An existing file keeps its mode (and, when
/// permitted, its owner); a new file gets `new_file_mode` ([`SECRET_MODE`] for files that
/// hold secrets). On error the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], new_file_mode: u32) -> Result<(), AtomicWriteError> {
    let Some(name) = path.file_name() else {
        return Err(AtomicWriteError::NotAFile {
            path: path.to_path_buf(),
        });
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let existing = fs::metadata(path).ok();
    let mode = existing
        .as_ref()
        .map_or(new_file_mode, |m| m.permissions().mode())
        & 0o7777;

    let (tmp, mut file) = create_temp(&dir, &name.to_string_lossy())?;
    let result = (|| {
        file.write_all(bytes)?;
        // Set after creation so the umask cannot widen or narrow it.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(m) = &existing {
            // Keeping the owner needs privilege; without it the file is ours, which is fine.
            let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
        }
        file.sync_all()
    })();
    drop(file);
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(AtomicWriteError::Write { path: tmp, source });
    }
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(AtomicWriteError::Rename {
            from: tmp,
            to: path.to_path_buf(),
            source,
        });
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AtomicWriteError::SyncDir { path: dir, source })
}

fn create_temp(dir: &Path, name: &str) -> Result<(PathBuf, File), AtomicWriteError> {
    let mut last_err = None;
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // A leading dot keeps it out of `cloud-config.d/*.yml`.
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some((tmp, e)),
            Err(source) => return Err(AtomicWriteError::CreateTemp { path: tmp, source }),
        }
    }
    let (path, source) = last_err.unwrap_or_else(|| {
        (
            dir.to_path_buf(),
            std::io::Error::other("no free temporary name"),
        )
    });
    Err(AtomicWriteError::CreateTemp { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_file_gets_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cloud-config.yml");
        write_atomic(&p, b"hostname: a\n", SECRET_MODE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hostname: a\n");
        assert_eq!(mode_of(&p), 0o600);
    }

    #[test]
    fn existing_file_keeps_its_mode_and_no_temp_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.yml");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"new", SECRET_MODE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode_of(&p), 0o640);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.yml")]);
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/x.yml");
        let err = write_atomic(&p, b"x", 0o644).unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
        assert!(write_atomic(Path::new("/"), b"x", 0o644).is_err());
    }
}
