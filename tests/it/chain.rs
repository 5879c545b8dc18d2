//! Chained proxies: every request also goes to further sync-proxies, with the beacon node's
//! identity preserved; a loop is refused loudly, never silently amplified.

use serde_json::Value;

use crate::support::mock_el::MockEl;
use crate::support::{ProxyProcess, WAIT, beacon_ids, get, new_payload, post_with, unix_now};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn chained_proxy_gets_every_request_with_the_beacon_identity() {
    let near_el = MockEl::start("near");
    let far_el = MockEl::start("far");
    let far = ProxyProcess::start(&["--el", &far_el.url()]);
    let far_url = format!("http://{}", far.addr());
    let near = ProxyProcess::start(&["--el", &near_el.url(), "--proxy", &far_url]);
    let answer = post_with(near.addr(), "/bn-2", &new_payload(1, 0x21, unix_now()), "").json();
    assert_eq!(answer["result"]["status"], "VALID");
    assert_eq!(near_el.wait_for(1, WAIT).len(), 1);
    let received = far_el.wait_for(1, WAIT);
    assert_eq!(
        received.len(),
        1,
        "the far execution client was driven through the chain"
    );
    let beacons = beacon_ids(&get(far.addr(), "/status").json());
    assert_eq!(
        beacons,
        ["bn-2"],
        "identity preserved, probes not mistaken for beacon nodes"
    );
    let near_status = get(near.addr(), "/status").json();
    let kinds: Vec<&Value> = near_status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["kind"])
        .collect();
    assert_eq!(kinds, ["execution_client", "proxy"]);
}

#[test]
fn forwarding_loop_is_detected_and_refused() {
    let el_a = MockEl::start("a");
    let el_b = MockEl::start("b");
    let (port_a, port_b) = (free_port(), free_port());
    let listen_a = format!("127.0.0.1:{port_a}");
    let listen_b = format!("127.0.0.1:{port_b}");
    let to_a = format!("http://{listen_a}");
    let to_b = format!("http://{listen_b}");
    let a = ProxyProcess::start(&["--listen", &listen_a, "--el", &el_a.url(), "--proxy", &to_b]);
    let b = ProxyProcess::start(&["--listen", &listen_b, "--el", &el_b.url(), "--proxy", &to_a]);
    post_with(a.addr(), "/bn-1", &new_payload(1, 0x22, unix_now()), "");
    assert!(
        a.wait_log("forwarding loop", WAIT).is_some(),
        "A refuses its own request coming back"
    );
    // Each execution client got the block once; nothing circulates.
    assert_eq!(el_a.wait_for(1, WAIT).len(), 1);
    assert_eq!(el_b.wait_for(1, WAIT).len(), 1);
    let metrics = get(a.addr(), "/metrics").text();
    assert!(
        metrics.contains("sync_proxy_refused_total{reason=\"forwarding_loop\"} 1"),
        "{metrics}"
    );
    drop(b);
}

#[test]
fn chained_proxy_with_a_secret_learns_the_beacon_from_the_token_id() {
    let (_, secret) = crate::support::secret_file("chain", 0x5c);
    let far_el = MockEl::start("far");
    let far = ProxyProcess::start(&[
        "--el",
        &far_el.url(),
        "--jwt-secret",
        &secret,
        "--trusted-proxy",
        "none",
    ]);
    let near_el = MockEl::start("near");
    let far_url = format!("http://{}#jwt-secret={secret}", far.addr());
    let near = ProxyProcess::start(&["--el", &near_el.url(), "--proxy", &far_url]);
    post_with(near.addr(), "/bn-9", &new_payload(1, 0x29, unix_now()), "");
    assert_eq!(
        far_el.wait_for(1, WAIT).len(),
        1,
        "the far proxy accepted the signed request"
    );
    let status = get(far.addr(), "/status").json();
    assert_eq!(
        status["followed_beacon"], "bn-9",
        "identity from the token, not the peer: {status}"
    );
}
