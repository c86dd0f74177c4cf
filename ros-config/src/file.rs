//! Reading a config file (a layer or a service file) without trusting what is at its
//! path. A primitive: it imports nothing of this crate.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Largest config file read, in bytes; larger files are refused whole.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Open a config file (a layer or a service file) to read, trusting nothing about what is
/// at `path`: PID 1 reads these as root on its main thread. Only a regular file is opened
/// and read; anything else is an error saying what was found instead.
///
/// `lstat` first, so that a device is not even opened (opening one can act: a tty could
/// become PID 1's controlling terminal, a serial line raises DTR). The open then guards
/// against what is swapped in meanwhile: `O_NOFOLLOW` refuses a symbolic link (no shipped
/// config file is one, and a link could point PID 1 at any file or device), `O_NONBLOCK`
/// keeps a FIFO without a writer from blocking the open forever, `O_NOCTTY` keeps a tty
/// from becoming the controlling terminal, and `fstat` checks what was opened.
pub(crate) fn open_config_file(path: &Path) -> io::Result<fs::File> {
    if let Some(what) = not_regular(fs::symlink_metadata(path)?.file_type()) {
        return Err(refused(what));
    }
    open_regular(path)
}

/// The open of [`open_config_file`], safe on its own against whatever is at `path` by now.
pub(crate) fn open_regular(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            // With O_NOFOLLOW, ELOOP means the last component is a symbolic link.
            if e.raw_os_error() == Some(libc::ELOOP) {
                refused(SYMLINK)
            } else {
                e
            }
        })?;
    match not_regular(file.metadata()?.file_type()) {
        Some(what) => Err(refused(what)),
        None => Ok(file),
    }
}

pub(crate) const SYMLINK: &str = "a symbolic link, which is not followed";

fn refused(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({what})"),
    )
}

/// What a file that is not a regular file is, for a person; `None` for a regular file.
fn not_regular(kind: fs::FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_symlink() {
        Some(SYMLINK)
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_dir() {
        Some("a directory")
    } else {
        Some("an unknown kind of file")
    }
}
