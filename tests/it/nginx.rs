//! The original deployment: a beacon node talks to nginx, which proxies to its own execution
//! client and mirrors every request to sync-proxy with 100 ms timeouts (README, "nginx mirror").

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{Client, Nginx, ProxyProcess, WAIT, forkchoice, get, new_payload, unix_now};

/// The README's server block, with the test's addresses.
fn mirror_server(local_el: &str, sync_proxy: &str) -> String {
    format!(
        "listen {{listen}};
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        location / {{
            mirror /sync_proxy_1;
            proxy_pass http://{local_el};
        }}
        location = /sync_proxy_1 {{
            internal;
            proxy_pass http://{sync_proxy}$request_uri;
            proxy_connect_timeout 100ms;
            proxy_read_timeout 100ms;
        }}"
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
