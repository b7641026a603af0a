//! TLS for HTTPS ports: one rustls server config per port, built with the
//! table, so a certificate rotation is a table swap. The certificate is
//! chosen by SNI the way a request's listener is chosen by Host (Gateway API
//! `GatewayTLSConfig`: "The GatewayClass MUST use the longest matching SNI
//! out of all available certificates for any TLS handshake"): the most
//! specific listener whose hostname matches the SNI name, then, among its
//! certificates, the first valid for that name, else its first. A client
//! without SNI gets the catch-all listener's certificate, else the first
//! listener's, as a default server would.

use std::sync::Arc;

use gatehouse_snapshot as pb;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::{DnsName, ServerName};

use super::HostPattern;

/// ALPN protocols offered, preferred first (RFC 7301).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A listener's hostname and its certificates.
type ListenerCertificates = (HostPattern, Box<[Arc<CertifiedKey>]>);

/// The certificates of one port's listeners, in the port's listener order
/// (most specific hostname first).
#[derive(Debug)]
pub struct SniResolver {
    listeners: Box<[ListenerCertificates]>,
}

impl SniResolver {
    /// Index of the listener the SNI name selects.
    fn listener(&self, sni: Option<&str>) -> Option<usize> {
        match sni {
            Some(name) => {
                let name = name.to_ascii_lowercase();
                let name = name.strip_suffix('.').unwrap_or(&name);
                self.listeners.iter().position(|(p, _)| p.matches(name))
            }
            None => self
                .listeners
                .iter()
                .position(|(p, _)| *p == HostPattern::Any)
                .or((!self.listeners.is_empty()).then_some(0)),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name();
        let index = self
            .listener(sni)
            .or((!self.listeners.is_empty()).then_some(0))?;
        let certificates = &self.listeners[index].1;
        if certificates.len() > 1
            && let Some(name) = sni.and_then(|s| DnsName::try_from(s).ok())
        {
            let name = ServerName::DnsName(name.to_owned());
            let valid = certificates.iter().find(|c| {
                c.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
            });
            if valid.is_some() {
                return valid.cloned();
            }
        }
        certificates.first().cloned()
    }
}

/// Gateway API `FrontendTLSValidation`: AllowValidOnly requires a client
/// certificate that chains to the configured CAs; AllowInsecureFallback asks
/// for one but lets the connection through without it, or with one that
/// does not verify (the backend decides).
fn client_verifier(
    validation: &pb::ClientValidation,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let bundles: Vec<&[u8]> = validation.ca_pem.iter().map(Vec::as_slice).collect();
    let roots = gatehouse_snapshot::tls::client_roots(&bundles)?;
    let strict = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(match validation.allow_insecure_fallback {
        false => strict,
        true => Arc::new(InsecureFallback(strict)),
    })
}

/// Asks for a client certificate and verifies it, but accepts the
/// connection whatever the outcome.
#[derive(Debug)]
struct InsecureFallback(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for InsecureFallback {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(error) = self.0.verify_client_cert(end_entity, intermediates, now) {
            tracing::debug!(%error, "client certificate not valid; insecure fallback lets it in");
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The server config of an HTTPS port; `Err` is (field, problem).
pub fn server_config(port: &pb::Port, field: &str) -> Result<Arc<ServerConfig>, (String, String)> {
    let mut listeners = Vec::with_capacity(port.listeners.len());
    for (l, listener) in port.listeners.iter().enumerate() {
        let hostname = HostPattern::parse(&listener.hostname).ok_or_else(|| {
            (
                format!("{field}.listeners[{l}].hostname"),
                format!("{:?} is not a hostname", listener.hostname),
            )
        })?;
        let certificates = listener
            .certificates
            .iter()
            .enumerate()
            .map(|(c, cert)| {
                gatehouse_snapshot::tls::certified_key(&cert.chain_pem, &cert.key_pem)
                    .map(Arc::new)
                    .map_err(|problem| {
                        (
                            format!("{field}.listeners[{l}].certificates[{c}]"),
                            format!("{}: {problem}", cert.name),
                        )
                    })
            })
            .collect::<Result<Box<[_]>, _>>()?;
        if certificates.is_empty() {
            return Err((
                format!("{field}.listeners[{l}].certificates"),
                "an HTTPS listener needs a certificate".into(),
            ));
        }
        listeners.push((hostname, certificates));
    }
    let resolver = SniResolver {
        listeners: listeners.into(),
    };
    let provider = gatehouse_snapshot::tls::shared_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| (field.to_owned(), e.to_string()))?;
    let builder = match &port.client_validation {
        None => builder.with_no_client_auth(),
        Some(validation) => builder.with_client_cert_verifier(
            client_verifier(validation, provider)
                .map_err(|problem| (format!("{field}.client_validation"), problem))?,
        ),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
