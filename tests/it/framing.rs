//! Bodies framed by chunks or by the end of the connection, larger than one read budget, in both
//! directions, with the proxy paused while its peer writes (so the whole body sits in the socket
//! when the proxy wakes up). Edge-triggered readiness announces such bytes once: a read loop that
//! stops at its budget must come back by itself, or the body stalls until a timeout.
//!
//! Sizes straddle the read budget (64 reads of 16 KiB: 1 MiB) and reach a `getPayload` with
//! blobs (2 MB and more), as geth sends them: chunked.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::mock_el::{Behavior, Framing, MockEl};
use crate::support::{Client, ProxyProcess, WAIT, rpc};

/// One read budget of the proxy: `MAX_IO_ROUNDS` × `READ_CHUNK_BYTES`.
const BUDGET: usize = 64 * 16 * 1024;

/// Body sizes around the budget, and beyond it, smallest first. A stall needs the whole rest of
/// a body in the proxy's receive buffer when its budget runs out; the kernel grows that buffer as
/// the connection is read, so each size is tried on the warmed connection.
const SIZES: [usize; 7] = [
    16 * 1024,
    BUDGET - 4096,
    BUDGET,
    BUDGET + 4096,
    2_000_000,
    2_000_000,
    4_500_000,
];

/// Long enough that no proxy timer fires while it is paused; a stall shows as the client's
/// read timing out ([`WAIT`]), well before.
const PATIENT: [&str; 4] = ["--request-timeout", "60000", "--body-timeout", "60"];

/// A JSON string of `bytes` hex characters.
fn filler(bytes: usize) -> String {
    "ab".repeat(bytes / 2)
}

/// The proxy stops (SIGSTOP) while `write` runs, and continues (SIGCONT) after it.
fn paused<T>(proxy: &ProxyProcess, write: impl FnOnce() -> T) -> T {
    proxy.signal("STOP");
    let result = write();
    proxy.signal("CONT");
    result
}

/// Answers from the execution client of every size, framed as `framing`, reach the beacon node
/// whole although they were in the proxy's socket before it woke up.
fn large_answers_arrive_whole(framing: Framing) {
    let el = MockEl::start("el-0");
    el.set_framing(framing);
    // The pause starts once the request is in; the answer is written during it.
    el.set_behavior(Behavior::Delay(Duration::from_millis(50)));
    let proxy = ProxyProcess::start(&[&["--el", &el.url()][..], &PATIENT].concat());
    let mut client = Client::connect(proxy.addr());
    for (i, size) in SIZES.into_iter().enumerate() {
        el.set_result("eth_getBlockByNumber", Value::String(filler(size)));
        client.post(
            "/",
            &rpc(json!(i), "eth_getBlockByNumber", json!(["latest", true])),
            "",
        );
        let received = el.wait_for(i + 1, WAIT);
        assert_eq!(
            received.len(),
            i + 1,
            "request {i} reached the execution client"
        );
        // If the buffers cannot hold it all, the write finishes after the pause: still a pass.
        paused(&proxy, || {
            el.wait_answers_written(i + 1, Duration::from_secs(2))
        });
        let answer = client.read_response();
        assert_eq!(answer.status, 200, "{framing:?} answer of {size} bytes");
        assert_eq!(
            answer.body, received[i].answer,
            "{framing:?} answer of {size} bytes arrives byte for byte"
        );
    }
}

#[test]
fn chunked_answers_larger_than_a_read_budget_arrive_whole() {
    large_answers_arrive_whole(Framing::Chunked(32 * 1024));
}

#[test]
fn small_chunked_answers_larger_than_a_read_budget_arrive_whole() {
    large_answers_arrive_whole(Framing::Chunked(4096));
}

#[test]
fn close_delimited_answers_larger_than_a_read_budget_arrive_whole() {
    large_answers_arrive_whole(Framing::UntilClose);
}

/// A chunked request body of `size` bytes, written whole while the proxy is paused.
fn chunked_request(id: usize, size: usize) -> (Vec<u8>, Vec<u8>) {
    let body = serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "eth_sendRawTransaction",
        "params": [format!("0x{}", filler(size))],
    }))
    .expect("request JSON");
    let mut message = b"POST / HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(16 * 1024) {
        message.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        message.extend_from_slice(chunk);
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"0\r\n\r\n");
    (message, body)
}

/// Writes `bytes` without blocking until done or the socket buffers are full; returns how many
/// were written.
fn fill_socket(writer: &mut TcpStream, bytes: &[u8]) -> usize {
    writer.set_nonblocking(true).expect("non-blocking writer");
    let mut written = 0;
    while written < bytes.len() {
        match writer.write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("writing the request: {e}"),
        }
    }
    // The flag belongs to the socket, which the reading handle shares.
    writer.set_nonblocking(false).expect("blocking writer");
    written
}

#[test]
fn chunked_requests_larger_than_a_read_budget_are_read_whole() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&[&["--el", &el.url()][..], &PATIENT].concat());
    let mut client = Client::connect(proxy.addr());
    for (i, size) in SIZES.into_iter().enumerate() {
        let (message, body) = chunked_request(i, size);
        let mut writer = client.writer();
        // While the proxy sleeps, the socket buffers take what they can; the rest follows from
        // a thread once it is back.
        let written = paused(&proxy, || fill_socket(&mut writer, &message));
        let rest = message[written..].to_vec();
        let sender = thread::spawn(move || writer.write_all(&rest));
        let answer = client.read_response();
        assert_eq!(answer.status, 200, "chunked request of {size} bytes");
        sender
            .join()
            .expect("writer thread")
            .expect("request written");
        let received = el.wait_for(i + 1, WAIT);
        assert_eq!(
            received[i].body, body,
            "request of {size} bytes forwarded whole"
        );
    }
}
