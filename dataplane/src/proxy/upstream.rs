//! Pooled upstream connections. HTTP/1.1 goes through hyper-util's pooled
//! client (keep-alive, keyed by endpoint address). h2c keeps one multiplexed
//! HTTP/2 connection per endpoint, so the request can carry the client's
//! `:authority` while the socket goes to the endpoint (RFC 9113 §8.3.1).

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::{Request, Response, body::Incoming, client::conn::http2};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {0} failed: {1}")]
    Connect(SocketAddr, String),
    #[error("upstream request failed: {0}")]
    Request(String),
}

pub struct Upstream {
    http1: Client<HttpConnector, Incoming>,
    h2: ArcSwap<HashMap<SocketAddr, Arc<H2Slot>>>,
}

#[derive(Default)]
struct H2Slot {
    sender: ArcSwapOption<http2::SendRequest<Incoming>>,
    /// Taken only when no live connection exists, so one request connects
    /// and the others wait for it instead of opening their own.
    connecting: tokio::sync::Mutex<()>,
}

impl H2Slot {
    fn live(&self) -> Option<http2::SendRequest<Incoming>> {
        self.sender
            .load()
            .as_ref()
            .filter(|s| !s.is_closed())
            .map(|s| (**s).clone())
    }
}

impl Default for Upstream {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http1 = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            http1,
            h2: ArcSwap::default(),
        }
    }
}

impl Upstream {
    /// Sends an HTTP/1.1 request whose URI names the endpoint `address`.
    pub async fn send_http1(
        &self,
        address: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.http1.request(request).await.map_err(|e| {
            let detail =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            if e.is_connect() {
                UpstreamError::Connect(address, detail)
            } else {
                UpstreamError::Request(detail)
            }
        })
    }

    /// Sends an HTTP/2 request to `address` over its shared connection.
    pub async fn send_h2c(
        &self,
        address: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.h2_sender(address).await?;
        sender
            .ready()
            .await
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Request(e.to_string()))
    }

    async fn h2_sender(
        &self,
        address: SocketAddr,
    ) -> Result<http2::SendRequest<Incoming>, UpstreamError> {
        let slot = self.slot(address);
        if let Some(sender) = slot.live() {
            return Ok(sender);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(sender) = slot.live() {
            return Ok(sender);
        }
        let connect_error =
            |e: &dyn std::fmt::Display| UpstreamError::Connect(address, e.to_string());
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| connect_error(&e))?;
        stream.set_nodelay(true).map_err(|e| connect_error(&e))?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(&e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%address, %error, "h2c upstream connection ended");
            }
        });
        slot.sender.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    fn slot(&self, address: SocketAddr) -> Arc<H2Slot> {
        if let Some(slot) = self.h2.load().get(&address) {
            return slot.clone();
        }
        self.h2.rcu(|slots| {
            let mut slots = HashMap::clone(slots);
            slots.entry(address).or_default();
            slots
        });
        self.h2.load().get(&address).cloned().unwrap_or_default()
    }
}
