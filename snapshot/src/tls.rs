//! What makes a snapshot `Certificate` usable, decided in one place for the
//! controller (which reports a bad one in the listener's status and never
//! sends it) and the data plane (which serves it): a PEM chain of at least
//! one certificate, end-entity first, and a PEM private key (PKCS#8, PKCS#1
//! or SEC1) that loads and matches the end-entity certificate's public key.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate and key ready for a TLS handshake, or why not.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("certificate and key are not usable together: {e}"))
}

/// The crypto provider of every Gatehouse TLS endpoint.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Shared form, for configs built once per table.
pub fn shared_provider() -> Arc<CryptoProvider> {
    Arc::new(provider())
}

/// The trust anchors of client certificate validation: every certificate of
/// every PEM bundle; at least one.
pub fn client_roots(bundles: &[&[u8]]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for bundle in bundles {
        for cert in CertificateDer::pem_slice_iter(bundle) {
            let cert = cert.map_err(|e| format!("ca.crt is not PEM certificates: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca.crt holds an unusable CA certificate: {e}"))?;
        }
    }
    if roots.is_empty() {
        return Err("ca.crt holds no PEM certificate".into());
    }
    Ok(roots)
}
