//! `--minimal`: the cheapest upstream this crate can be, for benchmarks.
//!
//! A benchmark of proxies on one machine shares a core between the load
//! generator and the upstream; when that core is saturated, requests per
//! second measure it rather than the proxy. This mode answers every
//! HTTP/1.1 request with the fixed body (`--body`) and nothing else: no
//! knobs, no HTTP/2, no JSON. It parses request heads in place, skips
//! Content-Length bodies as they come (answering once the head is in),
//! answers pipelined requests in one write, and runs on one thread. HEAD
//! gets the head alone; `Connection: close` closes after the answer. A
//! chunked request body, or a head it cannot parse, gets a 400 and the
//! connection closes.

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
        // Out of descriptors and the like: the next accept may do.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, response));
    }
}

struct Response {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Response {
    fn append(&self, out: &mut Vec<u8>, request: &Head) {
        out.extend_from_slice(&self.head);
        DATE.with_borrow_mut(|date| out.extend_from_slice(date.now()));
        if request.close {
            out.extend_from_slice(b"\r\nconnection: close");
        }
        out.extend_from_slice(b"\r\n\r\n");
        if !request.head_only {
            out.extend_from_slice(&self.body);
        }
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

/// A request head, as far as the answer needs it.
#[derive(Debug, PartialEq)]
struct Head {
    /// Bytes of the head.
    len: usize,
    /// Bytes of the body that follows it.
    body: usize,
    head_only: bool,
    close: bool,
}

/// What the buffered bytes hold next.
#[derive(Debug, PartialEq)]
enum Next {
    Request(Head),
    More,
    Bad,
}

fn next(read: &[u8]) -> Next {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(read) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if read.len() < MAX_HEAD => return Next::More,
        _ => return Next::Bad,
    };
    let mut head = Head {
        len,
        body: 0,
        head_only: request.method == Some("HEAD"),
        close: request.version == Some(0),
    };
    for field in request.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Next::Bad;
        }
        if name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(field.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(length) => head.body = length,
                None => return Next::Bad,
            }
        }
        if name.eq_ignore_ascii_case("connection") {
            let value = String::from_utf8_lossy(field.value).to_ascii_lowercase();
            head.close |= value.split(',').any(|option| option.trim() == "close");
        }
    }
    Next::Request(head)
}

async fn connection(mut stream: TcpStream, response: &'static Response) {
    let mut read = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    // Body bytes still to come and be dropped.
    let mut skip = 0usize;
    let mut close = false;
    loop {
        match stream.read_buf(&mut read).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while !close {
            let dropped = skip.min(read.len());
            read.advance(dropped);
            skip -= dropped;
            if skip > 0 {
                break;
            }
            match next(&read) {
                Next::Request(head) => {
                    read.advance(head.len);
                    skip = head.body;
                    close = head.close;
                    response.append(&mut out, &head);
                }
                Next::More => break,
                Next::Bad => {
                    out.extend_from_slice(BAD_REQUEST);
                    close = true;
                }
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
        read.reserve(4096);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(len: usize, body: usize) -> Next {
        Next::Request(Head {
            len,
            body,
            head_only: false,
            close: false,
        })
    }

    #[test]
    fn requests_are_framed_by_their_head_and_content_length() {
        let get = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(next(get), head(get.len(), 0));
        // Pipelined: the first request alone.
        assert_eq!(next(&[&get[..], &get[..]].concat()), head(get.len(), 0));
        assert_eq!(next(&get[..10]), Next::More);
        let post = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(next(post), head(post.len(), 3));
        // A length past what memory could hold is only skipped, never added up.
        let huge = b"POST / HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n";
        assert_eq!(next(huge), head(huge.len(), usize::MAX));
    }

    #[test]
    fn head_and_close_shape_the_answer() {
        let Next::Request(request) =
            next(b"HEAD / HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n")
        else {
            panic!("not parsed");
        };
        assert!(request.head_only && request.close);
        let Next::Request(old) = next(b"GET / HTTP/1.0\r\n\r\n") else {
            panic!("not parsed");
        };
        assert!(old.close && !old.head_only);
    }

    #[test]
    fn what_it_does_not_frame_is_bad() {
        assert_eq!(
            next(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"),
            Next::Bad
        );
        assert_eq!(
            next(b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n"),
            Next::Bad
        );
        assert_eq!(next(b"\x16\x03\x01 not http\r\n\r\n"), Next::Bad);
        let endless = [b"GET / HTTP/1.1\r\nx: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(next(&endless), Next::Bad);
    }
}
