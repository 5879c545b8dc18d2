//! HTTP/1.1 on the beacon-node side: keep-alive, pipelining, chunked bodies, 100-continue,
//! HTTP/1.0.

use serde_json::json;

use crate::support::mock_el::MockEl;
use crate::support::{Client, ProxyProcess, WAIT, rpc};

#[test]
fn keep_alive_serves_many_requests_on_one_connection_each_side() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let mut client = Client::connect(proxy.addr());
    for i in 0..50 {
        client.post("/", &rpc(json!(i), "eth_chainId", json!([])), "");
        let answer = client.read_response();
        assert_eq!(answer.json()["id"], i);
    }
    el.wait_for(50, WAIT);
    // One read-lane connection carries all of them (probes included).
    assert!(el.connections() <= 2, "connections: {}", el.connections());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let mut client = Client::connect(proxy.addr());
    let mut batch = Vec::new();
    for i in 0..5 {
        let body = rpc(json!(i), "eth_chainId", json!([]));
        batch.extend_from_slice(
            format!(
                "POST / HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        batch.extend_from_slice(&body);
    }
    client.send(&batch);
    for i in 0..5 {
        assert_eq!(client.read_response().json()["id"], i);
    }
}

#[test]
fn chunked_body_is_forwarded_dechunked() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let body = rpc(json!(1), "eth_chainId", json!([]));
    let (a, b) = body.split_at(10);
    let mut message = b"POST / HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    message.extend_from_slice(format!("{:x}\r\n", a.len()).as_bytes());
    message.extend_from_slice(a);
    message.extend_from_slice(format!("\r\n{:x};ext=1\r\n", b.len()).as_bytes());
    message.extend_from_slice(b);
    message.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut client = Client::connect(proxy.addr());
    client.send(&message);
    assert_eq!(client.read_response().json()["id"], 1);
    let received = el.wait_for(1, WAIT);
    assert_eq!(received[0].body, body);
    assert!(received[0].header("content-length").is_some());
}

#[test]
fn expect_continue_gets_100_before_the_body() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let body = rpc(json!(4), "eth_chainId", json!([]));
    let mut client = Client::connect(proxy.addr());
    client.send(
        format!(
            "POST / HTTP/1.1\r\nHost: p\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = client.read_response();
    assert_eq!(interim.status, 100);
    client.send(&body);
    let answer = client.read_response();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["id"], 4);
}

#[test]
fn http10_request_is_answered_and_closed() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let body = rpc(json!(8), "eth_chainId", json!([]));
    let mut client = Client::connect(proxy.addr());
    let mut message =
        format!("POST / HTTP/1.0\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    message.extend_from_slice(&body);
    client.send(&message);
    let answer = client.read_response();
    assert_eq!(answer.json()["id"], 8);
    assert!(client.is_closed());
}

#[test]
fn head_request_gets_headers_without_a_body_and_the_connection_stays_usable() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let mut client = Client::connect(proxy.addr());
    client.send(b"HEAD /status HTTP/1.1\r\nHost: p\r\n\r\n");
    // The client reads a head announcing a body that never comes, then the next answer.
    client.send(b"GET /health HTTP/1.1\r\nHost: p\r\n\r\n");
    let mut raw = Vec::new();
    for _ in 0..100 {
        if String::from_utf8_lossy(&raw).contains("healthy") {
            break;
        }
        raw.extend(client.read_some());
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let second = text
        .find("HTTP/1.1")
        .and_then(|first| text[first + 1..].find("HTTP/1.1"))
        .expect("second answer");
    assert!(
        !text[..second].contains("\"upstreams\""),
        "HEAD answer carried a body: {text}"
    );
}
