//! Gateways of our classes, per Gateway API `GatewaySpec`: the cluster group
//! (our label), the addresses to bind (`spec.addresses` of type IPAddress,
//! else the configured listen address; any other type or an unparsable IP is
//! `UnsupportedAddress`), and the validated listeners.

use std::net::IpAddr;

use gatehouse_snapshot::{Certificate, Protocol};

use crate::compile::CompileOptions;
use crate::compile::listener::{self, ListenerModel};
use crate::compile::tls::Secrets;
use crate::k8s::{Gateway, Time};
use crate::status::CertificateFailure;

/// A Gateway as compile uses it.
#[derive(Debug, Clone)]
pub struct GatewayModel<'a> {
    pub gateway: &'a Gateway,
    pub namespace: String,
    pub name: String,
    pub created: Option<&'a Time>,
    pub group: String,
    /// A move from another group in progress: that group serves the
    /// Gateway too.
    pub moving_from: Option<super::Handover>,
    pub addresses: Result<Vec<IpAddr>, String>,
    pub listeners: Vec<ListenerModel>,
    /// `spec.tls.backend.clientCertificateRef`, when set.
    pub backend_identity: Option<Result<Certificate, CertificateFailure>>,
    /// Annotation [`PROXY_PROTOCOL_ANNOTATION`]: its listeners' connections
    /// open with a PROXY protocol header.
    pub proxy_protocol: bool,
}

/// Gateway annotation: "true" when a load balancer in front sends a PROXY
/// protocol header (v1 or v2) on every connection, so that the client
/// address is the one it names, not the load balancer's.
pub const PROXY_PROTOCOL_ANNOTATION: &str = "gatehouse.dev/proxy-protocol";

impl<'a> GatewayModel<'a> {
    pub fn new(gateway: &'a Gateway, options: &CompileOptions, secrets: &Secrets<'_>) -> Self {
        let meta = &gateway.metadata;
        let group = super::gateway_group(gateway);
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let mut listeners = listener::listeners(&gateway.spec.listeners, options.port_offset);
        for (i, (l, spec)) in listeners
            .iter_mut()
            .zip(&gateway.spec.listeners)
            .enumerate()
        {
            if l.protocol == Protocol::Https && l.report.unsupported_protocol.is_none() {
                let resolved = secrets.resolve(&namespace, i, spec.tls.as_ref());
                let frontend = secrets.frontend(&namespace, gateway.spec.tls.as_ref(), spec.port);
                l.report.certificate_failure = resolved.failure.or(frontend.failure);
                l.report.no_certificate = resolved.certificates.is_empty();
                l.report.no_valid_ca = frontend.no_valid_ca;
                l.certificates = resolved.certificates;
                l.client_validation = frontend.validation;
            }
        }
        let backend_identity = secrets.backend_identity(&namespace, gateway.spec.tls.as_ref());
        let proxy_protocol = match proxy_protocol(gateway) {
            Ok(on) => on,
            Err(problem) => {
                // Served without it, the load balancer's header would be
                // read as a request, or a client's forged one believed.
                for l in &mut listeners {
                    l.report
                        .unsupported_protocol
                        .get_or_insert_with(|| problem.clone());
                }
                false
            }
        };
        GatewayModel {
            gateway,
            namespace,
            name: meta.name.clone().unwrap_or_default(),
            created: meta.creation_timestamp.as_ref(),
            group,
            moving_from: None,
            addresses: addresses(gateway, options),
            listeners,
            backend_identity,
            proxy_protocol,
        }
    }

    /// The groups whose data planes serve the Gateway.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.group.as_str()).chain(self.moving_from.iter().map(|h| h.from.as_str()))
    }

    pub fn serves(&self, group: &str) -> bool {
        self.groups().any(|g| g == group)
    }

    /// The group whose addresses the Gateway reports.
    pub fn reported_group(&self) -> &str {
        match &self.moving_from {
            Some(h) if !h.addresses_of_new_group => &h.from,
            _ => &self.group,
        }
    }

    pub fn generation(&self) -> i64 {
        self.gateway.metadata.generation.unwrap_or(0)
    }
}

fn proxy_protocol(gateway: &Gateway) -> Result<bool, String> {
    let value = gateway
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROXY_PROTOCOL_ANNOTATION));
    match value.map(|v| v.trim()) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(format!(
            "annotation {PROXY_PROTOCOL_ANNOTATION} must be \"true\" or \"false\", not {v:?}"
        )),
    }
}

fn addresses(gateway: &Gateway, options: &CompileOptions) -> Result<Vec<IpAddr>, String> {
    let requested = gateway.spec.addresses.as_deref().unwrap_or_default();
    if requested.is_empty() {
        return Ok(vec![options.listen_address]);
    }
    let mut out = Vec::new();
    for (i, a) in requested.iter().enumerate() {
        let kind = a.r#type.as_deref().unwrap_or("IPAddress");
        if kind != "IPAddress" {
            return Err(format!(
                "spec.addresses[{i}]: address type {kind:?} is not supported; supported: IPAddress"
            ));
        }
        // An address without a value asks the implementation to pick one.
        let ip = match a.value.as_deref() {
            None | Some("") => options.listen_address,
            Some(v) => v
                .parse()
                .map_err(|_| format!("spec.addresses[{i}]: {v:?} is not an IP address"))?,
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out.sort();
    Ok(out)
}
