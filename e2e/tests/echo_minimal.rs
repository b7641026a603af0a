//! `gatehouse-echo --minimal`, the benchmarks' upstream, as a process on a
//! real socket: it must answer what wrk and both proxies send it, or the
//! benchmark measures errors.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use gatehouse_e2e::Echo;

fn answers(echo: &Echo, request: &[u8], until: impl Fn(&str) -> bool) -> String {
    let mut stream = TcpStream::connect(echo.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !until(&String::from_utf8_lossy(&received)) {
        match stream.read(&mut chunk).unwrap() {
            0 => break,
            n => received.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn answers_pipelined_requests_skips_bodies_and_refuses_chunked_ones() {
    let echo = Echo::start_with(
        "bench",
        "127.0.0.1:0".parse().unwrap(),
        &["--body", "ok", "--minimal"],
    );
    // A GET and a POST with a body, in one write.
    let text = answers(
        &echo,
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\nPOST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
        |text| text.matches("\r\n\r\nok").count() == 2,
    );
    let responses: Vec<&str> = text.split_inclusive("\r\n\r\nok").collect();
    assert_eq!(responses.len(), 2, "{text}");
    for response in responses {
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(response.contains("\r\nx-echo-name: bench\r\n"), "{text}");
        assert!(response.contains("\r\ncontent-length: 2\r\n"), "{text}");
        assert!(response.contains("\r\ndate: "), "{text}");
    }
    // A body that comes after its head, in another write, is skipped.
    let mut stream = TcpStream::connect(echo.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhe")
        .unwrap();
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).ends_with("\r\n\r\nok"));
    stream
        .write_all(b"llo\r\nHEAD / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.contains("\r\nconnection: close\r\n"), "{rest}");
    assert!(rest.ends_with("\r\n\r\n"), "HEAD got a body: {rest}");

    let refused = answers(
        &echo,
        b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        |_| false,
    );
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
}
