//! The snapshot client: one gRPC stream to the controller's
//! `SnapshotService.Subscribe`. Says Hello, applies each snapshot (ports
//! bound before the swap) and answers Ack only once it serves it, or Nack
//! with the reason while the previous table keeps serving.
//!
//! Guarantees: the data plane keeps serving its last good table while
//! disconnected; reconnects back off exponentially (100 ms doubling to 5 s,
//! with jitter) and reset after a session that delivered a snapshot.

use std::{sync::Arc, time::Duration};

use gatehouse_snapshot::{
    Ack, DataPlaneMessage, Hello, Nack, Snapshot, data_plane_message::Message,
    snapshot_service_client::SnapshotServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::{Applied, Dataplane};

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Controller URL, e.g. `http://127.0.0.1:18000`.
    pub controller: String,
    pub group: String,
    pub node_id: String,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("invalid controller URL: {0}")]
    Url(String),
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("controller closed the stream")]
    Closed,
}

/// Follows the controller forever, reconnecting with backoff.
pub async fn run_client(dataplane: Arc<Dataplane>, config: ClientConfig) {
    let mut backoff = Backoff::default();
    loop {
        let mut subscribed = false;
        let error = run_session(&dataplane, &config, &mut subscribed).await;
        // A session that got as far as the stream resets the backoff, even
        // when it brought nothing new (same version after a reconnect).
        if subscribed {
            backoff = Backoff::default();
        }
        let delay = backoff.next_delay(rand::random());
        tracing::warn!(controller = %config.controller, %error, ?delay, "snapshot stream ended; reconnecting");
        tokio::time::sleep(delay).await;
    }
}

async fn run_session(
    dataplane: &Arc<Dataplane>,
    config: &ClientConfig,
    subscribed: &mut bool,
) -> SessionError {
    match follow(dataplane, config, subscribed).await {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

async fn follow(
    dataplane: &Arc<Dataplane>,
    config: &ClientConfig,
    subscribed: &mut bool,
) -> Result<std::convert::Infallible, SessionError> {
    let endpoint = tonic::transport::Endpoint::from_shared(config.controller.clone())
        .map_err(|e| SessionError::Url(e.to_string()))?;
    let mut client = SnapshotServiceClient::new(endpoint.connect().await?);
    let (outbox, messages) = mpsc::channel(8);
    let hello = Message::Hello(Hello {
        group: config.group.clone(),
        node_id: config.node_id.clone(),
        applied_version: dataplane.applied_version().unwrap_or_default(),
        features: vec![
            gatehouse_snapshot::FEATURE_FILTERS.to_owned(),
            gatehouse_snapshot::FEATURE_ENDPOINT_UPDATES.to_owned(),
            gatehouse_snapshot::FEATURE_PROXY_PROTOCOL.to_owned(),
        ],
    });
    send(&outbox, hello).await?;
    let mut snapshots = client
        .subscribe(ReceiverStream::new(messages))
        .await?
        .into_inner();
    tracing::info!(controller = %config.controller, group = %config.group, "subscribed");
    *subscribed = true;
    while let Some(snapshot) = snapshots.message().await? {
        let reply = apply_and_reply(dataplane, snapshot).await;
        send(&outbox, reply).await?;
    }
    Err(SessionError::Closed)
}

async fn send(
    outbox: &mpsc::Sender<DataPlaneMessage>,
    message: Message,
) -> Result<(), SessionError> {
    let message = DataPlaneMessage {
        message: Some(message),
    };
    outbox.send(message).await.map_err(|_| SessionError::Closed)
}

/// Applies one snapshot and builds the answer to it.
pub async fn apply_and_reply(dataplane: &Arc<Dataplane>, snapshot: Snapshot) -> Message {
    let version = snapshot.version.clone();
    let span = tracing::info_span!("apply", group = %snapshot.group, %version);
    match dataplane.apply(snapshot).instrument(span).await {
        Ok(Applied::Swapped | Applied::Unchanged) => Message::Ack(Ack { version }),
        Err(error) => {
            tracing::warn!(%version, %error, "snapshot rejected");
            Message::Nack(Nack {
                version,
                reason: error.to_string(),
            })
        }
    }
}

/// Capped exponential backoff with jitter in [delay/2, delay].
#[derive(Debug, Clone, Copy)]
struct Backoff {
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            current: INITIAL_BACKOFF,
        }
    }
}

impl Backoff {
    /// The next delay; `roll` is any random u32.
    fn next_delay(&mut self, roll: u32) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(MAX_BACKOFF);
        let half = ceiling / 2;
        half + half.mul_f64(f64::from(roll) / f64::from(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_range() {
        let mut backoff = Backoff::default();
        let ceilings: Vec<_> = (0..8).map(|_| backoff.next_delay(u32::MAX)).collect();
        assert_eq!(ceilings[0], Duration::from_millis(100));
        assert_eq!(ceilings[1], Duration::from_millis(200));
        assert_eq!(ceilings[7], MAX_BACKOFF);
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(0), Duration::from_millis(50));
    }
}
