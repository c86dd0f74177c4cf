//! Leases and unpacking: what an import holds against the garbage collector, and
//! snapshots made from an image's layers.

use super::*;

impl Containerd {
    pub(super) async fn create_lease(&self, image: &str) -> Result<String> {
        let id = format!("ros-import-{}", unique_suffix());
        let labels = HashMap::from([(
            "containerd.io/gc.expire".to_string(),
            rfc3339(SystemTime::now() + LEASE_EXPIRY),
        )]);
        self.leases()
            .create(self.request(api::CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| RuntimeError::CreateLease {
                image: image.to_string(),
                message: status_text(&s),
            })?;
        Ok(id)
    }

    /// Hold something that already existed (and might be unreferenced) for the import.
    pub(super) async fn lease_resource(
        &self,
        lease: &str,
        image: &str,
        id: &str,
        kind: &str,
    ) -> Result<()> {
        let request = self.request(api::AddResourceRequest {
            id: lease.to_string(),
            resource: Some(api::Resource {
                id: id.to_string(),
                r#type: kind.to_string(),
            }),
        });
        self.leases()
            .add_resource(request)
            .await
            .map_err(|s| RuntimeError::CreateLease {
                image: image.to_string(),
                message: format!("holding {kind} {id}: {}", status_text(&s)),
            })?;
        Ok(())
    }

    pub(super) async fn delete_lease(&self, image: &str, lease: &str) -> Result<()> {
        // `sync`: collect garbage before answering, so a missing GC reference shows up as
        // missing content right after the import rather than at some later boot.
        let request = self.request(api::DeleteRequest {
            id: lease.to_string(),
            sync: true,
        });
        match self.leases().delete(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(RuntimeError::DeleteLease {
                image: image.to_string(),
                lease: lease.to_string(),
                message: status_text(&s),
            }),
        }
    }

    // ---- snapshots ----

    pub(super) async fn snapshot_exists(&self, key: &str) -> Result<bool, Status> {
        let request = self.request(snap::StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        });
        match self.snapshots().stat(request).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(s),
        }
    }

    pub(super) async fn remove_snapshot(&self, key: &str) -> Result<(), Status> {
        let request = self.request(snap::RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        });
        match self.snapshots().remove(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(s),
        }
    }

    /// Apply each layer onto its parent's snapshot and commit it under its chain id,
    /// skipping layers already unpacked.
    pub(super) async fn unpack(&self, lease: &str, plan: &ImagePlan) -> Result<()> {
        let mut parent = String::new();
        for ((layer, chain_id), diff_id) in
            plan.layers.iter().zip(&plan.chain_ids).zip(&plan.diff_ids)
        {
            let error = |message: String| RuntimeError::Unpack {
                image: plan.name.clone(),
                layer: layer.digest().to_string(),
                chain_id: chain_id.clone(),
                message,
            };
            let exists = self
                .snapshot_exists(chain_id)
                .await
                .map_err(|s| error(format!("stat: {}", status_text(&s))))?;
            if exists {
                let kind = format!("snapshots/{SNAPSHOTTER}");
                self.lease_resource(lease, &plan.name, chain_id, &kind)
                    .await?;
            } else {
                let key = format!("ros-unpack-{}-{chain_id}", unique_suffix());
                let applied = self.apply_layer(lease, &key, &parent, layer, chain_id, diff_id);
                if let Err(message) = applied.await {
                    if let Err(s) = self.remove_snapshot(&key).await {
                        log::warn!(
                            "snapshot {key}: removing after failed unpack: {}",
                            status_text(&s)
                        );
                    }
                    return Err(error(message));
                }
            }
            parent = chain_id.clone();
        }
        Ok(())
    }

    /// Prepare `key` on `parent`, apply `layer`, check it unpacked to `diff_id`, commit as
    /// `chain_id`. The active snapshot `key` is left for the caller to remove on error.
    pub(super) async fn apply_layer(
        &self,
        lease: &str,
        key: &str,
        parent: &str,
        layer: &Descriptor,
        chain_id: &str,
        diff_id: &str,
    ) -> Result<(), String> {
        let prepared = self
            .snapshots()
            .prepare(self.leased(
                snap::PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| format!("prepare: {}", status_text(&s)))?
            .into_inner();
        let mut differ = api::diff_client::DiffClient::new(self.channel.clone());
        let applied = differ
            .apply(self.leased(
                api::ApplyRequest {
                    diff: Some(api_descriptor(layer)),
                    mounts: prepared.mounts,
                    ..Default::default()
                },
                lease,
            ))
            .await
            .map_err(|s| format!("apply: {}", status_text(&s)))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if applied != diff_id {
            return Err(format!(
                "layer unpacked to {applied:?}; the config says {diff_id}"
            ));
        }
        let committed = self
            .snapshots()
            .commit(self.leased(
                snap::CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    name: chain_id.to_string(),
                    key: key.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await;
        match committed {
            Ok(_) => Ok(()),
            // A concurrent unpack committed the same chain id first; ours is redundant.
            Err(s) if s.code() == Code::AlreadyExists => {
                if let Err(s) = self.remove_snapshot(key).await {
                    log::warn!("snapshot {key}: removing duplicate: {}", status_text(&s));
                }
                Ok(())
            }
            Err(s) => Err(format!("commit: {}", status_text(&s))),
        }
    }

    // ---- images ----
}
