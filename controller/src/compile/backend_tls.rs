//! BackendTLSPolicy (Gateway API v1): a Service (or one named port of it,
//! `sectionName`) whose endpoints are reached over TLS, verified against CA
//! certificates from ConfigMaps (`ca.crt`, in the policy's namespace) or
//! the system's trust store (`wellKnownCACertificates: System`), for
//! `hostname` (also the SNI) or, when given, any of the `subjectAltNames` of
//! type Hostname.
//!
//! A policy that cannot be honoured still applies: the cluster gets TLS with
//! nothing trusted, so requests fail (502) rather than going out in clear
//! text, and the policy's status says why (`ResolvedRefs` False with
//! `InvalidCACertificateRef` or `InvalidKind`, `Accepted` False with
//! `NoValidCACertificate`). When several policies target one port, the
//! oldest wins (then namespace/name).

use std::collections::HashMap;

use gatehouse_snapshot::UpstreamTls;

use crate::k8s::{BackendTlsPolicy, ConfigMap};
use crate::store::Store;

/// What compile found about one policy, for its status.
pub struct PolicyReport<'a> {
    pub policy: &'a BackendTlsPolicy,
    pub tls: UpstreamTls,
    pub failure: Option<PolicyFailure>,
    /// The older policy that takes this one's target, if any.
    pub conflicted_with: Option<String>,
}

/// Why a policy's validation did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFailure {
    /// `ResolvedRefs` reason: InvalidCACertificateRef or InvalidKind.
    pub reason: &'static str,
    pub message: String,
}

pub struct BackendTlsPolicies<'a> {
    by_service: HashMap<(&'a str, &'a str), Vec<&'a BackendTlsPolicy>>,
    config_maps: HashMap<(&'a str, &'a str), &'a ConfigMap>,
}

impl<'a> BackendTlsPolicies<'a> {
    pub fn new(store: &'a Store) -> Self {
        let mut by_service: HashMap<(&str, &str), Vec<&BackendTlsPolicy>> = HashMap::new();
        for policy in store.backend_tls_policies() {
            let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
            for target in &policy.spec.target_refs {
                if target.group.is_empty() && target.kind == "Service" {
                    let entry = by_service.entry((ns, target.name.as_str())).or_default();
                    if !entry.iter().any(|p| std::ptr::eq(*p, policy)) {
                        entry.push(policy);
                    }
                }
            }
        }
        for policies in by_service.values_mut() {
            policies.sort_by(|a, b| {
                let key = |p: &BackendTlsPolicy| {
                    (
                        p.metadata.creation_timestamp.clone().is_none(),
                        p.metadata.creation_timestamp.clone(),
                        p.metadata.namespace.clone(),
                        p.metadata.name.clone(),
                    )
                };
                key(a).cmp(&key(b))
            });
        }
        let config_maps = store
            .config_maps()
            .map(|c| {
                let meta = &c.metadata;
                (
                    (
                        meta.namespace.as_deref().unwrap_or("default"),
                        meta.name.as_deref().unwrap_or(""),
                    ),
                    c,
                )
            })
            .collect();
        BackendTlsPolicies {
            by_service,
            config_maps,
        }
    }

    /// The policy for port `port_name` of Service `ns/service`, and the TLS
    /// it asks for.
    pub fn for_port(
        &self,
        ns: &str,
        service: &str,
        port_name: &str,
    ) -> Option<(&'a BackendTlsPolicy, UpstreamTls, Option<PolicyFailure>)> {
        let policy = self.by_service.get(&(ns, service))?.iter().find(|p| {
            p.spec.target_refs.iter().any(|t| {
                t.name == service
                    && t.section_name
                        .as_deref()
                        .is_none_or(|s| s.is_empty() || s == port_name)
            })
        })?;
        let (tls, failure) = self.resolve(policy);
        Some((policy, tls, failure))
    }

    /// Every policy with what its validation resolves to.
    pub fn all(&self) -> Vec<PolicyReport<'a>> {
        let mut seen: Vec<PolicyReport<'a>> = Vec::new();
        for policies in self.by_service.values() {
            for policy in policies {
                if !seen.iter().any(|r| std::ptr::eq(r.policy, *policy)) {
                    let (tls, failure) = self.resolve(policy);
                    seen.push(PolicyReport {
                        policy,
                        tls,
                        failure,
                        conflicted_with: self.older_rival(policy),
                    });
                }
            }
        }
        seen.sort_by_key(|r| {
            (
                r.policy.metadata.namespace.clone(),
                r.policy.metadata.name.clone(),
            )
        });
        seen
    }

    /// An older policy with the same target (Service and sectionName), which
    /// wins: spec (`BackendTLSPolicy`), the older one applies and the other
    /// is `Accepted` False with reason `Conflicted`.
    fn older_rival(&self, policy: &BackendTlsPolicy) -> Option<String> {
        let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
        policy.spec.target_refs.iter().find_map(|target| {
            let same = |p: &&&BackendTlsPolicy| {
                p.spec
                    .target_refs
                    .iter()
                    .any(|t| t.name == target.name && t.section_name == target.section_name)
            };
            let winner = self
                .by_service
                .get(&(ns, target.name.as_str()))?
                .iter()
                .find(same)?;
            (!std::ptr::eq(*winner, policy)).then(|| {
                format!(
                    "{}/{}",
                    winner.metadata.namespace.as_deref().unwrap_or("default"),
                    winner.metadata.name.as_deref().unwrap_or("")
                )
            })
        })
    }

    fn resolve(&self, policy: &BackendTlsPolicy) -> (UpstreamTls, Option<PolicyFailure>) {
        let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
        let validation = &policy.spec.validation;
        let mut tls = UpstreamTls {
            server_name: validation.hostname.to_ascii_lowercase(),
            system_roots: validation.well_known_ca_certificates.as_deref() == Some("System"),
            subject_alt_names: validation
                .subject_alt_names
                .iter()
                .flatten()
                .filter_map(|s| s.hostname.clone())
                .collect(),
            ..Default::default()
        };
        let mut failure = None;
        if let Some(other) = validation
            .well_known_ca_certificates
            .as_deref()
            .filter(|w| *w != "System")
        {
            failure = Some(PolicyFailure {
                reason: "InvalidKind",
                message: format!(
                    "spec.validation.wellKnownCACertificates: {other:?} is not supported; supported: System"
                ),
            });
        }
        for (i, r) in validation.ca_certificate_refs.iter().flatten().enumerate() {
            let field = format!("spec.validation.caCertificateRefs[{i}]");
            if !r.group.is_empty() || r.kind != "ConfigMap" {
                failure.get_or_insert(PolicyFailure {
                    reason: "InvalidKind",
                    message: format!(
                        "{field}: kind {:?} of group {:?} is not supported; supported: ConfigMap",
                        r.kind, r.group
                    ),
                });
                continue;
            }
            let bundle = self
                .config_maps
                .get(&(ns, r.name.as_str()))
                .and_then(|c| c.data.as_ref())
                .and_then(|d| d.get("ca.crt"));
            let checked = bundle
                .ok_or_else(|| "not found or has no ca.crt".to_owned())
                .and_then(|pem| {
                    gatehouse_snapshot::tls::client_roots(&[pem.as_bytes()]).map(|_| pem)
                });
            match checked {
                Ok(pem) => tls.ca_pem.push(pem.clone().into_bytes()),
                Err(problem) => {
                    failure.get_or_insert(PolicyFailure {
                        reason: "InvalidCACertificateRef",
                        message: format!("{field}: ConfigMap \"{ns}/{}\" {problem}", r.name),
                    });
                }
            }
        }
        for (i, san) in validation.subject_alt_names.iter().flatten().enumerate() {
            let Some(uri) = &san.uri else { continue };
            if is_uri(uri) {
                tls.subject_alt_uris.push(uri.clone());
            } else {
                // Fail closed: a name the user meant to require cannot be
                // dropped in silence.
                tls.ca_pem.clear();
                tls.system_roots = false;
                failure = Some(PolicyFailure {
                    reason: "InvalidKind",
                    message: format!(
                        "spec.validation.subjectAltNames[{i}].uri: {uri:?} is not an absolute URI; requests to the backend fail until it is mended"
                    ),
                });
            }
        }
        (tls, failure)
    }
}

/// An absolute URI as a certificate carries one (RFC 3986 `scheme ":"
/// hier-part`): a scheme of letters, digits, `+`, `-` and `.` starting with
/// a letter, then something, and no whitespace or control characters.
fn is_uri(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once(':') else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && value.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::is_uri;

    #[test]
    fn uri_subject_alt_names_must_be_absolute_uris() {
        for good in [
            "spiffe://cluster.local/ns/default/sa/backend",
            "https://backend.example.com/",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        ] {
            assert!(is_uri(good), "{good}");
        }
        for bad in [
            "",
            "backend.example.com",
            "://x",
            "1spiffe://x",
            "spiffe:",
            "spiffe://a b",
        ] {
            assert!(!is_uri(bad), "{bad}");
        }
    }
}
