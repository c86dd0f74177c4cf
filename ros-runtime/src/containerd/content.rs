//! Content: blobs in containerd's content store (exists, read, write from memory or an
//! archive, GC labels).

use super::*;

/// One Content.Write session: Stat, Write..., Commit, each answered before the next.
pub(super) struct BlobUpload {
    tx: mpsc::Sender<api::WriteContentRequest>,
    responses: Streaming<api::WriteContentResponse>,
    reference: String,
    digest: String,
    total: i64,
    offset: i64,
}

impl BlobUpload {
    /// Open a write session; `None` when containerd already has the blob.
    pub(super) async fn start(
        client: &Containerd,
        lease: &str,
        digest: &str,
        total: u64,
    ) -> Result<Option<Self>> {
        let write_error = |message: String| RuntimeError::WriteBlob {
            digest: digest.to_string(),
            message,
        };
        let reference = format!("ros-import-{digest}");
        let (tx, rx) = mpsc::channel(2);
        // Queue the first message before making the call: tonic waits for response headers,
        // and containerd sends them only after it has read a message.
        tx.send(api::WriteContentRequest {
            action: api::WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total: total as i64,
            expected: digest.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|_| write_error("request stream closed".into()))?;
        let request = client.leased(ReceiverStream::new(rx), lease);
        let responses = match client.content().write(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(None),
            Err(s) => return Err(write_error(status_text(&s))),
        };
        let mut upload = Self {
            tx,
            responses,
            reference,
            digest: digest.to_string(),
            total: total as i64,
            offset: 0,
        };
        match upload.answer().await {
            Ok(_) => Ok(Some(upload)),
            Err(s) if s.code() == Code::AlreadyExists => Ok(None),
            Err(s) => Err(write_error(status_text(&s))),
        }
    }

    pub(super) async fn exchange(
        &mut self,
        request: api::WriteContentRequest,
    ) -> Result<api::WriteContentResponse, Status> {
        // A failed send means containerd ended the stream; its status comes from the answer.
        let _ = self.tx.send(request).await;
        self.answer().await
    }

    pub(super) async fn answer(&mut self) -> Result<api::WriteContentResponse, Status> {
        self.responses
            .message()
            .await?
            .ok_or_else(|| Status::unknown("write stream ended without an answer"))
    }

    pub(super) fn error(&self, message: String) -> RuntimeError {
        RuntimeError::WriteBlob {
            digest: self.digest.clone(),
            message,
        }
    }

    pub(super) async fn write(&mut self, data: Vec<u8>) -> Result<()> {
        let len = data.len() as i64;
        let answer = self
            .exchange(api::WriteContentRequest {
                action: api::WriteAction::Write as i32,
                r#ref: self.reference.clone(),
                offset: self.offset,
                data,
                ..Default::default()
            })
            .await
            .map_err(|s| self.error(status_text(&s)))?;
        self.offset += len;
        if answer.offset != self.offset {
            return Err(self.error(format!(
                "containerd is at offset {}, expected {}",
                answer.offset, self.offset
            )));
        }
        Ok(())
    }

    pub(super) async fn commit(mut self) -> Result<()> {
        let request = api::WriteContentRequest {
            action: api::WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.digest.clone(),
            ..Default::default()
        };
        match self.exchange(request).await {
            Ok(answer) if answer.digest == self.digest => Ok(()),
            Ok(answer) => Err(self.error(format!("containerd computed {}", answer.digest))),
            // Written meanwhile by a concurrent import: same bytes.
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(self.error(status_text(&s))),
        }
    }
}

impl Containerd {
    pub(super) async fn blob_exists(&self, digest: &str) -> Result<bool> {
        let request = self.request(api::InfoRequest {
            digest: digest.to_string(),
        });
        match self.content().info(request).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(RuntimeError::ReadBlob {
                digest: digest.to_string(),
                message: status_text(&s),
            }),
        }
    }

    /// A metadata blob's bytes, checked against its digest.
    pub(super) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let error = |message: String| RuntimeError::ReadBlob {
            digest: digest.to_string(),
            message,
        };
        let request = self.request(api::ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        });
        let mut stream = self
            .content()
            .read(request)
            .await
            .map_err(|s| error(status_text(&s)))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(piece) = stream.message().await.map_err(|s| error(status_text(&s)))? {
            data.extend_from_slice(&piece.data);
            if data.len() > METADATA_LIMIT {
                return Err(error(format!("larger than {METADATA_LIMIT} bytes")));
            }
        }
        if sha256_digest(&data) != digest {
            return Err(error("content does not match its digest".into()));
        }
        Ok(data)
    }

    pub(super) async fn write_blob_from_memory(
        &self,
        lease: &str,
        digest: &str,
        data: &[u8],
    ) -> Result<()> {
        let Some(mut upload) = BlobUpload::start(self, lease, digest, data.len() as u64).await?
        else {
            return Ok(());
        };
        for chunk in data.chunks(CHUNK_SIZE) {
            upload.write(chunk.to_vec()).await?;
        }
        upload.commit().await
    }

    /// Stream `wanted` blobs out of the archive into the content store; the archive is read
    /// on a blocking thread, one chunk ahead of the gRPC writes.
    pub(super) async fn write_blobs_from_archive(
        &self,
        lease: &str,
        archive_path: &Path,
        wanted: HashSet<String>,
    ) -> Result<()> {
        let (tx, mut rx) = mpsc::channel(4);
        let path = archive_path.to_path_buf();
        let wanted_by_reader = wanted.clone();
        let reader = tokio::task::spawn_blocking(move || {
            archive::stream_blobs(&path, &wanted_by_reader, &tx)
        });
        let mut written = HashSet::new();
        let upload_result = async {
            let mut upload: Option<BlobUpload> = None;
            let mut current = String::new();
            while let Some(piece) = rx.recv().await {
                match piece {
                    BlobPiece::Start { digest, size } => {
                        upload = BlobUpload::start(self, lease, &digest, size).await?;
                        current = digest;
                    }
                    BlobPiece::Data(data) => {
                        if let Some(upload) = upload.as_mut() {
                            upload.write(data).await?;
                        }
                    }
                    BlobPiece::End => {
                        if let Some(upload) = upload.take() {
                            upload.commit().await?;
                        }
                        written.insert(std::mem::take(&mut current));
                    }
                }
            }
            Ok::<_, RuntimeError>(())
        }
        .await;
        // Unblocks the reader if the upload stopped early.
        drop(rx);
        let read_result = reader.await.map_err(|e| RuntimeError::ReadArchive {
            path: archive_path.to_path_buf(),
            message: e.to_string(),
        })?;
        upload_result?;
        read_result?;
        if let Some(digest) = wanted.difference(&written).next() {
            return Err(RuntimeError::InvalidArchive {
                path: archive_path.to_path_buf(),
                reason: format!("blob {digest} disappeared between reads"),
            });
        }
        Ok(())
    }

    pub(super) async fn label_blob(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let request = self.request(api::UpdateRequest {
            info: Some(api::Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths }),
        });
        self.content()
            .update(request)
            .await
            .map_err(|s| RuntimeError::LabelBlob {
                digest: digest.to_string(),
                message: status_text(&s),
            })?;
        Ok(())
    }

    // ---- leases ----
}
