//! The standalone process contract: data planes are the controller's
//! children, a data plane that dies is started again, they stop with the
//! controller, and a Gateway's `spec.addresses` decide where it listens.

use std::time::Duration;

use anyhow::{Context, ensure};
use gatehouse_e2e::{Echo, HttpClient, Standalone, eventually, manifests, unique_loopback};

fn route() -> String {
    manifests::route("r", "gw", &[], "[{name: svc-a, port: 80}]")
}

/// Pids of the direct children of `pid`, from every thread of it.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    children
}

fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name; Z is a zombie.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn served(client: &HttpClient, url: &str) -> anyhow::Result<()> {
    let reply = client.get(url, Some("any.test")).await?;
    ensure!(reply.backend() == Some("a"), "status {}", reply.status);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_that_dies_is_restarted_and_all_stop_with_the_controller() {
    let a = Echo::start("a");
    let mut gateway = Standalone::start(&[
        ("gateway.yaml", manifests::gateway()),
        (
            "a.yaml",
            manifests::service("default", "svc-a", &[a.port()]),
        ),
        ("route.yaml", route()),
    ])
    .await;
    let client = HttpClient::new();
    let url = gateway.url(80, "/");
    served(&client, &url).await.unwrap();

    let controller = gateway.process.pid();
    let first = children_of(controller);
    assert_eq!(
        first.len(),
        1,
        "one data plane for the one group: {first:?}"
    );
    // SAFETY: kill(2) on a process this test started (indirectly).
    unsafe { libc::kill(first[0] as libc::pid_t, libc::SIGKILL) };
    let second = eventually(Duration::from_secs(20), || async {
        let now: Vec<u32> = children_of(controller)
            .into_iter()
            .filter(|p| is_running(*p))
            .collect();
        ensure!(now.len() == 1 && now[0] != first[0], "children now {now:?}");
        Ok(now[0])
    })
    .await;
    eventually(Duration::from_secs(20), || served(&client, &url)).await;

    let status = gateway.process.terminate();
    assert!(status.success(), "controller exit: {status}");
    eventually(Duration::from_secs(10), || async {
        ensure!(
            !is_running(second),
            "data plane {second} outlived its controller"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_listens_on_its_spec_addresses() {
    let a = Echo::start("a");
    let own = unique_loopback();
    let gateway_yaml = manifests::gateway().replace(
        "  gatewayClassName: gatehouse\n",
        &format!(
            "  gatewayClassName: gatehouse\n  addresses: [{{type: IPAddress, value: \"{own}\"}}]\n"
        ),
    );
    let gateway = Standalone::start(&[
        ("gateway.yaml", gateway_yaml),
        (
            "a.yaml",
            manifests::service("default", "svc-a", &[a.port()]),
        ),
        ("route.yaml", route()),
    ])
    .await;
    let client = HttpClient::new();
    let on_own = format!("http://{own}:{}/", 80 + gatehouse_e2e::PORT_OFFSET);
    served(&client, &on_own).await.unwrap();
    assert!(
        client.get(&gateway.url(80, "/"), None).await.is_err(),
        "the Gateway must not listen on --listen-address when it names its own"
    );
    let status = gateway
        .status_of("Gateway", "default/gw")
        .await
        .context("status")
        .unwrap();
    assert_eq!(status["status"]["addresses"][0]["value"], own.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_sharing_a_port_serve_the_routes_of_both() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let second = manifests::gateway()
        .split("---")
        .nth(1)
        .expect("the Gateway document")
        .replace("name: gw\n", "name: gw2\n");
    let routes = [
        manifests::route("ra", "gw", &["a.test"], "[{name: svc-a, port: 80}]"),
        manifests::route("rb", "gw2", &["b.test"], "[{name: svc-b, port: 80}]"),
    ]
    .join("---\n");
    let gateway = Standalone::start(&[
        ("gateway.yaml", manifests::gateway()),
        ("gateway2.yaml", second),
        (
            "a.yaml",
            manifests::service("default", "svc-a", &[a.port()]),
        ),
        (
            "b.yaml",
            manifests::service("default", "svc-b", &[b.port()]),
        ),
        ("routes.yaml", routes),
    ])
    .await;
    let client = HttpClient::new();
    let url = gateway.url(80, "/");
    let on_a = client.get(&url, Some("a.test")).await.unwrap();
    assert_eq!(on_a.backend(), Some("a"), "status {}", on_a.status);
    let on_b = client.get(&url, Some("b.test")).await.unwrap();
    assert_eq!(on_b.backend(), Some("b"), "status {}", on_b.status);
    for name in ["default/gw", "default/gw2"] {
        let status = gateway.status_of("Gateway", name).await.unwrap();
        assert_eq!(
            status["status"]["listeners"][0]["attachedRoutes"], 1,
            "{name}: {status}"
        );
    }
}
