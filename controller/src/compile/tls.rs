//! HTTPS listener certificates, per Gateway API `GatewayTLSConfig`:
//! `certificateRefs` to core Secrets of type `kubernetes.io/tls`
//! (`tls.crt`, `tls.key`, from `data` or, in manifest files, `stringData`);
//! a Secret in another namespace only where a ReferenceGrant in that
//! namespace lets Gateways of this one refer to it (`RefNotPermitted`); any
//! other kind, a missing Secret or one whose certificate and key do not load
//! together is `InvalidCertificateRef`. The certificates that resolve are
//! served; the listener reports the first reference that did not.

use std::collections::HashMap;

use gatehouse_snapshot::Certificate;

use crate::compile::grants::{Reference, ReferenceGrants};
use crate::k8s::{CertificateRef, ListenerTls, Secret, TlsMode};
use crate::status::CertificateFailure;
use crate::store::Store;

/// Secrets and ReferenceGrants indexed for certificate lookups.
pub struct Secrets<'a> {
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    grants: ReferenceGrants<'a>,
}

/// The certificates of one listener and the first reference that failed.
#[derive(Debug, Clone, Default)]
pub struct ListenerCertificates {
    pub certificates: Vec<Certificate>,
    pub failure: Option<CertificateFailure>,
}

impl<'a> Secrets<'a> {
    pub fn new(store: &'a Store) -> Self {
        let key = |meta: &'a crate::k8s::ObjectMeta| {
            (
                meta.namespace.as_deref().unwrap_or("default"),
                meta.name.as_deref().unwrap_or(""),
            )
        };
        Secrets {
            secrets: store.secrets().map(|s| (key(&s.metadata), s)).collect(),
            grants: ReferenceGrants::new(store),
        }
    }

    /// Resolves the certificates of listener `index` of a Gateway in
    /// `gateway_ns`. `None` TLS config (or no references) is a failure: an
    /// HTTPS listener that terminates TLS needs a certificate.
    pub fn resolve(
        &self,
        gateway_ns: &str,
        index: usize,
        tls: Option<&ListenerTls>,
    ) -> ListenerCertificates {
        let field = format!("spec.listeners[{index}].tls");
        let mut out = ListenerCertificates::default();
        let refs = tls
            .and_then(|t| t.certificate_refs.as_deref())
            .unwrap_or_default();
        if refs.is_empty() {
            out.failure = Some(CertificateFailure::Invalid(format!(
                "{field}.certificateRefs: an HTTPS listener needs at least one certificate"
            )));
            return out;
        }
        for (i, r) in refs.iter().enumerate() {
            let field = format!("{field}.certificateRefs[{i}]");
            match self.certificate(gateway_ns, &field, r) {
                Ok(certificate) => out.certificates.push(certificate),
                Err(failure) => {
                    out.failure.get_or_insert(failure);
                }
            }
        }
        out
    }

    fn certificate(
        &self,
        gateway_ns: &str,
        field: &str,
        r: &CertificateRef,
    ) -> Result<Certificate, CertificateFailure> {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            return Err(CertificateFailure::Invalid(format!(
                "{field}: kind {kind:?} of group {group:?} is not supported; supported: Secret"
            )));
        }
        let ns = r.namespace.as_deref().unwrap_or(gateway_ns);
        let reference = Reference {
            from_kind: "Gateway",
            from_namespace: gateway_ns,
            to_kind: "Secret",
            to_namespace: ns,
            to_name: &r.name,
        };
        if ns != gateway_ns && !self.grants.allow(&reference) {
            return Err(CertificateFailure::RefNotPermitted(format!(
                "{field}: Secret \"{}\" in namespace {ns:?} is not allowed by any ReferenceGrant in that namespace",
                r.name
            )));
        }
        let Some(secret) = self.secrets.get(&(ns, r.name.as_str())) else {
            return Err(CertificateFailure::Invalid(format!(
                "{field}: Secret \"{}\" not found in namespace {ns:?}",
                r.name
            )));
        };
        let invalid = |problem: String| {
            CertificateFailure::Invalid(format!("{field}: Secret \"{ns}/{}\": {problem}", r.name))
        };
        let chain = secret_value(secret, "tls.crt").ok_or_else(|| invalid("no tls.crt".into()))?;
        let key = secret_value(secret, "tls.key").ok_or_else(|| invalid("no tls.key".into()))?;
        gatehouse_snapshot::tls::certified_key(&chain, &key).map_err(invalid)?;
        Ok(Certificate {
            name: format!("{ns}/{}", r.name),
            chain_pem: chain,
            key_pem: key,
        })
    }
}

/// Whether a listener's TLS mode is Passthrough, which HTTPS cannot serve.
pub fn is_passthrough(tls: Option<&ListenerTls>) -> bool {
    matches!(
        tls.and_then(|t| t.mode.as_ref()),
        Some(TlsMode::Passthrough)
    )
}

/// A Secret key's bytes: `data` (base64 in manifests, decoded on reading),
/// else `stringData`, which manifest files may use and an API server would
/// have folded into `data`.
fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(value.0.clone());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.clone().into_bytes())
}
