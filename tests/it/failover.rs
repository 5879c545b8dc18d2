//! Failover: dead, killed, hanging and slow execution clients never stall the others.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{ProxyProcess, WAIT, new_payload, post, rpc, unix_now};

/// A loopback URL where nothing listens.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[test]
fn primary_down_at_start_next_el_answers() {
    let el = MockEl::start("el-1");
    let proxy = ProxyProcess::start(&["--el", &dead_url(), "--el", &el.url()]);
    let answer = post(proxy.addr(), &rpc(json!(1), "eth_chainId", json!([])));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["result"], "el-1");
    let answer = post(proxy.addr(), &new_payload(2, 0x31, unix_now()));
    assert_eq!(answer.json()["result"]["status"], "VALID");
    assert_eq!(el.received_method("engine_newPayloadV3").len(), 1);
}

#[test]
fn primary_killed_mid_run_next_el_answers() {
    let primary = MockEl::start("el-0");
    let backup = MockEl::start("el-1");
    let proxy = ProxyProcess::start(&["--el", &primary.url(), "--el", &backup.url()]);
    let first = post(proxy.addr(), &rpc(json!(1), "eth_chainId", json!([])));
    assert_eq!(first.json()["result"], "el-0");
    drop(primary);
    let answer = post(proxy.addr(), &new_payload(2, 0x32, unix_now()));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let received = backup.wait_for(1, WAIT);
    assert_eq!(
        answer.body,
        received.last().unwrap().answer,
        "the backup's answer"
    );
    let read = post(proxy.addr(), &rpc(json!(3), "eth_chainId", json!([])));
    assert_eq!(read.json()["result"], "el-1");
}

#[test]
fn all_els_down_answers_internal_error_with_id() {
    let proxy = ProxyProcess::start(&["--el", &dead_url(), "--el", &dead_url()]);
    let answer = post(proxy.addr(), &new_payload(77, 0x33, unix_now()));
    // As an execution client answers errors: a non-2xx makes Teku mark the EL offline.
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json = answer.json();
    assert_eq!(json["id"], 77);
    assert_eq!(json["error"]["code"], -32603);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{json}"
    );
}

#[test]
fn hanging_el_times_out_closes_and_recovers() {
    let el = MockEl::start("el-0");
    el.set_behavior(Behavior::Hang);
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--request-timeout", "500"]);
    let started = Instant::now();
    let answer = post(proxy.addr(), &new_payload(5, 0x34, unix_now()));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], -32603);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(proxy.wait_log("is unhealthy", WAIT).is_some());
    let connections_before = el.connections();
    el.set_behavior(Behavior::Answer);
    // A demoted execution client still gets engine calls; the first answered promotes it.
    let answer = post(proxy.addr(), &new_payload(6, 0x35, unix_now()));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["result"]["status"], "VALID");
    assert!(proxy.wait_log("is up", WAIT).is_some());
    assert!(
        el.connections() > connections_before,
        "the timed-out connection was not reused"
    );
}

#[test]
fn slow_el_does_not_delay_delivery_to_the_others() {
    let fast_a = MockEl::start("el-0");
    let slow = MockEl::start("el-1");
    let fast_b = MockEl::start("el-2");
    let proxy = ProxyProcess::start(&[
        "--el",
        &fast_a.url(),
        "--el",
        &slow.url(),
        "--el",
        &fast_b.url(),
    ]);
    slow.set_behavior(Behavior::Delay(Duration::from_secs(3)));
    let sent = Instant::now();
    for i in 0..3u8 {
        let answer = post(
            proxy.addr(),
            &new_payload(u64::from(i), 0x40 + i, unix_now()),
        );
        assert_eq!(answer.status, 200);
    }
    let answered = sent.elapsed();
    assert!(
        answered < Duration::from_secs(2),
        "answers waited for the slow EL: {answered:?}"
    );
    for el in [&fast_a, &fast_b] {
        let received = el.wait_for(3, WAIT);
        assert_eq!(received.len(), 3);
        let last = received.last().unwrap().at.duration_since(sent);
        assert!(
            last < Duration::from_secs(2),
            "fast EL got its copy late: {last:?}"
        );
    }
    // The slow one still gets all three, in order.
    let received = slow.wait_for(3, Duration::from_secs(15));
    assert_eq!(received.len(), 3);
    let ids: Vec<u64> = received.iter().map(|r| r.id().unwrap()).collect();
    assert_eq!(ids, [0, 1, 2]);
}

#[test]
fn reads_do_not_wait_behind_a_slow_new_payload() {
    let el = MockEl::start("el-0");
    el.hang_on("engine_newPayloadV3");
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--ack", "immediate"]);
    post(proxy.addr(), &new_payload(1, 0x50, unix_now()));
    el.wait_for(1, WAIT);
    let mut client = crate::support::Client::connect(proxy.addr());
    // In immediate mode reads are answered by the proxy, but still delivered: on the read lane.
    client.post("/", &rpc(json!(2), "engine_getBlobsV1", json!([[]])), "");
    client.read_response();
    let received = el.wait_for(2, WAIT);
    assert_eq!(
        received.len(),
        2,
        "the read reached the EL while newPayload hangs"
    );
    assert_ne!(received[0].connection, received[1].connection);
}

#[test]
fn el_back_after_drops_catches_up_in_order_before_the_head() {
    let alive = MockEl::start("el-0");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = ProxyProcess::start(&[
        "--el",
        &alive.url(),
        "--el",
        &format!("http://127.0.0.1:{port}"),
        "--queue-max",
        "4",
    ]);
    assert!(proxy.wait_log("is down", WAIT).is_some());
    let now = unix_now();
    for i in 1..=10u8 {
        assert_eq!(
            post(proxy.addr(), &new_payload(u64::from(i), i, now)).status,
            200
        );
    }
    post(proxy.addr(), &crate::support::forkchoice(11, 10, None));
    assert!(proxy.wait_log("queue full, dropped", WAIT).is_some());
    let back = MockEl::start_on(&format!("127.0.0.1:{port}"), "el-1");
    assert!(proxy.wait_log("catching up with", WAIT).is_some());
    let received = back.wait_for(11, WAIT);
    let ids: Vec<u64> = received.iter().map(|r| r.id().unwrap()).collect();
    assert_eq!(
        ids,
        (1..=11).collect::<Vec<u64>>(),
        "every missed payload, in order, then the head"
    );
}
