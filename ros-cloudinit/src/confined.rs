//! Files cloud-init writes as root inside a tree that someone else controls: a service
//! container's root (`write_files` with `container:`) and the console user's home
//! (`ssh_authorized_keys`).
//!
//! Must never resolve a path there through the host's root. Container paths are checked
//! (absolute, no `..`) and then resolved by `openat2(RESOLVE_IN_ROOT)` from a descriptor
//! of the container's root, so an absolute symlink in the image resolves in the image,
//! as it would for the container itself. Home paths are opened one component at a time
//! with `O_NOFOLLOW` from a descriptor of the home, and refused when a symlink or owned by
//! someone other than the user or root. Either way the final write is a temporary file
//! created with `O_EXCL` in the already-open parent directory, given its owner and mode
//! through its descriptor, and renamed over the target within that directory.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{self, FileStat, Mode, SFlag};
use nix::unistd::{self, Gid, Uid};

use crate::owner::Owner;

/// Largest file read back from a confined tree (an account file, `authorized_keys`): a
/// planted huge file must not make PID 1 allocate without bound.
const MAX_READ_BYTES: u64 = 4 << 20;

/// Errors checking a path or writing inside a confined tree.
#[derive(Debug, thiserror::Error)]
pub enum ConfinedError {
    /// The path is relative.
    #[error("path `{path}` is not absolute")]
    NotAbsolute {
        /// The path as written.
        path: String,
    },
    /// The path has a `..` component.
    #[error("path `{path}` has a `..` component (refused: it could leave the container's root)")]
    ParentDir {
        /// The path as written.
        path: String,
    },
    /// The path names a directory (`/`), not a file.
    #[error("path `{path}` names no file")]
    NoFileName {
        /// The path as written.
        path: String,
    },
    /// A system call failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what (as seen from the host).
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An entry that must not be written through.
    #[error("refusing {path}: {reason}")]
    Refused {
        /// The entry (as seen from the host).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(Errno) -> ConfinedError {
    let path = path.to_path_buf();
    move |e| ConfinedError::Io {
        action,
        path,
        source: e.into(),
    }
}

/// The path of a `write_files` entry meant for a container, made relative to the
/// container's root: it must be absolute and must not hold `..` (refused rather than
/// normalised, as the entry is wrong either way); `.` and repeated slashes are dropped.
pub fn container_path(path: &str) -> Result<PathBuf, ConfinedError> {
    if !path.starts_with('/') {
        return Err(ConfinedError::NotAbsolute { path: path.into() });
    }
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::ParentDir => return Err(ConfinedError::ParentDir { path: path.into() }),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(ConfinedError::NoFileName { path: path.into() });
    }
    Ok(rel)
}

/// A container's root directory (`/proc/PID/root`), held open: every path below it is
/// resolved as if it were `/`.
#[derive(Debug)]
pub struct ContainerRoot {
    path: PathBuf,
    fd: OwnedFd,
}

impl ContainerRoot {
    /// Open `path`. It is followed (`/proc/PID/root` is a magic link to the container's
    /// root: following it is the point); nothing below it ever is, outside the container.
    pub fn open(path: &Path) -> Result<ContainerRoot, ConfinedError> {
        let fd = fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("opening", path))?;
        Ok(ContainerRoot {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// The root as the host sees it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn resolve(&self, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        fcntl::openat2(&self.fd, rel, how)
    }

    /// The text of the regular file `rel` (from [`container_path`]), `None` when it does
    /// not exist. Opened with `O_NONBLOCK`, so a FIFO there can't block the caller, and
    /// refused unless a regular file.
    pub fn read_optional(&self, rel: &Path) -> Result<Option<String>, ConfinedError> {
        let path = self.path.join(rel);
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        match self.resolve(rel, flags) {
            Ok(fd) => read_regular(fd, &path).map(Some),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(io_err("opening", &path)(e)),
        }
    }

    /// Replace `rel` (from [`container_path`]) with `bytes`, owned by `owner` with mode
    /// `mode`. Missing parent directories are created 0755, owned by the caller, each in
    /// the directory its parent resolved to inside the container; the file is renamed
    /// into place within that directory.
    pub fn write_file(
        &self,
        rel: &Path,
        bytes: &[u8],
        mode: u32,
        owner: Owner,
    ) -> Result<(), ConfinedError> {
        let path = self.path.join(rel);
        let name = rel.file_name().ok_or_else(|| ConfinedError::NoFileName {
            path: rel.display().to_string(),
        })?;
        let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        let mut dir = self
            .resolve(Path::new("."), dir_flags)
            .map_err(io_err("opening", &self.path))?;
        let mut prefix = PathBuf::new();
        for comp in rel.parent().into_iter().flat_map(Path::components) {
            prefix.push(comp);
            let shown = self.path.join(&prefix);
            dir = match self.resolve(&prefix, dir_flags) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    // `comp` is one plain name made in the directory its parent resolved
                    // to, so it lands inside; resolving the whole prefix again from the
                    // root then follows whatever stands there, inside the root too.
                    match stat::mkdirat(&dir, comp.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io_err("creating", &shown)(e)),
                    }
                    self.resolve(&prefix, dir_flags)
                        .map_err(io_err("opening", &shown))?
                }
                Err(e) => return Err(io_err("opening", &shown)(e)),
            };
        }
        let parent = path.parent().unwrap_or(&self.path);
        replace_in_dir(&dir, parent, name, bytes, mode, owner)
    }
}

/// Read the open `fd` (at `path`) if it is a regular file, up to [`MAX_READ_BYTES`].
fn read_regular(fd: OwnedFd, path: &Path) -> Result<String, ConfinedError> {
    let st = stat::fstat(&fd).map_err(io_err("checking", path))?;
    if !is_regular(&st) {
        return Err(ConfinedError::Refused {
            path: path.to_path_buf(),
            reason: format!("{}, not a regular file", kind_of(&st)),
        });
    }
    let mut text = String::new();
    File::from(fd)
        .take(MAX_READ_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| ConfinedError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > MAX_READ_BYTES {
        return Err(ConfinedError::Refused {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_READ_BYTES} bytes"),
        });
    }
    Ok(text)
}

static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Write `bytes` to a fresh temporary file in the open directory `dir` (at `dir_path`),
/// give it `owner` then `mode` (chown clears set-id bits) through its descriptor, fsync,
/// rename it over `name` within `dir`, fsync `dir`. The temporary file is removed on error.
fn replace_in_dir(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &OsStr,
    bytes: &[u8],
    mode: u32,
    owner: Owner,
) -> Result<(), ConfinedError> {
    let target = dir_path.join(name);
    let mut created = None;
    for _ in 0..64 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        // A leading dot keeps it out of globbing readers; O_EXCL makes it ours even if
        // someone who can write `dir` guessed the name.
        let tmp = format!(".{}.tmp-{}-{n}", name.to_string_lossy(), std::process::id());
        match fcntl::openat(
            dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => {
                created = Some((tmp, File::from(fd)));
                break;
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(io_err("creating a temporary file for", &target)(e)),
        }
    }
    let Some((tmp, mut file)) = created else {
        return Err(ConfinedError::Io {
            action: "creating a temporary file for",
            path: target,
            source: io::ErrorKind::AlreadyExists.into(),
        });
    };
    let written = (|| {
        file.write_all(bytes)?;
        unistd::fchown(
            &file,
            Some(Uid::from_raw(owner.uid)),
            Some(Gid::from_raw(owner.gid)),
        )?;
        stat::fchmod(&file, Mode::from_bits_truncate(mode & 0o7777))?;
        file.sync_all()
    })();
    drop(file);
    let renamed = written
        .map_err(|source| ConfinedError::Io {
            action: "writing",
            path: dir_path.join(&tmp),
            source,
        })
        .and_then(|()| {
            fcntl::renameat(dir, tmp.as_str(), dir, name).map_err(io_err("renaming over", &target))
        });
    if let Err(e) = renamed {
        let _ = unistd::unlinkat(dir, tmp.as_str(), unistd::UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    unistd::fsync(dir).map_err(io_err("syncing", dir_path))
}

fn is_regular(st: &FileStat) -> bool {
    file_kind(st) == SFlag::S_IFREG
}

fn file_kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// What an entry is, for messages.
fn kind_of(st: &FileStat) -> &'static str {
    match file_kind(st) {
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFREG => "a regular file",
        _ => "of an unknown kind",
    }
}

/// A file in a directory of a user's home: `<home>/<dir>/<name>` (`.ssh/authorized_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HomeFile<'a> {
    /// The directory in the home (one component).
    pub dir: &'a str,
    /// Its mode (created so if missing, and set if not).
    pub dir_mode: u32,
    /// The file in it (one component).
    pub name: &'a str,
    /// Its mode.
    pub mode: u32,
}

/// Open `name` in `parent` (at `path`) as a directory without following a symlink, and
/// refuse it unless owned by `owner.uid` or root.
fn open_owned_dir(
    parent: &impl AsFd,
    name: &OsStr,
    path: &Path,
    owner: Owner,
) -> Result<OwnedFd, ConfinedError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = fcntl::openat(parent, name, flags, Mode::empty()).map_err(|e| match e {
        // O_NOFOLLOW|O_DIRECTORY: ELOOP for a symlink, ENOTDIR for anything else.
        Errno::ELOOP | Errno::ENOTDIR => ConfinedError::Refused {
            path: path.to_path_buf(),
            reason: format!("{}, not a directory", describe(parent, name)),
        },
        e => io_err("opening", path)(e),
    })?;
    check_owner(&fd, path, owner)?;
    Ok(fd)
}

/// Refuse `fd` (at `path`) unless owned by `owner.uid` or root.
fn check_owner(fd: &OwnedFd, path: &Path, owner: Owner) -> Result<FileStat, ConfinedError> {
    let st = stat::fstat(fd).map_err(io_err("checking", path))?;
    if st.st_uid != owner.uid && st.st_uid != 0 {
        return Err(ConfinedError::Refused {
            path: path.to_path_buf(),
            reason: format!(
                "owned by uid {}, neither the user ({}) nor root",
                st.st_uid, owner.uid
            ),
        });
    }
    Ok(st)
}

/// What `name` in `dir` is, without following it.
fn describe(dir: &impl AsFd, name: &OsStr) -> &'static str {
    match stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => kind_of(&st),
        Err(_) => "not openable",
    }
}

/// Replace `<home>/<dir>/<name>` with what `update` makes of its current text (`""` when
/// missing), for `owner`. `home` is opened without following its last component (its
/// parents, like `/home`, are the system's) and must be owned by the user or root; `dir`
/// likewise, created with `dir_mode` if missing, then given `owner` and `dir_mode`
/// through its descriptor; the current `name` must be a regular file with one link
/// owned by the user or root (a symlink or hard link to a file elsewhere must not be read
/// into it), and the new one is written atomically in `dir`. Nothing outside `home`
/// changes, whatever the user planted there.
pub fn update_home_file(
    home: &Path,
    file: &HomeFile<'_>,
    owner: Owner,
    update: &dyn Fn(&str) -> String,
) -> Result<(), ConfinedError> {
    let (home_parent, home_name) = match (home.parent(), home.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => {
            return Err(ConfinedError::Refused {
                path: home.to_path_buf(),
                reason: "not a home directory".into(),
            })
        }
    };
    let parent = fcntl::open(
        home_parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("opening", home_parent))?;
    let home_fd = open_owned_dir(&parent, home_name, home, owner)?;

    let dir_path = home.join(file.dir);
    let dir_name = OsStr::new(file.dir);
    let dir_mode = Mode::from_bits_truncate(file.dir_mode & 0o7777);
    match stat::mkdirat(&home_fd, dir_name, dir_mode) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(io_err("creating", &dir_path)(e)),
    }
    let dir = open_owned_dir(&home_fd, dir_name, &dir_path, owner)?;
    unistd::fchown(
        &dir,
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
    )
    .map_err(io_err("changing the owner of", &dir_path))?;
    stat::fchmod(&dir, dir_mode).map_err(io_err("changing the mode of", &dir_path))?;

    let path = dir_path.join(file.name);
    let name = OsStr::new(file.name);
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let existing = match fcntl::openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => {
            let st = check_owner(&fd, &path, owner)?;
            if is_regular(&st) && st.st_nlink != 1 {
                return Err(ConfinedError::Refused {
                    path,
                    reason: format!("a file with {} hard links", st.st_nlink),
                });
            }
            read_regular(fd, &path)?
        }
        Err(Errno::ENOENT) => String::new(),
        // ELOOP: a symlink; ENXIO: a socket (or a device with nothing behind it).
        Err(Errno::ELOOP | Errno::ENXIO) => {
            return Err(ConfinedError::Refused {
                reason: format!("{}, not a regular file", describe(&dir, name)),
                path,
            })
        }
        Err(e) => return Err(io_err("opening", &path)(e)),
    };
    let text = update(&existing);
    replace_in_dir(&dir, &dir_path, name, text.as_bytes(), file.mode, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn me() -> Owner {
        Owner {
            uid: unistd::geteuid().as_raw(),
            gid: unistd::getegid().as_raw(),
        }
    }

    /// openat2 is missing (Linux before 5.6): the only reason to skip.
    fn unsupported(e: &ConfinedError) -> bool {
        matches!(e, ConfinedError::Io { source, .. } if source.raw_os_error() == Some(Errno::ENOSYS as i32))
    }

    #[test]
    fn container_paths_must_be_absolute_and_free_of_dot_dot() {
        assert_eq!(
            container_path("/etc/ntp.conf").unwrap(),
            PathBuf::from("etc/ntp.conf")
        );
        assert_eq!(
            container_path("//etc/./ntp.conf").unwrap(),
            PathBuf::from("etc/ntp.conf")
        );
        for bad in [
            "/../../../var/lib/rancher/conf/cloud-config.yml",
            "/etc/../../x",
            "/etc/..",
        ] {
            let e = container_path(bad).unwrap_err();
            assert!(matches!(e, ConfinedError::ParentDir { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(matches!(
            container_path("etc/x").unwrap_err(),
            ConfinedError::NotAbsolute { .. }
        ));
        assert!(matches!(
            container_path("/").unwrap_err(),
            ConfinedError::NoFileName { .. }
        ));
    }

    #[test]
    fn writes_resolve_absolute_symlinks_inside_the_container_root() {
        let host = tempfile::tempdir().unwrap();
        // What the host would lose if the write escaped.
        let outside = host.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let root_dir = host.path().join("root");
        fs::create_dir(&root_dir).unwrap();
        // `etc -> /`: on the host that is the host's root; inside, the container's.
        symlink("/", root_dir.join("etc")).unwrap();
        // An absolute link to a real host directory: inside, it names a missing one.
        symlink(&outside, root_dir.join("data")).unwrap();
        let root = ContainerRoot::open(&root_dir).unwrap();
        let unique = format!("ros-confined-test-{}", std::process::id());
        let rel = container_path(&format!("/etc/{unique}/conf")).unwrap();
        match root.write_file(&rel, b"inside", 0o640, me()) {
            Err(e) if unsupported(&e) => {
                ros_test_support::skip(
                    "confined write",
                    &format!("openat2 is not available here ({e})"),
                );
                return;
            }
            r => r.unwrap(),
        }
        let landed = root_dir.join(&unique).join("conf");
        assert_eq!(fs::read(&landed).unwrap(), b"inside");
        assert_eq!(fs::metadata(&landed).unwrap().mode() & 0o7777, 0o640);
        assert!(!Path::new("/").join(&unique).exists());
        // Through the link to the host directory: nothing lands there.
        let rel = container_path("/data/conf").unwrap();
        let _ = root.write_file(&rel, b"x", 0o644, me());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        // A final component that is an absolute symlink is replaced, not written through.
        fs::write(outside.join("passwd"), "host\n").unwrap();
        symlink(outside.join("passwd"), root_dir.join("conf")).unwrap();
        root.write_file(Path::new("conf"), b"mine", 0o644, me())
            .unwrap();
        assert_eq!(
            fs::read_to_string(outside.join("passwd")).unwrap(),
            "host\n"
        );
        assert_eq!(fs::read(root_dir.join("conf")).unwrap(), b"mine");
        // Reading resolves inside too: `/etc/passwd` is the container's `/passwd`.
        fs::write(root_dir.join("passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        assert_eq!(
            root.read_optional(Path::new("etc/passwd"))
                .unwrap()
                .unwrap(),
            "root:x:0:0::/:/bin/sh\n"
        );
        assert_eq!(root.read_optional(Path::new("etc/nope")).unwrap(), None);
        nix::unistd::mkfifo(&root_dir.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = root.read_optional(Path::new("fifo")).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
    }

    const KEYS: HomeFile<'static> = HomeFile {
        dir: ".ssh",
        dir_mode: 0o700,
        name: "authorized_keys",
        mode: 0o600,
    };

    #[test]
    fn home_files_are_written_with_modes_through_descriptors() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("rancher");
        fs::create_dir(&home).unwrap();
        update_home_file(&home, &KEYS, me(), &|old| format!("{old}key1\n")).unwrap();
        update_home_file(&home, &KEYS, me(), &|old| format!("{old}key2\n")).unwrap();
        let file = home.join(".ssh/authorized_keys");
        assert_eq!(fs::read_to_string(&file).unwrap(), "key1\nkey2\n");
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(home.join(".ssh")).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(fs::read_dir(home.join(".ssh")).unwrap().count(), 1);
    }

    #[test]
    fn a_symlinked_ssh_dir_or_key_file_is_refused_and_nothing_outside_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("rancher");
        fs::create_dir(&home).unwrap();
        let elsewhere = tmp.path().join("var");
        fs::create_dir(&elsewhere).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o755)).unwrap();
        symlink(&elsewhere, home.join(".ssh")).unwrap();
        let e = update_home_file(&home, &KEYS, me(), &|_| "key\n".into()).unwrap_err();
        assert!(
            e.to_string()
                .contains(&*home.join(".ssh").to_string_lossy()),
            "{e}"
        );
        assert!(e.to_string().contains("a symlink"), "{e}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(fs::metadata(&elsewhere).unwrap().mode() & 0o777, 0o755);

        // authorized_keys -> a secret elsewhere: not read into the user's file.
        fs::remove_file(home.join(".ssh")).unwrap();
        fs::create_dir(home.join(".ssh")).unwrap();
        let secret = elsewhere.join("shadow");
        fs::write(&secret, "root:secret\n").unwrap();
        symlink(&secret, home.join(".ssh/authorized_keys")).unwrap();
        let e = update_home_file(&home, &KEYS, me(), &|old| format!("{old}key\n")).unwrap_err();
        assert!(e.to_string().contains("authorized_keys"), "{e}");
        assert_eq!(fs::read_to_string(&secret).unwrap(), "root:secret\n");
        // A hard link to it likewise.
        fs::remove_file(home.join(".ssh/authorized_keys")).unwrap();
        fs::hard_link(&secret, home.join(".ssh/authorized_keys")).unwrap();
        let e = update_home_file(&home, &KEYS, me(), &|old| format!("{old}key\n")).unwrap_err();
        assert!(e.to_string().contains("hard links"), "{e}");
        assert_eq!(fs::read_to_string(&secret).unwrap(), "root:secret\n");

        // The home itself as a symlink.
        let home2 = tmp.path().join("other");
        symlink(&elsewhere, &home2).unwrap();
        let e = update_home_file(&home2, &KEYS, me(), &|_| "key\n".into()).unwrap_err();
        assert!(e.to_string().contains("a symlink"), "{e}");
        assert!(!elsewhere.join(".ssh").exists());
    }

    #[test]
    fn a_dir_owned_by_a_third_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("rancher");
        fs::create_dir_all(home.join(".ssh")).unwrap();
        let me = me();
        if me.uid == 0 {
            // Root can make a directory someone else's.
            unistd::chown(
                &home.join(".ssh"),
                Some(Uid::from_raw(4242)),
                Some(Gid::from_raw(4242)),
            )
            .unwrap();
            let rancher = Owner {
                uid: 1100,
                gid: 1100,
            };
            let e = update_home_file(&home, &KEYS, rancher, &|_| "k\n".into()).unwrap_err();
            assert!(e.to_string().contains("owned by uid 4242"), "{e}");
            assert_eq!(fs::metadata(home.join(".ssh")).unwrap().uid(), 4242);
        } else {
            // Not root: we own it, and a user who is neither us nor root is refused it.
            let stranger = Owner {
                uid: me.uid + 1,
                gid: me.gid,
            };
            let e = update_home_file(&home, &KEYS, stranger, &|_| "k\n".into()).unwrap_err();
            assert!(e.to_string().contains("owned by uid"), "{e}");
        }
    }
}
