//! The client's address as a filter sees it: the TCP peer, or behind a
//! configured number of trusted proxies, the address the outermost of them
//! saw, taken from `X-Forwarded-For`.
//!
//! Each proxy appends the address it received the request from, so the
//! entries nearest the right end are the trustworthy ones; everything to
//! the left of the trusted hops could have been written by the client.

use std::net::IpAddr;

use http::HeaderMap;

/// The client address behind `trusted_hops` proxies; the TCP peer when
/// there are none, or when the header has fewer entries than that (the
/// request did not come through them all) or the entry is not an address.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_hops: u32) -> IpAddr {
    if trusted_hops == 0 {
        return peer.to_canonical();
    }
    let wanted = trusted_hops as usize;
    let entry = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.as_bytes().rsplit(|b| *b == b','))
        .nth(wanted - 1);
    entry
        .and_then(|e| std::str::from_utf8(e).ok())
        .and_then(|e| parse_entry(e.trim()))
        .map(|ip| ip.to_canonical())
        .unwrap_or_else(|| peer.to_canonical())
}

/// An address, with the port or brackets some proxies add removed.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
        .or_else(|| entry.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", v.parse().unwrap());
        }
        map
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn without_trusted_hops_the_peer_is_the_client() {
        let h = headers(&["203.0.113.9"]);
        assert_eq!(client_ip(PEER, &h, 0), PEER);
    }

    #[test]
    fn one_trusted_hop_takes_the_last_entry() {
        let h = headers(&["198.51.100.7, 203.0.113.9"]);
        assert_eq!(
            client_ip(PEER, &h, 1),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn entries_across_several_headers_count_from_the_right() {
        let h = headers(&["1.1.1.1, 2.2.2.2", "3.3.3.3"]);
        assert_eq!(client_ip(PEER, &h, 2), "2.2.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(PEER, &h, 3), "1.1.1.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn too_few_entries_or_garbage_fall_back_to_the_peer() {
        assert_eq!(client_ip(PEER, &headers(&["2.2.2.2"]), 2), PEER);
        assert_eq!(client_ip(PEER, &headers(&["not-an-ip"]), 1), PEER);
        assert_eq!(client_ip(PEER, &HeaderMap::new(), 1), PEER);
    }

    #[test]
    fn ports_and_brackets_are_removed() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(client_ip(PEER, &headers(&["[2001:db8::1]:443"]), 1), v6);
        assert_eq!(client_ip(PEER, &headers(&["[2001:db8::1]"]), 1), v6);
        assert_eq!(
            client_ip(PEER, &headers(&["192.0.2.4:8080"]), 1),
            "192.0.2.4".parse::<IpAddr>().unwrap()
        );
    }
}
