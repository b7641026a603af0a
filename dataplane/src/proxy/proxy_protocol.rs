//! PROXY protocol headers (HAProxy's specification, versions 1 and 2): a
//! load balancer in front of a port opens each connection with one, naming
//! the client it accepted. On a port configured for it (`Port.proxy_protocol`)
//! the header is required, and the address it names becomes the
//! connection's client address, for `X-Forwarded-For`, IP rules, rate-limit
//! keys and logs alike. Nowhere else is one believed.
//!
//! Exactly the header's bytes are consumed, so what follows (an HTTP
//! request, the HTTP/2 preface, a TLS ClientHello) is read by its own
//! parser from the socket itself.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{io::AsyncReadExt, net::TcpStream};

/// A version 1 header is at most this long, CRLF included.
const V1_MAX: usize = 107;
/// The 12 bytes that open a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 2 address block accepted (addresses and TLVs): far
/// above what load balancers send, far below the 64 KiB the length allows.
const V2_MAX_BLOCK: usize = 4096;
/// How often to look again while only part of a header's first line (or
/// of a version 2 header's first 16 bytes) arrived.
const V1_RETRY: Duration = Duration::from_millis(5);

/// Why a connection was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("connection closed in the PROXY protocol header")]
    Closed,
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes.
    pub length: usize,
    /// The client it names; `None` for a header that names none (v1
    /// UNKNOWN, v2 LOCAL or an unspecified family): the peer address
    /// stands.
    pub client: Option<SocketAddr>,
}

/// The outcome of looking at the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Complete(Header),
    /// Possibly a header, not complete yet; the whole header's length when
    /// known (version 2 says it in its first 16 bytes).
    Incomplete(Option<usize>),
}

/// Parses the header at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    if bytes.is_empty() {
        return Ok(Parsed::Incomplete(None));
    }
    if bytes[0] == V2_SIGNATURE[0] {
        parse_v2(bytes)
    } else if bytes[0] == b'P' {
        parse_v1(bytes)
    } else {
        Err(HeaderError::Missing)
    }
}

fn parse_v1(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let prefix = b"PROXY ";
    let seen = bytes.len().min(prefix.len());
    if bytes[..seen] != prefix[..seen] {
        return Err(HeaderError::Missing);
    }
    let Some(end) = bytes.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX {
            Err(HeaderError::Malformed(
                "version 1 header longer than 107 bytes",
            ))
        } else {
            Ok(Parsed::Incomplete(None))
        };
    };
    let line = std::str::from_utf8(&bytes[prefix.len()..end])
        .map_err(|_| HeaderError::Malformed("version 1 header is not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let client = match fields.as_slice() {
        ["UNKNOWN", ..] => None,
        [
            family @ ("TCP4" | "TCP6"),
            source,
            destination,
            source_port,
            destination_port,
        ] => {
            let v4 = *family == "TCP4";
            let address = |text: &str| -> Result<IpAddr, HeaderError> {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| HeaderError::Malformed("version 1 address"))?;
                if ip.is_ipv4() != v4 {
                    return Err(HeaderError::Malformed(
                        "version 1 address of the wrong family",
                    ));
                }
                Ok(ip)
            };
            let port = |text: &str| -> Result<u16, HeaderError> {
                // Decimal without sign or leading zeros, per the spec.
                let plain = !text.is_empty()
                    && text.bytes().all(|b| b.is_ascii_digit())
                    && (text == "0" || !text.starts_with('0'));
                plain
                    .then(|| text.parse().ok())
                    .flatten()
                    .ok_or(HeaderError::Malformed("version 1 port"))
            };
            address(destination)?;
            port(destination_port)?;
            Some(SocketAddr::new(address(source)?, port(source_port)?))
        }
        _ => return Err(HeaderError::Malformed("version 1 fields")),
    };
    Ok(Parsed::Complete(Header {
        length: end + 2,
        client,
    }))
}

fn parse_v2(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let seen = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..seen] != V2_SIGNATURE[..seen] {
        return Err(HeaderError::Missing);
    }
    if bytes.len() < 16 {
        return Ok(Parsed::Incomplete(None));
    }
    let (version, command) = (bytes[12] >> 4, bytes[12] & 0x0f);
    if version != 2 {
        return Err(HeaderError::Malformed(
            "version 2 header of another version",
        ));
    }
    let block = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if block > V2_MAX_BLOCK {
        return Err(HeaderError::Malformed("version 2 address block too long"));
    }
    let length = 16 + block;
    if bytes.len() < length {
        return Ok(Parsed::Incomplete(Some(length)));
    }
    let addresses = &bytes[16..length];
    let client = match (command, bytes[13]) {
        // LOCAL: the load balancer's own connection (health checks).
        (0x0, _) => None,
        (0x1, 0x11) => {
            let a = addresses
                .get(..12)
                .ok_or(HeaderError::Malformed("version 2 IPv4 block too short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (0x1, 0x21) => {
            let a = addresses
                .get(..36)
                .ok_or(HeaderError::Malformed("version 2 IPv6 block too short"))?;
            let octets: [u8; 16] = a[..16].try_into().expect("16 bytes");
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // Unspecified family: nothing to learn, the peer stands.
        (0x1, 0x00) => None,
        (0x1, _) => return Err(HeaderError::Malformed("version 2 family other than TCP")),
        _ => return Err(HeaderError::Malformed("version 2 command")),
    };
    Ok(Parsed::Complete(Header { length, client }))
}

/// Reads the header off `stream`, consuming exactly its bytes; returns the
/// client address it names, if any.
pub async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    let mut buf = [0u8; V1_MAX];
    loop {
        let peeked = stream.peek(&mut buf).await.map_err(closed)?;
        if peeked == 0 {
            return Err(HeaderError::Closed);
        }
        match parse(&buf[..peeked])? {
            Parsed::Complete(header) => {
                let mut consumed = vec![0; header.length];
                stream.read_exact(&mut consumed).await.map_err(closed)?;
                return Ok(header.client);
            }
            // A version 2 header says how long it is: wait for all of it
            // without peeking again.
            Parsed::Incomplete(Some(length)) => {
                let mut header = vec![0; length];
                stream.read_exact(&mut header).await.map_err(closed)?;
                return match parse(&header)? {
                    Parsed::Complete(header) => Ok(header.client),
                    Parsed::Incomplete(_) => Err(HeaderError::Malformed("version 2 length")),
                };
            }
            // A peek returns at once while any byte is waiting, so only a
            // pause tells whether more of a version 1 line came. Headers
            // arrive in one segment in practice; the caller's timeout bounds
            // this.
            Parsed::Incomplete(None) => tokio::time::sleep(V1_RETRY).await,
        }
    }
}

fn closed(_: io::Error) -> HeaderError {
    HeaderError::Closed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(bytes: &[u8]) -> Header {
        match parse(bytes) {
            Ok(Parsed::Complete(header)) => header,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[test]
    fn version_1_names_the_client_and_its_length() {
        let header = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let parsed = complete(header);
        assert_eq!(parsed.length, 44);
        assert_eq!(parsed.client, Some("203.0.113.7:56324".parse().unwrap()));
        let six = complete(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n");
        assert_eq!(six.client, Some("[2001:db8::7]:4000".parse().unwrap()));
        assert_eq!(complete(b"PROXY UNKNOWN\r\n").client, None);
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").client,
            None
        );
    }

    #[test]
    fn version_2_names_the_client_and_skips_tlvs() {
        let mut block = vec![203, 0, 113, 7, 192, 0, 2, 1];
        block.extend_from_slice(&56324u16.to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        block.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]); // a TLV
        let header = v2(1, 0x11, &block);
        let parsed = complete(&header);
        assert_eq!(parsed.length, header.len());
        assert_eq!(parsed.client, Some("203.0.113.7:56324".parse().unwrap()));

        let mut block = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        block.extend_from_slice(&[0; 16]);
        block.extend_from_slice(&4000u16.to_be_bytes());
        block.extend_from_slice(&80u16.to_be_bytes());
        let parsed = complete(&v2(1, 0x21, &block));
        assert_eq!(parsed.client, Some("[2001:db8::7]:4000".parse().unwrap()));

        assert_eq!(complete(&v2(0, 0x11, &[0; 12])).client, None, "LOCAL");
        assert_eq!(complete(&v2(1, 0x00, &[])).client, None, "UNSPEC");
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let header = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n";
        for cut in 0..header.len() {
            assert!(
                matches!(parse(&header[..cut]), Ok(Parsed::Incomplete(_))),
                "cut at {cut}"
            );
        }
        let v2 = v2(1, 0x11, &[0; 12]);
        assert_eq!(parse(&v2[..10]), Ok(Parsed::Incomplete(None)));
        assert_eq!(parse(&v2[..20]), Ok(Parsed::Incomplete(Some(28))));
    }

    #[test]
    fn anything_else_is_refused() {
        let refused: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n",
            b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n",
            b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 443\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 0080 443\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 +80 443\r\n",
            b"PROXY TCP4  203.0.113.7 192.0.2.1 80 443\r\n",
            b"PROXY UDP4 203.0.113.7 192.0.2.1 80 443\r\n",
            b"PROXY \xff\xfe\r\n",
            b"PROXYTCP4\r\n",
        ];
        for bytes in refused {
            assert!(
                parse(bytes).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bytes)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(parse(&long).is_err());
        assert!(parse(&v2(1, 0x12, &[0; 12])).is_err(), "UDP");
        assert!(parse(&v2(1, 0x11, &[0; 4])).is_err(), "short block");
        assert!(parse(&v2(2, 0x11, &[0; 12])).is_err(), "unknown command");
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(parse(&wrong_version).is_err());
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert!(parse(&huge).is_err(), "oversized block");
    }
}
