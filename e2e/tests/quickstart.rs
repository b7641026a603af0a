//! The quickstart's manifests do what the README says they do. The echo
//! backends run on free ports, and the EndpointSlices are pointed at them.

use gatehouse_e2e::{Echo, HttpClient, Request, Standalone, tally};

const MANIFESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/quickstart/manifests"
);

fn quickstart_files(ports: [(u16, u16); 3]) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(MANIFESTS).expect("quickstart manifests") {
        let path = entry.unwrap().path();
        let mut content = std::fs::read_to_string(&path).unwrap();
        for (from, to) in ports {
            content = content.replace(&format!("port: {from}}}"), &format!("port: {to}}}"));
        }
        files.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            content,
        ));
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_routes_work_as_documented() {
    let (v1, v2, api) = (
        Echo::start("shop-v1"),
        Echo::start("shop-v2"),
        Echo::start("api"),
    );
    let files = quickstart_files([(9001, v1.port()), (9002, v2.port()), (9003, api.port())]);
    let refs: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let gateway = Standalone::start(&refs).await;
    let client = HttpClient::new();
    let url = |path: &str| gateway.url(8080, path);

    let mut replies = Vec::new();
    for _ in 0..400 {
        replies.push(
            client
                .get(&url("/"), Some("shop.example.com"))
                .await
                .unwrap(),
        );
    }
    let counts = tally(&replies);
    let v2_share = counts.get("shop-v2").copied().unwrap_or(0) as f64 / 400.0;
    assert_eq!(
        counts.get("shop-v1").copied().unwrap_or(0) + counts.get("shop-v2").copied().unwrap_or(0),
        400,
        "{counts:?}"
    );
    // 10% ± six standard deviations (sqrt(0.1 * 0.9 / 400) = 0.015).
    assert!(
        (v2_share - 0.10).abs() < 0.09,
        "shop-v2 share {v2_share}: {counts:?}"
    );

    let canary = client
        .send(
            Request::get(&url("/"))
                .host(Some("shop.example.com"))
                .header("x-canary", "always"),
        )
        .await
        .unwrap();
    assert_eq!(canary.backend(), Some("shop-v2"));
    let users = client
        .get(&url("/api/users"), Some("docs.example.com"))
        .await
        .unwrap();
    assert_eq!(users.backend(), Some("api"));
    assert_eq!(users.echo()["path"], "/api/users");
    let health = client
        .get(&url("/healthz"), Some("docs.example.com"))
        .await
        .unwrap();
    assert_eq!(health.backend(), Some("api"));
    let nothing = client
        .get(&url("/nothing"), Some("docs.example.com"))
        .await
        .unwrap();
    assert_eq!(nothing.status, 404);
}
