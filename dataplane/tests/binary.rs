//! The `gatehouse-dataplane` binary serving a snapshot file: readiness,
//! metrics, the debug snapshot, traffic, and a clean exit on SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{ChildStdout, Command, Stdio},
    time::Duration,
};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Polls `url` until it answers 200, within a bound.
async fn wait_ready(client: &HttpClient, admin: u16) {
    for _ in 0..500 {
        let request = hyper::Request::get(format!("http://127.0.0.1:{admin}/readyz"))
            .body(http_body_util::Empty::new())
            .unwrap();
        if let Ok(response) = client.request(request).await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("data plane never became ready");
}

/// The port of the `admin listening on ADDR` line; the rest of stdout is
/// drained in the background so the child never blocks on it.
fn admin_port(stdout: ChildStdout) -> u16 {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the data plane exited before printing its admin address"
        );
        if let Some(addr) = line.trim().strip_prefix("admin listening on ") {
            let port = addr.parse::<std::net::SocketAddr>().unwrap().port();
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            return port;
        }
    }
}

/// The admin listener's `/metrics` text.
async fn scrape(client: &HttpClient, admin: u16) -> String {
    let reply = get(client, admin, "admin", "/metrics", &[]).await;
    String::from_utf8(reply.body.to_vec()).unwrap()
}

#[tokio::test]
async fn serves_a_snapshot_file_and_reports_it() {
    let backend = echo("file").await;
    let bind = free_port();
    let snap = single_route(bind, "from-file", backend);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.json");
    std::fs::write(&path, serde_json::to_vec(&snap).unwrap()).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse-dataplane"))
        .args([
            "--snapshot",
            path.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--client-header-timeout",
            "1",
            // As the chart passes them; their effect is tested in-process.
            "--client-send-timeout",
            "60",
            "--client-body-timeout",
            "60",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let admin = tokio::task::spawn_blocking(move || admin_port(stdout))
        .await
        .unwrap();
    let client = http1_client();
    wait_ready(&client, admin).await;

    let reply = get(&client, bind, "x", "/hello", &[]).await;
    assert_eq!((reply.status, reply.echo_name()), (200, "file"));
    // RFC 9112 §3.2: more than one Host field is a 400.
    let twice = get(&client, bind, "x", "/", &[("host", "y")]).await;
    assert_eq!(twice.status, 400);

    let debug = get(&client, admin, "admin", "/debug/snapshot", &[]).await;
    assert_eq!(debug.json()["version"], snap.version);
    assert_eq!(debug.json()["ports"][0]["bindPort"], u32::from(bind));

    let metrics = scrape(&client, admin).await;
    for line in [
        "gatehouse_requests_total{route=\"ns/from-file\",status_class=\"2xx\"} 1".to_owned(),
        "gatehouse_requests_total{route=\"\",status_class=\"4xx\"} 1".to_owned(),
        format!("gatehouse_snapshot_info{{version=\"{}\"}} 1", snap.version),
        "gatehouse_snapshot_applies_total{result=\"ack\"} 1".to_owned(),
        "gatehouse_request_duration_seconds_count{route=\"ns/from-file\"} 1".to_owned(),
        "gatehouse_retries_total{route=\"ns/from-file\"} 0".to_owned(),
    ] {
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }

    // A connection that idles after its answer is closed once it has
    // waited a whole --client-header-timeout for another request.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", bind))
        .await
        .unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = std::time::Instant::now();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut received))
        .await
        .expect("the idle connection was not closed")
        .unwrap();
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert!(answered.elapsed() >= Duration::from_secs(1));
    let metrics = scrape(&client, admin).await;
    // This one, and the client's pooled connection if it idled as long.
    let header_timeouts: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_client_timeouts_total{kind=\"header\"} "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no header timeout count in\n{metrics}"));
    assert!(header_timeouts >= 1, "{metrics}");

    // The `kill` command keeps the test free of unsafe libc calls.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn an_unreadable_snapshot_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, b"{ not json").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gatehouse-dataplane"))
        .args([
            "--snapshot",
            path.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = BufReader::new(&output.stderr[..])
        .lines()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(stderr.contains("snapshot does not decode"), "{stderr}");
}
