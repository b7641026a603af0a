//! A minimal HTTP/1.1 server that serves one JWKS document, with knobs for
//! the failure modes the refresh task has to survive.

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

struct Reply {
    status: u16,
    body: Vec<u8>,
    delay: Duration,
}

pub(crate) struct JwksServer {
    pub(crate) url: String,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    accept: JoinHandle<()>,
}

impl JwksServer {
    pub(crate) async fn start(body: Vec<u8>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
        }));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accept = tokio::spawn({
            let reply = reply.clone();
            let hits = hits.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, reply.clone(), hits.clone()));
                }
            }
        });
        JwksServer {
            url,
            reply,
            hits,
            accept,
        }
    }

    pub(crate) fn set_body(&self, body: Vec<u8>) {
        self.with_reply(|r| r.body = body);
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.with_reply(|r| r.status = status);
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        self.with_reply(|r| r.delay = delay);
    }

    /// Requests received so far.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the listening socket, so new connections are refused.
    pub(crate) async fn stop(&self) {
        self.accept.abort();
        tokio::task::yield_now().await;
    }

    fn with_reply(&self, f: impl FnOnce(&mut Reply)) {
        f(&mut self.reply.lock().expect("reply lock"));
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 16 * 1024 {
            return;
        }
    }
    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (status, body, delay) = {
        let r = reply.lock().expect("reply lock");
        (r.status, r.body.clone(), r.delay)
    };
    tokio::time::sleep(delay).await;
    let head = format!(
        "HTTP/1.1 {status} Test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}
