//! HTTPS listener certificates, per Gateway API `GatewayTLSConfig`:
//! `certificateRefs` to core Secrets of type `kubernetes.io/tls`
//! (`tls.crt`, `tls.key`, from `data` or, in manifest files, `stringData`);
//! a Secret in another namespace only where a ReferenceGrant in that
//! namespace lets Gateways of this one refer to it (`RefNotPermitted`); any
//! other kind, a missing Secret or one whose certificate and key do not load
//! together is `InvalidCertificateRef`. The certificates that resolve are
//! served; the listener reports the first reference that did not.

use std::collections::HashMap;

use gatehouse_snapshot::{Certificate, ClientValidation};

use crate::compile::grants::{Reference, ReferenceGrants};
use crate::k8s::{CertificateRef, ConfigMap, GatewayTls, ListenerTls, Secret, TlsMode};
use crate::status::CertificateFailure;
use crate::store::Store;

/// Secrets, ConfigMaps and ReferenceGrants indexed for certificate lookups.
pub struct Secrets<'a> {
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    config_maps: HashMap<(&'a str, &'a str), &'a ConfigMap>,
    grants: ReferenceGrants<'a>,
}

/// Client certificate validation of one HTTPS port (Gateway
/// `spec.tls.frontend`, the `perPort` entry for the port, else `default`).
#[derive(Debug, Clone, Default)]
pub struct FrontendValidation {
    /// `None` when the Gateway asks for no client certificates.
    pub validation: Option<ClientValidation>,
    pub failure: Option<CertificateFailure>,
    /// Every CA reference failed: the listener is not accepted
    /// (`NoValidCACertificate`).
    pub no_valid_ca: bool,
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
            config_maps: store.config_maps().map(|c| (key(&c.metadata), c)).collect(),
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

impl Secrets<'_> {
    /// Gateway `spec.tls.backend.clientCertificateRef`: the certificate the
    /// Gateway presents to TLS backends. `None` without one; a reference
    /// that does not resolve is `InvalidClientCertificateRef` (or
    /// `RefNotPermitted`) on the Gateway's `ResolvedRefs`.
    pub fn backend_identity(
        &self,
        gateway_ns: &str,
        tls: Option<&GatewayTls>,
    ) -> Option<Result<Certificate, CertificateFailure>> {
        let r = tls?.backend.as_ref()?.client_certificate_ref.as_ref()?;
        let reference = CertificateRef {
            group: r.group.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
        };
        Some(self.certificate(
            gateway_ns,
            "spec.tls.backend.clientCertificateRef",
            &reference,
        ))
    }

    /// The client validation for HTTPS listener port `port` of a Gateway in
    /// `gateway_ns`. Spec (`FrontendTLSValidation.caCertificateRefs`): a
    /// ConfigMap with `ca.crt` (Core); any other kind is
    /// `InvalidCACertificateKind`, a missing or malformed one
    /// `InvalidCACertificateRef`, another namespace without a ReferenceGrant
    /// `RefNotPermitted`; when every reference fails the listener is not
    /// accepted (`NoValidCACertificate`).
    pub fn frontend(
        &self,
        gateway_ns: &str,
        tls: Option<&GatewayTls>,
        port: i32,
    ) -> FrontendValidation {
        let Some(frontend) = tls.and_then(|t| t.frontend.as_ref()) else {
            return FrontendValidation::default();
        };
        // `default` and `perPort[].tls` have distinct generated types of one
        // JSON shape: read the one that applies through a single view.
        let per_port = frontend
            .per_port
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, p)| p.port == port);
        let (field, validation) = match per_port {
            Some((i, entry)) => (
                format!("spec.tls.frontend.perPort[{i}].tls.validation"),
                serde_json::to_value(&entry.tls.validation),
            ),
            None => (
                "spec.tls.frontend.default.validation".to_owned(),
                serde_json::to_value(&frontend.default.validation),
            ),
        };
        let Some(validation) = validation
            .ok()
            .and_then(|v| serde_json::from_value::<Option<ValidationSpec>>(v).ok())
            .flatten()
        else {
            return FrontendValidation::default();
        };
        let insecure = validation.mode.as_deref() == Some("AllowInsecureFallback");
        let refs = validation.ca_certificate_refs;
        let mut out = FrontendValidation::default();
        let mut bundles = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let field = format!("{field}.caCertificateRefs[{i}]");
            match self.ca_bundle(gateway_ns, &field, r) {
                Ok(pem) => bundles.push(pem),
                Err(failure) => {
                    out.failure.get_or_insert(failure);
                }
            }
        }
        out.no_valid_ca = bundles.is_empty();
        out.validation = Some(ClientValidation {
            ca_pem: bundles,
            allow_insecure_fallback: insecure,
        });
        out
    }

    fn ca_bundle(
        &self,
        gateway_ns: &str,
        field: &str,
        r: &CaRef,
    ) -> Result<Vec<u8>, CertificateFailure> {
        let (group, kind, name) = (r.group.as_str(), r.kind.as_str(), r.name.as_str());
        let namespace = r.namespace.as_deref();
        if !group.is_empty() || kind != "ConfigMap" {
            return Err(CertificateFailure::InvalidCaKind(format!(
                "{field}: kind {kind:?} of group {group:?} is not supported; supported: ConfigMap"
            )));
        }
        let ns = namespace.unwrap_or(gateway_ns);
        let reference = Reference {
            from_kind: "Gateway",
            from_namespace: gateway_ns,
            to_kind: "ConfigMap",
            to_namespace: ns,
            to_name: name,
        };
        if ns != gateway_ns && !self.grants.allow(&reference) {
            return Err(CertificateFailure::RefNotPermitted(format!(
                "{field}: ConfigMap {name:?} in namespace {ns:?} is not allowed by any ReferenceGrant in that namespace"
            )));
        }
        let invalid = |problem: &str| {
            CertificateFailure::InvalidCa(format!("{field}: ConfigMap \"{ns}/{name}\" {problem}"))
        };
        let map = self
            .config_maps
            .get(&(ns, name))
            .ok_or_else(|| invalid("not found"))?;
        let pem = map
            .data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .ok_or_else(|| invalid("has no ca.crt"))?;
        gatehouse_snapshot::tls::client_roots(&[pem.as_bytes()]).map_err(|e| invalid(&e))?;
        Ok(pem.clone().into_bytes())
    }
}

/// `FrontendTLSValidation`, as both its generated types read.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValidationSpec {
    #[serde(default)]
    ca_certificate_refs: Vec<CaRef>,
    mode: Option<String>,
}

#[derive(serde::Deserialize)]
struct CaRef {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
    name: String,
    namespace: Option<String>,
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
pub(crate) fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(value.0.clone());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.clone().into_bytes())
}
