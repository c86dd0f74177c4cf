//! Size-capped service logs: `/var/log/ros/<name>.log` is rotated to `<name>.log.1`
//! when it grows past the cap, so a chatty or crash-looping service can't fill RAM.
//!
//! containerd's shim holds the log open in append mode, so rotation copies the file
//! and truncates it in place (logrotate's copytruncate); the shim's next write lands
//! at the new end. A thread woken by inotify (no timer) checks sizes after writes.
//! Both files are opened through [`LogDir`] (relative to the directory's descriptor, no
//! symlink followed, regular root-owned files only) and copied and truncated through
//! those descriptors: a `NAME.log.1 -> /var/lib/rancher/conf/cloud-config.yml` planted in
//! the directory is moved aside, never written through.

use std::path::PathBuf;
use std::thread;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::logfile::LogDir;

/// Default cap per log file: 1 MiB current + 1 MiB in `.1`.
pub const DEFAULT_CAP: u64 = 1024 * 1024;

/// Watch `dir` and rotate any `*.log` in it that passes `cap`. Runs on its own thread.
pub fn spawn_watcher(dir: PathBuf, cap: u64) {
    // Best-effort, like the rest of rotation: without it the logs are only unbounded.
    let logs = match LogDir::open(&dir) {
        Ok(d) => d,
        Err(e) => {
            log::warn!("logs: {e} (logs won't be rotated)");
            return;
        }
    };
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
                let Some(name) = name.to_str().filter(|n| n.ends_with(".log")) else {
                    continue;
                };
                match logs.rotate_if_needed(name, cap) {
                    Ok(true) => log::debug!("logs: rotated {}", logs.path().join(name).display()),
                    Ok(false) => {}
                    Err(e) => log::warn!("logs: rotating: {e}"),
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
    use std::fs;
    use std::io::Write;

    #[test]
    fn rotates_past_the_cap_and_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::open(dir.path()).unwrap();
        let log = dir.path().join("svc.log");
        let mut w = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        w.write_all(&[b'a'; 100]).unwrap();
        assert!(!logs.rotate_if_needed("svc.log", 100).unwrap());
        w.write_all(b"b").unwrap();
        assert!(logs.rotate_if_needed("svc.log", 100).unwrap());
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
        let logs = LogDir::open(dir.path()).unwrap();
        assert!(!logs.rotate_if_needed("none.log", 1).unwrap());
    }

    #[test]
    fn rotation_never_writes_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cloud-config.yml");
        fs::write(&config, "hostname: mine\n").unwrap();
        let logs_path = dir.path().join("ros");
        let logs = LogDir::open(&logs_path).unwrap();
        logs.open_append("svc.log")
            .unwrap()
            .write_all(&[b'a'; 101])
            .unwrap();
        std::os::unix::fs::symlink(&config, logs_path.join("svc.log.1")).unwrap();
        assert!(logs.rotate_if_needed("svc.log", 100).unwrap());
        assert_eq!(fs::read_to_string(&config).unwrap(), "hostname: mine\n");
        assert_eq!(
            fs::metadata(logs_path.join("svc.log.1")).unwrap().len(),
            101
        );
        assert!(!fs::symlink_metadata(logs_path.join("svc.log.1"))
            .unwrap()
            .file_type()
            .is_symlink());
        // A log that is itself a symlink is moved aside, not rotated through.
        fs::remove_file(logs_path.join("svc.log")).unwrap();
        std::os::unix::fs::symlink(&config, logs_path.join("svc.log")).unwrap();
        assert!(!logs.rotate_if_needed("svc.log", 1).unwrap());
        assert_eq!(fs::read_to_string(&config).unwrap(), "hostname: mine\n");
        assert!(!logs_path.join("svc.log").exists());
    }
}
