//! Options of every TCP connection the data plane accepts or opens.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Idle time before the kernel's first keep-alive probe, then the time
/// between probes, and how many go unanswered before the connection is
/// dropped: a peer that vanished without a FIN or a reset (power loss, a
/// NAT that forgot the flow) is noticed after about two minutes, on an idle
/// connection or one whose request waits on a slow upstream, instead of
/// never.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;

/// No Nagle delay (requests and responses are written whole), and kernel
/// keep-alive probes.
pub fn tune(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}
