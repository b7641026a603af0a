//! Configuration is applied live: a route file edited while requests flow is
//! served without a restart and without a single failed request. A controller
//! that dies leaves its data plane serving; when it returns, the data plane
//! resyncs.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::ensure;
use gatehouse_e2e::{
    Echo, HttpClient, Process, Reply, Standalone, StandaloneOptions, bin, eventually, manifests,
    tally,
};

fn route(service: &str) -> String {
    manifests::route(
        "live",
        "gw",
        &["live.test"],
        &format!("[{{name: {service}, port: 80}}]"),
    )
}

fn manifests_for(a: &Echo, b: &Echo) -> Vec<(&'static str, String)> {
    vec![
        ("gateway.yaml", manifests::gateway()),
        (
            "a.yaml",
            manifests::service("default", "svc-a", &[a.port()]),
        ),
        (
            "b.yaml",
            manifests::service("default", "svc-b", &[b.port()]),
        ),
        ("route.yaml", route("svc-a")),
    ]
}

/// Runs `clients` keep-alive request loops until `stop` is set.
fn request_loop(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Reply>>> {
    (0..clients)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = HttpClient::new();
                let mut replies = Vec::new();
                while !stop.load(Ordering::Relaxed) && replies.len() < 200_000 {
                    match client.get(&url, Some("live.test")).await {
                        Ok(reply) => replies.push(reply),
                        Err(error) => panic!("request failed during the reload: {error:#}"),
                    }
                }
                replies
            })
        })
        .collect()
}

async fn served_by(client: &HttpClient, url: &str, backend: &str) -> anyhow::Result<()> {
    let reply = client.get(url, Some("live.test")).await?;
    ensure!(
        reply.backend() == Some(backend),
        "served by {:?} ({})",
        reply.backend(),
        reply.status
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_route_is_served_live_with_zero_failed_requests() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gateway = Standalone::start(&manifests_for(&a, &b)).await;
    let url = gateway.url(80, "/");
    let stop = Arc::new(AtomicBool::new(false));
    let loops = request_loop(url.clone(), 4, stop.clone());

    let client = HttpClient::new();
    eventually(Duration::from_secs(10), || served_by(&client, &url, "a")).await;
    gateway.write("route.yaml", &route("svc-b"));
    eventually(Duration::from_secs(20), || served_by(&client, &url, "b")).await;
    // Keep the loops going through the swap and a little after it.
    for _ in 0..50 {
        served_by(&client, &url, "b").await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);

    let mut replies = Vec::new();
    for task in loops {
        replies.extend(task.await.unwrap());
    }
    let counts = tally(&replies);
    assert!(
        replies.iter().all(|r| r.status == 200),
        "failed requests during the reload: {counts:?}"
    );
    assert!(
        counts.contains_key("a") && counts.contains_key("b"),
        "{counts:?}"
    );

    let status = gateway
        .status_of("HTTPRoute", "default/live")
        .await
        .unwrap();
    assert_eq!(status["metadata"]["generation"], 2);
    assert_eq!(
        status["status"]["parents"][0]["conditions"][0]["observedGeneration"],
        2
    );
}

fn start_dataplane(grpc: std::net::SocketAddr) -> Process {
    let mut command = std::process::Command::new(bin("gatehouse-dataplane"));
    command
        .args(["--controller", &format!("http://{grpc}")])
        .args(["--group", "default", "--node-id", "external-1"])
        .args(["--admin", "127.0.0.1:0"]);
    command
        .stdout(std::process::Stdio::null())
        .stdin(std::process::Stdio::null());
    Process::spawn(command).expect("data plane")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_keeps_serving_without_controller_and_resyncs() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in manifests_for(&a, &b) {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    // The first controller picks its gRPC port and reports it; the second
    // takes the same one, where the data plane keeps reconnecting.
    let mut controller = Standalone::start_in(
        dir,
        StandaloneOptions {
            no_dataplanes: true,
            grpc: None,
            address: None,
        },
    );
    let (grpc, address) = (controller.grpc, controller.address);
    let _dataplane = start_dataplane(grpc);
    let client = HttpClient::new();
    let url = controller.url(80, "/");
    eventually(Duration::from_secs(20), || served_by(&client, &url, "a")).await;

    controller.process.kill();
    for _ in 0..200 {
        served_by(&client, &url, "a")
            .await
            .expect("data plane stopped serving without its controller");
    }

    let dir = std::mem::replace(&mut controller.dir, tempfile::tempdir().unwrap());
    drop(controller);
    gatehouse_e2e::write_atomically(&dir.path().join("route.yaml"), &route("svc-b"));
    let _controller = Standalone::start_in(
        dir,
        StandaloneOptions {
            no_dataplanes: true,
            grpc: Some(grpc),
            address: Some(address),
        },
    );
    eventually(Duration::from_secs(30), || served_by(&client, &url, "b")).await;
}
