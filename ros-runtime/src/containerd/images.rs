//! Image records: import an archive, save and look up an image, resolve a reference
//! (the unpacked store first).

use super::*;

impl Containerd {
    pub(super) async fn get_image(&self, name: &str) -> Result<Option<api::Image>> {
        let request = self.request(api::GetImageRequest {
            name: name.to_string(),
        });
        match self.images().get(request).await {
            Ok(answer) => Ok(answer.into_inner().image),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::GetImage {
                image: name.to_string(),
                message: status_text(&s),
            }),
        }
    }

    pub(super) async fn save_image(&self, plan: &ImagePlan) -> Result<()> {
        let image = api::Image {
            name: plan.name.clone(),
            target: Some(api_descriptor(&plan.target)),
            ..Default::default()
        };
        let error = |s: Status| RuntimeError::SaveImage {
            image: plan.name.clone(),
            message: status_text(&s),
        };
        let created = self
            .images()
            .create(self.request(api::CreateImageRequest {
                image: Some(image.clone()),
                ..Default::default()
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                self.images()
                    .update(self.request(api::UpdateImageRequest {
                        image: Some(image),
                        ..Default::default()
                    }))
                    .await
                    .map_err(error)?;
                Ok(())
            }
            Err(s) => Err(error(s)),
        }
    }

    pub(super) async fn import(&self, path: &Path) -> Result<ImportOutcome> {
        let owned = path.to_path_buf();
        let scan = tokio::task::spawn_blocking(move || archive::scan(&owned))
            .await
            .map_err(|e| RuntimeError::ReadArchive {
                path: path.to_path_buf(),
                message: e.to_string(),
            })??;
        let plan = scan.plan()?;
        let top = plan
            .top_chain_id()
            .ok_or_else(|| RuntimeError::InvalidArchive {
                path: path.to_path_buf(),
                reason: "the image has no layers".into(),
            })?
            .to_string();
        let digest = plan.target.digest().to_string();
        let outcome = |skipped| ImportOutcome {
            name: plan.name.clone(),
            manifest_digest: digest.clone(),
            skipped,
        };
        if let Some(existing) = self.get_image(&plan.name).await? {
            let same = existing.target.is_some_and(|t| t.digest == digest);
            let unpacked = self
                .snapshot_exists(&top)
                .await
                .map_err(|s| RuntimeError::Unpack {
                    image: plan.name.clone(),
                    layer: plan
                        .layers
                        .last()
                        .map(|l| l.digest().to_string())
                        .unwrap_or_default(),
                    chain_id: top.clone(),
                    message: status_text(&s),
                })?;
            if same && unpacked {
                log::info!("image {}: {digest} already imported", plan.name);
                return Ok(outcome(true));
            }
        }
        let lease = self.create_lease(&plan.name).await?;
        let imported = self.import_leased(&lease, &scan, &plan, &top).await;
        let released = self.delete_lease(&plan.name, &lease).await;
        imported?;
        released?;
        log::info!("image {}: imported {digest}", plan.name);
        Ok(outcome(false))
    }

    pub(super) async fn import_leased(
        &self,
        lease: &str,
        scan: &ArchiveScan,
        plan: &ImagePlan,
        top: &str,
    ) -> Result<()> {
        let mut from_archive = HashSet::new();
        for blob in plan.blobs() {
            let digest = blob.digest().to_string();
            if self.blob_exists(&digest).await? {
                self.lease_resource(lease, &plan.name, &digest, "content")
                    .await?;
            } else if let Some(data) = scan.in_memory(&digest) {
                self.write_blob_from_memory(lease, &digest, data).await?;
            } else {
                from_archive.insert(digest);
            }
        }
        if !from_archive.is_empty() {
            log::debug!(
                "image {}: streaming {} blobs from {}{}",
                plan.name,
                from_archive.len(),
                scan.path().display(),
                if scan.is_gzip() { " (gzip)" } else { "" }
            );
            self.write_blobs_from_archive(lease, scan.path(), from_archive)
                .await?;
        }

        // GC references: image -> [index ->] manifest -> config + layers; config -> snapshot.
        if !plan.index_children.is_empty() {
            let labels = plan
                .index_children
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    (
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        d.digest().to_string(),
                    )
                })
                .collect();
            self.label_blob(plan.target.digest().as_ref(), labels)
                .await?;
        }
        let mut labels: HashMap<String, String> = plan
            .layers
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    d.digest().to_string(),
                )
            })
            .collect();
        labels.insert(
            "containerd.io/gc.ref.content.config".into(),
            plan.config.digest().to_string(),
        );
        self.label_blob(plan.manifest.digest().as_ref(), labels)
            .await?;
        let labels = HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
            top.to_string(),
        )]);
        self.label_blob(plan.config.digest().as_ref(), labels)
            .await?;

        self.unpack(lease, plan).await?;
        self.save_image(plan).await
    }

    /// Look the image up (as named, then in docker.io form) and read its config.
    pub(super) async fn resolve_image(&self, reference: &str) -> Result<ResolvedImage> {
        let mut found = None;
        for name in archive::name_candidates(reference) {
            if let Some(image) = self.get_image(&name).await? {
                found = Some((name, image));
                break;
            }
        }
        let Some((name, image)) = found else {
            return Err(RuntimeError::ImageMissing {
                image: reference.to_string(),
            });
        };
        let invalid = |reason: String| RuntimeError::InvalidImage {
            image: name.clone(),
            reason,
        };
        let target = image
            .target
            .ok_or_else(|| invalid("the image record has no target".into()))?;
        let mut manifest_digest = target.digest.clone();
        if archive::is_index(&target.media_type) {
            let data = self.read_blob(&target.digest).await?;
            let index: ImageIndex = serde_json::from_slice(&data)
                .map_err(|e| invalid(format!("index {}: {e}", target.digest)))?;
            let chosen = archive::select_platform(index.manifests()).ok_or_else(|| {
                invalid(format!("no manifest for linux/{}", archive::host_arch()))
            })?;
            manifest_digest = chosen.digest().to_string();
        }
        let data = self.read_blob(&manifest_digest).await?;
        let manifest: ImageManifest = serde_json::from_slice(&data)
            .map_err(|e| invalid(format!("manifest {manifest_digest}: {e}")))?;
        let config_digest = manifest.config().digest().to_string();
        let data = self.read_blob(&config_digest).await?;
        let config: ImageConfiguration = serde_json::from_slice(&data)
            .map_err(|e| invalid(format!("config {config_digest}: {e}")))?;
        let top_chain_id = archive::chain_ids(config.rootfs().diff_ids())
            .pop()
            .ok_or_else(|| invalid("the image has no layers".into()))?;
        Ok(ResolvedImage {
            name,
            config,
            top_chain_id,
        })
    }

    // ---- services ----
}
