//! `ipAccess`: allow and deny lists of CIDR blocks on the client address.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug)]
pub struct IpAccess {
    allow: Box<[IpNet]>,
    deny: Box<[IpNet]>,
    pub trusted_hops: u32,
}

impl IpAccess {
    pub fn build(spec: &gatehouse_snapshot::IpAccess) -> Result<Self, String> {
        let parse = |list: &[String], field: &str| -> Result<Box<[IpNet]>, String> {
            list.iter()
                .map(|c| {
                    c.parse::<IpNet>()
                        .map_err(|_| format!("{field}: {c:?} is not a CIDR block"))
                })
                .collect()
        };
        Ok(IpAccess {
            allow: parse(&spec.allow, "allow")?,
            deny: parse(&spec.deny, "deny")?,
            trusted_hops: spec.client_address.as_ref().map_or(0, |c| c.trusted_hops),
        })
    }

    /// Deny wins over allow; a non-empty allow list refuses everyone else.
    /// IPv4-mapped IPv6 addresses are compared as the IPv4 address they are.
    pub fn admits(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        if self.deny.iter().any(|net| net.contains(&client)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(allow: &[&str], deny: &[&str]) -> IpAccess {
        IpAccess::build(&gatehouse_snapshot::IpAccess {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            client_address: None,
        })
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_list_refuses_only_its_blocks() {
        let a = access(&[], &["10.0.0.0/8", "2001:db8::/32"]);
        assert!(!a.admits(ip("10.1.2.3")));
        assert!(!a.admits(ip("2001:db8::5")));
        assert!(a.admits(ip("192.0.2.1")));
        assert!(a.admits(ip("2001:db9::1")));
    }

    #[test]
    fn allow_list_refuses_everyone_else_and_deny_wins() {
        let a = access(&["192.0.2.0/24"], &["192.0.2.66/32"]);
        assert!(a.admits(ip("192.0.2.1")));
        assert!(!a.admits(ip("192.0.2.66")));
        assert!(!a.admits(ip("198.51.100.1")));
    }

    #[test]
    fn mapped_ipv6_addresses_match_ipv4_blocks() {
        let a = access(&["127.0.0.0/8"], &[]);
        assert!(a.admits(ip("::ffff:127.0.0.1")));
    }
}
