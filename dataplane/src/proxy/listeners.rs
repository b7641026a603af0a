//! Listening sockets, reconciled with each table.
//!
//! Guarantees: sockets for new ports are bound before the table is swapped
//! (a failure leaves everything as it was); a port present in both tables
//! keeps its accept loop, so its open connections survive the swap; a
//! removed port stops accepting at once and its connections close after
//! their in-flight requests finish.

use std::{
    collections::HashMap, convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration,
};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::oneshot,
    task::JoinHandle,
};

use super::Dataplane;
use crate::table::PortKey;

/// Pending connections the kernel may queue per port.
const BACKLOG: u32 = 1024;

#[derive(Debug, thiserror::Error)]
#[error("binding {port} failed: {source}")]
pub struct BindError {
    pub port: PortKey,
    pub source: io::Error,
}

#[derive(Default)]
pub(crate) struct Listeners {
    running: HashMap<PortKey, Running>,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Listeners {
    /// Binds every port of `wanted` that is not running yet. On error the
    /// sockets bound so far are dropped, which closes them.
    pub async fn bind_missing(
        &self,
        wanted: &[PortKey],
    ) -> Result<Vec<(PortKey, TcpListener)>, BindError> {
        let mut bound = Vec::new();
        for port in wanted.iter().filter(|p| !self.running.contains_key(p)) {
            let listener = bind(port.socket_addr()).map_err(|source| BindError {
                port: *port,
                source,
            })?;
            bound.push((*port, listener));
        }
        Ok(bound)
    }

    pub fn start(&mut self, bound: Vec<(PortKey, TcpListener)>, dataplane: &Arc<Dataplane>) {
        for (port, listener) in bound {
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(accept_loop(listener, port, dataplane.clone(), stopped));
            tracing::info!(%port, "listening");
            self.running.insert(port, Running { stop, task });
        }
    }

    /// Stops accepting on ports not in `kept`; their connections drain in
    /// the background.
    pub fn stop_removed(&mut self, kept: &[PortKey]) {
        let removed: Vec<PortKey> = self
            .running
            .keys()
            .filter(|p| !kept.contains(p))
            .copied()
            .collect();
        for port in removed {
            if let Some(running) = self.running.remove(&port) {
                tracing::info!(%port, "no longer listening");
                let _ = running.stop.send(());
            }
        }
    }

    /// Stops every port and waits until their connections have drained.
    pub async fn stop_all(&mut self) {
        let running: Vec<Running> = self.running.drain().map(|(_, r)| r).collect();
        let mut tasks = Vec::with_capacity(running.len());
        for Running { stop, task } in running {
            let _ = stop.send(());
            tasks.push(task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets a restarted data plane rebind while old connections sit in
    // TIME_WAIT; it does not allow two live listeners on one port.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

async fn accept_loop(
    listener: TcpListener,
    port: PortKey,
    dataplane: Arc<Dataplane>,
    mut stop: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off a moment
                // rather than spin on the same error.
                tracing::warn!(%port, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%port, %error, "TCP_NODELAY not set");
        }
        let dataplane = dataplane.clone();
        let service = service_fn(move |request| {
            let dataplane = dataplane.clone();
            async move { Ok::<_, Infallible>(dataplane.handle(port, client, request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%port, %client, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
