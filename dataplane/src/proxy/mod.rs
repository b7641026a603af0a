//! The proxy: applies tables (listeners first, then one atomic swap) and
//! serves requests from whichever table is current.

mod activity;
mod body;
mod date;
mod filters;
mod handler;
mod headers;
mod http1_client;
mod listeners;
mod passthrough;
pub mod proxy_protocol;
mod request_body;
mod retry;
mod tcp;
#[cfg(test)]
mod test_io;
mod upgrade;
mod upstream;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use gatehouse_snapshot::Snapshot;

pub use body::ProxyBody;
pub use handler::ProxyError;
pub use headers::{add_forwarding, remove_hop_by_hop};
pub use listeners::BindError;

use crate::{
    stats::StatsRegistry,
    table::{BuildError, Table},
};
use listeners::Listeners;
use upstream::Upstream;

/// What the request path knows about the connection a request came on.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    /// The socket it was accepted on.
    pub port: crate::table::PortKey,
    pub client: std::net::SocketAddr,
    pub tls: bool,
    /// The SNI name of a TLS connection.
    pub sni: Option<Arc<str>>,
}

/// Why a snapshot was not applied; the previous table keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid snapshot: {0}")]
    Invalid(#[from] BuildError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Every endpoint address of `table`'s clusters: the pools to keep.
fn endpoint_addresses(table: &Table) -> HashSet<std::net::SocketAddr> {
    table
        .clusters()
        .iter()
        .flat_map(|c| c.endpoints.iter().map(|e| e.address))
        .collect()
}

/// What `apply` did with a snapshot it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Swapped,
    /// Same version as the one serving: nothing rebuilt.
    Unchanged,
}

/// One data plane: the current table, its listeners, upstream pools and
/// statistics.
pub struct Dataplane {
    table: ArcSwap<Table>,
    ready: AtomicBool,
    /// Serializes applies; never touched by the request path.
    listeners: tokio::sync::Mutex<Listeners>,
    upstream: Upstream,
    stats: StatsRegistry,
    acks: AtomicU64,
    nacks: AtomicU64,
    endpoint_updates: AtomicU64,
    /// Mirrored requests still running, capped so that a slow mirror can
    /// never pile up connections and tasks.
    mirrors_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    options: Options,
}

/// How a data plane serves, beyond what its snapshots say.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bind the snapshot's unspecified-address ports (0.0.0.0, ::) on this
    /// address instead: several groups' data planes on one host, each on
    /// its own address.
    pub listen_address: Option<std::net::IpAddr>,
    /// Longest a client connection may take to send a request head,
    /// counted from when the connection is ready for one: from its accept,
    /// and from the end of each response (on HTTP/2, of the last open
    /// stream). A connection that sends no complete head in time (one left
    /// idle, or a client sending its head a byte at a time) is closed, an
    /// HTTP/2 one after a GOAWAY, so idle and slow clients cannot hold
    /// connections without end.
    pub client_header_timeout: std::time::Duration,
    /// Longest data sent to a client may wait for the client to take it
    /// (TCP_USER_TIMEOUT): a client that stops reading its response, with
    /// the socket buffers full, or one gone without a FIN or reset, loses
    /// its connection, and its request's upstream connection is closed, so
    /// that slow readers cannot hold connections on both sides without end.
    /// One that reads slowly but keeps reading is not cut.
    pub client_send_timeout: std::time::Duration,
    /// Longest a request body may send nothing while the upstream waits
    /// for it (nginx's `client_body_timeout`): the request is answered 408
    /// and its connection closed, so that a client trickling a body, or
    /// stopping part way, cannot hold a connection on both sides. Only the
    /// wait between two reads counts; a slow upstream does not. gRPC
    /// requests are not timed: their client streams may pause for as long
    /// as their calls last.
    pub client_body_timeout: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen_address: None,
            client_header_timeout: std::time::Duration::from_secs(60),
            client_send_timeout: std::time::Duration::from_secs(60),
            client_body_timeout: std::time::Duration::from_secs(60),
        }
    }
}

impl Dataplane {
    pub fn new() -> Arc<Self> {
        Self::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> Arc<Self> {
        Arc::new(Self {
            table: ArcSwap::from_pointee(Table::empty()),
            ready: AtomicBool::new(false),
            listeners: Default::default(),
            upstream: Upstream::default(),
            stats: StatsRegistry::default(),
            acks: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            endpoint_updates: AtomicU64::new(0),
            mirrors_in_flight: Arc::default(),
            options,
        })
    }

    /// Validates and builds `snapshot`, binds its new ports, swaps it in and
    /// stops listening on ports it no longer has; or, for an endpoint
    /// update, swaps in the serving table with those endpoints replaced. On
    /// error nothing changes. An empty `version` of a whole snapshot is
    /// filled in with the content version.
    pub async fn apply(self: &Arc<Self>, mut snapshot: Snapshot) -> Result<Applied, ApplyError> {
        let mut listeners = self.listeners.lock().await;
        let result = if snapshot.is_endpoint_update() {
            self.apply_endpoint_update(&snapshot)
        } else {
            if snapshot.version.is_empty() {
                gatehouse_snapshot::seal(&mut snapshot);
            }
            self.apply_locked(&mut listeners, snapshot).await
        };
        drop(listeners);
        let counter = if result.is_ok() {
            &self.acks
        } else {
            &self.nacks
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn apply_locked(
        self: &Arc<Self>,
        listeners: &mut Listeners,
        snapshot: Snapshot,
    ) -> Result<Applied, ApplyError> {
        let current = self.table.load_full();
        if self.is_ready() && current.version() == snapshot.version {
            return Ok(Applied::Unchanged);
        }
        let version = snapshot.version.clone();
        let mut snapshot = snapshot;
        if let Some(address) = self.options.listen_address {
            for port in &mut snapshot.ports {
                if port
                    .address
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_unspecified())
                {
                    port.address = address.to_string();
                }
            }
        }
        let table = Table::build_with(Arc::new(snapshot), Some(&current), &self.stats)?;
        let bound = listeners
            .bind_missing(table.port_keys(), self.options.client_send_timeout)
            .await?;
        let kept = table.port_keys().to_vec();
        let endpoints = endpoint_addresses(&table);
        self.table.store(Arc::new(table));
        self.upstream.retain(&endpoints);
        listeners.start(bound, self);
        listeners.stop_removed(&kept);
        self.ready.store(true, Ordering::Release);
        tracing::info!(%version, "snapshot applied");
        Ok(Applied::Swapped)
    }

    /// Called with the listeners' lock held, so that no whole snapshot is
    /// applied meanwhile.
    fn apply_endpoint_update(&self, update: &Snapshot) -> Result<Applied, ApplyError> {
        let current = self.table.load_full();
        if !self.is_ready() {
            return Err(ApplyError::Invalid(crate::table::BuildError::new(
                "Endpoint update".to_owned(),
                "base_version",
                "this data plane serves no snapshot yet",
            )));
        }
        if current.version() == update.version {
            return Ok(Applied::Unchanged);
        }
        let crate::table::Updated { table, removed } = current.with_endpoint_update(update)?;
        // Pools are per address, and another cluster may still use one:
        // what the new table still has is kept, as after a whole snapshot.
        let kept = (!removed.is_empty()).then(|| endpoint_addresses(&table));
        self.table.store(Arc::new(table));
        if let Some(kept) = kept {
            self.upstream.retain(&kept);
        }
        self.endpoint_updates.fetch_add(1, Ordering::Relaxed);
        tracing::info!(version = %update.version, clusters = update.endpoint_updates.len(), "endpoint update applied");
        Ok(Applied::Swapped)
    }

    /// Endpoint updates applied so far.
    pub fn endpoint_updates(&self) -> u64 {
        self.endpoint_updates.load(Ordering::Relaxed)
    }

    /// The table serving now.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// True once a snapshot has been applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The applied version, if any.
    pub fn applied_version(&self) -> Option<String> {
        self.is_ready()
            .then(|| self.table.load().version().to_owned())
    }

    pub fn stats(&self) -> &StatsRegistry {
        &self.stats
    }

    /// (acks, nacks) counted so far.
    pub fn apply_counts(&self) -> (u64, u64) {
        (
            self.acks.load(Ordering::Relaxed),
            self.nacks.load(Ordering::Relaxed),
        )
    }

    /// Every `every`, closes the idle upstream connections their upstreams
    /// have closed (see `Upstream::close_idle_closed`); runs until the data
    /// plane is dropped.
    pub async fn sweep_idle_connections(self: Arc<Self>, every: std::time::Duration) {
        let dataplane = Arc::downgrade(&self);
        drop(self);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(dataplane) = dataplane.upgrade() else {
                return;
            };
            dataplane.upstream.close_idle_closed();
        }
    }

    /// Stops accepting on every port and waits for open connections to
    /// finish their in-flight requests.
    pub async fn shutdown(&self) {
        self.listeners.lock().await.stop_all().await;
    }
}
