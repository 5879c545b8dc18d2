//! The answer rules (issue 8, DESIGN §3.4–§3.6b), each against the built binary with mock
//! execution clients: what a beacon node gets when an execution client is syncing, hung, slow,
//! erroring, broken or gone — never worse than from one healthy execution client.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{
    Client, ProxyProcess, WAIT, eventually, forkchoice, get, metric, new_payload, post, post_with,
    rpc, unix_now,
};

fn two_els() -> (MockEl, MockEl, ProxyProcess) {
    let (el0, el1) = (MockEl::start("el-0"), MockEl::start("el-1"));
    let proxy = ProxyProcess::start(&["--el", &el0.url(), "--el", &el1.url()]);
    (el0, el1, proxy)
}

fn syncing() -> Value {
    json!({"status": "SYNCING", "latestValidHash": null, "validationError": null})
}

/// Rule 1: a fork choice with payload attributes is never coalesced away. Sixteen beacon nodes'
/// concurrent fork choices with attributes, queued behind a slow execution client, each get a
/// `payloadId` (before: 301 of 320 got HTTP 502).
#[test]
fn concurrent_fork_choices_with_attributes_all_get_a_payload_id() {
    let el = MockEl::start("el-0");
    el.set_behavior(Behavior::Delay(Duration::from_millis(100)));
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let now = unix_now();
    post_with(proxy.addr(), "/bn-a", &new_payload(1, 0x10, now), "");
    post_with(proxy.addr(), "/bn-a", &forkchoice(2, 0x10, None), "");
    let addr = proxy.addr();
    let started = Instant::now();
    let workers: Vec<_> = (0..16u64)
        .map(|i| {
            thread::spawn(move || {
                post_with(addr, "/bn-a", &forkchoice(100 + i, 0x10, Some(now)), "").json()
            })
        })
        .collect();
    for (i, worker) in workers.into_iter().enumerate() {
        let answer = worker.join().expect("worker");
        assert_eq!(answer["id"], 100 + i as u64);
        assert!(answer["result"]["payloadId"].is_string(), "{answer}");
    }
    eprintln!(
        "16 concurrent fork choices with attributes: 16 payloadIds in {:?}",
        started.elapsed()
    );
    assert_eq!(el.wait_for(18, WAIT).len(), 18, "every call was delivered");
}

/// Rule 2: a primary that answers `SYNCING` (resyncing, restarted from an old snapshot) does not
/// win over another execution client's `VALID`.
#[test]
fn primary_syncing_loses_to_another_execution_clients_valid() {
    let (el0, _el1, proxy) = two_els();
    el0.set_result("engine_newPayloadV3", syncing());
    let started = Instant::now();
    let answer = post(proxy.addr(), &new_payload(1, 0x21, unix_now())).json();
    eprintln!("primary SYNCING: got {answer} in {:?}", started.elapsed());
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["result"]["status"], "VALID", "{answer}");
}

/// Rule 4: a JSON-RPC server error from the primary (HTTP 200, -32000) is not passed on while
/// another execution client says `VALID`; the primary is unhealthy, and says so.
#[test]
fn primary_server_error_loses_to_another_execution_clients_valid() {
    let (el0, _el1, proxy) = two_els();
    el0.error_on("engine_newPayloadV3", Some(-32000));
    let started = Instant::now();
    let answer = post(proxy.addr(), &new_payload(1, 0x22, unix_now())).json();
    eprintln!("primary -32000: got {answer} in {:?}", started.elapsed());
    assert_eq!(answer["result"]["status"], "VALID", "{answer}");
    assert!(proxy.wait_log("is unhealthy", WAIT).is_some());
}

/// Rule 3: a primary that hangs on engine calls is hedged: another execution client's final
/// verdict answers after the grace (1 s by default), not after 8 s.
#[test]
fn hung_primary_is_hedged_after_the_grace() {
    let (el0, el1, proxy) = two_els();
    el0.hang_on("engine_newPayloadV3");
    let started = Instant::now();
    let answer = post(proxy.addr(), &new_payload(1, 0x23, unix_now())).json();
    let took = started.elapsed();
    eprintln!("hung primary: got {answer} in {took:?}");
    assert_eq!(answer["result"]["status"], "VALID", "{answer}");
    assert!(
        took >= Duration::from_millis(900),
        "the primary had its grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "answered long before 8 s: {took:?}"
    );
    assert_eq!(el1.received_method("engine_newPayloadV3").len(), 1);
    // A copy of the same block from another beacon node takes the final verdict at once.
    let started = Instant::now();
    let copy = post_with(proxy.addr(), "/bn-b", &new_payload(2, 0x23, unix_now()), "").json();
    assert_eq!(copy["id"], 2);
    assert_eq!(copy["result"]["status"], "VALID", "{copy}");
    eprintln!(
        "hung primary, another beacon node's copy: got {copy} in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_millis(900));
}

/// Rule 4: an execution client answering HTTP 401 or 5xx is not healthy (`/health` says so and
/// it is logged), and once it answers again it is caught up with what it missed.
#[test]
fn broken_execution_client_is_unhealthy_then_caught_up() {
    let el = MockEl::start("el-0");
    let healthy = MockEl::start("el-1");
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--el", &healthy.url()]);
    el.set_behavior(Behavior::Status(502));
    let now = unix_now();
    for i in 0..4u8 {
        let answer = post(proxy.addr(), &new_payload(u64::from(i), 0x30 + i, now)).json();
        assert_eq!(answer["result"]["status"], "VALID", "{answer}");
    }
    assert!(proxy.wait_log("is unhealthy", WAIT).is_some());
    el.set_behavior(Behavior::Answer);
    // The next probe finds it answering; it gets the four blocks it answered 502 to.
    let caught_up = eventually(3 * WAIT, || {
        let valid = el
            .received_method("engine_newPayloadV3")
            .iter()
            .filter(|r| {
                serde_json::from_slice::<Value>(&r.answer)
                    .is_ok_and(|a| a["result"]["status"] == "VALID")
            })
            .count();
        valid >= 4
    });
    assert!(
        caught_up,
        "{:?}",
        el.received_method("engine_newPayloadV3").len()
    );
}

/// Rule 4: the primary's broken HTTP 200 answers (truncated JSON, an empty body, another
/// request's `id`) never reach the beacon node while another execution client has a valid one;
/// the primary is unhealthy, and says so.
#[test]
fn broken_answers_from_the_primary_lose_to_a_valid_one() {
    let (el0, _el1, proxy) = two_els();
    let now = unix_now();
    let broken: [&[u8]; 3] = [
        br#"{"jsonrpc":"2.0","id":1,"result":{"status":"VAL"#,
        b"",
        br#"{"jsonrpc":"2.0","id":4242,"result":{"status":"INVALID","latestValidHash":null}}"#,
    ];
    for (i, body) in broken.into_iter().enumerate() {
        el0.set_behavior(Behavior::Body(body.to_vec()));
        let id = 1 + i as u64;
        let started = Instant::now();
        let answer = post(proxy.addr(), &new_payload(id, 0x35 + i as u8, now)).json();
        eprintln!(
            "broken primary answer {:?}: the beacon node got {answer} in {:?}",
            String::from_utf8_lossy(body),
            started.elapsed()
        );
        assert_eq!(answer["id"], id);
        assert_eq!(answer["result"]["status"], "VALID", "{answer}");
    }
    assert!(proxy.wait_log("is unhealthy", WAIT).is_some());
}

#[test]
fn execution_clients_answering_401_are_not_healthy() {
    let els: Vec<MockEl> = (0..2).map(|i| MockEl::start(&format!("el-{i}"))).collect();
    for el in &els {
        el.set_behavior(Behavior::Status(401));
    }
    let proxy = ProxyProcess::start(&["--el", &els[0].url(), "--el", &els[1].url()]);
    let answer = post(proxy.addr(), &new_payload(1, 0x31, unix_now()));
    assert_eq!(
        answer.status, 200,
        "an error as execution clients answer it"
    );
    assert_eq!(answer.json()["error"]["code"], -32603);
    assert!(answer.text().contains("HTTP 401"), "{}", answer.text());
    assert_eq!(get(proxy.addr(), "/health").status, 503);
    assert!(proxy.wait_log("is unhealthy", WAIT).is_some());
}

/// Rule 5: `getPayload` waits for the 2 s the patient consensus clients give, and is not cut at
/// the specification's 1 s.
#[test]
fn slow_get_payload_is_not_cut_at_one_second() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let now = unix_now();
    let built = post(proxy.addr(), &forkchoice(1, 0x40, Some(now))).json();
    let id = built["result"]["payloadId"].as_str().unwrap().to_owned();
    el.delay_on("engine_getPayloadV4", Duration::from_millis(1300));
    let started = Instant::now();
    let answer = post(
        proxy.addr(),
        &rpc(json!(2), "engine_getPayloadV4", json!([id])),
    )
    .json();
    eprintln!(
        "getPayload taking 1.3 s: got a payload built by {} in {:?}",
        answer["result"]["executionPayload"]["builtBy"],
        started.elapsed()
    );
    assert_eq!(
        answer["result"]["executionPayload"]["builtBy"], "el-0",
        "{answer}"
    );
}

/// Rule 5b: one beacon node's slow read never holds another's `getPayload` behind it.
#[test]
fn get_payload_does_not_wait_behind_a_slow_read() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let now = unix_now();
    let built = post(proxy.addr(), &forkchoice(1, 0x41, Some(now))).json();
    let id = built["result"]["payloadId"].as_str().unwrap().to_owned();
    el.delay_on("engine_getPayloadBodiesByRangeV1", Duration::from_secs(3));
    let mut slow = Client::connect(proxy.addr());
    slow.post(
        "/bn-b",
        &rpc(
            json!(7),
            "engine_getPayloadBodiesByRangeV1",
            json!(["0x1", "0x20"]),
        ),
        "",
    );
    assert_eq!(el.wait_for(2, WAIT).len(), 2, "the slow read is in flight");
    let started = Instant::now();
    let answer = post(
        proxy.addr(),
        &rpc(json!(2), "engine_getPayloadV4", json!([id])),
    )
    .json();
    assert!(answer["result"].is_object(), "{answer}");
    eprintln!(
        "getPayload behind a 3 s getPayloadBodiesByRange: a payload in {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.read_response().json()["id"], 7);
}

/// Rule 7: a `SYNCING` verdict is not cached: a later copy of the block goes to the execution
/// client again and gets its final verdict.
#[test]
fn syncing_verdict_is_not_served_to_later_copies() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    el.set_result("engine_newPayloadV3", syncing());
    let now = unix_now();
    let first = post_with(proxy.addr(), "/bn-a", &new_payload(1, 0x50, now), "").json();
    assert_eq!(first["result"]["status"], "SYNCING");
    el.clear_result("engine_newPayloadV3");
    let copy = post_with(proxy.addr(), "/bn-b", &new_payload(2, 0x50, now), "").json();
    assert_eq!(copy["result"]["status"], "VALID", "{copy}");
    assert_eq!(el.received_method("engine_newPayloadV3").len(), 2);
}

/// Rule 2: `getPayload` for an id whose issuer died is answered with the payload another
/// execution client built for the same fork choice.
#[test]
fn get_payload_falls_back_to_another_builder() {
    let (el0, _el1, proxy) = two_els();
    let now = unix_now();
    let built = post(proxy.addr(), &forkchoice(1, 0x60, Some(now))).json();
    let id = built["result"]["payloadId"].as_str().unwrap().to_owned();
    // el-1's id for the same call must be known before the issuer dies: its answer was read.
    let el1_answered = || {
        let status = get(proxy.addr(), "/status").json();
        status["upstreams"][1]["last_verdict"]["method"] == "engine_forkchoiceUpdatedV3"
    };
    assert!(
        eventually(WAIT, el1_answered),
        "el-1 answered the fork choice"
    );
    el0.set_behavior(Behavior::Close);
    let answer = post(
        proxy.addr(),
        &rpc(json!(2), "engine_getPayloadV4", json!([id])),
    )
    .json();
    assert_eq!(answer["id"], 2);
    assert_eq!(
        answer["result"]["executionPayload"]["builtBy"], "el-1",
        "{answer}"
    );
}

/// Rule 5: `exchangeCapabilities` answers within ~0.8 s with the answers in hand, not after the
/// slowest execution client.
#[test]
fn capabilities_answer_with_the_answers_in_hand() {
    let (_el0, el1, proxy) = two_els();
    el1.delay_on("engine_exchangeCapabilities", Duration::from_secs(3));
    let started = Instant::now();
    let answer = post(
        proxy.addr(),
        &rpc(
            json!(1),
            "engine_exchangeCapabilities",
            json!([["engine_newPayloadV4"]]),
        ),
    )
    .json();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    eprintln!(
        "exchangeCapabilities with one EL taking 3 s: got {answer} in {:?}",
        started.elapsed()
    );
    let methods = answer["result"].as_array().expect("a list").clone();
    assert!(methods.contains(&json!("engine_newPayloadV4")), "{answer}");
}

/// Rule 8: a proposer on a beacon node that is not followed, building on a head the execution
/// clients validated, gets a `payloadId`; the followed head is restored right after.
#[test]
fn proposer_on_a_node_not_followed_can_build_on_a_validated_head() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let now = unix_now();
    post_with(proxy.addr(), "/bn-a", &new_payload(1, 0x70, now), "");
    post_with(proxy.addr(), "/bn-a", &forkchoice(2, 0x70, None), "");
    // bn-b imported a sibling block, which the execution client validated.
    post_with(proxy.addr(), "/bn-b", &new_payload(3, 0x71, now), "");
    let build = post_with(proxy.addr(), "/bn-b", &forkchoice(4, 0x71, Some(now)), "").json();
    assert!(build["result"]["payloadId"].is_string(), "{build}");
    let fcus = el.wait_for(5, WAIT);
    let ids: Vec<u64> = fcus
        .iter()
        .filter(|r| r.method == "engine_forkchoiceUpdatedV3")
        .filter_map(|r| r.id())
        .collect();
    assert_eq!(
        ids,
        [2, 4, 2],
        "the followed head (id 2) is restored after the build"
    );
}

/// Rule 9: a batch carrying a state-changing call is refused, naming the reason.
#[test]
fn batch_with_state_changing_calls_is_refused() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    let batch = format!(
        "[{},{}]",
        String::from_utf8(rpc(json!(1), "eth_chainId", json!([]))).unwrap(),
        String::from_utf8(new_payload(2, 0x80, unix_now())).unwrap()
    );
    let answer = post(proxy.addr(), batch.as_bytes()).json();
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("state-changing")
    );
    let reads = format!(
        "[{}]",
        String::from_utf8(rpc(json!(1), "eth_chainId", json!([]))).unwrap()
    );
    let answer = post(proxy.addr(), reads.as_bytes()).json();
    assert!(
        answer.is_array(),
        "a batch of reads still goes to the primary: {answer}"
    );
}

/// `--ack majority`: a VALID/INVALID disagreement is answered `SYNCING` and counted.
#[test]
fn majority_disagreement_is_answered_syncing() {
    let els: Vec<MockEl> = (0..3).map(|i| MockEl::start(&format!("el-{i}"))).collect();
    els[1].set_result(
        "engine_newPayloadV3",
        json!({"status": "INVALID", "latestValidHash": null, "validationError": "bad"}),
    );
    let mut args = vec!["--ack".to_owned(), "majority".to_owned()];
    for el in &els {
        args.extend(["--el".to_owned(), el.url()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = ProxyProcess::start(&args);
    els[0].delay_on("engine_newPayloadV3", Duration::from_millis(300));
    els[2].delay_on("engine_newPayloadV3", Duration::from_millis(300));
    let answer = post(proxy.addr(), &new_payload(1, 0x90, unix_now())).json();
    // el-1's INVALID comes first; the first VALID then makes a disagreement: non-committal
    // SYNCING, never INVALID (permanent in the beacon node) on one execution client's word.
    assert_eq!(answer["result"]["status"], "SYNCING", "{answer}");
    assert_eq!(
        metric(proxy.addr(), "sync_proxy_verdict_disagreements_total"),
        Some(1)
    );
}
