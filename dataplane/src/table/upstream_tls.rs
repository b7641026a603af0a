//! BackendTLSPolicy in the data plane: the rustls client config a cluster's
//! connections use, built with the table. Trust is the policy's CA bundles
//! and/or the system's roots (read once per process); the certificate must
//! be valid for the server name, or, when the policy lists subject
//! alternative names, for one of them (a hostname, or a URI carried exactly
//! as a URI subject alternative name). A policy with nothing to trust still
//! yields TLS, one that fails every connection: never clear text.

use std::sync::{Arc, OnceLock};

use gatehouse_snapshot as pb;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// How a cluster's connections are secured.
#[derive(Debug)]
pub enum UpstreamTls {
    Ready {
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        /// Identifies these settings: connections are pooled per endpoint
        /// and settings.
        fingerprint: u64,
    },
    /// Nothing to verify the backend with: every connection fails.
    Unusable(String),
}

impl UpstreamTls {
    /// Non-zero; equal for equal settings across tables.
    pub fn fingerprint(&self) -> u64 {
        match self {
            Self::Ready { fingerprint, .. } => *fingerprint,
            Self::Unusable(_) => 1,
        }
    }
}

/// The system's trust store, loaded on first use.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "reading the system's CA certificates");
        }
        loaded.certs
    })
}

/// Builds the client side of a BackendTLSPolicy, presenting `identity`
/// (a Gateway's `spec.tls.backend.clientCertificateRef`) when given; `Err`
/// is a snapshot field problem (an unparsable server name, an identity
/// that does not load).
pub fn build(
    tls: &pb::UpstreamTls,
    h2: bool,
    identity: Option<&pb::Certificate>,
) -> Result<UpstreamTls, String> {
    let identity = identity
        .map(|c| {
            gatehouse_snapshot::tls::certified_key(&c.chain_pem, &c.key_pem)
                .map(|key| Arc::new(ClientIdentity(Arc::new(key))))
                .map_err(|problem| format!("backend identity {}: {problem}", c.name))
        })
        .transpose()?;
    // Fails closed rather than rejecting the snapshot: one policy must not
    // stop a whole group's configuration.
    let Ok(server_name) = ServerName::try_from(tls.server_name.clone()) else {
        return Ok(UpstreamTls::Unusable(format!(
            "server_name {:?} is not a DNS name",
            tls.server_name
        )));
    };
    let mut roots = RootCertStore::empty();
    if !tls.ca_pem.is_empty() {
        let bundles: Vec<&[u8]> = tls.ca_pem.iter().map(Vec::as_slice).collect();
        match gatehouse_snapshot::tls::client_roots(&bundles) {
            Ok(store) => roots.roots.extend(store.roots),
            Err(problem) => return Ok(UpstreamTls::Unusable(problem)),
        }
    }
    if tls.system_roots {
        roots.add_parsable_certificates(system_roots().iter().cloned());
    }
    if roots.is_empty() {
        return Ok(UpstreamTls::Unusable(
            "no CA certificate to verify the backend with".into(),
        ));
    }
    let provider = gatehouse_snapshot::tls::shared_provider();
    let roots = Arc::new(roots);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> =
        match tls.subject_alt_names.is_empty() && tls.subject_alt_uris.is_empty() {
            true => webpki,
            false => Arc::new(AnyOfNames {
                inner: webpki,
                roots,
                algorithms: provider.signature_verification_algorithms,
                names: tls
                    .subject_alt_names
                    .iter()
                    .filter_map(|n| ServerName::try_from(n.clone()).ok())
                    .collect(),
                uris: tls.subject_alt_uris.clone(),
            }),
        };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder.with_client_cert_resolver(identity.clone()),
    };
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &tls.server_name,
            &tls.ca_pem,
            tls.system_roots,
            &tls.subject_alt_names,
            &tls.subject_alt_uris,
            h2,
            identity.as_ref().map(|i| &i.0.cert),
        )
            .hash(&mut hasher);
        hasher.finish() | 2
    };
    Ok(UpstreamTls::Ready {
        config: Arc::new(config),
        server_name,
        fingerprint,
    })
}

/// A Gateway's client certificate, presented whenever a backend asks.
#[derive(Debug)]
struct ClientIdentity(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Gateway API `subjectAltNames`: the certificate must be valid for one of
/// these hostnames, or carry one of these URIs (the hostname is then only
/// the SNI). Chain and signature checks are WebPKI's, against the same
/// roots.
#[derive(Debug)]
struct AnyOfNames {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    names: Vec<ServerName<'static>>,
    uris: Vec<String>,
}

impl AnyOfNames {
    /// The chain up to a trusted root, for server authentication, with no
    /// name checked; then one of `uris` among the URI subject alternative
    /// names.
    fn verify_uris(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let invalid = |e: webpki::Error| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        };
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(invalid)?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(invalid)?;
        let carried = uri_names(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        match carried.iter().any(|u| self.uris.contains(u)) {
            true => Ok(ServerCertVerified::assertion()),
            false => Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
        }
    }
}

/// The URI subject alternative names of a certificate.
fn uri_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, ()> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert).map_err(|_| ())?;
    let Some(san) = parsed.subject_alternative_name().map_err(|_| ())? else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect())
}

impl ServerCertVerifier for AnyOfNames {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _sni: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no subject alternative name to verify".into());
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
            {
                Ok(verified) => return Ok(verified),
                Err(error) => last = error,
            }
        }
        if !self.uris.is_empty() {
            return self.verify_uris(end_entity, intermediates, now);
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
