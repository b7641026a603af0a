//! `gatehouse-dataplane`: follow a controller, or serve a snapshot file.

// The request path allocates little, but what it does allocate comes and
// goes at every request: mimalloc's thread-local free lists serve that
// better than the system allocator (docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use gatehouse_dataplane::{Dataplane, Options, admin, client};

/// How often idle upstream connections their upstreams closed are closed
/// here too, when no request has come to find them.
const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(name = "gatehouse-dataplane", about = "Gatehouse data plane")]
struct Args {
    /// Controller URL to subscribe to, e.g. http://127.0.0.1:18000.
    #[arg(
        long,
        requires = "group",
        conflicts_with = "snapshot",
        required_unless_present = "snapshot"
    )]
    controller: Option<String>,
    /// Cluster group to ask the controller for.
    #[arg(long)]
    group: Option<String>,
    /// Node id reported to the controller (default: hostname-pid).
    #[arg(long)]
    node_id: Option<String>,
    /// Serve this snapshot file (protobuf or JSON) without a controller.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Admin address (readiness, metrics, debug); port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:9902")]
    admin: SocketAddr,
    /// Tokio worker threads (default: one per core). With 1, the proxy runs
    /// on the main thread alone.
    #[arg(long)]
    workers: Option<usize>,
    /// Bind listeners that the snapshot puts on 0.0.0.0 or :: on this
    /// address instead (several groups' data planes on one host).
    #[arg(long)]
    listen_address: Option<std::net::IpAddr>,
    /// Seconds a client connection may take to send a request head, from
    /// its accept or the end of its last response (on HTTP/2, with no
    /// stream open); one that does not is closed (HTTP/2: after a GOAWAY).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    client_header_timeout: u64,
    /// Seconds data sent to a client may wait for the client to take it
    /// (it stopped reading, or vanished); its connection is then dropped,
    /// and its request's upstream connection closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    client_send_timeout: u64,
    /// Seconds a request body may send nothing while it is waited for;
    /// the request is then answered 408 and its connection closed. gRPC
    /// requests are not timed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    client_body_timeout: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One worker needs no work stealing: a single-thread scheduler wakes
    // tasks without cross-thread notification and atomics.
    let mut runtime = match args.workers {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(workers);
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dataplane = Dataplane::with_options(Options {
        listen_address: args.listen_address,
        client_header_timeout: Duration::from_secs(args.client_header_timeout),
        client_send_timeout: Duration::from_secs(args.client_send_timeout),
        client_body_timeout: Duration::from_secs(args.client_body_timeout),
    });
    let admin_listener = tokio::net::TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("binding admin address {}", args.admin))?;
    // On stdout as a plain line, like the controller's, for whoever started
    // the process with port 0 (tests, scripts).
    println!("admin listening on {}", admin_listener.local_addr()?);
    tokio::spawn(admin::serve_admin(admin_listener, dataplane.clone()));
    tokio::spawn(
        dataplane
            .clone()
            .sweep_idle_connections(IDLE_SWEEP_INTERVAL),
    );

    let follower = match (&args.snapshot, &args.controller) {
        (Some(path), _) => {
            serve_file(&dataplane, path).await?;
            None
        }
        (None, Some(controller)) => {
            let config = client::ClientConfig {
                controller: controller.clone(),
                group: args.group.clone().unwrap_or_default(),
                node_id: args.node_id.clone().unwrap_or_else(default_node_id),
            };
            Some(tokio::spawn(client::run_client(dataplane.clone(), config)))
        }
        (None, None) => anyhow::bail!("either --controller or --snapshot is required"),
    };
    wait_for_signal().await?;
    tracing::info!("shutting down");
    if let Some(follower) = follower {
        follower.abort();
    }
    // Connections get this long to finish their in-flight requests.
    if tokio::time::timeout(Duration::from_secs(10), dataplane.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; exiting anyway");
    }
    Ok(())
}

async fn serve_file(dataplane: &Arc<Dataplane>, path: &PathBuf) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let snapshot = gatehouse_snapshot::decode_any(&bytes)?;
    dataplane.apply(snapshot).await?;
    Ok(())
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dataplane".to_owned());
    format!("{host}-{}", std::process::id())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result?,
    }
    Ok(())
}
