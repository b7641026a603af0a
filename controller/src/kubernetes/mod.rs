//! Kubernetes mode: the same pipeline as standalone, fed by watches and
//! writing status to the API server.
//!
//! ```text
//! watchers (one per kind) --changes--> Store --compile--> snapshots --hub/gRPC--> data planes
//!                                                 \--> statuses --leader only--> status subresource
//! ```
//!
//! Nothing is compiled before every watcher has listed once, so a start never
//! publishes a partial configuration. Every replica watches, compiles and
//! serves snapshots; only the holder of the Lease writes status.

mod lease;
mod rejections;
mod status_writer;
mod watch;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tracing::info;

use crate::{
    admin,
    compile::{CompileOptions, Compiled, compile},
    group_snapshot::GroupSnapshot,
    k8s::{
        BackendTlsPolicy, ConfigMap, EndpointSlice, Gateway, GatewayClass, GrpcRoute, HttpRoute,
        Namespace, ReferenceGrant, Secret, Service,
    },
    runtime,
    serve::{SnapshotHub, Snapshots},
    status::{self, StatusEntry},
    store::{Kind, Object, Store},
};
use watch::Change;

#[derive(Debug, Clone, clap::Args)]
pub struct KubernetesArgs {
    /// Address of the snapshot gRPC server data planes connect to.
    #[arg(long, default_value = "0.0.0.0:18000")]
    pub grpc: SocketAddr,
    /// Admin listener: /healthz, /readyz, /metrics, /debug/*.
    #[arg(long, default_value = "0.0.0.0:9901")]
    pub admin: SocketAddr,
    /// Listener port P is bound at P + N in data plane pods (so that port
    /// 80 needs no privilege); the data plane Service maps P to P + N.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Address Gateway listeners bind when a Gateway has no spec.addresses.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_address: IpAddr,
    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, default_value = "gatehouse-controller")]
    pub lease_name: String,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (unique per replica).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease holder may go without renewing before another
    /// replica takes over.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// After a Gateway moved to another cluster group and its addresses
    /// changed to the new group's, how long the old group keeps serving it
    /// for clients that still use the old addresses.
    #[arg(long, default_value_t = 30)]
    pub group_move_drain_seconds: u64,
}

/// Quiet time after the last change before a compile, and the longest a
/// burst of changes can hold a compile back.
const BURST_QUIET: Duration = Duration::from_millis(50);
const BURST_CAP: Duration = Duration::from_millis(500);

/// The kinds watched, each listed before the first compile.
const WATCHED: [Kind; 13] = [
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::HttpRoute,
    Kind::GrpcRoute,
    Kind::ReferenceGrant,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Namespace,
    Kind::Secret,
    Kind::ConfigMap,
    Kind::BackendTlsPolicy,
    Kind::Filter,
    Kind::JwksSecret,
];

/// Runs until SIGTERM or SIGINT.
pub async fn run(args: KubernetesArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let hub = SnapshotHub::new();
    let grpc_addr = runtime::start_grpc(args.grpc, hub.clone()).await?;
    let view = Arc::new(RwLock::new(admin::View::default()));
    let admin_addr = runtime::start_admin(args.admin, hub.clone(), view.clone()).await?;
    info!(%grpc_addr, %admin_addr, "kubernetes controller started");
    println!("admin listening on {admin_addr}");
    println!("snapshot server listening on {grpc_addr}");

    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    spawn_watchers(&client, &changes_tx);
    drop(changes_tx);

    let leader = Arc::new(AtomicBool::new(false));
    // Without POD_NAME: unique per process start, never the same in two
    // containers (whose pids may both be 1).
    let identity = args.identity.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("gatehouse-{}-{nanos:x}", std::process::id())
    });
    let renew = Duration::from_secs((args.lease_duration_seconds / 3).max(1));
    lease::spawn(
        client.clone(),
        lease::LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: Duration::from_secs(args.lease_duration_seconds),
            renew,
        },
        leader.clone(),
    );
    let others = rejections::spawn(
        client.clone(),
        rejections::Sharing {
            namespace: args.lease_namespace.clone(),
            lease: args.lease_name.clone(),
            identity,
            heartbeat: renew,
        },
        hub.clone(),
    );

    let mut state = Loop {
        store: Store::new(),
        listed: BTreeSet::new(),
        options: CompileOptions {
            port_offset: args.port_offset,
            listen_address: args.listen_address,
            groups_share_host: false,
            ..Default::default()
        },
        drain: Duration::from_secs(args.group_move_drain_seconds),
        placing: BTreeMap::new(),
        client: client.clone(),
        snapshots: Snapshots::new(),
        pending: Pending::default(),
        others,
        previous: runtime::StatusHistory::default(),
        hub,
        view,
        writer: status_writer::StatusWriter::new(client).spawn(leader.clone()),
        term: 0,
        leader,
        was_leader: false,
        statuses: Vec::new(),
        gateway_groups: BTreeMap::new(),
        compiled: false,
        namespace: args.lease_namespace.clone(),
    };
    let shutdown = runtime::shutdown_signal();
    tokio::pin!(shutdown);
    // Leadership and data plane answers change what must be written even
    // when no object changed.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Data plane answers also move Gateways between groups along.
    let mut answers = state.hub.watch_changes();
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { break };
                state.apply(change);
                // A burst of changes (a relist, kubectl apply of many
                // files) makes one compile.
                let cap = tokio::time::sleep(BURST_CAP);
                tokio::pin!(cap);
                loop {
                    tokio::select! {
                        _ = &mut cap => break,
                        more = tokio::time::timeout(BURST_QUIET, changes.recv()) => match more {
                            Ok(Some(more)) => state.apply(more),
                            Ok(None) | Err(_) => break,
                        },
                    }
                }
                state.compile_and_publish().await;
                state.place_gateways();
            }
            _ = tick.tick() => {
                state.place_gateways();
                state.write_statuses().await;
            }
            Ok(()) = answers.changed() => state.place_gateways(),
            _ = &mut shutdown => break,
        }
    }
    info!("stopping");
    Ok(())
}

fn spawn_watchers(client: &kube::Client, tx: &mpsc::UnboundedSender<Change>) {
    let all = watcher::Config::default;
    watch::spawn::<GatewayClass>(
        client.clone(),
        Kind::GatewayClass,
        all(),
        None,
        |o| Object::GatewayClass(Box::new(o)),
        tx.clone(),
    );
    watch::spawn::<Gateway>(
        client.clone(),
        Kind::Gateway,
        all(),
        None,
        |o| Object::Gateway(Box::new(o)),
        tx.clone(),
    );
    watch::spawn::<HttpRoute>(
        client.clone(),
        Kind::HttpRoute,
        all(),
        None,
        |o| Object::HttpRoute(Box::new(o)),
        tx.clone(),
    );
    watch::spawn::<GrpcRoute>(
        client.clone(),
        Kind::GrpcRoute,
        all(),
        None,
        |o| Object::GrpcRoute(Box::new(o)),
        tx.clone(),
    );
    watch::spawn::<ReferenceGrant>(
        client.clone(),
        Kind::ReferenceGrant,
        all(),
        None,
        |o| Object::ReferenceGrant(Box::new(o)),
        tx.clone(),
    );
    watch::spawn::<Service>(
        client.clone(),
        Kind::Service,
        all(),
        None,
        |o| Object::Service(Box::new(o)),
        tx.clone(),
    );
    // Only slices that belong to a Service can back a route.
    watch::spawn::<EndpointSlice>(
        client.clone(),
        Kind::EndpointSlice,
        all().labels(crate::k8s::SERVICE_NAME_LABEL),
        None,
        |o| Object::EndpointSlice(Box::new(o)),
        tx.clone(),
    );
    watch::spawn::<BackendTlsPolicy>(
        client.clone(),
        Kind::BackendTlsPolicy,
        all(),
        None,
        |o| Object::BackendTlsPolicy(Box::new(o)),
        tx.clone(),
    );
    // CA bundles of Gateways' spec.tls.frontend and of BackendTLSPolicies.
    watch::spawn::<ConfigMap>(
        client.clone(),
        Kind::ConfigMap,
        all(),
        None,
        |o| Object::ConfigMap(Box::new(o)),
        tx.clone(),
    );
    watch::spawn::<Namespace>(
        client.clone(),
        Kind::Namespace,
        all(),
        None,
        |o| Object::Namespace(Box::new(o)),
        tx.clone(),
    );
    // Only TLS Secrets can be listener certificates, and only Secrets
    // labelled as JWKS can hold jwtAuth keys: no other Secret is ever sent
    // to the controller or held in memory.
    watch::spawn::<Secret>(
        client.clone(),
        Kind::Secret,
        all(),
        Some(watch::Filter {
            fields: "type=kubernetes.io/tls",
            keep: |s: &Secret| s.type_.as_deref() == Some("kubernetes.io/tls"),
        }),
        |o| Object::Secret(Box::new(o)),
        tx.clone(),
    );
    watch::spawn::<Secret>(
        client.clone(),
        Kind::JwksSecret,
        all().labels(crate::api::JWKS_SECRET_LABEL),
        None,
        |o| Object::JwksSecret(Box::new(o)),
        tx.clone(),
    );
    // Our own kinds: watched once their CRDs are served (a cluster
    // without them cannot hold any, so compiling need not wait for them).
    let (crd_client, crd_changes) = (client.clone(), tx.clone());
    tokio::spawn(async move {
        if watch::wait_for_crd(
            &crd_client,
            "filters.gatehouse.dev",
            Kind::Filter,
            &crd_changes,
        )
        .await
        {
            watch::spawn::<crate::api::Filter>(
                crd_client,
                Kind::Filter,
                all(),
                None,
                |o| Object::Filter(Box::new(o)),
                crd_changes,
            );
        }
    });
}

struct Loop {
    store: Store,
    listed: BTreeSet<Kind>,
    options: CompileOptions,
    previous: runtime::StatusHistory,
    hub: Arc<SnapshotHub>,
    view: Arc<RwLock<admin::View>>,
    /// The status writer's task: the latest statuses to write.
    writer: tokio::sync::watch::Sender<Option<status_writer::Desired>>,
    /// How many times this replica became leader.
    term: u64,
    leader: Arc<AtomicBool>,
    was_leader: bool,
    /// As compiled, before the data planes' rejections.
    statuses: Vec<StatusEntry>,
    gateway_groups: BTreeMap<(String, String), Vec<String>>,
    compiled: bool,
    /// Where the data plane Services live (the controller's namespace).
    namespace: String,
    /// How long an old group keeps serving a moved Gateway.
    drain: Duration,
    /// Placements written (or being written) to Gateways, and when.
    placing: BTreeMap<(String, String), (crate::handover::Served, std::time::Instant)>,
    client: kube::Client,
    /// The snapshots last published.
    snapshots: Snapshots,
    /// What changed since the last compile.
    pending: Pending,
    /// The other replicas' data planes' rejections.
    others: tokio::sync::watch::Receiver<Vec<rejections::Report>>,
}

/// Changes since the last compile: EndpointSlice changes only (by the
/// Services they belong to) can refresh the last compile's endpoints
/// instead of compiling again (see `compile::refresh_endpoints`).
#[derive(Debug, Default)]
struct Pending {
    other: bool,
    services: BTreeSet<(String, String)>,
}

impl Pending {
    fn slice(&mut self, slice: Option<&Object>) {
        if let Some(service) = slice.and_then(crate::store::slice_service) {
            self.services.insert(service);
        }
    }
}

/// Label of the data plane Services (with the cluster group label).
pub const DATAPLANE_COMPONENT: (&str, &str) = ("app.kubernetes.io/component", "dataplane");

/// Per group, the addresses of its data plane Service in `namespace`: the
/// load balancer's ingress IPs and hostnames once it has them, else the
/// cluster IP. The Gateways of the group report them in `status.addresses`.
fn group_addresses(store: &Store, namespace: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for service in store.services() {
        let meta = &service.metadata;
        let labels = meta.labels.clone().unwrap_or_default();
        let Some(group) = labels.get(crate::compile::CLUSTER_GROUP_LABEL) else {
            continue;
        };
        if meta.namespace.as_deref() != Some(namespace)
            || labels.get(DATAPLANE_COMPONENT.0).map(String::as_str) != Some(DATAPLANE_COMPONENT.1)
        {
            continue;
        }
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        let mut addresses: Vec<(String, String)> = ingress
            .into_iter()
            .flatten()
            .flat_map(|i| {
                let ip = i.ip.clone().map(|ip| ("IPAddress".to_owned(), ip));
                let host = i.hostname.clone().map(|h| ("Hostname".to_owned(), h));
                ip.into_iter().chain(host)
            })
            .collect();
        if addresses.is_empty()
            && let Some(ip) = service.spec.as_ref().and_then(|s| s.cluster_ip.clone())
            && ip != "None"
        {
            addresses.push(("IPAddress".to_owned(), ip));
        }
        out.entry(group.clone()).or_default().extend(addresses);
    }
    out
}

impl Loop {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Listed(kind, objects) => {
                let stale: Vec<_> = self.store.of_kind(kind).map(Object::key).collect();
                for key in stale {
                    self.store.remove(&key);
                }
                for object in objects {
                    self.store.insert(object);
                }
                self.listed.insert(kind);
                self.pending.other = true;
            }
            Change::Applied(object) if object.kind() == Kind::EndpointSlice => {
                self.pending.slice(Some(&object));
                let previous = self.store.insert(object);
                self.pending.slice(previous.as_ref());
            }
            Change::Applied(object) => {
                self.store.insert(object);
                self.pending.other = true;
            }
            Change::Deleted(key) if key.kind == Kind::EndpointSlice => {
                let removed = self.store.remove(&key);
                self.pending.slice(removed.as_ref());
            }
            // A watch that filters in the controller reports every object it
            // drops as deleted (e.g. each unrelated Secret): only a removal
            // from the store is a change.
            Change::Deleted(key) => {
                if self.store.remove(&key).is_some() {
                    self.pending.other = true;
                }
            }
        }
    }

    async fn compile_and_publish(&mut self) {
        if let Some(missing) = WATCHED.iter().find(|k| !self.listed.contains(k)) {
            tracing::debug!(%missing, "waiting for every watch to list before compiling");
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        if self.compiled && !pending.other {
            self.refresh_endpoints(&pending.services);
            return;
        }
        let now = runtime::now();
        self.options.now = runtime::rfc3339(now);
        self.options.group_addresses = group_addresses(&self.store, &self.namespace);
        // Where the leader placed each Gateway (every replica reads the
        // same annotations, so all serve the same snapshots).
        self.options.placements = crate::handover::placements(&self.store);
        let Compiled {
            snapshots,
            mut statuses,
            gateway_groups,
        } = compile(&self.store, &self.options);
        self.previous.carry(&mut statuses);
        self.snapshots = snapshots
            .into_iter()
            .map(|(group, snapshot)| (group, Arc::new(GroupSnapshot::compiled(snapshot))))
            .collect();
        for snapshot in self.snapshots.values() {
            info!(group = %snapshot.group(), version = %snapshot.version(), "compiled");
        }
        self.view.write().expect("view lock").snapshots = self.snapshots.clone();
        self.hub.publish(&self.snapshots);
        self.statuses = statuses;
        self.gateway_groups = gateway_groups;
        self.compiled = true;
        self.write_statuses().await;
    }

    /// Only EndpointSlices changed: the last compile with the endpoints of
    /// their Services refreshed, pushed to the groups that hold them.
    /// Statuses do not depend on endpoints and stay as they are.
    fn refresh_endpoints(&mut self, services: &BTreeSet<(String, String)>) {
        let started = std::time::Instant::now();
        let groups = crate::compile::refresh_endpoints(&self.store, &mut self.snapshots, services);
        if groups.is_empty() {
            return;
        }
        for group in &groups {
            info!(
                %group,
                version = %self.snapshots[group].version(),
                took = ?started.elapsed(),
                "endpoints refreshed"
            );
        }
        self.view.write().expect("view lock").snapshots = self.snapshots.clone();
        self.hub.publish(&self.snapshots);
    }

    /// The leader moves Gateways between groups along (see
    /// `crate::handover`): it writes each Gateway's placement when it
    /// changes; the Gateway's watch event then recompiles every replica.
    fn place_gateways(&mut self) {
        if !self.compiled || !self.leader.load(Ordering::SeqCst) {
            return;
        }
        let others = self.others.borrow().clone();
        let hub = self.hub.clone();
        let decided = crate::handover::decide(&self.store, runtime::now(), self.drain, |group| {
            rejections::group_ready(&hub, &others, group)
        });
        // Writes long come back (or of deleted Gateways) are forgotten.
        self.placing
            .retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
        // A bounded number of writes per round (the first round annotates
        // every Gateway); the rest follow on the next ticks.
        let mut budget = 32;
        for (key, served) in decided {
            // The same placement again only once the last write had time
            // to come back through the watch.
            if let Some((sent, at)) = self.placing.get(&key)
                && *sent == served
                && at.elapsed() < Duration::from_secs(5)
            {
                continue;
            }
            if budget == 0 {
                break;
            }
            budget -= 1;
            info!(gateway = %format!("{}/{}", key.0, key.1), placement = ?served, "placing Gateway");
            self.placing
                .insert(key.clone(), (served.clone(), std::time::Instant::now()));
            tokio::spawn(write_placement(self.client.clone(), key, served));
        }
    }

    /// Brings the view up to date and, when this replica leads, the
    /// cluster: the compiled statuses with the data planes' rejections on
    /// top. A replica that just became leader rewrites everything another
    /// leader may have left behind.
    async fn write_statuses(&mut self) {
        if !self.compiled {
            return;
        }
        let now = runtime::rfc3339(runtime::now());
        let rejected = rejections::merged(&self.hub, &self.others.borrow());
        let statuses =
            status::with_rejections(&self.statuses, &self.gateway_groups, &rejected, &now);
        {
            let mut view = self.view.write().expect("view lock");
            view.statuses = statuses.iter().map(StatusEntry::to_debug_json).collect();
            view.compiled = true;
        }
        let leading = self.leader.load(Ordering::SeqCst);
        if leading && !self.was_leader {
            // Another leader may have written since: write everything.
            self.term += 1;
        }
        self.was_leader = leading;
        if leading {
            let desired = status_writer::Desired {
                statuses,
                term: self.term,
            };
            self.writer.send_if_modified(|current| {
                let changed = current.as_ref() != Some(&desired);
                *current = Some(desired);
                changed
            });
        }
    }
}

/// Writes a Gateway's placement annotation (server-side apply of that one
/// annotation, under its own field manager).
async fn write_placement(
    client: kube::Client,
    (namespace, name): (String, String),
    served: crate::handover::Served,
) {
    let api: kube::Api<Gateway> = kube::Api::namespaced(client, &namespace);
    let value = serde_json::to_string(&served).unwrap_or_default();
    let patch = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": { crate::handover::ANNOTATION: value },
        },
    });
    let params = kube::api::PatchParams::apply("gatehouse-controller-placement").force();
    let written = tokio::time::timeout(
        Duration::from_secs(10),
        api.patch(&name, &params, &kube::api::Patch::Apply(patch)),
    )
    .await;
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%namespace, %name, %error, "placement not written"),
        Err(_) => tracing::warn!(%namespace, %name, "placement write timed out"),
    }
}
