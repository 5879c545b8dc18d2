//! The original deployment: a beacon node talks to nginx, which proxies to its own execution
//! client and mirrors every request to sync-proxy with 100 ms timeouts (README, "nginx mirror").

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{
    Client, Nginx, ProxyProcess, WAIT, beacon_ids, forkchoice, get, new_payload, rpc, unix_now,
};

/// The README's nginx mirror recipe, read from the README itself (so the two cannot drift),
/// with the test's addresses in place of the recipe's: the body of its `server { }` block.
fn mirror_server(local_el: &str, sync_proxy: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("### 2. nginx mirror")
        .nth(1)
        .expect("README has the nginx mirror section");
    let block = section
        .split("```nginx\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section has an nginx code block");
    let body = block
        .trim()
        .strip_prefix("server {")
        .and_then(|rest| rest.strip_suffix('}'))
        .expect("the block is one server { } block");
    let mut server = body.to_owned();
    for (recipe, test) in [
        ("listen 8552;", "listen {listen};".to_owned()),
        ("http://127.0.0.1:8551", format!("http://{local_el}")),
        ("http://127.0.0.1:25590", format!("http://{sync_proxy}")),
    ] {
        assert_eq!(
            server.matches(recipe).count(),
            1,
            "the recipe names {recipe} once"
        );
        server = server.replace(recipe, &test);
    }
    server
}

/// The README's recipe with `X-Forwarded-For` set to `forwarded_for` instead of its
/// `$remote_addr` (the original deployment appended with `$proxy_add_x_forwarded_for`).
fn mirror_server_forwarding(local_el: &str, sync_proxy: &str, forwarded_for: &str) -> String {
    let recipe = "proxy_set_header X-Forwarded-For $remote_addr;";
    let server = mirror_server(local_el, sync_proxy);
    assert_eq!(
        server.matches(recipe).count(),
        1,
        "the recipe sets X-Forwarded-For once"
    );
    server.replace(
        recipe,
        &format!("proxy_set_header X-Forwarded-For {forwarded_for};"),
    )
}

/// An `engine_newPayloadV3` of about `bytes` bytes: one large transaction, as a full block's
/// payload is.
fn large_new_payload(id: u64, hash_byte: u8, timestamp: u64, bytes: usize) -> Vec<u8> {
    let transaction = format!("0x{}", "ab".repeat(bytes / 2));
    rpc(
        json!(id),
        "engine_newPayloadV3",
        json!([{
            "parentHash": format!("0x{}", "00".repeat(32)),
            "blockHash": format!("0x{}", format!("{hash_byte:02x}").repeat(32)),
            "blockNumber": "0x2",
            "timestamp": format!("0x{timestamp:x}"),
            "transactions": [transaction],
        }, [], format!("0x{}", "00".repeat(32))]),
    )
}

#[test]
fn nginx_mirror_drives_the_proxys_execution_clients() {
    let local_el = MockEl::start("local");
    let driven: Vec<MockEl> = (0..2)
        .map(|i| MockEl::start(&format!("driven-{i}")))
        .collect();
    // The driven execution clients are slow: the mirror must not make the beacon node wait.
    for el in &driven {
        el.set_behavior(Behavior::Delay(Duration::from_millis(400)));
    }
    let proxy = ProxyProcess::start(&[
        "--el",
        &driven[0].url(),
        "--el",
        &driven[1].url(),
        "--ack",
        "immediate",
    ]);
    let nginx = Nginx::start(
        "mirror",
        &mirror_server(&local_el.addr().to_string(), &proxy.addr().to_string()),
    );
    let mut beacon = Client::connect(nginx.addr);
    let now = unix_now();
    let started = Instant::now();
    beacon.post("/bn-7", &new_payload(1, 0x71, now), "");
    let answer = beacon.read_response();
    beacon.post("/bn-7", &forkchoice(2, 0x71, None), "");
    let fcu = beacon.read_response();
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        local_el.wait_for(1, WAIT)[0].answer,
        "the beacon node gets its own EL's answer"
    );
    assert_eq!(fcu.json()["result"]["payloadStatus"]["status"], "VALID");
    assert!(
        elapsed < Duration::from_millis(400),
        "mirrors answered at once: {elapsed:?}"
    );
    for el in &driven {
        let received = el.wait_for(2, WAIT);
        assert_eq!(
            received.len(),
            2,
            "every mirrored request reached the driven execution clients"
        );
        assert_eq!(received[0].body, new_payload(1, 0x71, now));
    }
    let status = get(proxy.addr(), "/status").json();
    assert_eq!(
        status["followed_beacon"],
        json!("bn-7"),
        "identity through nginx: {status}"
    );
    // nginx saw no mirror timeouts or errors: sync-proxy answered within its 100 ms.
    let errors = nginx.error_log();
    assert!(
        !errors.contains("timed out") && !errors.contains("[error]"),
        "{errors}"
    );
}

/// A client of nginx claims to be 10.66.66.66 in `X-Forwarded-For` (and `X-Real-IP`, which nginx
/// replaces). Neither the README's recipe nor the original one that appends to the client's
/// `X-Forwarded-For` may let that claim become the beacon node's identity.
#[test]
fn nginx_client_cannot_choose_its_identity_with_forwarded_for() {
    let local_el = MockEl::start("local");
    let driven = MockEl::start("driven");
    let proxy = ProxyProcess::start(&["--el", &driven.url(), "--ack", "immediate"]);
    let proxy_addr = proxy.addr().to_string();
    let local_addr = local_el.addr().to_string();
    for (tag, forwarded_for, block) in [
        ("spoof-readme", "$remote_addr", 0x66),
        ("spoof-append", "$proxy_add_x_forwarded_for", 0x67),
    ] {
        let nginx = Nginx::start(
            tag,
            &mirror_server_forwarding(&local_addr, &proxy_addr, forwarded_for),
        );
        let received = driven.received().len();
        let mut client = Client::connect(nginx.addr);
        client.post(
            "/",
            &new_payload(1, block, unix_now()),
            "X-Forwarded-For: 10.66.66.66\r\nX-Real-IP: 10.66.66.66\r\n",
        );
        assert_eq!(client.read_response().status, 200, "{tag}");
        assert!(
            driven.wait_for(received + 1, WAIT).len() > received,
            "{tag}: the mirrored request reached sync-proxy"
        );
        let ids = beacon_ids(&get(proxy.addr(), "/status").json());
        assert_eq!(
            ids,
            ["127.0.0.1"],
            "{tag}: the identity is the address nginx saw, not the client's claim"
        );
    }
}

#[test]
fn nginx_mirror_recipe_carries_a_2_mb_payload_to_both_sides() {
    let local_el = MockEl::start("local");
    let driven = MockEl::start("driven");
    let proxy = ProxyProcess::start(&["--el", &driven.url(), "--ack", "immediate"]);
    let nginx = Nginx::start(
        "mirror-2mb",
        &mirror_server(&local_el.addr().to_string(), &proxy.addr().to_string()),
    );
    let payload = large_new_payload(1, 0x72, unix_now(), 2 * 1024 * 1024);
    assert!(
        payload.len() > 2 * 1024 * 1024,
        "over nginx's 1 MiB default"
    );
    let mut beacon = Client::connect(nginx.addr);
    beacon.post("/bn-8", &payload, "");
    let answer = beacon.read_response();
    assert_eq!(
        answer.status,
        200,
        "nginx let the payload through: {} {}",
        answer.status,
        answer.text()
    );
    assert_eq!(answer.json()["result"]["status"], "VALID");
    assert_eq!(
        local_el.wait_for(1, WAIT)[0].body,
        payload,
        "the beacon node's own execution client got it whole"
    );
    assert_eq!(
        driven.wait_for(1, WAIT)[0].body,
        payload,
        "the mirror delivered it whole to sync-proxy's execution client"
    );
    // The mirror's 100 ms read timeout may expire here (the test binary is a debug build
    // inspecting 2 MB on a loaded machine); sync-proxy has read the whole request by then, so
    // delivery does not depend on it. What must never appear is nginx refusing the body.
    let errors = nginx.error_log();
    assert!(!errors.contains("too large"), "{errors}");
}
