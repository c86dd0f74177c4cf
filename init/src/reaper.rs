//! The one reaper: drains `waitpid(-1, WNOHANG)` on every SIGCHLD and publishes exits.
//!
//! Nothing else in PID 1 waits on children. Code that spawns a child it cares about
//! calls [`Reaper::spawn`], which registers interest under the same lock the reaper
//! takes, so an exit can't be missed even if the child dies at once.

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a watched child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with a status code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

#[derive(Default)]
struct State {
    watched: HashMap<i32, Sender<Exit>>,
}

/// Shared handle to the reaper.
#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<(Mutex<State>, Condvar)>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reaper")
    }
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop reaping.
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawn `cmd` and get its pid and a receiver for its exit.
    ///
    /// The lock is held across `spawn()`, and [`Reaper::reap_all`] holds it across its
    /// `waitpid(-1)`: when std forks and the exec then fails, std waits for that child
    /// itself (and asserts the wait succeeds), so the reaper must not reap it first.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(u32, Receiver<Exit>)> {
        let mut state = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id();
        // Dropping `Child` does not wait; the reaper owns the exit.
        drop(child);
        let (tx, rx) = mpsc::channel();
        state.watched.insert(pid as i32, tx);
        Ok((pid, rx))
    }

    /// Reap every exited child; called on SIGCHLD. Under the lock (see [`Reaper::spawn`]).
    pub fn reap_all(&self) {
        let mut state = self.lock();
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            if let Some(tx) = state.watched.remove(&pid.as_raw()) {
                let _ = tx.send(exit);
            }
        }
        drop(state);
        self.state.1.notify_all();
    }

    /// Block until `done()` is true, re-checking after every reaped child, or until
    /// `deadline`. Returns whether `done()` became true.
    pub fn wait_until(&self, deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
        let mut state = self.lock();
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Bounded wait so a process that exits without being our child (its parent
            // reaps it) is still noticed by `done()`.
            let step = (deadline - now).min(Duration::from_millis(200));
            state = self
                .state
                .1
                .wait_timeout(state, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that drain `waitpid(-1)`, each run in a process of its own: in the shared
    /// test process they would reap, and so lose, the children of every other test.
    #[test]
    // A test process, not PID 1: it waits for the test binary it runs.
    #[allow(clippy::disallowed_methods)]
    fn reaping_tests_in_processes_of_their_own() {
        for name in [
            "reaper::tests::alone_publishes_the_exit_of_a_watched_child",
            "reaper::tests::alone_a_failed_exec_races_no_reaper",
        ] {
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", name, "--test-threads=1"])
                .output()
                .unwrap();
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
                "{name}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // These run as a normal process: the test binary reaps its own children.
    #[test]
    #[ignore = "run by reaping_tests_in_processes_of_their_own"]
    fn alone_publishes_the_exit_of_a_watched_child() {
        let reaper = Reaper::default();
        let (_pid, rx) = reaper
            .spawn(Command::new("/bin/sh").args(["-c", "exit 7"]))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            reaper.reap_all();
            got = rx.recv_timeout(Duration::from_millis(20)).ok();
        }
        assert_eq!(got, Some(Exit::Code(7)));
    }

    #[test]
    #[ignore = "run by reaping_tests_in_processes_of_their_own"]
    fn alone_a_failed_exec_races_no_reaper() {
        // std forks, the exec fails, and std waits for that child itself: with the reaper
        // draining waitpid(-1) on another thread at the same time, the spawn must still
        // return the exec error (not panic in std's wait).
        let reaper = Reaper::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drain = {
            let (reaper, stop) = (reaper.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    reaper.reap_all();
                }
            })
        };
        for _ in 0..200 {
            // PATH in the environment makes std take its fork+exec path.
            let err = reaper
                .spawn(Command::new("ros-no-such-program").env("PATH", "/nonexistent"))
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drain.join().unwrap();
    }
}
