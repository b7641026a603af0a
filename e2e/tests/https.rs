//! HTTPS listeners end to end with real TLS: certificates made at test start
//! by a test authority, served from Secrets, picked by SNI, rotated live, and
//! checked against the Host of each request.

use std::time::Duration;

use gatehouse_e2e::tls::{TestCa, TlsClient, secret};
use gatehouse_e2e::{Echo, Standalone, eventually, manifests};

/// The listeners of the Gateway most tests use.
const LISTENERS: &str = r#"  - name: exact
    port: 443
    protocol: HTTPS
    hostname: a.test
    tls: {certificateRefs: [{name: cert-a}]}
  - name: wildcard
    port: 443
    protocol: HTTPS
    hostname: "*.wild.test"
    tls: {certificateRefs: [{name: cert-wild}]}
  - name: any
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: cert-default}]}
"#;

/// A route on one listener of `gw`, for `hostnames`, to `service`.
fn route(name: &str, section: &str, hostnames: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw, sectionName: {section}}}]\n  hostnames: {hostnames}\n  rules:\n  - backendRefs: [{{name: {service}, port: 80}}]\n"
    )
}

struct Setup {
    gw: Standalone,
    ca: TestCa,
    certs: [gatehouse_e2e::tls::Issued; 3],
    _backends: [Echo; 3],
}

async fn setup() -> Setup {
    let ca = TestCa::new();
    let certs = [
        ca.issue(&["a.test"]),
        ca.issue(&["*.wild.test", "*.x.wild.test"]),
        ca.issue(&["default.test", "other.test"]),
    ];
    let backends = [Echo::start("a"), Echo::start("wild"), Echo::start("any")];
    let docs = [
        manifests::gateway_with(LISTENERS),
        secret("default", "cert-a", &certs[0]),
        secret("default", "cert-wild", &certs[1]),
        secret("default", "cert-default", &certs[2]),
        manifests::service("default", "svc-a", &[backends[0].port()]),
        manifests::service("default", "svc-wild", &[backends[1].port()]),
        manifests::service("default", "svc-any", &[backends[2].port()]),
        route("to-a", "exact", "[a.test]", "svc-a"),
        route("to-wild", "wildcard", "[]", "svc-wild"),
        route("to-any", "any", "[]", "svc-any"),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("---\n"))]).await;
    Setup {
        gw,
        ca,
        certs,
        _backends: backends,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_certificate_of_the_listener_the_sni_selects() {
    let s = setup().await;
    let addr = s.gw.socket(443);
    for h2 in [false, true] {
        let client = TlsClient::new(&s.ca, h2);
        let cases = [
            ("a.test", &s.certs[0], "a"),
            ("x.wild.test", &s.certs[1], "wild"),
            ("deeper.x.wild.test", &s.certs[1], "wild"),
            ("other.test", &s.certs[2], "any"),
        ];
        for (name, cert, backend) in cases {
            let got = client.get(addr, name, name, "/tls").await.unwrap();
            assert_eq!(got.served, cert.der(), "certificate for SNI {name}");
            assert_eq!(got.reply.status, 200, "{name}: {}", got.reply.text());
            assert_eq!(got.reply.backend(), Some(backend), "{name}");
            let echo = got.reply.echo();
            assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
            let expected_alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
            assert_eq!(got.alpn.as_deref(), Some(expected_alpn));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_endpoints_never_show_private_keys() {
    let s = setup().await;
    let url = format!("http://{}/debug/snapshots", s.gw.admin);
    let body = gatehouse_e2e::HttpClient::new()
        .get(&url, None)
        .await
        .unwrap()
        .text();
    assert!(
        body.contains("chainPem"),
        "certificates are shown: {body:.200}"
    );
    assert!(body.contains("\"keyPem\":\"<redacted>\""), "{body:.200}");
    for cert in &s.certs {
        let key_body: String = cert
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(!body.contains(&key_body[..40]), "a private key leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_for_another_listener_than_the_sni_is_misdirected() {
    let s = setup().await;
    let addr = s.gw.socket(443);
    let client = TlsClient::new(&s.ca, false);
    // (SNI, Host, status): 421 when the Host selects another listener than
    // the SNI name did; otherwise the Host's routes decide.
    let cases = [
        ("a.test", "a.test", 200),
        ("a.test", "x.wild.test", 421),
        ("a.test", "other.test", 421),
        ("x.wild.test", "y.wild.test", 200),
        ("x.wild.test", "a.test", 421),
        ("other.test", "a.test", 421),
        ("other.test", "default.test", 200),
    ];
    for (sni, host, status) in cases {
        let got = client.get(addr, sni, host, "/").await.unwrap();
        assert_eq!(got.reply.status, status, "SNI {sni}, Host {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_failed_handshake() {
    let s = setup().await;
    let addr = s.gw.socket(443);
    let renewed = s.ca.issue(&["a.test"]);
    let client = TlsClient::new(&s.ca, false);
    // A connection opened before the rotation, used before and after it.
    let mut open = client.connect(addr, "a.test").await.unwrap();
    assert_eq!(open.get("a.test", "/").await.unwrap().status, 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Four loops of fresh connections, each a new handshake.
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut done = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = client.get(addr, "a.test", "a.test", "/").await;
                    let got = got.unwrap_or_else(|e| panic!("handshake {done} failed: {e:#}"));
                    assert_eq!(got.reply.status, 200);
                    done += 1;
                }
                done
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The Secret is updated in place, as cert-manager renews one.
    let all = std::fs::read_to_string(s.gw.path("all.yaml")).unwrap();
    let old = secret("default", "cert-a", &s.certs[0]);
    assert!(all.contains(&old));
    s.gw.write(
        "all.yaml",
        &all.replace(&old, &secret("default", "cert-a", &renewed)),
    );
    eventually(Duration::from_secs(15), || async {
        let got = client.get(addr, "a.test", "a.test", "/").await?;
        anyhow::ensure!(got.served == renewed.der(), "still the old certificate");
        Ok(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for handle in loops {
        total += handle.await.expect("no failed handshake");
    }
    assert!(total > 20, "only {total} handshakes during the rotation");
    // The connection from before is still served, with the certificate of
    // its handshake.
    let reply = open.get("a.test", "/after").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echo()["path"], "/after");
    assert_eq!(open.served, s.certs[0].der());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_namespace_certificate_needs_a_reference_grant() {
    let ca = TestCa::new();
    let cert = ca.issue(&["shared.test"]);
    let backend = Echo::start("shared");
    let gateway = manifests::gateway_with(
        r#"  - name: http
    port: 80
    protocol: HTTP
  - name: shared
    port: 443
    protocol: HTTPS
    hostname: shared.test
    tls: {certificateRefs: [{name: shared, namespace: certs}]}
"#,
    );
    let docs = [
        gateway,
        secret("certs", "shared", &cert),
        manifests::service("default", "svc", &[backend.port()]),
        route("to-shared", "shared", "[]", "svc"),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("---\n"))]).await;
    let listener = |status: &serde_json::Value| {
        status["status"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "shared")
            .cloned()
            .unwrap()
    };
    let resolved = |l: &serde_json::Value| {
        l["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .map(|c| (c["status"].clone(), c["reason"].clone()))
            .unwrap()
    };
    let status = gw.status_of("Gateway", "default/gw").await.unwrap();
    assert_eq!(
        resolved(&listener(&status)),
        ("False".into(), "RefNotPermitted".into())
    );
    let client = TlsClient::new(&ca, false);
    assert!(
        client
            .get(gw.socket(443), "shared.test", "shared.test", "/")
            .await
            .is_err(),
        "a listener without a permitted certificate is not served"
    );
    gw.write(
        "grant.yaml",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: gateways, namespace: certs}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]\n  to: [{group: \"\", kind: Secret}]\n",
    );
    let got = eventually(Duration::from_secs(15), || async {
        client
            .get(gw.socket(443), "shared.test", "shared.test", "/")
            .await
    })
    .await;
    assert_eq!(got.served, cert.der());
    assert_eq!(got.reply.backend(), Some("shared"));
    gw.wait_ready().await;
    let status = gw.status_of("Gateway", "default/gw").await.unwrap();
    assert_eq!(
        resolved(&listener(&status)),
        ("True".into(), "ResolvedRefs".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_with_several_certificates_presents_the_one_for_the_name() {
    let ca = TestCa::new();
    let (one, two) = (ca.issue(&["one.test"]), ca.issue(&["two.test"]));
    let backend = Echo::start("b");
    let gateway = manifests::gateway_with(
        r#"  - name: any
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: one}, {name: two}]}
"#,
    );
    let docs = [
        gateway,
        secret("default", "one", &one),
        secret("default", "two", &two),
        manifests::service("default", "svc", &[backend.port()]),
        route("all", "any", "[]", "svc"),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("---\n"))]).await;
    let client = TlsClient::new(&ca, true);
    for (name, cert) in [("one.test", &one), ("two.test", &two)] {
        let got = client.get(gw.socket(443), name, name, "/").await.unwrap();
        assert_eq!(got.served, cert.der(), "{name}");
        assert_eq!(got.reply.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_or_optional_per_port() {
    let ca = TestCa::new();
    let clients = TestCa::new();
    let server = ca.issue(&["mtls.test"]);
    let good_client = clients.issue(&["client.test"]);
    let stranger = TestCa::new().issue(&["client.test"]);
    let backend = Echo::start("mtls");
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let gateway = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: gatehouse}}
spec: {{controllerName: gatehouse.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: gatehouse
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{{group: "", kind: ConfigMap, name: client-ca}}]
      perPort:
      - port: 8443
        tls:
          validation:
            mode: AllowInsecureFallback
            caCertificateRefs: [{{group: "", kind: ConfigMap, name: client-ca}}]
  listeners:
  - {{name: strict, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: server}}]}}}}
  - {{name: lenient, port: 8443, protocol: HTTPS, tls: {{certificateRefs: [{{name: server}}]}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: client-ca, namespace: default}}
data:
  ca.crt: |
{}"#,
        indent(&clients.cert_pem)
    );
    let docs = [
        gateway,
        secret("default", "server", &server),
        manifests::service("default", "svc", &[backend.port()]),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: all, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: svc, port: 80}]\n".to_owned(),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("---\n"))]).await;
    let with_cert = TlsClient::with_client_cert(&ca, &good_client);
    let with_stranger = TlsClient::with_client_cert(&ca, &stranger);
    let without = TlsClient::new(&ca, false);
    let get = |client: &TlsClient, port: u16| {
        let client = client.clone();
        let addr = gw.socket(port);
        async move { client.get(addr, "mtls.test", "mtls.test", "/").await }
    };
    // Strict port: only a certificate from the client CA gets through.
    assert_eq!(get(&with_cert, 443).await.unwrap().reply.status, 200);
    assert!(
        get(&without, 443).await.is_err(),
        "no certificate, no request"
    );
    assert!(
        get(&with_stranger, 443).await.is_err(),
        "a certificate of another CA"
    );
    // Insecure fallback: everyone gets through.
    for client in [&with_cert, &without, &with_stranger] {
        assert_eq!(get(client, 8443).await.unwrap().reply.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_header_precedes_the_tls_handshake() {
    let ca = TestCa::new();
    let cert = ca.issue(&["lb.test"]);
    let backend = Echo::start("behind-lb");
    let gateway = manifests::gateway_with(
        "  - name: https\n    port: 443\n    protocol: HTTPS\n    tls: {certificateRefs: [{name: cert}]}\n",
    )
    .replace(
        "  name: gw\n  namespace: default\n",
        "  name: gw\n  namespace: default\n  annotations: {gatehouse.dev/proxy-protocol: \"true\"}\n",
    );
    let docs = [
        gateway,
        secret("default", "cert", &cert),
        manifests::service("default", "svc", &[backend.port()]),
        manifests::route("r", "gw", &["lb.test"], "[{name: svc, port: 80}]"),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("---\n"))]).await;
    let addr = gw.socket(443);
    let client = TlsClient::new(&ca, false);
    let header = b"PROXY TCP4 198.51.100.20 192.0.2.1 41000 443\r\n";
    let reply = client
        .get_after(header, addr, "lb.test", "lb.test", "/")
        .await
        .expect("HTTPS after a PROXY header")
        .reply;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        gatehouse_e2e::echoed_header(&reply.echo(), "x-forwarded-for"),
        ["198.51.100.20"]
    );
    // Without the header the ClientHello is no PROXY header: the connection
    // is closed, and the port serves the next one as before.
    assert!(client.get(addr, "lb.test", "lb.test", "/").await.is_err());
    let again = client
        .get_after(header, addr, "lb.test", "lb.test", "/")
        .await
        .expect("served again");
    assert_eq!(again.reply.status, 200);
}
