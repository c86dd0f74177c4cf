//! The service supervisor: keeps the running containers equal to what the config asks
//! for. Starts services wave by wave in dependency order, gated on readiness; restarts
//! exited ones per `restart:` with capped exponential backoff driven by containerd's exit
//! events; converges live after a config change; stops in reverse order at shutdown.
//!
//! State lives behind a std mutex that is never held across an `.await`; every change
//! bumps a watch channel so waiters (readiness, `ros service` requests) wake on events,
//! not timers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub use ros_config::catalog::StartOrder;
use ros_config::service::{RestartPolicy, LABEL_CONSOLE};
use ros_config::ServiceSpec;
use ros_runtime::{ExitEvent, ExitEvents, RuntimeError, ServiceRuntime, ServiceStatus, Stdio};
use tokio::sync::{watch, Semaphore};

use crate::console::{self, BootPhase};
use crate::logfile::LogDir;

/// Restart delays for a crashing service: 1 s doubling to 32 s.
pub fn restart_delay(restarts_in_a_row: u32) -> Duration {
    Duration::from_secs(1u64 << restarts_in_a_row.min(5))
}

/// How many services off the console's path start at once: one per CPU.
pub fn background_starts() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The exit status a failed start counts as for `restart:` (`on-failure` retries it).
const START_FAILED_STATUS: u32 = 127;

/// A service that stayed up this long is healthy again: its backoff resets.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// Whether a service that exited with `status` is restarted.
pub fn should_restart(policy: RestartPolicy, status: u32) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => status != 0,
    }
}

/// Where a service is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Known but not started (`createonly`, or not reached yet).
    Created,
    /// Its container is being created.
    Starting,
    /// Its task runs.
    Running {
        /// Host pid of its init process.
        pid: u32,
        /// When it started.
        since: SystemTime,
    },
    /// Its task exited.
    Exited {
        /// Exit status (128 + n for signal n).
        status: u32,
        /// When.
        at: SystemTime,
    },
    /// It could not be started.
    Failed {
        /// Why.
        message: String,
        /// When.
        at: SystemTime,
    },
}

/// What the supervisor knows about one service.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its definition.
    pub spec: ServiceSpec,
    /// Its state.
    pub state: State,
    /// Restarts after exits since boot.
    pub restarts: u32,
    /// Whether it should be running (false after `stop`, or when disabled).
    pub wanted: bool,
    in_a_row: u32,
    started: Option<Instant>,
    /// Bumped on every start/stop, so a stale delayed restart does nothing.
    generation: u64,
}

impl Record {
    fn new(spec: ServiceSpec) -> Self {
        Record {
            spec,
            state: State::Created,
            restarts: 0,
            wanted: true,
            in_a_row: 0,
            started: None,
            generation: 0,
        }
    }
}

/// Readiness deadlines.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// How long a dependent waits for a dependency to become ready.
    pub ready: Duration,
    /// How long `after: network` waits for a default route.
    pub network: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            ready: Duration::from_secs(120),
            network: Duration::from_secs(60),
        }
    }
}

/// How long a request waits for the supervisor to re-attach to a restarting containerd
/// (its restarts back off from 0.5 s to 16 s); below `ros service reload`'s 30 s.
pub const ATTACH_WAIT: Duration = Duration::from_secs(20);

/// The supervisor; shared as `Arc<Supervisor<R>>` by the tasks that drive it.
pub struct Supervisor<R> {
    rt: Arc<R>,
    log_dir: PathBuf,
    route_file: PathBuf,
    timeouts: Timeouts,
    records: Mutex<BTreeMap<String, Record>>,
    waves: Mutex<Vec<Vec<String>>>,
    changed: watch::Sender<u64>,
    /// Serialises converge/start/stop so two requests can't interleave on one service.
    ops: tokio::sync::Mutex<()>,
    /// False from the end of containerd's exit events (containerd died) until the
    /// supervisor has re-subscribed and resynced: requests wait for it ([`ATTACH_WAIT`]).
    attached: watch::Sender<bool>,
    /// Called with (service, pid) each time a service's task starts.
    on_start: Mutex<Option<StartHook>>,
}

/// What to do right after a service's task started (e.g. write its `write_files`).
pub type StartHook = Arc<dyn Fn(&str, u32) + Send + Sync>;

impl<R> std::fmt::Debug for Supervisor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Supervisor")
    }
}

/// A problem with a requested operation (for the control socket).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No such service.
    #[error("service {0}: not found (not defined or not enabled)")]
    NotFound(String),
    /// It failed.
    #[error("service {service}: {message}")]
    Failed {
        /// Which.
        service: String,
        /// Why.
        message: String,
    },
}

/// What went wrong for `service`, without the `service NAME: ` the runtime's errors start
/// with (the supervisor's own messages name the service once).
fn problem(service: &str, e: &RuntimeError) -> String {
    let text = e.to_string();
    match text.strip_prefix(&format!("service {service}: ")) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

impl<R: ServiceRuntime + 'static> Supervisor<R> {
    /// A supervisor over `rt`. Service logs go to `<log_dir>/<name>.log`; `route_file`
    /// is /proc/net/route (for `after: network`).
    pub fn new(rt: Arc<R>, log_dir: PathBuf, route_file: PathBuf, timeouts: Timeouts) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(Supervisor {
            rt,
            log_dir,
            route_file,
            timeouts,
            records: Mutex::new(BTreeMap::new()),
            waves: Mutex::new(Vec::new()),
            changed,
            ops: tokio::sync::Mutex::new(()),
            attached: watch::channel(true).0,
            on_start: Mutex::new(None),
        })
    }

    /// Run `hook` after every service start (best-effort work; it must not block long).
    pub fn set_start_hook(&self, hook: StartHook) {
        *self.on_start.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    fn records(&self) -> MutexGuard<'_, BTreeMap<String, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// A snapshot of every service record.
    pub fn snapshot(&self) -> BTreeMap<String, Record> {
        self.records().clone()
    }

    fn stdio(&self, name: &str, spec: &ServiceSpec) -> Stdio {
        // The console talks to its tty itself; everything else logs to a file.
        if spec.label(LABEL_CONSOLE).is_some() {
            return Stdio::Null;
        }
        // The shim opens this path as root, following symlinks: hand it on only once it
        // is a regular root-owned file in a checked directory (a planted
        // `NAME.log -> /var/lib/rancher/conf/cloud-config.yml` is moved aside first).
        // Output is better lost than appended to whatever an unsafe entry points to.
        match LogDir::open(&self.log_dir).and_then(|dir| dir.prepare(&format!("{name}.log"))) {
            Ok(path) => Stdio::File(path),
            Err(e) => {
                log::warn!("service {name}: {e} (its output is discarded)");
                Stdio::Null
            }
        }
    }

    /// Start one known service now (no dependency wait). Re-attaches if already running.
    pub async fn start_one(self: &Arc<Self>, name: &str) -> Result<u32, SupervisorError> {
        let (spec, generation) = {
            let mut recs = self.records();
            let rec = recs
                .get_mut(name)
                .ok_or_else(|| SupervisorError::NotFound(name.to_string()))?;
            rec.wanted = true;
            rec.generation += 1;
            rec.state = State::Starting;
            (rec.spec.clone(), rec.generation)
        };
        self.bump();
        let stdio = self.stdio(name, &spec);
        let result = match self.rt.run(name, &spec, &stdio).await {
            Ok(pid) => {
                console::marker(BootPhase::ServiceStarted, name);
                let hook = self
                    .on_start
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(hook) = hook {
                    hook(name, pid);
                }
                Ok(pid)
            }
            Err(RuntimeError::AlreadyRunning { pid, .. }) => {
                log::info!("service {name}: already running (pid {pid}), attached");
                Ok(pid)
            }
            Err(e) => Err(problem(name, &e)),
        };
        let now = SystemTime::now();
        let mut retry = None;
        {
            let mut recs = self.records();
            // Only if nothing happened meanwhile: a fast exit's event can arrive before
            // run() returns, and then the record already says Exited (restart scheduled).
            if let Some(rec) = recs
                .get_mut(name)
                .filter(|r| r.generation == generation && r.state == State::Starting)
            {
                match &result {
                    Ok(pid) => {
                        rec.state = State::Running {
                            pid: *pid,
                            since: now,
                        };
                        rec.started = Some(Instant::now());
                    }
                    Err(message) => {
                        rec.state = State::Failed {
                            message: message.clone(),
                            at: now,
                        };
                        // A start that failed (EMFILE, EAGAIN, a log that cannot be
                        // opened) is an exit as far as `restart:` goes: the same backoff,
                        // forever, not a service left down for good.
                        if rec.wanted && should_restart(rec.spec.restart, START_FAILED_STATUS) {
                            let delay = restart_delay(rec.in_a_row);
                            rec.in_a_row += 1;
                            retry = Some((delay, rec.generation));
                        }
                    }
                }
            }
        }
        self.bump();
        if let Some((delay, generation)) = retry {
            log::warn!(
                "service {name}: trying to start it again in {}s",
                delay.as_secs()
            );
            self.restart_later(name, delay, generation);
        }
        result.map_err(|message| {
            log::error!("service {name}: {message}");
            SupervisorError::Failed {
                service: name.to_string(),
                message,
            }
        })
    }

    /// Stop one service and keep it stopped (until started again).
    pub async fn stop_one(
        self: &Arc<Self>,
        name: &str,
        grace: Duration,
    ) -> Result<(), SupervisorError> {
        {
            let mut recs = self.records();
            let rec = recs
                .get_mut(name)
                .ok_or_else(|| SupervisorError::NotFound(name.to_string()))?;
            rec.wanted = false;
            rec.generation += 1;
        }
        let result = self.rt.stop(name, grace).await;
        {
            let mut recs = self.records();
            if let Some(rec) = recs.get_mut(name) {
                if matches!(rec.state, State::Running { .. } | State::Starting) {
                    // The exit event normally records the status; this covers a lost one.
                    rec.state = State::Exited {
                        status: 128 + 15,
                        at: SystemTime::now(),
                    };
                }
            }
        }
        self.bump();
        result.map_err(|e| SupervisorError::Failed {
            service: name.to_string(),
            message: problem(name, &e),
        })
    }

    /// Record an exit and schedule a restart if the policy says so.
    pub fn on_exit(self: &Arc<Self>, ev: &ExitEvent) {
        let restart = {
            let mut recs = self.records();
            let Some(rec) = recs.get_mut(&ev.service) else {
                return;
            };
            if let State::Running { pid, .. } = rec.state {
                if pid != ev.pid && ev.pid != 0 {
                    // An older task of this service; the current one still runs.
                    return;
                }
            }
            rec.state = State::Exited {
                status: ev.exit_status,
                at: ev.exited_at.unwrap_or_else(SystemTime::now),
            };
            if !rec.wanted || !should_restart(rec.spec.restart, ev.exit_status) {
                log::info!("service {}: exited ({})", ev.service, ev.exit_status);
                None
            } else {
                if rec
                    .started
                    .is_some_and(|t| t.elapsed() > BACKOFF_RESET_AFTER)
                {
                    rec.in_a_row = 0;
                }
                let delay = restart_delay(rec.in_a_row);
                rec.in_a_row += 1;
                log::warn!(
                    "service {}: exited ({}), restarting in {}s",
                    ev.service,
                    ev.exit_status,
                    delay.as_secs()
                );
                Some((delay, rec.generation))
            }
        };
        self.bump();
        if let Some((delay, generation)) = restart {
            self.restart_later(&ev.service, delay, generation);
        }
    }

    /// Start `name` again after `delay`, unless a stop or a start happened meanwhile (its
    /// record's generation moved on) or it is no longer wanted.
    fn restart_later(self: &Arc<Self>, name: &str, delay: Duration, generation: u64) {
        {
            let this = self.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                // Backoff, not synchronisation. No ops lock: a converge may be waiting for
                // this very service to come back. The generation check (under the records
                // lock) lets a stop or a start that happened meanwhile win.
                tokio::time::sleep(delay).await;
                let still = {
                    let mut recs = this.records();
                    match recs.get_mut(&name) {
                        Some(r)
                            if r.wanted
                                && r.generation == generation
                                && matches!(
                                    r.state,
                                    State::Exited { .. } | State::Failed { .. }
                                ) =>
                        {
                            r.restarts += 1;
                            true
                        }
                        _ => false,
                    }
                };
                if still {
                    let _ = this.start_one(&name).await;
                }
            });
        }
    }

    /// Feed exit events into the supervisor forever, resubscribing (and resyncing with
    /// containerd's view) whenever the stream ends, e.g. because containerd restarted.
    pub async fn dispatch_exits(self: Arc<Self>, mut events: ExitEvents) {
        let mut failures = 0u32;
        loop {
            while let Some(ev) = events.recv().await {
                self.on_exit(&ev);
            }
            self.attached.send_replace(false);
            log::warn!("supervisor: containerd exit events ended; resubscribing");
            loop {
                match self.rt.exits().await {
                    Ok(rx) => {
                        events = rx;
                        failures = 0;
                        break;
                    }
                    Err(e) => {
                        let delay = Duration::from_millis(250u64 << failures.min(4));
                        failures += 1;
                        log::debug!("supervisor: resubscribing: {e}; retry in {delay:?}");
                        tokio::time::sleep(delay).await; // backoff while containerd restarts
                    }
                }
            }
            self.resync().await;
            self.attached.send_replace(true);
            log::info!("supervisor: re-attached to containerd (exit events and services resynced)");
        }
    }

    /// Compare our records with containerd's and treat anything that ended while we
    /// weren't listening as an exit. Running tasks are left alone (never started twice).
    pub async fn resync(self: &Arc<Self>) {
        let listed = match self.rt.list().await {
            Ok(l) => l,
            Err(e) => {
                log::warn!("supervisor: listing services after reconnect: {e}");
                return;
            }
        };
        let running: Vec<(String, u32)> = self
            .records()
            .iter()
            .filter_map(|(n, r)| match r.state {
                State::Running { pid, .. } => Some((n.clone(), pid)),
                _ => None,
            })
            .collect();
        for (name, pid) in running {
            let seen = listed.iter().find(|s| s.name == name);
            let ended = match seen {
                Some(s) if s.status == ServiceStatus::Running => None,
                Some(s) => Some(s.exit_status.unwrap_or(255)),
                None => Some(255),
            };
            if let Some(status) = ended {
                log::warn!("service {name}: ended while containerd was away ({status})");
                self.on_exit(&ExitEvent {
                    service: name,
                    pid,
                    exit_status: status,
                    exited_at: None,
                });
            }
        }
    }

    /// Wait until `name` is ready (running, or a one-shot that exited 0), failed, or
    /// `timeout` passed. Returns whether it is ready.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let verdict = self.records().get(name).map(|r| {
                let oneshot = r.spec.is_oneshot();
                match &r.state {
                    State::Running { .. } if !oneshot => Some(true),
                    State::Exited { status: 0, .. } if oneshot => Some(true),
                    State::Exited { .. } if oneshot || !r.wanted => Some(false),
                    State::Failed { .. } => Some(false),
                    State::Created if !r.wanted => Some(false),
                    _ => None,
                }
            });
            match verdict {
                None => return false,
                Some(Some(ready)) => return ready,
                Some(None) => {}
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Converge on `desired`: stop services no longer desired, restart changed ones, and
    /// start missing ones, each once the services it waits for (`order.after`) are ready,
    /// then wait until all of them are. The console and what it waits for start at once;
    /// other services at most [`background_starts`] at a time, in wave order, so that
    /// many of them do not hold up the console (each start costs CPU). Services a user
    /// stopped stay stopped unless they are in `wake`.
    pub async fn converge(
        self: &Arc<Self>,
        desired: BTreeMap<String, ServiceSpec>,
        order: StartOrder,
        wake: &[String],
    ) {
        let _guard = self.lock_ops().await;
        let (removed, changed): (Vec<String>, Vec<String>) = {
            let recs = self.records();
            let removed = recs
                .keys()
                .filter(|n| !desired.contains_key(*n))
                .cloned()
                .collect();
            let changed = recs
                .iter()
                .filter(|(n, r)| desired.get(*n).is_some_and(|d| *d != r.spec))
                .map(|(n, _)| n.clone())
                .collect();
            (removed, changed)
        };
        for name in removed.iter().chain(changed.iter()) {
            log::info!("service {name}: stopping (no longer wanted or definition changed)");
            let _ = self.stop_one(name, Duration::from_secs(10)).await;
        }
        {
            let mut recs = self.records();
            for name in &removed {
                recs.remove(name);
            }
            for (name, spec) in &desired {
                match recs.get_mut(name) {
                    Some(rec) if rec.spec != *spec => *rec = Record::new(spec.clone()),
                    Some(rec) => rec.wanted |= wake.contains(name),
                    None => {
                        recs.insert(name.clone(), Record::new(spec.clone()));
                    }
                }
            }
        }
        let console_path = order.console_path(&desired);
        *self.waves.lock().unwrap_or_else(|e| e.into_inner()) = order.waves.clone();
        self.bump();
        let to_start: Vec<String> = order
            .waves
            .iter()
            .flatten()
            .filter(|name| self.needs_start(name))
            .cloned()
            .collect();
        let throttle = Arc::new(Semaphore::new(background_starts()));
        let mut set = tokio::task::JoinSet::new();
        for name in &to_start {
            let Some(network) = self
                .records()
                .get(name)
                .map(|r| r.spec.after().contains(&"network"))
            else {
                continue;
            };
            // Only what this converge starts is waited for (as a wave waited for its own).
            let prerequisites: Vec<String> = order
                .after
                .get(name)
                .into_iter()
                .flatten()
                .filter(|p| to_start.contains(p))
                .cloned()
                .collect();
            let throttle = (!console_path.contains(name)).then(|| throttle.clone());
            let this = self.clone();
            let name = name.clone();
            set.spawn(async move {
                for p in &prerequisites {
                    if !this.wait_ready(p, this.timeouts.ready).await {
                        log::warn!("service {p}: not ready; starting {name} anyway");
                    }
                }
                if network {
                    this.wait_for_network(&name).await;
                }
                let _slot = match throttle {
                    Some(throttle) => throttle.acquire_owned().await.ok(),
                    None => None,
                };
                let _ = this.start_one(&name).await;
            });
        }
        while set.join_next().await.is_some() {}
        for name in &to_start {
            if !self.wait_ready(name, self.timeouts.ready).await {
                log::warn!("service {name}: not ready");
            }
        }
    }

    /// Whether converging should start `name`: wanted, not running, not a one-shot that
    /// already succeeded, not create-only.
    fn needs_start(&self, name: &str) -> bool {
        self.records().get(name).is_some_and(|r| {
            let done = match r.state {
                State::Running { .. } => true,
                State::Exited { status: 0, .. } => r.spec.is_oneshot(),
                _ => false,
            };
            r.wanted && !done && !r.spec.is_createonly()
        })
    }

    async fn wait_for_network(&self, name: &str) {
        let route = self.route_file.clone();
        let timeout = self.timeouts.network;
        let up = tokio::task::spawn_blocking(move || {
            crate::readiness::wait_for_default_route(&route, timeout)
        })
        .await
        .unwrap_or(false);
        if !up {
            log::warn!(
                "service {name}: no default route after {}s; starting anyway",
                timeout.as_secs()
            );
        }
    }

    /// Stop every service, last wave first, each wave in parallel, all within `budget`.
    pub async fn stop_all(self: &Arc<Self>, budget: Duration) {
        let _guard = self.ops.lock().await;
        // `budget` is `rancher.shutdown_timeout`: checked, since an overflow here would
        // panic PID 1 at every shutdown.
        let deadline = crate::power::deadline_after(budget);
        let mut waves = self.waves.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Services started outside the waves (by request) stop first.
        let in_waves: Vec<String> = waves.iter().flatten().cloned().collect();
        let extra: Vec<String> = self
            .records()
            .keys()
            .filter(|n| !in_waves.contains(n))
            .cloned()
            .collect();
        waves.push(extra);
        for wave in waves.into_iter().rev() {
            let grace = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(10));
            let mut set = tokio::task::JoinSet::new();
            for name in wave {
                let this = self.clone();
                set.spawn(async move {
                    if let Err(e) = this.stop_one(&name, grace).await {
                        log::warn!("{e}");
                    }
                });
            }
            while set.join_next().await.is_some() {}
        }
    }

    /// Forget a (stopped) service until the next converge brings it back.
    pub fn forget(&self, name: &str) {
        self.records().remove(name);
        self.bump();
    }

    /// Take the operations lock (for requests that combine several steps), once the
    /// supervisor is attached to containerd: a request made while containerd restarts
    /// waits for it (at most [`ATTACH_WAIT`], then goes on and fails with its own error)
    /// instead of failing at once on a closed socket.
    pub async fn lock_ops(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let mut attached = self.attached.subscribe();
        if !*attached.borrow() {
            log::info!("supervisor: waiting for containerd before the request");
            let _ = tokio::time::timeout(ATTACH_WAIT, attached.wait_for(|a| *a)).await;
        }
        self.ops.lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ros_runtime::fake::{FakeCall, FakeRuntime};

    fn spec(labels: &[(&str, &str)], restart: RestartPolicy) -> ServiceSpec {
        ServiceSpec {
            image: "ros/test:1".into(),
            restart,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn sup(rt: Arc<FakeRuntime>) -> Arc<Supervisor<FakeRuntime>> {
        // Never the machine's /var/log/ros: starting a service pre-creates its log there.
        // One temp dir for every test (left behind: a static is never dropped).
        static LOGS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let logs = LOGS.get_or_init(|| tempfile::tempdir().unwrap());
        Supervisor::new(
            rt,
            logs.path().to_path_buf(),
            "/nonexistent/route".into(),
            Timeouts {
                ready: Duration::from_secs(5),
                network: Duration::from_millis(10),
            },
        )
    }

    /// A supervisor over a fresh fake whose exit events it already dispatches.
    async fn supervised() -> (Arc<FakeRuntime>, Arc<Supervisor<FakeRuntime>>) {
        let rt = Arc::new(FakeRuntime::new());
        let s = sup(rt.clone());
        let events = rt.exits().await.unwrap();
        tokio::spawn(s.clone().dispatch_exits(events));
        (rt, s)
    }

    fn runs(rt: &FakeRuntime) -> Vec<String> {
        rt.calls()
            .into_iter()
            .filter_map(|c| match c {
                FakeCall::Run { service, .. } => Some(service),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn restart_policies_and_backoff() {
        assert!(!should_restart(RestartPolicy::No, 1));
        assert!(should_restart(RestartPolicy::Always, 0));
        assert!(should_restart(RestartPolicy::OnFailure, 2));
        assert!(!should_restart(RestartPolicy::OnFailure, 0));
        let d: Vec<u64> = (0..8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 32, 32]);
    }

    #[tokio::test]
    async fn waves_start_in_order_and_oneshots_gate_the_next_wave() {
        let (rt, s) = supervised().await;
        let mut desired = BTreeMap::new();
        desired.insert(
            "cold".to_string(),
            spec(&[("io.rancher.os.detach", "false")], RestartPolicy::No),
        );
        desired.insert("udev".to_string(), spec(&[], RestartPolicy::Always));
        desired.insert("console".to_string(), spec(&[], RestartPolicy::Always));
        let waves = vec![
            vec!["cold".to_string()],
            vec!["udev".to_string()],
            vec!["console".to_string()],
        ];
        // The one-shot exits 0 shortly after it starts; only then may udev start.
        let rt2 = rt.clone();
        let watcher = tokio::spawn(async move {
            loop {
                if runs(&rt2).contains(&"cold".to_string()) {
                    assert!(!runs(&rt2).contains(&"udev".to_string()));
                    rt2.exit("cold", 0);
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        s.converge(desired, StartOrder::from_waves(waves), &[])
            .await;
        watcher.await.unwrap();
        assert_eq!(runs(&rt), vec!["cold", "udev", "console"]);
        let snap = s.snapshot();
        assert!(matches!(
            snap["cold"].state,
            State::Exited { status: 0, .. }
        ));
        assert!(matches!(snap["console"].state, State::Running { .. }));
    }

    #[tokio::test]
    async fn a_service_waits_only_for_what_it_is_after_not_its_whole_wave() {
        let (rt, s) = supervised().await;
        let mut desired = BTreeMap::new();
        desired.insert("a".to_string(), spec(&[], RestartPolicy::Always));
        desired.insert(
            "slow".to_string(),
            spec(&[("io.rancher.os.detach", "false")], RestartPolicy::No),
        );
        desired.insert("late".to_string(), spec(&[], RestartPolicy::Always));
        let order = StartOrder {
            waves: vec![vec!["a".into(), "slow".into()], vec!["late".into()]],
            after: BTreeMap::from([("late".to_string(), vec!["a".to_string()])]),
        };
        // The one-shot finishes only after `late` started: `late` did not wait for it.
        let rt2 = rt.clone();
        let watcher = tokio::spawn(async move {
            while !runs(&rt2).contains(&"late".to_string()) {
                tokio::task::yield_now().await;
            }
            rt2.exit("slow", 0);
        });
        tokio::time::timeout(Duration::from_secs(4), s.converge(desired, order, &[]))
            .await
            .expect("late waited for the whole wave");
        watcher.await.unwrap();
        assert!(matches!(s.snapshot()["late"].state, State::Running { .. }));
    }

    #[test]
    fn the_console_path_is_the_console_and_what_it_waits_for() {
        let mut desired = BTreeMap::new();
        for name in ["udev", "network", "ntp", "extra", "docker"] {
            desired.insert(name.to_string(), spec(&[], RestartPolicy::Always));
        }
        desired.insert(
            "console".to_string(),
            spec(
                &[("io.rancher.os.console", "default")],
                RestartPolicy::Always,
            ),
        );
        let order = StartOrder {
            waves: Vec::new(),
            after: BTreeMap::from([
                ("network".to_string(), vec!["udev".to_string()]),
                ("ntp".to_string(), vec!["network".to_string()]),
                ("console".to_string(), vec!["ntp".to_string()]),
                ("docker".to_string(), vec!["console".to_string()]),
            ]),
        };
        let mut path: Vec<String> = order.console_path(&desired).into_iter().collect();
        path.sort();
        assert_eq!(path, vec!["console", "network", "ntp", "udev"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashing_service_is_restarted_with_growing_delays() {
        let (rt, s) = supervised().await;
        let mut desired = BTreeMap::new();
        desired.insert("crash".to_string(), spec(&[], RestartPolicy::Always));
        s.converge(
            desired,
            StartOrder::from_waves(vec![vec!["crash".to_string()]]),
            &[],
        )
        .await;
        let mut when = Vec::new();
        let t0 = tokio::time::Instant::now();
        for _ in 0..4 {
            let before = runs(&rt).len();
            rt.exit("crash", 1);
            while runs(&rt).len() == before {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            when.push((tokio::time::Instant::now() - t0).as_secs());
        }
        // 1 s, then +2 s, +4 s, +8 s.
        assert_eq!(when, vec![1, 3, 7, 15]);
        assert_eq!(s.snapshot()["crash"].restarts, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_fails_to_start_is_tried_again_with_the_backoff() {
        let (rt, s) = supervised().await;
        rt.fail_next_run("flaky", "creating task: too many open files");
        let mut desired = BTreeMap::new();
        desired.insert("flaky".to_string(), spec(&[], RestartPolicy::Always));
        let t0 = tokio::time::Instant::now();
        s.converge(
            desired,
            StartOrder::from_waves(vec![vec!["flaky".to_string()]]),
            &[],
        )
        .await;
        // The failed start is not the end: it runs 1 s later, as after an exit.
        while !matches!(s.snapshot()["flaky"].state, State::Running { .. }) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!((tokio::time::Instant::now() - t0).as_secs(), 1);
        assert_eq!(runs(&rt).len(), 2, "{:?}", rt.calls());
        // restart: "no" is not retried.
        rt.fail_next_run("once", "creating task: boom");
        let mut desired = BTreeMap::new();
        desired.insert("once".to_string(), spec(&[], RestartPolicy::No));
        s.converge(
            desired,
            StartOrder::from_waves(vec![vec!["once".to_string()]]),
            &[],
        )
        .await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(matches!(s.snapshot()["once"].state, State::Failed { .. }));
    }

    #[tokio::test]
    async fn a_failure_names_its_service_once() {
        let (rt, s) = supervised().await;
        let mut desired = BTreeMap::new();
        desired.insert("a".to_string(), spec(&[], RestartPolicy::No));
        s.converge(desired, StartOrder::from_waves(vec![]), &[])
            .await;
        s.stop_one("a", Duration::from_secs(1)).await.unwrap();
        rt.fail_next_run("a", "runc: boom");
        let err = s.start_one("a").await.unwrap_err();
        assert_eq!(err.to_string(), "service a: creating task: runc: boom");
    }

    #[tokio::test]
    async fn stopped_services_stay_stopped_and_converge_removes_and_adds() {
        let (rt, s) = supervised().await;
        let mut desired = BTreeMap::new();
        desired.insert("a".to_string(), spec(&[], RestartPolicy::Always));
        desired.insert("b".to_string(), spec(&[], RestartPolicy::Always));
        s.converge(
            desired.clone(),
            StartOrder::from_waves(vec![vec!["a".into(), "b".into()]]),
            &[],
        )
        .await;
        s.stop_one("a", Duration::from_secs(1)).await.unwrap();
        tokio::task::yield_now().await;
        assert!(matches!(s.snapshot()["a"].state, State::Exited { .. }));
        assert_eq!(runs(&rt).iter().filter(|n| *n == "a").count(), 1);

        desired.remove("b");
        desired.insert("c".to_string(), spec(&[], RestartPolicy::No));
        let waves = vec![vec!["a".to_string(), "c".to_string()]];
        s.converge(desired.clone(), StartOrder::from_waves(waves.clone()), &[])
            .await;
        let snap = s.snapshot();
        assert!(!snap.contains_key("b"));
        assert!(matches!(snap["c"].state, State::Running { .. }));
        // A reload leaves a service the user stopped alone...
        assert!(matches!(snap["a"].state, State::Exited { .. }));
        // ...`up a` wakes it.
        s.converge(desired, StartOrder::from_waves(waves), &["a".to_string()])
            .await;
        assert!(matches!(s.snapshot()["a"].state, State::Running { .. }));
        assert!(rt.calls().contains(&FakeCall::Stop("b".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn an_exit_reported_before_run_returns_is_not_lost() {
        let rt = Arc::new(FakeRuntime::new());
        let s = sup(rt.clone());
        // The start hook runs inside start_one after run() returned and before the record
        // is updated: delivering the exit there is the race of a service that dies at once
        // and whose exit event is handled before start_one resumes.
        let rt2 = rt.clone();
        let s2 = Arc::downgrade(&s);
        let once = Arc::new(std::sync::atomic::AtomicBool::new(true));
        s.set_start_hook(Arc::new(move |name, pid| {
            if once.swap(false, std::sync::atomic::Ordering::SeqCst) {
                rt2.exit(name, 1);
                if let Some(s) = s2.upgrade() {
                    s.on_exit(&ExitEvent {
                        service: name.to_string(),
                        pid,
                        exit_status: 1,
                        exited_at: None,
                    });
                }
            }
        }));
        let mut desired = BTreeMap::new();
        desired.insert("fast".to_string(), spec(&[], RestartPolicy::Always));
        let sc = s.clone();
        tokio::spawn(async move {
            sc.converge(
                desired,
                StartOrder::from_waves(vec![vec!["fast".into()]]),
                &[],
            )
            .await
        });
        // It is restarted after the 1 s backoff instead of being left "running".
        for _ in 0..100 {
            if runs(&rt).len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(runs(&rt).len(), 2, "not restarted");
        assert_eq!(s.snapshot()["fast"].restarts, 1);
    }

    #[tokio::test]
    async fn the_start_hook_sees_every_start_with_its_pid() {
        let rt = Arc::new(FakeRuntime::new());
        let s = sup(rt.clone());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        s.set_start_hook(Arc::new(move |name, pid| {
            seen2.lock().unwrap().push((name.to_string(), pid));
        }));
        let mut desired = BTreeMap::new();
        desired.insert("console".to_string(), spec(&[], RestartPolicy::Always));
        s.converge(
            desired,
            StartOrder::from_waves(vec![vec!["console".into()]]),
            &[],
        )
        .await;
        let State::Running { pid, .. } = s.snapshot()["console"].state else {
            panic!("console not running");
        };
        assert_eq!(*seen.lock().unwrap(), vec![("console".to_string(), pid)]);
    }

    #[tokio::test]
    async fn resync_restarts_what_ended_while_away_and_keeps_what_runs() {
        let rt = Arc::new(FakeRuntime::new());
        let s = sup(rt.clone());
        let mut desired = BTreeMap::new();
        desired.insert("keep".to_string(), spec(&[], RestartPolicy::Always));
        desired.insert("gone".to_string(), spec(&[], RestartPolicy::No));
        s.converge(
            desired,
            StartOrder::from_waves(vec![vec!["gone".into(), "keep".into()]]),
            &[],
        )
        .await;
        // No subscriber: the exit is missed, as when containerd was down.
        rt.exit("gone", 3);
        s.resync().await;
        let snap = s.snapshot();
        assert!(matches!(
            snap["gone"].state,
            State::Exited { status: 3, .. }
        ));
        assert!(matches!(snap["keep"].state, State::Running { .. }));
        assert_eq!(runs(&rt).iter().filter(|n| *n == "keep").count(), 1);
    }
}
