//! The log files PID 1 writes as root (`config.log`, `containerd.log`, the services'
//! `NAME.log` that the shim appends to) and their directory, opened so that an entry
//! planted there by someone else can't redirect the write.
//!
//! The directory is created without following a symlink, must be a real directory owned by
//! us (root, for PID 1) with no group or other write bit (one that has them gets 0755).
//! Every file is opened relative to the directory's descriptor with `O_NOFOLLOW` (and
//! `O_NONBLOCK`, so a planted FIFO can't block PID 1), then checked on the open descriptor:
//! a regular file, owned by us, with one link (a hard link to the user's config is a
//! regular root-owned file too). An entry that fails a check is renamed aside to
//! `NAME.refused-<seconds>` in the same directory (never followed, never deleted: it is
//! evidence) with a warning, and a fresh file takes its place. Truncation and rotation go
//! through the checked descriptor, never through the path.
//!
//! Must not make a directory safe that others can write: the checks here stop PID 1 from
//! being redirected, but a path handed on (to the shim) is only as safe as every directory
//! above it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, FcntlArg, OFlag};
use nix::sys::stat::{self, FileStat, Mode, SFlag};

/// Mode of the log directory: everyone may read the logs (`ros service logs`), only root
/// may add, remove or rename entries.
const DIR_MODE: u32 = 0o755;
/// Mode of a log file created here.
const FILE_MODE: u32 = 0o644;
/// How many times an unsafe entry is moved aside before giving up: each round is someone
/// planting a new one between our rename and our create.
const ATTEMPTS: usize = 3;

/// Errors opening the log directory or a log file in it.
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    /// The directory's parent could not be created or opened.
    #[error("log dir {path}: opening its parent: {source}")]
    OpenParent {
        /// The log directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The directory could not be created, opened or given its mode.
    #[error("log dir {path}: {action}: {source}")]
    Dir {
        /// The log directory.
        path: PathBuf,
        /// What failed.
        action: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
    /// A log file could not be opened, checked, truncated or written.
    #[error("log {path}: {action}: {source}")]
    File {
        /// The log file.
        path: PathBuf,
        /// What failed.
        action: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An unsafe entry could not be moved out of the way.
    #[error("{path}: {reason}, and moving it aside failed: {source}")]
    MoveAside {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// Why the rename failed.
        #[source]
        source: Errno,
    },
    /// Still unsafe after moving entries aside [`ATTEMPTS`] times.
    #[error("{path}: {reason} (still, after moving {ATTEMPTS} entries aside)")]
    StillUnsafe {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A checked log directory, held open: every file operation is relative to this descriptor,
/// so renaming the directory or swapping a symlink in for it later doesn't redirect us.
#[derive(Debug)]
pub struct LogDir {
    path: PathBuf,
    fd: OwnedFd,
    owner: u32,
}

/// How [`LogDir::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Write at the end, created if missing.
    Append,
    /// Write from the start, created if missing (truncate it through the descriptor).
    Write,
    /// Read and write an existing file; missing is `Ok(None)`.
    Existing,
}

impl LogDir {
    /// Create `path` if missing (its parents with `create_dir_all`: they are the system's,
    /// like `/var/log`; the last component is ours and is created without following), move
    /// aside whatever stands there that is not a real directory owned by us, clear group
    /// and other write bits, and keep it open. "Us" is the effective uid: root in PID 1;
    /// a test's own uid in a temp dir.
    pub fn open(path: &Path) -> Result<LogDir, LogFileError> {
        Self::open_as(path, nix::unistd::geteuid().as_raw())
    }

    fn open_as(path: &Path, owner: u32) -> Result<LogDir, LogFileError> {
        let parent_err = |source| LogFileError::OpenParent {
            path: path.to_path_buf(),
            source,
        };
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(p), Some(n)) => (
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                },
                n,
            ),
            _ => {
                return Err(parent_err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a directory name",
                )))
            }
        };
        std::fs::create_dir_all(parent).map_err(parent_err)?;
        let parent_fd = fcntl::open(
            parent,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| parent_err(e.into()))?;
        let dir_err = |action, source| LogFileError::Dir {
            path: path.to_path_buf(),
            action,
            source,
        };
        for _ in 0..ATTEMPTS {
            match stat::mkdirat(&parent_fd, name, Mode::from_bits_truncate(DIR_MODE)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(dir_err("creating", e)),
            }
            let opened = fcntl::openat(
                &parent_fd,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
            let reason = match opened {
                Ok(fd) => {
                    let st = stat::fstat(&fd).map_err(|e| dir_err("checking", e))?;
                    if st.st_uid == owner {
                        if st.st_mode & 0o022 != 0 {
                            stat::fchmod(&fd, Mode::from_bits_truncate(DIR_MODE))
                                .map_err(|e| dir_err("clearing group/other write", e))?;
                        }
                        return Ok(LogDir {
                            path: path.to_path_buf(),
                            fd,
                            owner,
                        });
                    }
                    format!("owned by uid {}, not {owner}", st.st_uid)
                }
                // O_NOFOLLOW|O_DIRECTORY: ELOOP for a symlink, ENOTDIR for anything else.
                Err(Errno::ELOOP | Errno::ENOTDIR) => describe(&parent_fd, name),
                Err(e) => return Err(dir_err("opening", e)),
            };
            move_aside(&parent_fd, parent, name, &reason)?;
        }
        Err(LogFileError::StillUnsafe {
            path: path.to_path_buf(),
            reason: "not a directory we own".into(),
        })
    }

    /// The directory's path (for messages and for handing a file's path on).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` opened for appending (created 0644 if missing), checked as the module says.
    pub fn open_append(&self, name: &str) -> Result<File, LogFileError> {
        self.open_created(name, Access::Append)
    }

    /// Replace the contents of `name` with `bytes` (created if missing, truncated through
    /// the checked descriptor: opening with `O_TRUNC` would truncate a planted hard link
    /// before the check could refuse it).
    pub fn write_truncated(&self, name: &str, bytes: &[u8]) -> Result<(), LogFileError> {
        let mut file = self.open_created(name, Access::Write)?;
        let path = self.path.join(name);
        let err = |action| {
            let path = path.clone();
            move |source| LogFileError::File {
                path,
                action,
                source,
            }
        };
        file.set_len(0).map_err(err("truncating"))?;
        file.write_all(bytes).map_err(err("writing"))
    }

    /// Make sure `name` exists as a safe log file and return its path, for a writer that
    /// opens it by path as root (the shim): that writer is only as safe as this directory
    /// and every one above it, which no one else must be able to write.
    pub fn prepare(&self, name: &str) -> Result<PathBuf, LogFileError> {
        self.open_append(name)?;
        Ok(self.path.join(name))
    }

    /// If `name` is larger than `cap`, copy it over `name.1` and truncate it in place
    /// (copytruncate: the shim keeps appending to its descriptor, at the new end). Both
    /// files are opened and checked here; the copy and the truncation use those
    /// descriptors. A missing `name` is `Ok(false)`.
    pub fn rotate_if_needed(&self, name: &str, cap: u64) -> Result<bool, LogFileError> {
        let Some(mut log) = self.open_file(name, Access::Existing)? else {
            return Ok(false);
        };
        let path = self.path.join(name);
        let err = |path: &Path, action| {
            let path = path.to_path_buf();
            move |source| LogFileError::File {
                path,
                action,
                source,
            }
        };
        let len = log
            .metadata()
            .map_err(err(&path, "checking the size"))?
            .len();
        if len <= cap {
            return Ok(false);
        }
        let old_name = format!("{name}.1");
        let old_path = self.path.join(&old_name);
        let mut old = self.open_created(&old_name, Access::Write)?;
        old.set_len(0).map_err(err(&old_path, "truncating"))?;
        log.seek(SeekFrom::Start(0))
            .map_err(err(&path, "reading"))?;
        io::copy(&mut log, &mut old).map_err(err(&old_path, "copying into"))?;
        log.set_len(0).map_err(err(&path, "truncating"))?;
        Ok(true)
    }

    /// [`Self::open_file`] for the accesses that create: `None` can't happen, but PID 1
    /// reports rather than panics.
    fn open_created(&self, name: &str, access: Access) -> Result<File, LogFileError> {
        self.open_file(name, access)?
            .ok_or_else(|| LogFileError::File {
                path: self.path.join(name),
                action: "creating",
                source: io::ErrorKind::NotFound.into(),
            })
    }

    fn open_file(&self, name: &str, access: Access) -> Result<Option<File>, LogFileError> {
        let path = self.path.join(name);
        let file_err = |action, source: Errno| LogFileError::File {
            path: path.clone(),
            action,
            source: source.into(),
        };
        let mut flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        flags |= match access {
            Access::Append => OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT,
            Access::Write => OFlag::O_WRONLY | OFlag::O_CREAT,
            Access::Existing => OFlag::O_RDWR,
        };
        for _ in 0..ATTEMPTS {
            // Look before opening: opening a device node or a FIFO can have effects of its
            // own; the descriptor is checked again below (the entry may change meanwhile).
            let reason = match stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if !is_regular(&st) => Some(kind_of(&st)),
                Ok(_) => None,
                Err(Errno::ENOENT) if access == Access::Existing => return Ok(None),
                Err(Errno::ENOENT) => None,
                Err(e) => return Err(file_err("checking", e)),
            };
            let reason = match reason {
                Some(r) => r,
                None => {
                    match fcntl::openat(&self.fd, name, flags, Mode::from_bits_truncate(FILE_MODE))
                    {
                        Ok(fd) => match self.unsafe_file(&fd) {
                            Ok(None) => {
                                self.make_usable(&fd)
                                    .map_err(|e| file_err("preparing", e))?;
                                return Ok(Some(File::from(fd)));
                            }
                            Ok(Some(reason)) => reason,
                            Err(e) => return Err(file_err("checking", e)),
                        },
                        Err(Errno::ENOENT) if access == Access::Existing => return Ok(None),
                        // ELOOP: a symlink; ENXIO: a FIFO without a reader (O_NONBLOCK); both
                        // appeared after the look above.
                        Err(Errno::ELOOP | Errno::ENXIO) => describe(&self.fd, OsStr::new(name)),
                        Err(e) => return Err(file_err("opening", e)),
                    }
                }
            };
            move_aside(&self.fd, &self.path, OsStr::new(name), &reason)?;
            if access == Access::Existing {
                return Ok(None);
            }
        }
        Err(LogFileError::StillUnsafe {
            path,
            reason: "not a regular file we own".into(),
        })
    }

    /// Why the open file `fd` must not be written, if it must not.
    fn unsafe_file(&self, fd: &OwnedFd) -> Result<Option<String>, Errno> {
        let st = stat::fstat(fd)?;
        Ok(if !is_regular(&st) {
            Some(kind_of(&st))
        } else if st.st_uid != self.owner {
            Some(format!("owned by uid {}, not {}", st.st_uid, self.owner))
        } else if st.st_nlink != 1 {
            Some(format!("a file with {} hard links", st.st_nlink))
        } else {
            None
        })
    }

    /// Blocking writes (O_NONBLOCK was for the open only) and no group/other write bit.
    fn make_usable(&self, fd: &OwnedFd) -> Result<(), Errno> {
        let flags = OFlag::from_bits_truncate(fcntl::fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl::fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
        let st = stat::fstat(fd)?;
        if st.st_mode & 0o7022 != 0 {
            stat::fchmod(fd, Mode::from_bits_truncate(FILE_MODE))?;
        }
        Ok(())
    }
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
}

/// What a non-regular entry is, for the warning.
fn kind_of(st: &FileStat) -> String {
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let what = match kind {
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFREG => "a regular file",
        _ => "of an unknown kind",
    };
    what.to_string()
}

/// What `name` in `dir` is, without following it (for an open that failed).
fn describe(dir: &OwnedFd, name: &OsStr) -> String {
    match stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => kind_of(&st),
        Err(e) => format!("not openable safely ({e})"),
    }
}

/// Rename `name` in `dir` (at `dir_path`) to a free `NAME.refused-<seconds>[-N]` there and
/// warn. `renameat` acts on the entry itself, never on what a symlink points to; an entry
/// that vanished meanwhile needs no moving.
fn move_aside(
    dir: &impl AsFd,
    dir_path: &Path,
    name: &OsStr,
    reason: &str,
) -> Result<(), LogFileError> {
    let path = dir_path.join(name);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut result = Err(Errno::EEXIST);
    for n in 0..100 {
        let mut aside = name.as_bytes().to_vec();
        aside.extend_from_slice(format!(".refused-{secs}").as_bytes());
        if n > 0 {
            aside.extend_from_slice(format!("-{n}").as_bytes());
        }
        let aside = OsStr::from_bytes(&aside);
        // The target must not exist: renaming over an earlier refused entry would destroy
        // it (a race here costs only that evidence, never a redirected write).
        match stat::fstatat(dir, aside, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => {}
            _ => continue,
        }
        result = fcntl::renameat(dir, name, dir, aside).map(|()| aside.to_owned());
        break;
    }
    match result {
        Ok(aside) => {
            log::warn!(
                "logs: {} is {reason}, not a log file of ours: moved it aside to {}",
                path.display(),
                dir_path.join(aside).display()
            );
            Ok(())
        }
        Err(Errno::ENOENT) => Ok(()),
        Err(source) => Err(LogFileError::MoveAside {
            path,
            reason: reason.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn refused(dir: &Path, name: &str) -> Vec<PathBuf> {
        let prefix = format!("{name}.refused-");
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .collect()
    }

    #[test]
    fn creates_the_dir_without_group_or_other_write_and_appends() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("var/log/ros");
        let dir = LogDir::open(&path).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().is_dir());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        let dir2 = LogDir::open(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o755);
        dir.open_append("a.log")
            .unwrap()
            .write_all(b"one\n")
            .unwrap();
        dir2.open_append("a.log")
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        assert_eq!(
            fs::read_to_string(path.join("a.log")).unwrap(),
            "one\ntwo\n"
        );
        dir.write_truncated("a.log", b"new\n").unwrap();
        assert_eq!(fs::read_to_string(path.join("a.log")).unwrap(), "new\n");
    }

    #[test]
    fn a_planted_symlink_is_moved_aside_and_its_target_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("cloud-config.yml");
        fs::write(&target, "hostname: mine\n").unwrap();
        let logs = tmp.path().join("ros");
        let dir = LogDir::open(&logs).unwrap();
        symlink(&target, logs.join("config.log")).unwrap();
        dir.write_truncated("config.log", b"diagnostics\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "hostname: mine\n");
        let config_log = fs::symlink_metadata(logs.join("config.log")).unwrap();
        assert!(config_log.is_file());
        assert_eq!(
            fs::read_to_string(logs.join("config.log")).unwrap(),
            "diagnostics\n"
        );
        let aside = refused(&logs, "config.log");
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(fs::symlink_metadata(&aside[0])
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_hard_link_a_fifo_and_a_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("cloud-config.yml");
        fs::write(&target, "hostname: mine\n").unwrap();
        let logs = tmp.path().join("ros");
        let dir = LogDir::open(&logs).unwrap();
        fs::hard_link(&target, logs.join("linked.log")).unwrap();
        nix::unistd::mkfifo(&logs.join("fifo.log"), Mode::from_bits_truncate(0o644)).unwrap();
        fs::create_dir(logs.join("dir.log")).unwrap();
        for name in ["linked.log", "fifo.log", "dir.log"] {
            // A FIFO would block a plain open; O_NONBLOCK and the look first keep it from.
            dir.write_truncated(name, b"x\n").unwrap();
            assert_eq!(
                fs::read_to_string(logs.join(name)).unwrap(),
                "x\n",
                "{name}"
            );
            assert_eq!(refused(&logs, name).len(), 1, "{name}");
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "hostname: mine\n");
    }

    #[test]
    fn a_file_or_dir_owned_by_someone_else_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("ros");
        let me = nix::unistd::geteuid().as_raw();
        // Pretend we are someone else: what we created is then "someone else's".
        LogDir::open_as(&logs, me).unwrap();
        fs::write(logs.join("svc.log"), "theirs\n").unwrap();
        let dir = LogDir::open_as(&logs, me).unwrap();
        let as_other = LogDir {
            path: dir.path.clone(),
            fd: dir.fd.try_clone().unwrap(),
            owner: me.wrapping_add(1),
        };
        // An existing file someone else owns is moved aside and a fresh one made; the
        // fresh one is ours (`me`), which the stranger still refuses: so it gives up.
        let err = as_other.open_append("svc.log").unwrap_err();
        assert!(matches!(err, LogFileError::StillUnsafe { .. }), "{err}");
        assert_eq!(refused(&logs, "svc.log").len(), ATTEMPTS);
        // The same for the directory.
        let err = LogDir::open_as(&logs, me.wrapping_add(1)).unwrap_err();
        assert!(matches!(err, LogFileError::StillUnsafe { .. }), "{err}");
        assert_eq!(refused(tmp.path(), "ros").len(), ATTEMPTS);
    }

    #[test]
    fn a_symlinked_dir_is_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("conf");
        fs::create_dir(&elsewhere).unwrap();
        let logs = tmp.path().join("ros");
        symlink(&elsewhere, &logs).unwrap();
        let dir = LogDir::open(&logs).unwrap();
        dir.write_truncated("config.log", b"x").unwrap();
        assert!(fs::symlink_metadata(&logs).unwrap().is_dir());
        assert!(logs.join("config.log").is_file());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(refused(tmp.path(), "ros").len(), 1);
    }

    #[test]
    fn prepare_names_the_checked_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::open(tmp.path()).unwrap();
        let p = dir.prepare("ntp.log").unwrap();
        assert_eq!(p, tmp.path().join("ntp.log"));
        assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    }
}
