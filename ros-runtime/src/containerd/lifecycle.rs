//! Containers and tasks: create or reuse a service's container, start, signal, stop and
//! list them.

use super::*;

impl Containerd {
    pub(super) fn lookup_env(&self, name: &str) -> Option<String> {
        self.environment
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    pub(super) async fn task(
        &self,
        service: &str,
    ) -> Result<Option<containerd_client::types::v1::Process>> {
        let request = self.request(api::GetRequest {
            container_id: service.to_string(),
            exec_id: String::new(),
        });
        match self.tasks().get(request).await {
            Ok(answer) => Ok(answer.into_inner().process),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::KillTask {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// `service`'s container record, if there is one.
    pub(super) async fn container(&self, service: &str) -> Result<Option<api::Container>> {
        let request = self.request(api::GetContainerRequest {
            id: service.to_string(),
        });
        match self.containers().get(request).await {
            Ok(answer) => Ok(answer.into_inner().container),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::CreateContainer {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// Delete `service`'s task, if it has one.
    pub(super) async fn delete_task(&self, service: &str) -> Result<()> {
        let request = self.request(api::DeleteTaskRequest {
            container_id: service.to_string(),
        });
        match self.tasks().delete(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(RuntimeError::DeleteTask {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// Delete the task, container and root snapshot of `service`, whichever exist.
    pub(super) async fn delete_service(&self, service: &str) -> Result<()> {
        self.delete_task(service).await?;
        let request = self.request(api::DeleteContainerRequest {
            id: service.to_string(),
        });
        match self.containers().delete(request).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                return Err(RuntimeError::DeleteContainer {
                    service: service.to_string(),
                    message: status_text(&s),
                })
            }
        }
        self.remove_root(service, true).await
    }

    /// Refuse if `service`'s task is running.
    pub(super) async fn refuse_running(&self, service: &str) -> Result<()> {
        if let Some(process) = self.task(service).await? {
            let status = ProcessStatus::try_from(process.status).unwrap_or(ProcessStatus::Unknown);
            if matches!(
                status,
                ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing
            ) {
                return Err(RuntimeError::AlreadyRunning {
                    service: service.to_string(),
                    pid: process.pid,
                });
            }
        }
        Ok(())
    }

    /// Remove `service`'s root: its snapshot if `snapshot` (with no container left, only
    /// when this run needs one under the same key: a removal that did not finish), and the
    /// unpacked store's overlay directories.
    pub(super) async fn remove_root(&self, service: &str, snapshot: bool) -> Result<()> {
        if snapshot {
            self.remove_snapshot(service)
                .await
                .map_err(|s| RuntimeError::RemoveSnapshot {
                    service: service.to_string(),
                    message: status_text(&s),
                })?;
        }
        match &self.local {
            Some(local) => local.remove(service),
            None => Ok(()),
        }
    }

    /// Restart `service` keeping its container and root snapshot, as Docker's restart
    /// policy does: only a new task is created. Done only when the container was created
    /// in this boot (a reboot starts from a fresh root) with the very same spec, image and
    /// labels (a changed service is recreated). `Ok(None)`: not applicable, create anew.
    pub(super) async fn restart_in_place(
        &self,
        existing: &api::Container,
        image: &str,
        labels: &HashMap<String, String>,
        oci: &oci_spec::runtime::Spec,
        root: &RootSource,
        output: &str,
    ) -> Result<Option<u32>> {
        let service = existing.id.as_str();
        let decision = super::reuse::decide(
            &super::reuse::Existing {
                id: service,
                image: &existing.image,
                labels: &existing.labels,
                spec: existing.spec.as_ref().map(|any| any.value.as_slice()),
                snapshot_key: &existing.snapshot_key,
            },
            &super::reuse::Wanted {
                image,
                labels,
                spec: oci,
                store_root: matches!(root, RootSource::Local(_)),
            },
        );
        if let super::reuse::Reuse::Recreate(why) = decision {
            log::debug!("service {service}: a new container: {why}");
            return Ok(None);
        }
        let kept_overlay = match (root, &self.local) {
            (RootSource::Local(image), Some(local)) => match local.kept_root(service, image)? {
                Some(overlay) => Some(overlay),
                None => return Ok(None),
            },
            (RootSource::Local(_), None) => return Ok(None),
            (RootSource::Snapshot { .. }, _) => None,
        };
        self.delete_task(service).await?;
        if let Some(overlay) = kept_overlay {
            return self
                .create_and_start_task(service, vec![overlay_mount(&overlay)], output)
                .await
                .map(Some);
        }
        let mounts = match self
            .snapshots()
            .mounts(self.request(snap::MountsRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: service.to_string(),
            }))
            .await
        {
            Ok(answer) => answer.into_inner().mounts,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => {
                return Err(RuntimeError::PrepareSnapshot {
                    service: service.to_string(),
                    parent: service.to_string(),
                    message: status_text(&s),
                })
            }
        };
        self.create_and_start_task(service, mounts, output)
            .await
            .map(Some)
    }

    pub(super) async fn run_service(
        &self,
        service: &str,
        spec: &ServiceSpec,
        stdio: &Stdio,
    ) -> Result<u32> {
        if spec.tty {
            return Err(RuntimeError::TtyUnsupported {
                service: service.to_string(),
            });
        }
        let output = match stdio {
            Stdio::Null => String::new(),
            Stdio::File(path) if path.is_absolute() => format!("file://{}", path.display()),
            Stdio::File(path) => {
                return Err(RuntimeError::InvalidStdio {
                    service: service.to_string(),
                    path: path.clone(),
                })
            }
        };
        // One lookup decides the path: without a container there is no task to refuse or
        // delete, and nothing to restart in place (a fresh start makes no other calls).
        let existing = self.container(service).await?;
        if existing.is_some() {
            self.refuse_running(service).await?;
        }
        let local = match &self.local {
            Some(store) => store.find(&spec.image)?,
            None => None,
        };
        let (image_name, config, root) = match local {
            Some(image) => (
                image.name.clone(),
                image.config.clone(),
                RootSource::Local(Box::new(image)),
            ),
            None => {
                let image = self.resolve_image(&spec.image).await?;
                let parent = image.top_chain_id;
                (image.name, image.config, RootSource::Snapshot { parent })
            }
        };
        let mut oci = runtime_spec(service, spec, &config, |k| self.lookup_env(k))?;
        // containerd and its shims run with init's bounding set (all of them on a real boot;
        // fewer in a sandbox), and runc refuses to grant more.
        if let Some(bounding) = own_bounding_set() {
            restrict_capabilities(&mut oci, bounding);
        }
        if !spec.privileged {
            let devices = crate::devices::resolve(service, &spec.devices).map_err(|e| {
                RuntimeError::CreateContainer {
                    service: service.to_string(),
                    message: e.to_string(),
                }
            })?;
            crate::devices::add_to_spec(&mut oci, &devices);
        }
        if let Some(file) = self.kernel_cmdline.as_ref().filter(|_| !spec.privileged) {
            let mut mounts = oci.mounts().clone().unwrap_or_default();
            mounts.push(kernel_cmdline_mount(file));
            oci.set_mounts(Some(mounts));
        }
        if let Some(linux) = oci.linux_mut() {
            let path = self
                .cgroup_parent
                .as_ref()
                .map(|parent| PathBuf::from(format!("{parent}/{service}")));
            linux.set_cgroups_path(path);
        }
        // One shim process for every service instead of one each (runc v2 shim grouping,
        // what CRI does for the containers of a pod): a Go shim costs several MiB and a
        // process start under emulation, and a restarted task reuses the running shim.
        let mut annotations = oci.annotations().clone().unwrap_or_default();
        annotations.insert(SHIM_GROUP_ANNOTATION.into(), SHIM_GROUP.into());
        oci.set_annotations(Some(annotations));
        let create_error = |message: String| RuntimeError::CreateContainer {
            service: service.to_string(),
            message,
        };
        create_bind_sources(&oci).map_err(create_error)?;
        let spec_json = serde_json::to_vec(&oci).map_err(|e| create_error(e.to_string()))?;
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_SERVICE.into(), service.into());
        labels.insert(LABEL_IMAGE.into(), spec.image.clone());
        if let Some(boot) = boot_id() {
            labels.insert(LABEL_BOOT.into(), boot.to_string());
        }
        match &existing {
            Some(existing) => {
                match self
                    .restart_in_place(existing, &image_name, &labels, &oci, &root, &output)
                    .await
                {
                    Ok(Some(pid)) => {
                        log::info!("service {service}: restarted pid {pid} in its container");
                        return Ok(pid);
                    }
                    Ok(None) => log::info!("service {service}: removing stale container"),
                    Err(e) => {
                        log::warn!("service {service}: restart in place failed ({e}); recreating")
                    }
                }
                self.delete_service(service).await?;
            }
            // No container, so no task either: only a root may be left.
            None => {
                let snapshot = matches!(root, RootSource::Snapshot { .. });
                self.remove_root(service, snapshot).await?
            }
        }
        // The container record references the snapshot key, which keeps the root snapshot
        // from being collected between Prepare and the task's creation. An overlay root
        // of the unpacked store is ours: no snapshotter, no key.
        let (snapshotter, snapshot_key) = match root {
            RootSource::Snapshot { .. } => (SNAPSHOTTER.to_string(), service.to_string()),
            RootSource::Local(_) => (String::new(), String::new()),
        };
        let container = api::Container {
            id: service.to_string(),
            labels,
            image: image_name.clone(),
            runtime: Some(api::container::Runtime {
                name: RUNTIME.to_string(),
                options: self.runtime_binary.as_ref().map(|binary| Any {
                    type_url: RUNC_OPTIONS_TYPE_URL.to_string(),
                    value: prost::Message::encode_to_vec(&RuncOptions {
                        binary_name: binary.clone(),
                    }),
                }),
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec_json,
            }),
            snapshotter,
            snapshot_key,
            ..Default::default()
        };
        self.containers()
            .create(self.request(api::CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|s| create_error(status_text(&s)))?;
        let started = match &root {
            RootSource::Snapshot { parent } => self.start_task(service, parent, &output).await,
            RootSource::Local(image) => self.start_local_task(service, image, &output).await,
        };
        if started.is_err() {
            if let Err(e) = self.delete_service(service).await {
                log::warn!("service {service}: cleaning up after failed start: {e}");
            }
        }
        let pid = started?;
        log::info!("service {service}: started pid {pid} from {image_name}");
        Ok(pid)
    }

    /// Create and start `service`'s task on a fresh overlay root of an unpacked-store image.
    pub(super) async fn start_local_task(
        &self,
        service: &str,
        image: &LocalImage,
        output: &str,
    ) -> Result<u32> {
        let Some(local) = &self.local else {
            return Err(RuntimeError::CreateContainer {
                service: service.to_string(),
                message: "no unpacked image store is configured".into(),
            });
        };
        let overlay = local.fresh_root(service, image)?;
        self.create_and_start_task(service, vec![overlay_mount(&overlay)], output)
            .await
    }

    pub(super) async fn start_task(
        &self,
        service: &str,
        parent: &str,
        output: &str,
    ) -> Result<u32> {
        let mounts: Vec<ApiMount> = self
            .snapshots()
            .prepare(self.request(snap::PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: service.to_string(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| RuntimeError::PrepareSnapshot {
                service: service.to_string(),
                parent: parent.to_string(),
                message: status_text(&s),
            })?
            .into_inner()
            .mounts;
        self.create_and_start_task(service, mounts, output).await
    }

    pub(super) async fn create_and_start_task(
        &self,
        service: &str,
        mounts: Vec<ApiMount>,
        output: &str,
    ) -> Result<u32> {
        self.tasks()
            .create(self.request(api::CreateTaskRequest {
                container_id: service.to_string(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: output.to_string(),
                stderr: output.to_string(),
                ..Default::default()
            }))
            .await
            .map_err(|s| RuntimeError::CreateTask {
                service: service.to_string(),
                message: status_text(&s),
            })?;
        let started = self
            .tasks()
            .start(self.request(api::StartRequest {
                container_id: service.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| RuntimeError::StartTask {
                service: service.to_string(),
                message: status_text(&s),
            })?;
        Ok(started.into_inner().pid)
    }

    pub(super) async fn kill(&self, service: &str, signal: u32, all: bool) -> Result<()> {
        let request = self.request(api::KillRequest {
            container_id: service.to_string(),
            exec_id: String::new(),
            signal,
            all,
        });
        match self.tasks().kill(request).await {
            Ok(_) => Ok(()),
            // The process exited meanwhile.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(RuntimeError::KillTask {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// Whether the task exited within `limit`.
    pub(super) async fn wait_exit(&self, service: &str, limit: Duration) -> Result<bool> {
        let request = self.request(api::WaitRequest {
            container_id: service.to_string(),
            exec_id: String::new(),
        });
        let mut tasks = self.tasks();
        match timeout(limit, tasks.wait(request)).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(true),
            Ok(Err(s)) => Err(RuntimeError::KillTask {
                service: service.to_string(),
                message: status_text(&s),
            }),
        }
    }

    pub(super) async fn stop_service(&self, service: &str, grace: Duration) -> Result<()> {
        if let Some(process) = self.task(service).await? {
            let status = ProcessStatus::try_from(process.status).unwrap_or(ProcessStatus::Unknown);
            if status != ProcessStatus::Stopped {
                self.kill(service, SIGTERM, false).await?;
                if !self.wait_exit(service, grace).await? {
                    log::warn!("service {service}: still running {grace:?} after SIGTERM; killing");
                    // `all`: with `pid: host` the init's children do not die with it.
                    self.kill(service, SIGKILL, true).await?;
                    if !self.wait_exit(service, KILL_GRACE).await? {
                        return Err(RuntimeError::StopTimeout {
                            service: service.to_string(),
                            waited: KILL_GRACE,
                        });
                    }
                }
            }
        }
        self.delete_service(service).await
    }

    pub(super) async fn list_services(&self) -> Result<Vec<ServiceState>> {
        let error = |s: Status| RuntimeError::List {
            namespace: self.namespace.clone(),
            message: status_text(&s),
        };
        let containers = self
            .containers()
            .list(self.request(api::ListContainersRequest::default()))
            .await
            .map_err(error)?
            .into_inner()
            .containers;
        let mut tasks: HashMap<String, containerd_client::types::v1::Process> = self
            .tasks()
            .list(self.request(api::ListTasksRequest::default()))
            .await
            .map_err(error)?
            .into_inner()
            .tasks
            .into_iter()
            // containerd 1.6 fills in only `id` (= the container id for a task's init).
            .map(|p| {
                let id = if p.container_id.is_empty() {
                    p.id.clone()
                } else {
                    p.container_id.clone()
                };
                (id, p)
            })
            .collect();
        let mut states: Vec<ServiceState> = containers
            .into_iter()
            .map(|c| {
                let task = tasks.remove(&c.id);
                let status = match &task {
                    None => ServiceStatus::NoTask,
                    Some(p) => match ProcessStatus::try_from(p.status) {
                        Ok(ProcessStatus::Created) => ServiceStatus::Created,
                        Ok(ProcessStatus::Running) => ServiceStatus::Running,
                        Ok(ProcessStatus::Stopped) => ServiceStatus::Stopped,
                        Ok(ProcessStatus::Paused) => ServiceStatus::Paused,
                        Ok(ProcessStatus::Pausing) => ServiceStatus::Pausing,
                        Ok(ProcessStatus::Unknown) | Err(_) => ServiceStatus::Unknown,
                    },
                };
                let stopped = status == ServiceStatus::Stopped;
                ServiceState {
                    image: c.labels.get(LABEL_IMAGE).cloned().unwrap_or(c.image),
                    name: c.id,
                    pid: task.as_ref().map(|p| p.pid).filter(|&pid| pid > 0),
                    status,
                    exit_status: task.as_ref().filter(|_| stopped).map(|p| p.exit_status),
                    exited_at: task
                        .filter(|_| stopped)
                        .and_then(|p| system_time(p.exited_at)),
                }
            })
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once.
/// The rootfs mount of a task on an overlay root.
pub(super) fn overlay_mount(root: &OverlayRoot) -> ApiMount {
    ApiMount {
        r#type: "overlay".to_string(),
        source: "overlay".to_string(),
        options: root.options(),
        ..Default::default()
    }
}

pub(super) fn boot_id() -> Option<&'static str> {
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
        })
        .as_deref()
}

/// Create the host directories of bind mounts that do not exist yet (as Docker does for
/// `-v /host:/container`), so that a service can share a fresh directory such as
/// `/run/docker-engine`. Existing paths, files included, are left as they are.
pub(super) fn create_bind_sources(
    oci: &oci_spec::runtime::Spec,
) -> std::result::Result<(), String> {
    let binds = oci
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() == Some("bind"));
    for source in binds.filter_map(|m| m.source().as_ref()) {
        if source.is_absolute() && fs::symlink_metadata(source).is_err() {
            fs::create_dir_all(source)
                .map_err(|e| format!("creating bind source {}: {e}", source.display()))?;
        }
    }
    Ok(())
}
