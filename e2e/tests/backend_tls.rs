//! BackendTLSPolicy end to end: the gateway re-encrypts to an HTTPS echo
//! backend and verifies it against a CA from a ConfigMap, for the policy's
//! hostname; a wrong name or a missing CA fails the request (502), never
//! falls back to clear text, and the policy's status says why. URI subject
//! alternative names (SPIFFE IDs) are verified as the certificate carries
//! them. A Gateway's `spec.tls.backend.clientCertificateRef` is presented to
//! backends that ask for a client certificate.

use gatehouse_e2e::tls::TestCa;
use gatehouse_e2e::{Echo, HttpClient, Standalone, manifests};
use serde_json::Value;

fn policy(name: &str, service: &str, hostname: &str, ca: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n  validation:\n    hostname: {hostname}\n    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {ca}}}]\n"
    )
}

fn rule(host: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {service}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  rules:\n  - backendRefs: [{{name: {service}, port: 80}}]\n"
    )
}

fn conditions(status: &Value) -> Vec<(String, String, String)> {
    status["status"]["ancestors"][0]["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no ancestor in {status}"))
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reencrypts_and_verifies_backends() {
    let ca = TestCa::new();
    let issued = ca.issue(&["backend.test"]);
    let (backend, config_map, _dir) = tls_backend(&ca, &issued);
    let docs = [
        manifests::gateway(),
        config_map,
        manifests::service("default", "good", &[backend.port()]),
        manifests::service("default", "wrong-name", &[backend.port()]),
        manifests::service("default", "no-ca", &[backend.port()]),
        policy("good", "good", "backend.test", "backend-ca"),
        policy("wrong-name", "wrong-name", "other.test", "backend-ca"),
        policy("no-ca", "no-ca", "backend.test", "missing-ca"),
        rule("good.test", "good"),
        rule("wrong.test", "wrong-name"),
        rule("noca.test", "no-ca"),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("---\n"))]).await;
    let client = HttpClient::new();
    let url = gw.url(80, "/over-tls");
    let good = client.get(&url, Some("good.test")).await.unwrap();
    assert_eq!(good.status, 200, "{}", good.text());
    assert_eq!(good.echo()["tls"], true, "the backend saw TLS");
    assert_eq!(good.echo()["path"], "/over-tls");
    for host in ["wrong.test", "noca.test"] {
        let failed = client.get(&url, Some(host)).await.unwrap();
        assert_eq!(failed.status, 502, "{host}: {}", failed.text());
    }

    let status = gw
        .status_of("BackendTLSPolicy", "default/good")
        .await
        .unwrap();
    assert_eq!(
        status["status"]["ancestors"][0]["ancestorRef"]["name"],
        "gw"
    );
    assert_eq!(
        conditions(&status),
        [
            ("Accepted".into(), "True".into(), "Accepted".into()),
            ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into())
        ]
    );
    let status = gw
        .status_of("BackendTLSPolicy", "default/no-ca")
        .await
        .unwrap();
    assert_eq!(
        conditions(&status),
        [
            (
                "Accepted".into(),
                "False".into(),
                "NoValidCACertificate".into()
            ),
            (
                "ResolvedRefs".into(),
                "False".into(),
                "InvalidCACertificateRef".into()
            )
        ]
    );
}

/// An HTTPS echo backend serving `issued`, and the ConfigMap of `ca`.
fn tls_backend(
    ca: &TestCa,
    issued: &gatehouse_e2e::tls::Issued,
) -> (Echo, String, tempfile::TempDir) {
    tls_backend_with(ca, issued, &[])
}

/// The same, with more `gatehouse-echo` arguments; `{ca}` in them is the
/// path of `ca`'s certificate.
fn tls_backend_with(
    ca: &TestCa,
    issued: &gatehouse_e2e::tls::Issued,
    extra: &[&str],
) -> (Echo, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let mut args = vec![
        "--tls-cert".to_owned(),
        cert.to_str().unwrap().to_owned(),
        "--tls-key".to_owned(),
        key.to_str().unwrap().to_owned(),
    ];
    args.extend(
        extra
            .iter()
            .map(|a| a.replace("{ca}", ca_file.to_str().unwrap())),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let backend = Echo::start_with("tls-backend", "127.0.0.1:0".parse().unwrap(), &args);
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let config_map = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: backend-ca, namespace: default}}\ndata:\n  ca.crt: |\n{}",
        indent(&ca.cert_pem)
    );
    (backend, config_map, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_subject_alt_names_are_verified() {
    const ID: &str = "spiffe://cluster.local/ns/default/sa/backend";
    let ca = TestCa::new();
    let issued = ca.issue_with_uris(&["backend.test"], &[ID]);
    let (backend, config_map, _dir) = tls_backend(&ca, &issued);
    // The hostname is only the SNI here: the certificate is not valid for
    // it, so only the URI can make the connection succeed.
    let with_sans = |name: &str, sans: &str| {
        format!(
            "{}    subjectAltNames: {sans}\n",
            policy(name, name, "sni-only.test", "backend-ca")
        )
    };
    let docs = [
        manifests::gateway(),
        config_map,
        manifests::service("default", "by-uri", &[backend.port()]),
        manifests::service("default", "other-uri", &[backend.port()]),
        manifests::service("default", "bad-uri", &[backend.port()]),
        with_sans("by-uri", &format!("[{{type: URI, uri: \"{ID}\"}}]")),
        with_sans(
            "other-uri",
            "[{type: URI, uri: \"spiffe://cluster.local/ns/default/sa/other\"}]",
        ),
        with_sans("bad-uri", "[{type: URI, uri: \"not a uri\"}]"),
        rule("uri.test", "by-uri"),
        rule("other.test", "other-uri"),
        rule("bad.test", "bad-uri"),
    ];
    // The right URI from an authority the policy does not trust.
    let stranger = TestCa::new().issue_with_uris(&["backend.test"], &[ID]);
    let (untrusted, _, _untrusted_dir) = tls_backend(&TestCa::new(), &stranger);
    let mut docs = docs.to_vec();
    docs.extend([
        manifests::service("default", "untrusted", &[untrusted.port()]),
        with_sans("untrusted", &format!("[{{type: URI, uri: \"{ID}\"}}]")),
        rule("untrusted.test", "untrusted"),
    ]);
    let gw = Standalone::start(&[("all.yaml", docs.join("---\n"))]).await;
    let client = HttpClient::new();
    let url = gw.url(80, "/spiffe");
    let good = client.get(&url, Some("uri.test")).await.unwrap();
    assert_eq!(good.status, 200, "{}", good.text());
    assert_eq!(good.echo()["tls"], true);
    for host in ["other.test", "bad.test", "untrusted.test"] {
        let failed = client.get(&url, Some(host)).await.unwrap();
        assert_eq!(failed.status, 502, "{host}: {}", failed.text());
    }
    let status = gw
        .status_of("BackendTLSPolicy", "default/by-uri")
        .await
        .unwrap();
    assert_eq!(
        conditions(&status)[0],
        ("Accepted".into(), "True".into(), "Accepted".into())
    );
    let status = gw
        .status_of("BackendTLSPolicy", "default/bad-uri")
        .await
        .unwrap();
    let message = status["status"]["ancestors"][0]["conditions"].to_string();
    assert!(
        message.contains("subjectAltNames[0].uri") && message.contains("InvalidKind"),
        "{status}"
    );
}

/// A Gateway `name` in `default` with one HTTP listener on `port` and
/// `tls` (YAML under `spec.tls`, indented by four spaces) when given.
fn gateway(name: &str, port: u16, tls: Option<&str>) -> String {
    let tls = tls.map(|t| format!("  tls:\n{t}")).unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gatewayClassName: gatehouse\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n{tls}"
    )
}

fn gateway_condition(status: &Value, kind: &str) -> Option<(String, String)> {
    status["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_presents_its_client_certificate_to_backends() {
    use sha2::Digest;

    let ca = TestCa::new();
    let server = ca.issue(&["backend.test"]);
    let client = ca.issue(&["gateway-client.test"]);
    // The backend requires a client certificate of the same CA.
    let (backend, config_map, _dir) = tls_backend_with(&ca, &server, &["--tls-client-ca", "{ca}"]);
    let backend_tls = "    backend:\n      clientCertificateRef: {name: gateway-client}\n";
    let route = |name: &str, parent: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: {parent}}}]\n  rules:\n  - backendRefs: [{{name: secure, port: 80}}]\n"
        )
    };
    let docs = [
        manifests::gateway_with("  - {name: unused, port: 9, protocol: HTTP}\n"),
        gateway("with-cert", 80, Some(backend_tls)),
        gateway("without-cert", 81, None),
        gateway(
            "missing-secret",
            82,
            Some("    backend:\n      clientCertificateRef: {name: nowhere}\n"),
        ),
        gateway(
            "other-namespace",
            83,
            Some(
                "    backend:\n      clientCertificateRef: {name: gateway-client, namespace: elsewhere}\n",
            ),
        ),
        gatehouse_e2e::tls::secret("default", "gateway-client", &client),
        gatehouse_e2e::tls::secret("elsewhere", "gateway-client", &client),
        config_map,
        manifests::service("default", "secure", &[backend.port()]),
        policy("secure", "secure", "backend.test", "backend-ca"),
        route("via-cert", "with-cert"),
        route("via-no-cert", "without-cert"),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("---\n"))]).await;
    let client_http = HttpClient::new();

    let reply = client_http
        .get(&gw.url(80, "/"), Some("any.test"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let presented = hex::encode(sha2::Sha256::digest(client.der()));
    assert_eq!(reply.echo()["client_cert_sha256"], presented.as_str());

    // Same Service, through a Gateway without a client certificate: the
    // backend refuses the connection.
    let refused = client_http
        .get(&gw.url(81, "/"), Some("any.test"))
        .await
        .unwrap();
    assert_eq!(refused.status, 502, "{}", refused.text());

    let status = gw.status_of("Gateway", "default/with-cert").await.unwrap();
    assert_eq!(
        gateway_condition(&status, "ResolvedRefs"),
        Some(("True".into(), "ResolvedRefs".into()))
    );
    for (name, reason) in [
        ("missing-secret", "InvalidClientCertificateRef"),
        ("other-namespace", "RefNotPermitted"),
    ] {
        let status = gw
            .status_of("Gateway", &format!("default/{name}"))
            .await
            .unwrap();
        assert_eq!(
            gateway_condition(&status, "ResolvedRefs"),
            Some(("False".into(), reason.into())),
            "{name}: {status}"
        );
        assert_eq!(
            gateway_condition(&status, "Accepted"),
            Some(("True".into(), "Accepted".into())),
            "{name}"
        );
    }
    let without = gw
        .status_of("Gateway", "default/without-cert")
        .await
        .unwrap();
    assert_eq!(gateway_condition(&without, "ResolvedRefs"), None);
}
