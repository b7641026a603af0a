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
use rustls::server::{ClientHello, ResolvesServerCert};
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
    let mut config =
        ServerConfig::builder_with_provider(gatehouse_snapshot::tls::shared_provider())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|e| (field.to_owned(), e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
