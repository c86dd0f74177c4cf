//! `ros service logs [-f] [--lines N] NAME`: read `/var/log/ros/NAME.log` directly (and the
//! rotated `NAME.log.1` before it when more lines are asked for than the current file has).
//! `-f` follows with inotify on the log directory: PID 1 rotates by copy-and-truncate, so a
//! shrinking file is read again from its start, and a re-created one is reopened.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use ros_config::paths;

use super::ServiceCmdError;

pub use ros_config::paths::LOG_DIR;

/// Most bytes read from the end of one log file. PID 1 caps logs at 1 MiB; this bound
/// only matters if rotation is not working.
const MAX_READ_BYTES: u64 = 16 << 20;

/// The start of the last `n` lines of `text` (a final line without `\n` counts).
pub fn last_lines_start(text: &[u8], n: usize) -> usize {
    if n == 0 {
        return text.len();
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Lines in `text` (a final line without `\n` counts).
fn line_count(text: &[u8]) -> usize {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    if text.is_empty() {
        0
    } else {
        body.iter().filter(|b| **b == b'\n').count() + 1
    }
}

/// What to print: the last `lines` lines of `rotated` followed by `current` (all of both
/// when `lines` is `None`). `rotated` is only used when `current` has too few lines.
pub fn tail(current: &[u8], rotated: Option<&[u8]>, lines: Option<usize>) -> Vec<u8> {
    let Some(n) = lines else {
        let mut out = rotated.unwrap_or_default().to_vec();
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(current);
        return out;
    };
    let have = line_count(current);
    if have >= n {
        return current[last_lines_start(current, n)..].to_vec();
    }
    let mut out = Vec::new();
    if let Some(old) = rotated {
        out.extend_from_slice(&old[last_lines_start(old, n - have)..]);
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out.extend_from_slice(current);
    out
}

/// Read up to [`MAX_READ_BYTES`] from the end of `file`; returns the bytes and the offset
/// just after them.
fn read_end(file: &mut File) -> io::Result<(Vec<u8>, u64)> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(MAX_READ_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ_BYTES).read_to_end(&mut bytes)?;
    let end = start + bytes.len() as u64;
    Ok((bytes, end))
}

fn open(path: &Path) -> Result<Option<File>, ServiceCmdError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ServiceCmdError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn out(bytes: &[u8]) -> Result<bool, ServiceCmdError> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        // The reader is gone (`| head`): stop quietly.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ServiceCmdError::Stdout(e)),
    }
}

/// Run `ros service logs`.
pub fn run(
    root: &Path,
    service: &str,
    lines: Option<usize>,
    follow: bool,
) -> Result<(), ServiceCmdError> {
    if ros_config::service::check_service_name(service).is_err() {
        return Err(ServiceCmdError::NotFound {
            name: service.to_string(),
            why: "not a service name".into(),
        });
    }
    let dir = paths::under(root, LOG_DIR);
    let name = format!("{service}.log");
    let path = dir.join(&name);
    let rotated_path = dir.join(format!("{name}.1"));

    // Watch before reading, so nothing appended in between is missed.
    let watch = if follow {
        let inotify =
            Inotify::init(InitFlags::IN_CLOEXEC).map_err(|source| ServiceCmdError::Follow {
                path: dir.clone(),
                source,
            })?;
        let mask = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE;
        inotify
            .add_watch(&dir, mask)
            .map_err(|source| ServiceCmdError::Follow {
                path: dir.clone(),
                source,
            })?;
        Some(inotify)
    } else {
        None
    };

    let mut file = open(&path)?;
    let (current, mut pos) = match file.as_mut() {
        Some(f) => read_end(f).map_err(|source| ServiceCmdError::Read {
            path: path.clone(),
            source,
        })?,
        None => (Vec::new(), 0),
    };
    let needs_rotated = !matches!(lines, Some(n) if line_count(&current) >= n);
    let rotated = match (needs_rotated, open(&rotated_path)?) {
        (true, Some(mut f)) => Some(
            read_end(&mut f)
                .map_err(|source| ServiceCmdError::Read {
                    path: rotated_path.clone(),
                    source,
                })?
                .0,
        ),
        _ => None,
    };
    if file.is_none() && !rotated_path.exists() {
        return Err(ServiceCmdError::NoLog {
            service: service.to_string(),
            path,
        });
    }
    if !out(&tail(&current, rotated.as_deref(), lines))? {
        return Ok(());
    }
    let Some(inotify) = watch else {
        return Ok(());
    };
    loop {
        if let Some(f) = file.as_mut() {
            let copied = copy_new(f, &mut pos).map_err(|source| ServiceCmdError::Read {
                path: path.clone(),
                source,
            })?;
            if !out(&copied)? {
                return Ok(());
            }
        }
        let events = inotify
            .read_events()
            .map_err(|source| ServiceCmdError::Follow {
                path: dir.clone(),
                source,
            })?;
        for ev in events {
            if ev.name.as_deref() != Some(name.as_ref()) {
                continue;
            }
            if ev
                .mask
                .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                || file.is_none()
            {
                file = open(&path)?;
                pos = 0;
            }
        }
    }
}

/// What was appended to `file` since `pos`; a file shorter than `pos` was truncated by
/// rotation and is read from its start.
fn copy_new(file: &mut File, pos: &mut u64) -> io::Result<Vec<u8>> {
    let len = file.metadata()?.len();
    if len < *pos {
        *pos = 0;
    }
    file.seek(SeekFrom::Start(*pos))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ_BYTES).read_to_end(&mut bytes)?;
    *pos += bytes.len() as u64;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_table() {
        let cases: [(&str, usize, &str); 8] = [
            ("a\nb\nc\n", 2, "b\nc\n"),
            ("a\nb\nc", 2, "b\nc"),
            ("a\nb\nc\n", 5, "a\nb\nc\n"),
            ("a\nb\nc\n", 0, ""),
            ("", 3, ""),
            ("\n\n", 1, "\n"),
            ("only", 1, "only"),
            ("a\n\nb\n", 2, "\nb\n"),
        ];
        for (text, n, want) in cases {
            let start = last_lines_start(text.as_bytes(), n);
            assert_eq!(&text[start..], want, "{text:?} {n}");
        }
    }

    #[test]
    fn tail_uses_the_rotated_file_only_when_needed() {
        let cur = b"c\nd\n".as_slice();
        let old = b"a\nb\n".as_slice();
        type Case<'a> = (Option<usize>, Option<&'a [u8]>, &'a str);
        let cases: [Case; 6] = [
            (Some(1), Some(old), "d\n"),
            (Some(2), Some(old), "c\nd\n"),
            (Some(3), Some(old), "b\nc\nd\n"),
            (Some(9), Some(old), "a\nb\nc\nd\n"),
            (Some(3), None, "c\nd\n"),
            (None, Some(b"a\nb"), "a\nb\nc\nd\n"),
        ];
        for (lines, rotated, want) in cases {
            assert_eq!(
                String::from_utf8(tail(cur, rotated, lines)).unwrap(),
                want,
                "{lines:?}"
            );
        }
    }

    #[test]
    fn copy_new_follows_appends_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "one\n").unwrap();
        let mut f = File::open(&path).unwrap();
        let mut pos = 0;
        assert_eq!(copy_new(&mut f, &mut pos).unwrap(), b"one\n");
        assert_eq!(copy_new(&mut f, &mut pos).unwrap(), b"");
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(b"two\n").unwrap();
        assert_eq!(copy_new(&mut f, &mut pos).unwrap(), b"two\n");
        // copytruncate: the file shrinks, then new output lands at its start.
        std::fs::write(&path, "x\n").unwrap();
        assert_eq!(copy_new(&mut f, &mut pos).unwrap(), b"x\n");
    }
}
