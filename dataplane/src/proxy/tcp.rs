//! Options of every TCP connection the data plane accepts or opens.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

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

/// Limits how long data sent on the connections of `listener` may wait
/// for their peer to take it (TCP_USER_TIMEOUT, which accepted sockets
/// inherit). The kernel drops a connection whose data stays
/// unacknowledged that long, or whose peer keeps its receive window closed
/// that long (it stopped reading: counted from the first window probe
/// since Linux 5.11), and the task writing to it gets an error and ends,
/// which closes its upstream connection too. nginx's `send_timeout` does
/// this job with a timer per write; here the request path pays nothing. It
/// also replaces the keep-alive probe count: a silent peer is dropped at
/// the first unanswered probe once the timeout has passed since it was
/// last heard from.
pub fn limit_sends(listener: &TcpSocket, timeout: Duration) -> std::io::Result<()> {
    SockRef::from(listener).set_tcp_user_timeout(Some(timeout))
}
