//! `--minimal`: the cheapest upstream this crate can be, for benchmarks.
//!
//! A benchmark of proxies on one machine shares a core between the load
//! generator and the upstream; when that core is saturated, requests per
//! second measure it rather than the proxy. This mode answers every
//! HTTP/1.1 request with the fixed body (`--body`) and nothing else: no
//! knobs, no HTTP/2, no JSON. It parses request heads in place, skips
//! Content-Length bodies, answers pipelined requests in one write, and runs
//! on one thread. A chunked request body, or a head it cannot parse, gets a
//! 400 and the connection closes.

use std::{
    cell::RefCell,
    time::{Duration, SystemTime},
};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Longest request head read before the connection is refused.
const MAX_HEAD: usize = 16 * 1024;

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

pub async fn serve(listener: TcpListener, name: &str, body: &[u8]) -> anyhow::Result<()> {
    // Everything but the Date, which `Response::append` adds: the fields
    // the full mode sends for `--body`, in its order, so that a proxy reads
    // the same bytes from either mode.
    let head = format!(
        "HTTP/1.1 200 OK\r\nx-echo-name: {name}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\ndate: ",
        body.len()
    );
    let response = Response {
        head: head.into_bytes(),
        body: body.to_vec(),
    };
    let response: &'static Response = Box::leak(Box::new(response));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, response));
    }
}

struct Response {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Response {
    fn append(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        DATE.with_borrow_mut(|date| out.extend_from_slice(date.now()));
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// The HTTP date, formatted once per second.
struct CachedDate {
    second: u64,
    text: String,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

thread_local! {
    static DATE: RefCell<CachedDate> = const {
        RefCell::new(CachedDate { second: 0, text: String::new() })
    };
}

/// What the buffered bytes hold next.
enum Next {
    /// A whole request of this many bytes (head and body).
    Request(usize),
    More,
    Bad,
}

fn next(read: &[u8]) -> Next {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut fields);
    let head = match request.parse(read) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) if read.len() < MAX_HEAD => return Next::More,
        _ => return Next::Bad,
    };
    let mut length = 0usize;
    for field in request.headers.iter() {
        if field.name.eq_ignore_ascii_case("transfer-encoding") {
            return Next::Bad;
        }
        if field.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(field.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(value) => length = value,
                None => return Next::Bad,
            }
        }
    }
    match read.len() >= head + length {
        true => Next::Request(head + length),
        false => Next::More,
    }
}

async fn connection(mut stream: TcpStream, response: &'static Response) {
    let mut read = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    loop {
        match stream.read_buf(&mut read).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            match next(&read) {
                Next::Request(length) => {
                    read.advance(length);
                    response.append(&mut out);
                }
                Next::More => break,
                Next::Bad => {
                    out.extend_from_slice(BAD_REQUEST);
                    let _ = stream.write_all(&out).await;
                    return;
                }
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        read.reserve(4096);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> String {
        match next(bytes) {
            Next::Request(length) => format!("request {length}"),
            Next::More => "more".into(),
            Next::Bad => "bad".into(),
        }
    }

    #[test]
    fn requests_are_framed_by_their_head_and_content_length() {
        let get = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(parsed(get), format!("request {}", get.len()));
        // Pipelined: only the first request's length.
        assert_eq!(
            parsed(&[&get[..], &get[..]].concat()),
            format!("request {}", get.len())
        );
        assert_eq!(parsed(&get[..10]), "more");
        let post = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(parsed(post), format!("request {}", post.len()));
        assert_eq!(parsed(&post[..post.len() - 1]), "more");
    }

    #[test]
    fn what_it_does_not_frame_is_bad() {
        assert_eq!(
            parsed(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"),
            "bad"
        );
        assert_eq!(
            parsed(b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n"),
            "bad"
        );
        assert_eq!(parsed(b"\x16\x03\x01 not http\r\n\r\n"), "bad");
        let endless = [b"GET / HTTP/1.1\r\nx: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(parsed(&endless), "bad");
    }
}
