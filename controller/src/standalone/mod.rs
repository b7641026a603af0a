//! Standalone mode: the whole pipeline from a directory of manifests, with
//! no cluster.
//!
//! ```text
//! DIR --scan--> Store --compile--> snapshots --hub/gRPC--> data plane children
//!  ^ notify (debounced)              \--> statuses --> GET /debug/status
//! ```
//!
//! The contract (flags, readiness, status output) is the one in DESIGN.md.

mod source;
mod supervisor;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, RwLock},
};

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

pub use source::DirSource;
pub use supervisor::Supervisor;

use crate::{
    admin,
    compile::{CompileOptions, Compiled, compile},
    runtime,
    serve::SnapshotHub,
    status::{self, StatusEntry},
};

#[derive(Debug, Clone, clap::Args)]
pub struct StandaloneArgs {
    /// Directory of manifests (YAML or JSON, several documents per file).
    #[arg(long)]
    pub dir: PathBuf,
    /// Admin listener: /readyz and /debug/*.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Listener port P is bound at P + N.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Address Gateway listeners bind when a Gateway has no spec.addresses.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_address: IpAddr,
    /// Address of the snapshot gRPC server data planes connect to.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub grpc: SocketAddr,
    /// Data plane binary; defaults to `gatehouse-dataplane` beside this one.
    #[arg(long)]
    pub dataplane_bin: Option<PathBuf>,
    /// Start no data planes; external ones connect to `--grpc` instead.
    #[arg(long)]
    pub no_dataplanes: bool,
}

/// Runs until SIGTERM or SIGINT, then stops the data planes.
pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("manifest directory {}", args.dir.display()))?;
    let hub = SnapshotHub::new();
    let grpc_addr = runtime::start_grpc(args.grpc, hub.clone()).await?;
    let view = Arc::new(RwLock::new(admin::View::default()));
    let admin_addr = runtime::start_admin(args.admin, hub.clone(), view.clone()).await?;
    info!(%grpc_addr, %admin_addr, dir = %dir.display(), "standalone controller started");
    // The readiness contract for scripts and tests that pass port 0.
    println!("admin listening on {admin_addr}");
    println!("snapshot server listening on {grpc_addr}");

    let mut supervisor = match args.no_dataplanes {
        true => None,
        false => Some(Supervisor::new(
            dataplane_binary(args.dataplane_bin.clone())?,
            format!("http://{grpc_addr}"),
        )),
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Our own scan opens and reads every file: access events must not
        // trigger another scan.
        let relevant = match event {
            Ok(event) => !matches!(event.kind, notify::EventKind::Access(_)),
            Err(_) => true,
        };
        if relevant {
            let _ = events_tx.send(());
        }
    })
    .context("starting the directory watcher")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", dir.display()))?;

    let mut cycle = Cycle {
        source: DirSource::new(&dir),
        options: CompileOptions {
            port_offset: args.port_offset,
            listen_address: args.listen_address,
            ..Default::default()
        },
        previous: runtime::StatusHistory::default(),
        hub,
        view,
        statuses: Vec::new(),
        gateway_groups: BTreeMap::new(),
        shown_rejections: BTreeMap::new(),
    };
    let shutdown = runtime::shutdown_signal();
    tokio::pin!(shutdown);
    let mut hub_changes = cycle.hub.watch_changes();
    'files: loop {
        cycle.run_once(supervisor.as_mut()).await;
        loop {
            tokio::select! {
                woke = events.recv() => {
                    if woke.is_none() {
                        break 'files;
                    }
                    runtime::debounce(&mut events).await;
                    break;
                }
                // A data plane acknowledged or rejected a snapshot.
                _ = hub_changes.changed() => cycle.refresh_rejections(),
                _ = &mut shutdown => break 'files,
            }
        }
    }
    info!("stopping");
    if let Some(supervisor) = supervisor.as_mut() {
        supervisor.stop_all().await;
    }
    Ok(())
}

/// One scan → compile → publish pass, and the statuses it produced.
struct Cycle {
    source: DirSource,
    options: CompileOptions,
    previous: runtime::StatusHistory,
    hub: Arc<SnapshotHub>,
    view: Arc<RwLock<admin::View>>,
    /// As compiled, before the data planes' rejections.
    statuses: Vec<StatusEntry>,
    gateway_groups: BTreeMap<(String, String), Vec<String>>,
    shown_rejections: BTreeMap<String, (String, String)>,
}

impl Cycle {
    async fn run_once(&mut self, supervisor: Option<&mut Supervisor>) {
        let now = runtime::now();
        let store = match self.source.scan(now) {
            Ok(store) => store,
            Err(error) => {
                error!(%error, "cannot read the manifest directory; keeping the current configuration");
                return;
            }
        };
        self.options.now = runtime::rfc3339(now);
        let Compiled {
            snapshots,
            mut statuses,
            gateway_groups,
        } = compile(&store, &self.options);
        self.previous.carry(&mut statuses);
        let snapshots: crate::serve::Snapshots = snapshots
            .into_iter()
            .map(|(group, snapshot)| {
                let snapshot = crate::group_snapshot::GroupSnapshot::compiled(snapshot);
                (group, std::sync::Arc::new(snapshot))
            })
            .collect();
        let groups: BTreeSet<String> = snapshots.keys().cloned().collect();
        for snapshot in snapshots.values() {
            info!(group = %snapshot.group(), version = %snapshot.version(), "compiled");
        }
        // The view first: once a data plane acknowledges the new version
        // (and /readyz turns 200), /debug/status must already be current, and
        // readiness must already wait for the data planes of new groups.
        {
            let mut view = self.view.write().expect("view lock");
            view.statuses = statuses.iter().map(StatusEntry::to_debug_json).collect();
            view.snapshots = snapshots.clone();
            view.expected_nodes = match supervisor {
                Some(_) => groups
                    .iter()
                    .map(|g| (g.clone(), Supervisor::node_id(g)))
                    .collect(),
                None => connected_nodes(&self.hub, &groups),
            };
            view.compiled = true;
        }
        self.statuses = statuses;
        self.gateway_groups = gateway_groups;
        // The view now shows the compiled statuses alone.
        self.shown_rejections.clear();
        self.hub.publish(&snapshots);
        // After the publish: a rejection of the version just replaced no
        // longer counts, and one of the new version can only come later
        // (through `hub_changes`), never before a data plane could ACK it.
        self.refresh_rejections();
        if let Some(supervisor) = supervisor {
            supervisor.ensure(&groups).await;
        }
    }

    /// Shows the data planes' rejections of the current snapshots in the
    /// Gateways' `Programmed` conditions (and lifts them once applied).
    fn refresh_rejections(&mut self) {
        let rejections = self.hub.rejections();
        if rejections.is_empty() && self.shown_rejections.is_empty() {
            return;
        }
        let now = runtime::rfc3339(runtime::now());
        let statuses =
            status::with_rejections(&self.statuses, &self.gateway_groups, &rejections, &now);
        self.view.write().expect("view lock").statuses =
            statuses.iter().map(StatusEntry::to_debug_json).collect();
        self.shown_rejections = rejections;
    }
}

/// Without supervised children, readiness waits for the data planes that
/// are connected now (at least one per group is not required).
fn connected_nodes(hub: &SnapshotHub, groups: &BTreeSet<String>) -> Vec<(String, String)> {
    hub.nodes()
        .into_iter()
        .filter(|n| n.connected && groups.contains(&n.group))
        .map(|n| (n.group, n.node_id))
        .collect()
}

fn dataplane_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let me = std::env::current_exe().context("locating the controller binary")?;
    let beside = me.with_file_name("gatehouse-dataplane");
    if !beside.exists() {
        warn!(path = %beside.display(), "no data plane binary beside the controller; pass --dataplane-bin");
    }
    Ok(beside)
}
