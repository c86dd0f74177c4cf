//! Events: the exit subscription, with a marker event that proves it is live.

use super::*;

impl Containerd {
    pub(super) async fn publish_marker(&self, token: &str) -> Result<()> {
        let mut events = api::events_client::EventsClient::new(self.channel.clone());
        events
            .publish(self.request(api::PublishRequest {
                topic: SYNC_TOPIC.to_string(),
                event: Some(Any {
                    type_url: SYNC_TYPE_URL.to_string(),
                    value: token.as_bytes().to_vec(),
                }),
            }))
            .await
            .map_err(|s| RuntimeError::Subscribe {
                namespace: self.namespace.clone(),
                message: format!("publishing marker: {}", status_text(&s)),
            })?;
        Ok(())
    }

    pub(super) async fn subscribe_exits(&self) -> Result<ExitEvents> {
        let token = unique_suffix();
        let namespace = &self.namespace;
        let filters = vec![
            format!(r#"topic=="{EXIT_TOPIC}",namespace=="{namespace}""#),
            format!(r#"topic=="{SYNC_TOPIC}",namespace=="{namespace}""#),
        ];
        let (tx, rx) = mpsc::channel(256);
        let (live_tx, mut live_rx) = oneshot::channel();
        let client = api::events_client::EventsClient::new(self.channel.clone());
        tokio::spawn(forward_exits(
            client,
            self.request(api::SubscribeRequest { filters }),
            tx,
            token.clone(),
            live_tx,
        ));
        // containerd registers the subscription when it receives the call but says nothing
        // until the first event, so publish a marker until it comes back through the stream.
        let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
        loop {
            self.publish_marker(&token).await?;
            let wait =
                Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now()));
            match timeout(wait, &mut live_rx).await {
                Ok(Ok(Ok(()))) => return Ok(rx),
                Ok(Ok(Err(message))) => {
                    return Err(RuntimeError::Subscribe {
                        namespace: namespace.clone(),
                        message,
                    })
                }
                Ok(Err(_)) => {
                    return Err(RuntimeError::Subscribe {
                        namespace: namespace.clone(),
                        message: "event stream ended".into(),
                    })
                }
                Err(_) if Instant::now() >= deadline => {
                    return Err(RuntimeError::Subscribe {
                        namespace: namespace.clone(),
                        message: format!("not live after {SUBSCRIBE_TIMEOUT:?}"),
                    })
                }
                Err(_) => {}
            }
        }
    }
}

/// Drive one Events.Subscribe stream: report liveness when our marker comes back, forward
/// task exits, and end when the receiver is dropped or containerd closes the stream.
async fn forward_exits(
    mut client: api::events_client::EventsClient<Channel>,
    request: Request<api::SubscribeRequest>,
    tx: mpsc::Sender<ExitEvent>,
    token: String,
    live: oneshot::Sender<Result<(), String>>,
) {
    let mut live = Some(live);
    let subscribed = tokio::select! {
        _ = tx.closed() => return,
        answer = client.subscribe(request) => answer,
    };
    let mut stream = match subscribed {
        Ok(answer) => answer.into_inner(),
        Err(s) => {
            if let Some(live) = live.take() {
                let _ = live.send(Err(status_text(&s)));
            }
            return;
        }
    };
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            next = stream.message() => next,
        };
        let envelope = match next {
            Ok(Some(envelope)) => envelope,
            Ok(None) => {
                log::warn!("containerd events: stream ended");
                return;
            }
            Err(s) => {
                match live.take() {
                    Some(live) => {
                        let _ = live.send(Err(status_text(&s)));
                    }
                    None => log::warn!("containerd events: {}", status_text(&s)),
                }
                return;
            }
        };
        let Some(payload) = envelope.event else {
            continue;
        };
        match envelope.topic.as_str() {
            SYNC_TOPIC if payload.value == token.as_bytes() => {
                if let Some(live) = live.take() {
                    let _ = live.send(Ok(()));
                }
            }
            EXIT_TOPIC => {
                let exit = match TaskExit::decode(payload.value.as_slice()) {
                    Ok(exit) => exit,
                    Err(e) => {
                        log::warn!("containerd events: undecodable {}: {e}", payload.type_url);
                        continue;
                    }
                };
                // Exits of exec'd processes carry their exec id; only the task's own matters.
                if exit.id != exit.container_id {
                    continue;
                }
                let event = ExitEvent {
                    service: exit.container_id,
                    pid: exit.pid,
                    exit_status: exit.exit_status,
                    exited_at: system_time(exit.exited_at),
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}
