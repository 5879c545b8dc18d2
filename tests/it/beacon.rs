//! Following the best beacon node: identity, slot tracking, the forwarding table, the demo.

use serde_json::{Value, json};

use crate::support::mock_el::MockEl;
use crate::support::{
    Client, ProxyProcess, WAIT, forkchoice, get, metric, new_payload, post, post_with, rpc,
    unix_now,
};

/// Mainnet slot of a Unix time.
fn slot_of(unix: u64) -> u64 {
    (unix - 1_606_824_023) / 12
}

fn beacon<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["beacons"].as_array()?.iter().find(|b| b["id"] == id)
}

fn two_els() -> (MockEl, MockEl) {
    (MockEl::start("el-0"), MockEl::start("el-1"))
}

#[test]
fn fork_choice_from_a_beacon_that_is_not_followed_is_answered_syncing() {
    let (el0, el1) = two_els();
    let proxy = ProxyProcess::start(&["--el", &el0.url(), "--el", &el1.url()]);
    let now = unix_now();
    post_with(proxy.addr(), "/bn-a", &new_payload(1, 0xa1, now), "");
    let followed = post_with(proxy.addr(), "/bn-a", &forkchoice(2, 0xa1, None), "").json();
    assert_eq!(followed["result"]["payloadStatus"]["status"], "VALID");
    // bn-b is on another head: not forwarded.
    let other = post_with(proxy.addr(), "/bn-b", &forkchoice(3, 0xb1, Some(now)), "").json();
    assert_eq!(other["id"], 3);
    assert_eq!(other["result"]["payloadStatus"]["status"], "SYNCING");
    assert_eq!(other["result"]["payloadId"], Value::Null);
    // bn-b agreeing on the followed head may still start a build: forwarded.
    let same = post_with(proxy.addr(), "/bn-b", &forkchoice(4, 0xa1, Some(now)), "").json();
    assert_eq!(same["result"]["payloadStatus"]["status"], "VALID");
    assert!(same["result"]["payloadId"].is_string());
    for el in [&el0, &el1] {
        // The answer came from one of them; the other may still be on its way.
        el.wait_for(3, WAIT);
        let fcus = el.received_method("engine_forkchoiceUpdatedV3");
        let ids: Vec<u64> = fcus.iter().map(|r| r.id().unwrap()).collect();
        assert_eq!(ids, [2, 4], "only the followed head reached the ELs");
    }
}

#[test]
fn new_payload_from_three_beacons_reaches_each_el_once() {
    let (el0, el1) = two_els();
    let proxy = ProxyProcess::start(&["--el", &el0.url(), "--el", &el1.url()]);
    let now = unix_now();
    for (i, path) in ["/bn-a", "/bn-b", "/bn-c"].iter().enumerate() {
        let answer = post_with(
            proxy.addr(),
            path,
            &new_payload(10 + i as u64, 0xc1, now),
            "",
        )
        .json();
        assert_eq!(
            answer["id"],
            10 + i as u64,
            "each beacon node gets its own id back"
        );
        assert_eq!(answer["result"]["status"], "VALID");
    }
    for el in [&el0, &el1] {
        el.wait_for(1, WAIT);
        assert_eq!(el.received_method("engine_newPayloadV3").len(), 1);
    }
}

#[test]
fn get_payload_goes_to_the_el_that_issued_the_id() {
    let (el0, el1) = two_els();
    let proxy = ProxyProcess::start(&["--el", &el0.url(), "--el", &el1.url()]);
    let now = unix_now();
    post(proxy.addr(), &new_payload(1, 0xd1, now));
    let started = post(proxy.addr(), &forkchoice(2, 0xd1, Some(now + 12))).json();
    let primary_id = started["result"]["payloadId"].as_str().unwrap().to_owned();
    // Both ELs built; each issued its own id (the mock derives it from its name).
    el1.wait_for(2, WAIT);
    let el1_id = serde_json::from_slice::<Value>(
        &el1.received_method("engine_forkchoiceUpdatedV3")[0].answer,
    )
    .unwrap()["result"]["payloadId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(primary_id, el1_id);
    // el-1's answer reaches the proxy after the primary's: until then its id is unknown.
    let mut from_el1 = Value::Null;
    assert!(crate::support::eventually(WAIT, || {
        from_el1 = post(
            proxy.addr(),
            &rpc(json!(3), "engine_getPayloadV4", json!([el1_id])),
        )
        .json();
        from_el1["error"].is_null()
    }));
    assert_eq!(from_el1["result"]["executionPayload"]["builtBy"], "el-1");
    let from_el0 = post(
        proxy.addr(),
        &rpc(json!(4), "engine_getPayloadV4", json!([primary_id])),
    )
    .json();
    assert_eq!(from_el0["result"]["executionPayload"]["builtBy"], "el-0");
    // Each call also asks the other execution client for the payload it built for the same
    // fork choice (under its own id), in case the issuer fails.
    for (el, own, other) in [(&el0, &primary_id, &el1_id), (&el1, &el1_id, &primary_id)] {
        let asked: Vec<String> = el
            .received_method("engine_getPayloadV4")
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["params"][0]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(asked.contains(own), "{asked:?}");
        assert!(!asked.contains(other), "{asked:?}: only its own ids");
    }
    let unknown = post(
        proxy.addr(),
        &rpc(
            json!(5),
            "engine_getPayloadV4",
            json!(["0x0102030405060708"]),
        ),
    )
    .json();
    assert_eq!(unknown["error"]["code"], -38001);
    assert_eq!(unknown["id"], 5);
}

#[test]
fn client_versions_are_concatenated_and_capabilities_intersected() {
    let (el0, el1) = two_els();
    let proxy = ProxyProcess::start(&["--el", &el0.url(), "--el", &el1.url()]);
    let versions = post(
        proxy.addr(),
        &rpc(
            json!(1),
            "engine_getClientVersionV1",
            json!([{"code": "SP", "name": "sync-proxy", "version": "1", "commit": "0x00000000"}]),
        ),
    )
    .json();
    let list = versions["result"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{versions}");
    assert_eq!(list[0]["name"], "el-0");
    assert_eq!(list[1]["name"], "el-1");
    let capabilities = post(
        proxy.addr(),
        &rpc(
            json!(2),
            "engine_exchangeCapabilities",
            json!([["engine_newPayloadV4"]]),
        ),
    )
    .json();
    let list: Vec<&str> = capabilities["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(list.contains(&"engine_newPayloadV4"));
    assert!(
        !list.iter().any(|m| m.starts_with("engine_only_")),
        "only what every EL supports: {list:?}"
    );
}

#[test]
fn other_reads_go_to_the_primary_only() {
    let (el0, el1) = two_els();
    let proxy = ProxyProcess::start(&["--el", &el0.url(), "--el", &el1.url()]);
    post(
        proxy.addr(),
        &rpc(json!(1), "engine_getPayloadBodiesByHashV1", json!([[]])),
    );
    post(proxy.addr(), &rpc(json!(2), "eth_blockNumber", json!([])));
    assert_eq!(el0.wait_for(2, WAIT).len(), 2);
    assert!(el1.received().is_empty());
}

#[test]
fn builder_payload_attributes_slot_is_tracked_and_future_slots_ignored() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let wall = slot_of(unix_now());
    let attributes = |id: u64, slot: u64| {
        rpc(
            json!(id),
            "builder_payloadAttributes",
            json!([{"slot": format!("0x{slot:x}"), "timestamp": format!("0x{:x}", 1_606_824_023 + slot * 12)}]),
        )
    };
    post_with(proxy.addr(), "/prysm", &attributes(1, wall), "");
    let status = get(proxy.addr(), "/status").json();
    assert_eq!(beacon(&status, "prysm").unwrap()["slot"], wall);
    post_with(proxy.addr(), "/prysm", &attributes(2, wall + 50), "");
    assert!(proxy.wait_log("beyond the wall-clock slot", WAIT).is_some());
    let status = get(proxy.addr(), "/status").json();
    assert_eq!(
        beacon(&status, "prysm").unwrap()["slot"],
        wall,
        "the future claim was not believed"
    );
    assert_eq!(
        el.wait_for(2, WAIT).len(),
        2,
        "both forwarded (it is the followed beacon)"
    );
}

#[test]
fn timestamps_map_to_slots_of_the_chosen_network() {
    let el = MockEl::start("el-0");
    // Hoodi: genesis 1742213400, 12 s slots.
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--network", "hoodi"]);
    let now = unix_now();
    post_with(proxy.addr(), "/bn", &new_payload(1, 0xe1, now), "");
    let status = get(proxy.addr(), "/status").json();
    assert_eq!(
        beacon(&status, "bn").unwrap()["slot"],
        (now - 1_742_213_400) / 12
    );
    assert_eq!(status["network"], "hoodi");
}

#[test]
fn head_hash_of_a_known_block_counts_as_its_slot() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let now = unix_now();
    post_with(proxy.addr(), "/bn-a", &new_payload(1, 0xf1, now), "");
    // bn-b only sends a fork choice naming that block.
    post_with(proxy.addr(), "/bn-b", &forkchoice(2, 0xf1, None), "");
    let status = get(proxy.addr(), "/status").json();
    assert_eq!(beacon(&status, "bn-b").unwrap()["slot"], slot_of(now));
}

#[test]
fn forwarded_for_names_the_beacon_only_from_trusted_peers() {
    let el = MockEl::start("el-0");
    let trusting = ProxyProcess::start(&["--el", &el.url()]);
    post_with(
        trusting.addr(),
        "/",
        &rpc(json!(1), "eth_chainId", json!([])),
        "X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n",
    );
    let status = get(trusting.addr(), "/status").json();
    // The right-most entry is the address the trusted proxy saw; the left one a mere claim.
    assert!(beacon(&status, "10.0.0.1").is_some(), "{status}");
    assert!(beacon(&status, "203.0.113.7").is_none(), "{status}");
    let distrusting = ProxyProcess::start(&["--el", &el.url(), "--trusted-proxy", "none"]);
    post_with(
        distrusting.addr(),
        "/",
        &rpc(json!(1), "eth_chainId", json!([])),
        "X-Forwarded-For: 203.0.113.7\r\nX-Real-IP: 203.0.113.8\r\n",
    );
    let status = get(distrusting.addr(), "/status").json();
    assert!(beacon(&status, "127.0.0.1").is_some(), "{status}");
    assert!(beacon(&status, "203.0.113.7").is_none());
}

/// Without JWT an identity is a claim: a flood of new names (here request paths) must not push
/// live beacon nodes out of the tracker, followed or not (issue 11, item 6).
#[test]
fn identity_flood_keeps_live_beacon_nodes_tracked() {
    const FLOOD: usize = 500;
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let now = unix_now();
    post_with(proxy.addr(), "/bn-real", &new_payload(1, 0xe1, now), "");
    post_with(proxy.addr(), "/bn-other", &new_payload(2, 0xe2, now), "");
    let mut flood = Client::connect(proxy.addr());
    for i in 0..FLOOD {
        let body = rpc(json!(i), "eth_chainId", json!([]));
        flood.post(&format!("/flood-{i}"), &body, "");
        assert_eq!(flood.read_response().status, 200);
    }
    let status = get(proxy.addr(), "/status").json();
    assert_eq!(status["followed_beacon"], "bn-real", "{status}");
    assert!(beacon(&status, "bn-other").is_some(), "{status}");
    assert_eq!(status["beacons"].as_array().map(Vec::len), Some(64));
    // The table had room for 62 newcomers; the rest were counted, not tracked.
    assert_eq!(
        metric(proxy.addr(), "sync_proxy_beacon_untracked_total"),
        Some(FLOOD as u64 - 62)
    );
}

#[test]
fn ipv6_beacon_is_served_and_named_by_its_address() {
    let el = MockEl::start("el-0");
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        panic!("IPv6 loopback is required for this test");
    };
    drop(probe);
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--listen", "[::1]:0"]);
    assert!(proxy.addr().is_ipv6());
    let answer = post(proxy.addr(), &new_payload(1, 0x61, unix_now()));
    assert_eq!(answer.json()["result"]["status"], "VALID");
    let status = get(proxy.addr(), "/status").json();
    assert!(beacon(&status, "::1").is_some(), "{status}");
}

#[test]
fn beacon_disconnecting_mid_request_loses_nothing_else() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    {
        let mut client = Client::connect(proxy.addr());
        client.send(
            b"POST /bn-a HTTP/1.1\r\nHost: p\r\nContent-Length: 500\r\n\r\n{\"jsonrpc\":\"2.0\",",
        );
    }
    let answer = post(proxy.addr(), &new_payload(2, 0x62, unix_now()));
    assert_eq!(answer.status, 200);
    assert_eq!(
        el.wait_for(1, WAIT).len(),
        1,
        "the half request was not forwarded"
    );
}

#[test]
fn switches_follow_the_beacon_with_the_highest_slot() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--beacon-timeout", "1"]);
    let now = unix_now();
    post_with(proxy.addr(), "/bn-a", &new_payload(1, 0x71, now - 36), "");
    assert!(proxy.wait_log("-> bn-a", WAIT).is_some());
    post_with(proxy.addr(), "/bn-b", &new_payload(2, 0x72, now), "");
    let line = proxy.wait_log("overtaken", WAIT).expect("switch logged");
    assert!(
        line.contains("bn-a (slot") && line.contains("-> bn-b"),
        "{line}"
    );
    // bn-b goes silent: the loop's own timer notices it expire.
    let line = proxy
        .wait_log("no longer live", WAIT)
        .expect("switch logged");
    assert!(line.contains("bn-b (slot"), "{line}");
    post_with(proxy.addr(), "/bn-a", &forkchoice(3, 0x71, None), "");
    let status = get(proxy.addr(), "/status").json();
    assert_eq!(status["followed_beacon"], "bn-a", "{status}");
    assert!(status["beacon_switches"].as_u64().unwrap() >= 3, "{status}");
    let metrics = get(proxy.addr(), "/metrics").text();
    assert!(
        metrics.contains("sync_proxy_beacon_switches_total"),
        "{metrics}"
    );
}

#[test]
fn demo_runs_to_completion() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sync-proxy"))
        .arg("demo")
        .output()
        .expect("run the demo");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("overtaken"), "{stderr}");
    assert!(stderr.contains("no longer live"), "{stderr}");
    assert!(
        stdout.contains("What each execution client received"),
        "{stdout}"
    );
    assert!(
        stderr.contains(" is down: "),
        "an execution client fails: {stderr}"
    );
    assert!(
        stdout.contains("the proxy's own answer"),
        "SYNCING is explained: {stdout}"
    );
    assert_eq!(stdout.matches("16 distinct blocks").count(), 3, "{stdout}");
    assert!(
        stdout.contains("16 distinct blocks (down for two slots, then caught up by the proxy)"),
        "the crashed execution client got every block: {stdout}"
    );
}

/// Found with real Lodestar nodes (tests/interop): the second beacon node's copy of a block
/// arrived while the primary was still validating the first and was answered `SYNCING` at once,
/// which made that node treat the block as not validated and fail validator duties.
#[test]
fn copy_of_a_block_being_validated_gets_the_primarys_verdict() {
    let el = MockEl::start("el-0");
    el.set_behavior(crate::support::mock_el::Behavior::Delay(
        std::time::Duration::from_millis(300),
    ));
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let addr = proxy.addr();
    let now = unix_now();
    let first =
        std::thread::spawn(move || post_with(addr, "/bn-a", &new_payload(1, 0x99, now), "").json());
    // Wait until the first copy reached the execution client, then send the second.
    el.wait_for(1, WAIT);
    let copy = post_with(addr, "/bn-b", &new_payload(2, 0x99, now), "").json();
    assert_eq!(copy["id"], 2);
    assert_eq!(copy["result"]["status"], "VALID", "{copy}");
    assert_eq!(first.join().unwrap()["result"]["status"], "VALID");
    assert_eq!(
        el.received_method("engine_newPayloadV3").len(),
        1,
        "delivered once"
    );
}
