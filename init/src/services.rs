//! Starting and keeping the system services running (the minimal supervisor of the
//! boot path): load definitions, start them, restart on exit per `restart:`, stop them
//! in reverse order at shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ros_config::service::{load_service_file, RestartPolicy};
use ros_config::ServiceSpec;
use ros_runtime::{ExitEvent, ServiceRuntime, Stdio};

use crate::console::{self, BootPhase};

/// Every service defined by the `*.yml` files in `dir`, by name. Files that don't
/// parse are reported and skipped: one bad file must not stop the boot.
pub fn load_dir(dir: &Path) -> BTreeMap<String, ServiceSpec> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"));
    files.sort();
    let mut all = BTreeMap::new();
    for file in files {
        match load_service_file(&file) {
            Ok(defs) => all.extend(defs),
            Err(e) => log::error!("{e} (file skipped)"),
        }
    }
    all
}

/// Restart delays for a crashing service: 1 s doubling to 32 s.
pub fn restart_delay(restarts_in_a_row: u32) -> Duration {
    Duration::from_secs(1u64 << restarts_in_a_row.min(5))
}

/// Whether a service that exited with `status` is restarted.
pub fn should_restart(policy: RestartPolicy, status: u32) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => status != 0,
    }
}

struct Running {
    spec: ServiceSpec,
    started: Instant,
    restarts_in_a_row: u32,
}

/// The set of services PID 1 keeps running.
pub struct Supervisor<R> {
    runtime: R,
    log_dir: PathBuf,
    running: BTreeMap<String, Running>,
    order: Vec<String>,
}

impl<R: ServiceRuntime> Supervisor<R> {
    /// A supervisor over `runtime`; service logs go under `log_dir`.
    pub fn new(runtime: R, log_dir: PathBuf) -> Self {
        Supervisor {
            runtime,
            log_dir,
            running: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// The runtime (for reads).
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    fn stdio(&self, name: &str, spec: &ServiceSpec) -> Stdio {
        // The console talks to the tty itself; everything else logs to a file.
        if spec.label("io.rancher.os.console").is_some() {
            Stdio::Null
        } else {
            Stdio::File(self.log_dir.join(format!("{name}.log")))
        }
    }

    /// Start `name`; failures are logged (the boot goes on without that service).
    pub async fn start(&mut self, name: &str, spec: ServiceSpec) -> bool {
        let stdio = self.stdio(name, &spec);
        match self.runtime.run(name, &spec, &stdio).await {
            Ok(pid) => {
                console::marker(BootPhase::ServiceStarted, name);
                log::debug!("service {name}: started (pid {pid})");
                let restarts = self.running.get(name).map_or(0, |r| r.restarts_in_a_row);
                if !self.order.iter().any(|n| n == name) {
                    self.order.push(name.to_string());
                }
                self.running.insert(
                    name.to_string(),
                    Running {
                        spec,
                        started: Instant::now(),
                        restarts_in_a_row: restarts,
                    },
                );
                true
            }
            Err(e) => {
                log::error!("service {name}: {e}");
                false
            }
        }
    }

    /// React to a service exit: returns the delay after which to restart it, if at all.
    pub fn on_exit(&mut self, ev: &ExitEvent) -> Option<Duration> {
        let r = self.running.get_mut(&ev.service)?;
        if !should_restart(r.spec.restart, ev.exit_status) {
            log::info!("service {}: exited ({})", ev.service, ev.exit_status);
            return None;
        }
        if r.started.elapsed() > Duration::from_secs(60) {
            r.restarts_in_a_row = 0;
        }
        let delay = restart_delay(r.restarts_in_a_row);
        r.restarts_in_a_row += 1;
        log::warn!(
            "service {}: exited ({}), restarting in {delay:?}",
            ev.service,
            ev.exit_status
        );
        Some(delay)
    }

    /// Start `name` again with its last definition.
    pub async fn restart(&mut self, name: &str) {
        let Some(spec) = self.running.get(name).map(|r| r.spec.clone()) else {
            return;
        };
        if let Err(e) = self.runtime.stop(name, Duration::from_secs(1)).await {
            log::warn!("service {name}: cleaning up before restart: {e}");
        }
        self.start(name, spec).await;
    }

    /// Stop every service, newest first, all within `budget`.
    pub async fn stop_all(&mut self, budget: Duration) {
        let deadline = Instant::now() + budget;
        for name in self.order.iter().rev() {
            let left = deadline.saturating_duration_since(Instant::now());
            let grace = left.min(Duration::from_secs(10));
            if let Err(e) = self.runtime.stop(name, grace).await {
                log::warn!("service {name}: stopping: {e}");
            }
        }
        self.running.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert!(!should_restart(RestartPolicy::No, 1));
        assert!(should_restart(RestartPolicy::Always, 0));
        assert!(should_restart(RestartPolicy::OnFailure, 2));
        assert!(!should_restart(RestartPolicy::OnFailure, 0));
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let d: Vec<u64> = (0..8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn shipped_services_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
        let all = load_dir(&dir);
        assert!(all.contains_key("console"));
    }

    #[test]
    fn a_bad_file_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yml"), "good:\n  image: x\n").unwrap();
        std::fs::write(dir.path().join("b.yml"), "bad: [\n").unwrap();
        let all = load_dir(dir.path());
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["good"]);
    }
}
