//! Signals: SIGTERM, SIGINT and SIGQUIT stop accepting, deliver what is queued within the grace
//! period and exit 0; SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored. Every beacon node
//! waiting when the signal comes is answered within the grace period (by its execution client, or
//! with a JSON-RPC error when the grace runs out), and a request whose body is arriving is read
//! to its end and answered.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{
    Client, ProxyProcess, WAIT, eventually, forkchoice, get, metric, new_payload, post_with,
    unix_now,
};

#[test]
fn sigterm_drains_queued_requests_then_exits_0() {
    let el = MockEl::start("el-0");
    el.set_behavior(Behavior::Delay(Duration::from_millis(300)));
    let mut proxy = ProxyProcess::start(&["--el", &el.url(), "--ack", "immediate"]);
    let mut client = Client::connect(proxy.addr());
    for i in 0..5u8 {
        client.post("/", &new_payload(u64::from(i), 0x60 + i, unix_now()), "");
        client.read_response();
    }
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(WAIT), Some(0));
    assert_eq!(
        el.received().len(),
        5,
        "every queued request was delivered before exit"
    );
    assert!(
        std::net::TcpStream::connect(proxy.addr()).is_err(),
        "no longer accepting"
    );
}

#[test]
fn sigint_with_nothing_queued_exits_at_once() {
    let el = MockEl::start("el-0");
    let mut proxy = ProxyProcess::start(&["--el", &el.url()]);
    proxy.signal("INT");
    assert_eq!(proxy.wait_exit(WAIT), Some(0));
}

#[test]
fn sighup_and_sigusr_are_logged_and_ignored_then_sigquit_drains() {
    let el = MockEl::start("el-0");
    el.set_behavior(Behavior::Delay(Duration::from_millis(300)));
    let mut proxy = ProxyProcess::start(&["--el", &el.url(), "--ack", "immediate"]);
    for (signal, name) in [("HUP", "SIGHUP"), ("USR1", "SIGUSR1"), ("USR2", "SIGUSR2")] {
        proxy.signal(signal);
        let line = proxy
            .wait_log(&format!("received {name}: ignored"), WAIT)
            .unwrap_or_else(|| panic!("{name} is logged: {:?}", proxy.logs()));
        assert!(line.contains("INFO"), "{line}");
        let status = get(proxy.addr(), "/status").json();
        assert_eq!(status["shutting_down"], false, "still serving after {name}");
    }
    let mut client = Client::connect(proxy.addr());
    for i in 0..3u8 {
        client.post("/", &new_payload(u64::from(i), 0x70 + i, unix_now()), "");
        client.read_response();
    }
    proxy.signal("QUIT");
    assert_eq!(proxy.wait_exit(WAIT), Some(0), "SIGQUIT stops gracefully");
    assert_eq!(
        el.received().len(),
        3,
        "what was queued was delivered first"
    );
    assert!(
        proxy.logs().iter().any(|l| l.contains("shutting down")),
        "{:?}",
        proxy.logs()
    );
}

/// Beacon nodes waiting on a hung execution client when the signal comes: one request in flight,
/// two queued behind it (state-changing calls go one at a time).
const WAITING_BEACONS: u64 = 3;

/// Slack for a loaded 2-core machine between the grace period ending and an answer arriving.
const ANSWER_SLACK: Duration = Duration::from_millis(1_500);

/// Starts a proxy before `el` with this `--shutdown-grace` and `WAITING_BEACONS` beacon nodes
/// (`/bn-0`, `/bn-1`…) each waiting on a `newPayload`; once the proxy has read all of them (they
/// are its open exchanges), sends it SIGTERM. Returns the proxy, the beacon nodes' connections
/// with their request ids, and when the signal went.
fn terminate_with_beacons_waiting(
    el: &MockEl,
    grace: &str,
) -> (ProxyProcess, Vec<(Client, u64)>, Instant) {
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--shutdown-grace", grace]);
    let mut waiting = Vec::new();
    for i in 0..WAITING_BEACONS {
        let mut client = Client::connect(proxy.addr());
        let id = 100 + i;
        let body = new_payload(id, 0x80 + i as u8, unix_now());
        client.post(&format!("/bn-{i}"), &body, "");
        waiting.push((client, id));
    }
    assert!(
        eventually(WAIT, || {
            metric(proxy.addr(), "sync_proxy_exchanges_in_flight") == Some(WAITING_BEACONS)
        }),
        "the proxy read every request"
    );
    assert!(
        !el.wait_for(1, WAIT).is_empty(),
        "the first one is in flight"
    );
    let signalled = Instant::now();
    proxy.signal("TERM");
    (proxy, waiting, signalled)
}

/// Reads the answer to request `id` on `client`: HTTP 200 (as an execution client answers,
/// errors included) with that id, less than `by` after `signalled`; returns its JSON.
fn answer_within(client: &mut Client, id: u64, signalled: Instant, by: Duration) -> Value {
    let answer = client.try_read_response();
    let after = signalled.elapsed();
    let answer = answer.unwrap_or_else(|| {
        panic!("request {id}: connection closed without an answer {after:?} after the signal")
    });
    let json = answer.json();
    assert_eq!(answer.status, 200, "{json}");
    assert_eq!(json["id"], id, "its own id: {json}");
    assert!(
        after < by,
        "request {id} answered {after:?} after the signal, not within {by:?}"
    );
    json
}

#[test]
fn sigterm_with_a_hung_execution_client_answers_every_waiting_beacon_node_by_the_grace() {
    let el = MockEl::start("el-0");
    el.hang_on("engine_newPayloadV3");
    let grace = Duration::from_secs(1);
    let (mut proxy, waiting, signalled) = terminate_with_beacons_waiting(&el, "1s");
    for (mut client, id) in waiting {
        let json = answer_within(&mut client, id, signalled, grace + ANSWER_SLACK);
        assert_eq!(json["error"]["code"], -32603, "{json}");
    }
    assert_eq!(proxy.wait_exit(WAIT), Some(0));
    assert!(
        proxy
            .logs()
            .iter()
            .any(|l| l.contains("queued requests not delivered")),
        "the undelivered queue is logged: {:?}",
        proxy.logs()
    );
}

#[test]
fn sigterm_with_a_slow_execution_client_gives_waiting_beacon_nodes_its_answers() {
    let el = MockEl::start("el-0");
    el.set_behavior(Behavior::Delay(Duration::from_millis(300)));
    let grace = Duration::from_secs(8);
    let (mut proxy, waiting, signalled) = terminate_with_beacons_waiting(&el, "8s");
    for (mut client, id) in waiting {
        let json = answer_within(&mut client, id, signalled, grace);
        assert_eq!(
            json["result"]["status"], "VALID",
            "the execution client's own answer: {json}"
        );
    }
    assert_eq!(proxy.wait_exit(WAIT), Some(0));
    assert_eq!(el.received().len(), WAITING_BEACONS as usize);
}

#[test]
fn sigterm_mid_upload_reads_the_body_to_its_end_and_answers_it() {
    let el = MockEl::start("el-0");
    let mut proxy = ProxyProcess::start(&["--el", &el.url()]);
    let body = new_payload(7, 0x90, unix_now());
    let (first, rest) = body.split_at(body.len() / 2);
    let mut client = Client::connect(proxy.addr());
    // `100 Continue` says the proxy has read the head: the body is what is under way.
    client.send(
        format!(
            "POST /bn-0 HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = client.read_some();
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    client.send(first);
    proxy.signal("TERM");
    assert!(
        proxy.wait_log("shutting down", WAIT).is_some(),
        "{:?}",
        proxy.logs()
    );
    let mut writer = client.writer();
    let sent = writer.write_all(rest);
    let answer = client.try_read_response();
    assert!(
        sent.is_ok() && answer.is_some(),
        "the request under way is read and answered (rest of the body sent: {sent:?})"
    );
    let json = answer.expect("checked").json();
    assert_eq!(json["id"], 7, "{json}");
    assert_eq!(json["result"]["status"], "VALID", "{json}");
    assert_eq!(el.received().len(), 1, "delivered");
    assert_eq!(proxy.wait_exit(WAIT), Some(0));
}

#[test]
fn sigterm_with_a_short_grace_answers_a_fork_choice_held_for_the_followed_head() {
    let el = MockEl::start("el-0");
    let grace = Duration::from_millis(200);
    let mut proxy = ProxyProcess::start(&["--el", &el.url(), "--shutdown-grace", "200ms"]);
    let now = unix_now();
    let imported = post_with(proxy.addr(), "/bn-a", &new_payload(1, 0xa1, now), "");
    assert_eq!(imported.json()["result"]["status"], "VALID");
    // bn-b names the block the followed bn-a imported but has not chosen yet: held for up to a
    // second, for bn-a's fork choice (longer than this grace).
    let mut other = Client::connect(proxy.addr());
    other.post("/bn-b", &forkchoice(2, 0xa1, None), "");
    let series = r#"sync_proxy_requests_total{method="forkchoiceUpdated"}"#;
    assert!(
        eventually(WAIT, || metric(proxy.addr(), series) == Some(1)),
        "the proxy read the fork choice"
    );
    let signalled = Instant::now();
    proxy.signal("TERM");
    let json = answer_within(&mut other, 2, signalled, grace + ANSWER_SLACK);
    assert_eq!(
        json["result"]["payloadStatus"]["status"], "SYNCING",
        "the proxy's own non-committal answer: {json}"
    );
    assert_eq!(proxy.wait_exit(WAIT), Some(0));
}
