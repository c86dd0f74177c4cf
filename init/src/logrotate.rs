//! Size-capped service logs: `/var/log/ros/<name>.log` is rotated to `<name>.log.1`
//! when it grows past the cap, so a chatty or crash-looping service can't fill RAM.
//!
//! containerd's shim holds the log open in append mode, so rotation copies the file
//! and truncates it in place (logrotate's copytruncate); the shim's next write lands
//! at the new end. A thread woken by inotify (no timer) checks sizes after writes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// Default cap per log file: 1 MiB current + 1 MiB in `.1`.
pub const DEFAULT_CAP: u64 = 1024 * 1024;

/// Rotate `log` if it is larger than `cap`. Returns whether it rotated.
pub fn rotate_if_needed(log: &Path, cap: u64) -> io::Result<bool> {
    let len = match fs::metadata(log) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= cap {
        return Ok(false);
    }
    let mut old = log.as_os_str().to_owned();
    old.push(".1");
    let old = PathBuf::from(old);
    fs::copy(log, &old)?;
    fs::OpenOptions::new().write(true).open(log)?.set_len(0)?;
    Ok(true)
}

/// Watch `dir` and rotate any `*.log` in it that passes `cap`. Runs on its own thread.
pub fn spawn_watcher(dir: PathBuf, cap: u64) {
    let _ = fs::create_dir_all(&dir);
    let inotify = match Inotify::init(InitFlags::IN_CLOEXEC) {
        Ok(i) => i,
        Err(e) => {
            log::warn!(
                "logs: cannot watch {}: {e} (logs won't be rotated)",
                dir.display()
            );
            return;
        }
    };
    if let Err(e) = inotify.add_watch(&dir, AddWatchFlags::IN_MODIFY) {
        log::warn!(
            "logs: cannot watch {}: {e} (logs won't be rotated)",
            dir.display()
        );
        return;
    }
    let spawned = thread::Builder::new()
        .name("logrotate".into())
        .spawn(move || loop {
            let Ok(events) = inotify.read_events() else {
                return;
            };
            for ev in events {
                let Some(name) = ev.name else { continue };
                if !name.to_string_lossy().ends_with(".log") {
                    continue;
                }
                let path = dir.join(&name);
                match rotate_if_needed(&path, cap) {
                    Ok(true) => log::debug!("logs: rotated {}", path.display()),
                    Ok(false) => {}
                    Err(e) => log::warn!("logs: rotating {}: {e}", path.display()),
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("logs: starting the rotation thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotates_past_the_cap_and_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        let mut w = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        w.write_all(&[b'a'; 100]).unwrap();
        assert!(!rotate_if_needed(&log, 100).unwrap());
        w.write_all(b"b").unwrap();
        assert!(rotate_if_needed(&log, 100).unwrap());
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(
            fs::metadata(dir.path().join("svc.log.1")).unwrap().len(),
            101
        );
        // The writer (like the shim, in append mode) continues at the new end.
        w.write_all(b"after").unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap(), "after");
    }

    #[test]
    fn a_missing_log_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!rotate_if_needed(&dir.path().join("none.log"), 1).unwrap());
    }
}
