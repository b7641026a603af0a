//! Listeners of different Gateways on one port (Gateway API `GatewaySpec`:
//! "Implementations MAY merge separate Gateways onto a single set of
//! Addresses if all Listeners across all Gateways are compatible").
//!
//! Input: every Gateway of ours with its validated listeners and its rank
//! (oldest first). Output: the same listeners, where a listener whose port
//! is already bound by an older Gateway on an overlapping address that is not
//! the same socket (0.0.0.0 beside 127.0.0.2, the same address in another
//! cluster group, whose data plane is another process, or the same socket
//! with the other one of HTTP and HTTPS, other client certificate
//! validation, or PROXY protocol headers on one and not the other) is marked
//! `PortUnavailable`: its bind would fail and make the whole snapshot
//! unusable. Listeners on the very same socket are compatible: they merge
//! (see `ports`), the same hostname serving the union of their routes.
//!
//! The older Gateway keeps the port, so adding a Gateway never breaks a
//! working one.
//!
//! Other cluster groups only matter where every group's data planes share
//! one host (standalone). In Kubernetes each group has its own pods and
//! Service, so only Gateways served by one group can clash, and a Gateway
//! being moved is served by two: it holds its sockets in both until the
//! move ends.

use std::collections::HashMap;
use std::net::IpAddr;

use gatehouse_snapshot::Protocol;

use crate::compile::CompileOptions;
use crate::compile::gateway::GatewayModel;

/// A listener already given a socket.
struct Holder {
    address: IpAddr,
    group: String,
    gateway: String,
    protocol: Protocol,
    /// HTTPS: client certificate validation, which is per socket.
    validation: Option<gatehouse_snapshot::ClientValidation>,
    /// PROXY protocol headers, which are per socket.
    proxy_protocol: bool,
}

/// Marks listeners that cannot share a socket with older Gateways'.
pub fn mark_shared_port_conflicts(
    gateways: &mut [GatewayModel<'_>],
    ranks: &[usize],
    options: &CompileOptions,
) {
    let mut order: Vec<usize> = (0..gateways.len()).collect();
    order.sort_by_key(|&g| ranks[g]);
    let mut bound: HashMap<(Option<String>, u32), Vec<Holder>> = HashMap::new();
    let offset = options.port_offset;
    for gi in order {
        let g = &mut gateways[gi];
        let Ok(addresses) = g.addresses.clone() else {
            continue;
        };
        let gateway = format!("{}/{}", g.namespace, g.name);
        // Sockets by (host, port): one host for every group in standalone,
        // a host per group in Kubernetes, where a Gateway being moved is
        // served, and binds, in both groups.
        let hosts: Vec<Option<String>> = if options.groups_share_host {
            vec![None]
        } else {
            g.groups().map(|group| Some(group.to_owned())).collect()
        };
        for l in &mut g.listeners {
            if !l.report.is_served() {
                continue;
            }
            let port = u32::from(l.port) + u32::from(offset);
            let clash = hosts.iter().find_map(|host| {
                let holders = bound.get(&(host.clone(), port))?;
                addresses.iter().find_map(|address| {
                    holders
                        .iter()
                        .filter(|h| h.gateway != gateway && overlaps(h.address, *address))
                        .find(|h| {
                            // Groups apart are processes apart only on a
                            // shared host; on a group's own host, a
                            // Gateway moving in or out merges as any other.
                            h.address != *address
                                || (options.groups_share_host && h.group != g.group)
                                || h.protocol != l.protocol
                                || h.validation != l.client_validation
                                || h.proxy_protocol != g.proxy_protocol
                        })
                        .map(|h| (*address, h))
                })
            });
            match clash {
                Some((address, h)) => {
                    let other_group = if options.groups_share_host && h.group != g.group {
                        format!(" in cluster group {:?}", h.group)
                    } else if h.protocol != l.protocol {
                        format!(" with protocol {}", h.protocol.as_str_name())
                    } else if h.validation != l.client_validation {
                        " with other client certificate validation (spec.tls.frontend)".to_owned()
                    } else if h.proxy_protocol != g.proxy_protocol {
                        let expects = if h.proxy_protocol { "" } else { " no" };
                        format!(" expecting{expects} PROXY protocol headers")
                    } else {
                        String::new()
                    };
                    l.report.port_unavailable = Some(format!(
                        "port {} on {address} cannot be bound: Gateway {} already listens on {}:{}{other_group}",
                        l.port, h.gateway, h.address, l.port
                    ));
                }
                None => {
                    for host in &hosts {
                        let holders = bound.entry((host.clone(), port)).or_default();
                        holders.extend(addresses.iter().map(|address| Holder {
                            address: *address,
                            group: g.group.clone(),
                            gateway: gateway.clone(),
                            protocol: l.protocol,
                            validation: l.client_validation.clone(),
                            proxy_protocol: g.proxy_protocol,
                        }));
                    }
                }
            }
        }
    }
}

/// Whether binding both addresses on one port would clash: the same
/// address, 0.0.0.0 beside another IPv4 address, or `::` beside anything
/// (an IPv6 wildcard socket is dual-stack by default on Linux).
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let covers =
        |wide: IpAddr, other: IpAddr| wide.is_unspecified() && (wide.is_ipv6() || other.is_ipv4());
    a == b || covers(a, b) || covers(b, a)
}
