//! Socket helpers shared by the proxy's tests against raw peers.

use tokio::{io::AsyncReadExt, net::TcpStream};

/// Reads from `stream` until `buffer` holds `marker`; returns where the
/// marker ends, or `None` when the stream closes (or fails) first.
pub async fn read_until(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    marker: &[u8],
) -> Option<usize> {
    loop {
        if let Some(at) = buffer.windows(marker.len()).position(|w| w == marker) {
            return Some(at + marker.len());
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}
