//! A recording [`ServiceRuntime`] for init's tests: no containerd, no root.
//!
//! It remembers every call, keeps a table of running services with made-up pids, and lets
//! the test make a service exit. It must stay free of real side effects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ros_config::ServiceSpec;
use tokio::sync::mpsc;

use crate::{
    ExitEvent, ExitEvents, ImportOutcome, Result, RuntimeError, ServiceRuntime, ServiceState,
    ServiceStatus, Stdio,
};

/// One call made to the fake, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    /// `import_archive(path)`.
    Import(PathBuf),
    /// `run(service, spec, stdio)`.
    Run {
        service: String,
        image: String,
        stdio: Stdio,
    },
    /// `stop(service, timeout)`.
    Stop(String),
    /// `list()`.
    List,
    /// `exits()`.
    Exits,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<FakeCall>,
    services: BTreeMap<String, ServiceState>,
    subscribers: Vec<mpsc::Sender<ExitEvent>>,
    next_pid: u32,
    failing_runs: BTreeMap<String, String>,
}

/// A [`ServiceRuntime`] that records calls and simulates services.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    /// A fake with no services.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.state().calls.clone()
    }

    /// Make the next `run` of `service` fail with a task-creation error carrying `message`.
    pub fn fail_next_run(&self, service: &str, message: &str) {
        self.state()
            .failing_runs
            .insert(service.to_string(), message.to_string());
    }

    /// Make `service` exit with `status`, as containerd would: its state becomes Stopped and
    /// every subscriber gets an [`ExitEvent`]. Returns false if it was not running.
    pub fn exit(&self, service: &str, status: u32) -> bool {
        let mut state = self.state();
        let Some(entry) = state.services.get_mut(service) else {
            return false;
        };
        if entry.status != ServiceStatus::Running {
            return false;
        }
        let now = SystemTime::now();
        entry.status = ServiceStatus::Stopped;
        entry.exit_status = Some(status);
        entry.exited_at = Some(now);
        let event = ExitEvent {
            service: service.to_string(),
            pid: entry.pid.unwrap_or_default(),
            exit_status: status,
            exited_at: Some(now),
        };
        state
            .subscribers
            .retain(|tx| tx.try_send(event.clone()).is_ok() || !tx.is_closed());
        true
    }
}

impl ServiceRuntime for FakeRuntime {
    async fn import_archive(&self, archive: &Path) -> Result<ImportOutcome> {
        self.state()
            .calls
            .push(FakeCall::Import(archive.to_path_buf()));
        let name = archive
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(ImportOutcome {
            name,
            manifest_digest: String::new(),
            skipped: false,
        })
    }

    async fn run(&self, service: &str, spec: &ServiceSpec, stdio: &Stdio) -> Result<u32> {
        let mut state = self.state();
        state.calls.push(FakeCall::Run {
            service: service.to_string(),
            image: spec.image.clone(),
            stdio: stdio.clone(),
        });
        if let Some(message) = state.failing_runs.remove(service) {
            return Err(RuntimeError::CreateTask {
                service: service.to_string(),
                message,
            });
        }
        if let Some(existing) = state.services.get(service) {
            if existing.status == ServiceStatus::Running {
                return Err(RuntimeError::AlreadyRunning {
                    service: service.to_string(),
                    pid: existing.pid.unwrap_or_default(),
                });
            }
        }
        state.next_pid += 1;
        let pid = 1000 + state.next_pid;
        state.services.insert(
            service.to_string(),
            ServiceState {
                name: service.to_string(),
                image: spec.image.clone(),
                pid: Some(pid),
                status: ServiceStatus::Running,
                exit_status: None,
                exited_at: None,
            },
        );
        Ok(pid)
    }

    async fn stop(&self, service: &str, _timeout: Duration) -> Result<()> {
        let running = {
            let mut state = self.state();
            state.calls.push(FakeCall::Stop(service.to_string()));
            state
                .services
                .get(service)
                .is_some_and(|s| s.status == ServiceStatus::Running)
        };
        if running {
            self.exit(service, 128 + 15);
        }
        self.state().services.remove(service);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ServiceState>> {
        let mut state = self.state();
        state.calls.push(FakeCall::List);
        Ok(state.services.values().cloned().collect())
    }

    async fn exits(&self) -> Result<ExitEvents> {
        let mut state = self.state();
        state.calls.push(FakeCall::Exits);
        let (tx, rx) = mpsc::channel(256);
        state.subscribers.push(tx);
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            image: "ros/test:1".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn run_exit_stop_are_recorded_and_reported() {
        let fake = FakeRuntime::new();
        let mut exits = fake.exits().await.unwrap();
        let pid = fake.run("ntp", &spec(), &Stdio::Null).await.unwrap();
        let again = fake.run("ntp", &spec(), &Stdio::Null).await.unwrap_err();
        assert!(matches!(again, RuntimeError::AlreadyRunning { pid: p, .. } if p == pid));

        assert!(fake.exit("ntp", 3));
        let event = exits.recv().await.unwrap();
        assert_eq!(
            (event.service.as_str(), event.pid, event.exit_status),
            ("ntp", pid, 3)
        );
        let listed = fake.list().await.unwrap();
        assert_eq!(listed[0].status, ServiceStatus::Stopped);
        assert_eq!(listed[0].exit_status, Some(3));

        fake.stop("ntp", Duration::from_secs(1)).await.unwrap();
        assert!(fake.list().await.unwrap().is_empty());
        assert_eq!(
            fake.calls(),
            vec![
                FakeCall::Exits,
                FakeCall::Run {
                    service: "ntp".into(),
                    image: "ros/test:1".into(),
                    stdio: Stdio::Null
                },
                FakeCall::Run {
                    service: "ntp".into(),
                    image: "ros/test:1".into(),
                    stdio: Stdio::Null
                },
                FakeCall::List,
                FakeCall::Stop("ntp".into()),
                FakeCall::List,
            ]
        );
    }

    #[tokio::test]
    async fn stop_of_running_service_reports_sigterm_exit() {
        let fake = FakeRuntime::new();
        let mut exits = fake.exits().await.unwrap();
        fake.run("a", &spec(), &Stdio::Null).await.unwrap();
        fake.stop("a", Duration::from_secs(1)).await.unwrap();
        assert_eq!(exits.recv().await.unwrap().exit_status, 143);
        fake.stop("missing", Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test]
    async fn scripted_run_failure() {
        let fake = FakeRuntime::new();
        fake.fail_next_run("a", "runc: boom");
        let err = fake.run("a", &spec(), &Stdio::Null).await.unwrap_err();
        assert!(err.to_string().contains("runc: boom"), "{err}");
        fake.run("a", &spec(), &Stdio::Null).await.unwrap();
    }
}
