//! `GET /ready` against the binary: 503 with reasons until a beacon node is followed and an
//! execution client is up; back to 503 when either goes away. `/health` stays liveness.

use serde_json::Value;

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{ProxyProcess, WAIT, eventually, get, new_payload, post_with, unix_now};

fn ready(proxy: &ProxyProcess) -> (u16, Value) {
    let answer = get(proxy.addr(), "/ready");
    (answer.status, answer.json())
}

#[test]
fn ready_needs_a_followed_beacon_and_an_execution_client_up() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--beacon-timeout", "1"]);
    // The first probe makes the execution client up: alive, but nobody drives it yet.
    assert!(eventually(WAIT, || get(proxy.addr(), "/health").status == 200));
    let (status, body) = ready(&proxy);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("no beacon node followed"),
        "{body}"
    );
    assert_eq!(body["execution_clients_up"], 1);

    post_with(proxy.addr(), "/bn-r", &new_payload(1, 0x41, unix_now()), "");
    let (status, body) = ready(&proxy);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["followed_beacon"], "bn-r");
    assert_eq!(body["reason"], "");

    // The beacon node falls silent past --beacon-timeout: not ready, still healthy.
    assert!(eventually(WAIT, || ready(&proxy).0 == 503));
    assert!(
        ready(&proxy).1["reason"]
            .as_str()
            .unwrap()
            .contains("no beacon node followed")
    );
    assert_eq!(get(proxy.addr(), "/health").status, 200);
}

#[test]
fn ready_is_503_naming_each_execution_client_when_none_is_up() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    el.set_behavior(Behavior::Close);
    post_with(proxy.addr(), "/bn-r", &new_payload(1, 0x42, unix_now()), "");
    assert!(eventually(WAIT, || ready(&proxy).0 == 503));
    let (_, body) = ready(&proxy);
    assert_eq!(body["followed_beacon"], "bn-r", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("no execution client up") && reason.contains(&format!("{} down", el.url())),
        "{body}"
    );
}
