//! Header rewriting between client and upstream. RFC 9110 §7.6.1
//! (Connection): "a proxy or gateway MUST remove any received connection
//! options before forwarding the message", i.e. the fields named by
//! Connection and the hop-by-hop fields (Keep-Alive, Proxy-Connection, TE
//! except "trailers", Transfer-Encoding, Upgrade). Plus the de-facto
//! forwarding headers X-Forwarded-For, X-Forwarded-Proto and X-Request-Id.

use std::{io::Write as _, net::IpAddr};

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, header};

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes the connection-specific fields of one hop. TE survives only as
/// "trailers", which HTTP/2 allows and gRPC needs.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names is cheaper
    // than a lookup for each.
    let connection_specific = |name: &HeaderName| HOP_BY_HOP.contains(name) || name == header::TE;
    if !headers.keys().any(connection_specific) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(te) = headers.remove(header::TE) {
        let wants_trailers = te.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
        if wants_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Appends the client address to X-Forwarded-For (joining earlier values
/// into one list), sets X-Forwarded-Proto and keeps or makes X-Request-Id.
/// Both new values share one allocation.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    request_id: impl FnOnce() -> u128,
) {
    let earlier: usize = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| v.len() + 2)
        .sum();
    let needs_id = !headers.contains_key(&X_REQUEST_ID);
    let mut buffer = BytesMut::with_capacity(earlier + MAX_IP_LEN + if needs_id { 32 } else { 0 });
    for value in headers.get_all(&X_FORWARDED_FOR) {
        if value.to_str().is_ok() {
            buffer.extend_from_slice(value.as_bytes());
            buffer.extend_from_slice(b", ");
        }
    }
    write_ip(&mut buffer, client);
    if let Ok(value) = HeaderValue::from_maybe_shared(buffer.split().freeze()) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if needs_id {
        write_hex(&mut buffer, request_id());
        let value = HeaderValue::from_maybe_shared(buffer.freeze())
            .unwrap_or_else(|_| HeaderValue::from_static("0"));
        headers.insert(X_REQUEST_ID.clone(), value);
    }
}

/// Whether a field value is what `HeaderValue::to_str` takes: tab and
/// visible ASCII.
pub(in crate::proxy) fn is_text(value: &[u8]) -> bool {
    value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
}

/// "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
const MAX_IP_LEN: usize = 45;

pub(super) fn write_ip(buffer: &mut impl BufMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buffer.put_u8(b'.');
                }
                write_decimal(buffer, octet);
            }
        }
        // Rare enough behind a gateway to take the formatter, into a
        // buffer on the stack.
        IpAddr::V6(v6) => {
            let mut text = [0u8; MAX_IP_LEN];
            let mut rest = &mut text[..];
            let _ = write!(rest, "{v6}");
            let len = MAX_IP_LEN - rest.len();
            buffer.put_slice(&text[..len]);
        }
    }
}

fn write_decimal(buffer: &mut impl BufMut, n: u8) {
    if n >= 100 {
        buffer.put_u8(b'0' + n / 100);
    }
    if n >= 10 {
        buffer.put_u8(b'0' + n / 10 % 10);
    }
    buffer.put_u8(b'0' + n % 10);
}

pub(super) fn write_hex(buffer: &mut impl BufMut, id: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..32 {
        buffer.put_u8(HEX[((id >> (124 - 4 * i)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn hop_by_hop_and_connection_listed_fields_are_removed() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-sum"),
            ("te", "gzip, trailers"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-kept"]);
        assert_eq!(h["te"], "trailers");
        let mut h = map(&[("te", "gzip")]);
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn forwarding_appends_client_and_keeps_request_id() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        add_forwarding(&mut h, [10, 0, 0, 1].into(), "http", || 0xab);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-request-id"], "000000000000000000000000000000ab");
        let mut h = map(&[("x-request-id", "abc")]);
        add_forwarding(&mut h, [10, 0, 0, 1].into(), "https", || {
            panic!("not needed")
        });
        assert_eq!(h["x-request-id"], "abc");
    }

    #[test]
    fn forwarding_writes_every_address_form() {
        for (ip, text) in [
            (IpAddr::from([0, 9, 10, 255]), "0.9.10.255"),
            (IpAddr::from([100, 199, 200, 1]), "100.199.200.1"),
            ("2001:db8::1".parse().unwrap(), "2001:db8::1"),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
        ] {
            let mut h = HeaderMap::new();
            add_forwarding(&mut h, ip, "http", || u128::MAX);
            assert_eq!(h["x-forwarded-for"], text);
            assert_eq!(h["x-request-id"], "ffffffffffffffffffffffffffffffff");
        }
    }
}
