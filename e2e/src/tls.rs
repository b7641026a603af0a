//! Real TLS for the tests: a certificate authority made at test start,
//! certificates it issues for the Gateway, Secrets carrying them, and a
//! client that connects with a chosen SNI name, trusts only that authority,
//! and reports which certificate the Gateway presented.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};

use crate::Reply;

/// A test certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// DER of the certificate, to compare with what a server presented.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("issued PEM")
            .to_vec()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Gatehouse test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names, `*.` wildcards allowed).
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with_uris(names, &[])
    }

    /// A server certificate for DNS `names` that also carries `uris` as URI
    /// subject alternative names (SPIFFE IDs and the like).
    pub fn issue_with_uris(&self, names: &[&str], uris: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        for uri in uris {
            let uri = rcgen::string::Ia5String::try_from(*uri).expect("an ASCII URI");
            params.subject_alt_names.push(rcgen::SanType::URI(uri));
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A `kubernetes.io/tls` Secret manifest holding `issued`.
pub fn secret(namespace: &str, name: &str, issued: &Issued) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&issued.cert_pem),
        indent(&issued.key_pem)
    )
}

/// One HTTPS exchange.
#[derive(Debug)]
pub struct TlsReply {
    pub reply: Reply,
    /// DER of the end-entity certificate the server presented.
    pub served: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
}

/// HTTPS requests that trust one authority.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
}

impl TlsClient {
    /// Trusts `ca`; offers ALPN `h2` and `http/1.1` when `h2`, else
    /// `http/1.1` only.
    pub fn new(ca: &TestCa, h2: bool) -> Self {
        Self::build(ca, h2, None)
    }

    /// The same, presenting `identity` as its client certificate.
    pub fn with_client_cert(ca: &TestCa, identity: &Issued) -> Self {
        Self::build(ca, false, Some(identity))
    }

    fn build(ca: &TestCa, h2: bool, identity: Option<&Issued>) -> Self {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("CA PEM"))
            .expect("CA certificate");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let mut config = match identity {
            None => config.with_no_client_auth(),
            Some(identity) => config
                .with_client_auth_cert(
                    vec![
                        CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).expect("PEM"),
                    ],
                    rustls_pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                        .expect("PEM key"),
                )
                .expect("client certificate"),
        };
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Self {
            config: Arc::new(config),
        }
    }

    /// Connects to `addr` with SNI `sni` (verifying the certificate for
    /// it), then sends `GET path` with Host (or `:authority`) `host`.
    pub async fn get(
        &self,
        addr: SocketAddr,
        sni: &str,
        host: &str,
        path: &str,
    ) -> anyhow::Result<TlsReply> {
        self.get_after(&[], addr, sni, host, path).await
    }

    /// [`Self::get`] on a connection that first sends `preamble` in clear
    /// (a PROXY protocol header, as a load balancer would).
    pub async fn get_after(
        &self,
        preamble: &[u8],
        addr: SocketAddr,
        sni: &str,
        host: &str,
        path: &str,
    ) -> anyhow::Result<TlsReply> {
        let exchange = async {
            let (tls, served) = self.handshake(addr, sni, preamble).await?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let io = TokioIo::new(tls);
            let response = if alpn.as_deref() == Some(b"h2") {
                let (mut sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(connection);
                let request = http::Request::get(format!("https://{host}{path}"))
                    .body(Full::new(Bytes::new()))?;
                sender.send_request(request).await?
            } else {
                let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(connection);
                let request = http::Request::get(path)
                    .header(http::header::HOST, host)
                    .body(Full::new(Bytes::new()))?;
                sender.send_request(request).await?
            };
            anyhow::Ok(TlsReply {
                reply: Reply::read(response).await?,
                served,
                alpn,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .with_context(|| format!("https://{host}{path} (SNI {sni}) timed out"))?
    }

    /// One HTTP/1.1 connection to `addr` with SNI `sni`, kept open for
    /// several requests.
    pub async fn connect(&self, addr: SocketAddr, sni: &str) -> anyhow::Result<TlsConnection> {
        let (tls, served) = self.handshake(addr, sni, &[]).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(TlsConnection { sender, served })
    }
}

impl TlsClient {
    /// A TLS connection to `addr` with SNI `sni`, after `preamble` in
    /// clear, and the DER of the end-entity certificate the server
    /// presented.
    async fn handshake(
        &self,
        addr: SocketAddr,
        sni: &str,
        preamble: &[u8],
    ) -> anyhow::Result<(
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        Vec<u8>,
    )> {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tokio::io::AsyncWriteExt::write_all(&mut tcp, preamble).await?;
        let name = ServerName::try_from(sni.to_owned())?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let served = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        Ok((tls, served))
    }
}

/// An open HTTPS connection (HTTP/1.1, keep-alive).
pub struct TlsConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// DER of the end-entity certificate presented at the handshake.
    pub served: Vec<u8>,
}

impl TlsConnection {
    /// `GET path` with Host `host` on this connection.
    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<Reply> {
        let request = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Full::new(Bytes::new()))?;
        let exchange = async { Reply::read(self.sender.send_request(request).await?).await };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .context("request on an open connection timed out")?
    }
}
