//! Delivery and answers: bodies byte for byte, the primary's answer, answer modes, errors.

use std::time::Duration;

use serde_json::json;

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{
    ProxyProcess, WAIT, fixture_request, get, new_payload, post, post_with, rpc, unix_now,
};

#[test]
fn one_el_receives_the_exact_body_and_its_answer_is_returned_unchanged() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let body = fixture_request("lodestar-1.5.1_to_ethereumjs-0.10.5_capella/06_newPayloadV2.json");
    let answer = post(proxy.addr(), &body);
    let received = el.wait_for(1, WAIT);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, body, "body forwarded byte for byte");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body, received[0].answer,
        "answer returned byte for byte"
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
}

#[test]
fn three_els_receive_identical_bodies_and_the_primary_answers() {
    let els: Vec<MockEl> = (0..3).map(|i| MockEl::start(&format!("el-{i}"))).collect();
    let urls: Vec<String> = els.iter().map(MockEl::url).collect();
    let proxy = ProxyProcess::start(&["--el", &urls[0], "--el", &urls[1], "--el", &urls[2]]);
    // Keys in an unusual order: method after a large params.
    let body = br#"{"params":[{"blockHash":"0x1111111111111111111111111111111111111111111111111111111111111111","timestamp":"0x6b0514a9","transactions":[]},[],"0x0000000000000000000000000000000000000000000000000000000000000000"],"id":"a\"b","jsonrpc":"2.0","method":"engine_newPayloadV3"}"#;
    let answer = post(proxy.addr(), body);
    for el in &els {
        let received = el.wait_for(1, WAIT);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].body, body.to_vec());
    }
    assert_eq!(
        answer.body,
        els[0].received()[0].answer,
        "the primary's answer"
    );
    assert_eq!(answer.json()["id"], json!("a\"b"));
}

#[test]
fn ack_immediate_answers_while_every_el_hangs() {
    let els: Vec<MockEl> = (0..2).map(|i| MockEl::start(&format!("el-{i}"))).collect();
    for el in &els {
        el.set_behavior(Behavior::Hang);
    }
    let proxy = ProxyProcess::start(&[
        "--el",
        &els[0].url(),
        "--el",
        &els[1].url(),
        "--ack",
        "immediate",
    ]);
    let started = std::time::Instant::now();
    let answer = post(proxy.addr(), &new_payload(9, 0x22, unix_now()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered without the ELs"
    );
    assert_eq!(answer.status, 200);
    let json = answer.json();
    assert_eq!(json["id"], 9);
    assert_eq!(json["result"]["status"], "SYNCING");
    let fcu = post(proxy.addr(), &crate::support::forkchoice(10, 0x22, None)).json();
    assert_eq!(fcu["result"]["payloadStatus"]["status"], "SYNCING");
    assert_eq!(fcu["result"]["payloadId"], serde_json::Value::Null);
    // Delivered all the same (the fork choice waits behind the hanging newPayload: ordering).
    for el in &els {
        assert_eq!(el.wait_for(1, WAIT)[0].method, "engine_newPayloadV3");
    }
}

#[test]
fn malformed_json_is_answered_with_parse_error_and_not_forwarded() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let answer = post(
        proxy.addr(),
        br#"{"jsonrpc":"2.0","id":7,"method":"engine_newPayloadV3","params":[{"#,
    );
    assert_eq!(answer.status, 400);
    let json = answer.json();
    assert_eq!(json["error"]["code"], -32700);
    assert_eq!(
        json["id"],
        json!(7),
        "the id before the damage is echoed: {json}"
    );
    let nothing = post(proxy.addr(), b"not json at all").json();
    assert_eq!(nothing["error"]["code"], -32700);
    assert!(nothing["id"].is_null());
    assert!(el.received().is_empty());
}

#[test]
fn non_rpc_json_is_invalid_request_echoing_the_id() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    for (body, id) in [
        (
            &br#"{"jsonrpc":"2.0","id":"abc","params":[]}"#[..],
            json!("abc"),
        ),
        (
            &br#"{"jsonrpc":"2.0","id":12345678901234,"method":7}"#[..],
            json!(12345678901234u64),
        ),
        (
            &br#"{"jsonrpc":"2.0","id":null,"method":{}}"#[..],
            json!(null),
        ),
        (&br#"[]"#[..], json!(null)),
        (&br#"42"#[..], json!(null)),
    ] {
        let answer = post(proxy.addr(), body);
        let json = answer.json();
        assert_eq!(
            json["error"]["code"],
            -32600,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(json["id"], id, "{}", String::from_utf8_lossy(body));
        assert_eq!(json["jsonrpc"], "2.0");
    }
    assert!(el.received().is_empty());
}

#[test]
fn malformed_quantity_is_invalid_params() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let body = rpc(
        json!(3),
        "engine_newPayloadV3",
        json!([{"blockHash": format!("0x{}", "11".repeat(32)), "timestamp": "0xzz"}]),
    );
    let json = post(proxy.addr(), &body).json();
    assert_eq!(json["error"]["code"], -32602);
    assert_eq!(json["id"], 3);
    assert!(el.received().is_empty());
}

#[test]
fn health_reports_reachable_els_and_unknown_paths_are_404() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    assert!(crate::support::eventually(WAIT, || get(
        proxy.addr(),
        "/health"
    )
    .status
        == 200));
    assert_eq!(get(proxy.addr(), "/").status, 200);
    let missing = get(proxy.addr(), "/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]["message"].is_string());
    let status = get(proxy.addr(), "/status").json();
    assert_eq!(status["upstreams"][0]["health"], "up");
    let metrics = get(proxy.addr(), "/metrics");
    assert!(
        metrics
            .text()
            .contains("sync_proxy_upstream_up{upstream=\""),
        "{}",
        metrics.text()
    );
}

#[test]
fn health_is_503_when_no_el_is_reachable() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let proxy = ProxyProcess::start(&["--el", &url]);
    assert!(proxy.wait_log("is down", WAIT).is_some());
    assert_eq!(get(proxy.addr(), "/health").status, 503);
}

#[test]
fn batch_goes_to_the_primary_only_and_its_answer_returns() {
    let els: Vec<MockEl> = (0..2).map(|i| MockEl::start(&format!("el-{i}"))).collect();
    let proxy = ProxyProcess::start(&["--el", &els[0].url(), "--el", &els[1].url()]);
    let body = br#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]},{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","params":[]}]"#;
    let answer = post(proxy.addr(), body);
    let json = answer.json();
    assert_eq!(json.as_array().map(Vec::len), Some(2));
    assert_eq!(els[0].wait_for(1, WAIT).len(), 1);
    assert!(els[1].received().is_empty());
}

#[test]
fn path_is_preserved_toward_the_el() {
    let el = MockEl::start("el-0");
    let url = format!("{}/engine/v1", el.url());
    let proxy = ProxyProcess::start(&["--el", &url]);
    post_with(
        proxy.addr(),
        "/bn-1",
        &rpc(json!(1), "eth_chainId", json!([])),
        "",
    );
    let received = el.wait_for(1, WAIT);
    assert!(
        received[0].head.starts_with("POST /engine/v1 HTTP/1.1"),
        "{}",
        received[0].head
    );
}

#[test]
fn answer_latency_is_measured_from_the_request() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    el.set_behavior(Behavior::Delay(Duration::from_millis(200)));
    assert_eq!(
        post(proxy.addr(), &new_payload(1, 0x55, unix_now())).status,
        200
    );
    let metrics = get(proxy.addr(), "/metrics").text();
    let sum: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sync_proxy_answer_seconds_sum "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(sum >= 0.2, "latency sum {sum} includes the EL's 200 ms");
}
