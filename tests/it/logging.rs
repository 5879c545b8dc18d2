//! Logs: a closed log pipe costs log lines, never the proxy; JSON lines carry the event's fields.

use serde_json::{Value, json};

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{
    LOG_CLOSED, ProxyProcess, WAIT, eventually, get, new_payload, post_with, rpc, unix_now,
};

/// The value of an unlabelled sample in a `/metrics` text.
fn sample(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn closed_log_pipe_drops_lines_counts_them_and_the_proxy_keeps_serving() {
    let el = MockEl::start("el-0");
    // `sync-proxy … 2>&1 | head -2`: the reader goes away after two lines.
    let mut proxy = ProxyProcess::start_closing_log_after(&["--el", &el.url()], 2);
    // Each new beacon node logs a switch at info: lines that now meet a closed pipe.
    for (i, beacon) in ["/bn-a", "/bn-b"].into_iter().enumerate() {
        let id = u64::try_from(i).unwrap();
        let answer = post_with(proxy.addr(), beacon, &new_payload(id, 0x30, unix_now()), "");
        assert_eq!(answer.status, 200, "still serving after a lost log line");
    }
    let mut failures = 0;
    assert!(
        eventually(WAIT, || {
            failures = sample(
                &get(proxy.addr(), "/metrics").text(),
                "sync_proxy_log_write_failures_total",
            )
            .unwrap_or(0);
            failures > 0
        }),
        "lost log lines are counted"
    );
    assert!(
        proxy.logs().last().is_some_and(|l| l == LOG_CLOSED),
        "nothing was read after the pipe closed"
    );
    assert_eq!(
        post_with(
            proxy.addr(),
            "/bn-a",
            &rpc(json!(9), "eth_chainId", json!([])),
            ""
        )
        .status,
        200
    );
    proxy.signal("TERM");
    assert_eq!(
        proxy.wait_exit(WAIT),
        Some(0),
        "exits cleanly (no SIGPIPE death, no abort) after {failures} lost lines"
    );
}

#[test]
fn json_log_format_writes_one_object_per_line_with_fields() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--log-format", "json"]);
    post_with(
        proxy.addr(),
        "/bn-json",
        &new_payload(1, 0x31, unix_now()),
        "",
    );
    let switch = proxy
        .wait_log("following beacon", WAIT)
        .expect("a switch is logged");
    let value: Value = serde_json::from_str(&switch).expect("a JSON line");
    assert_eq!(value["level"], "INFO");
    assert!(
        value["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')),
        "{value}"
    );
    assert!(
        value["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("sync_proxy")),
        "{value}"
    );
    assert_eq!(
        value["beacon"], "bn-json",
        "the event's fields are keys: {value}"
    );
    assert_eq!(value["reason"], "first live beacon node");
    // An execution client going down names itself and the cause.
    el.set_behavior(Behavior::Close);
    post_with(
        proxy.addr(),
        "/bn-json",
        &new_payload(2, 0x32, unix_now()),
        "",
    );
    let down = proxy
        .wait_log(" is down: ", WAIT)
        .expect("the failure is logged");
    let down: Value = serde_json::from_str(&down).expect("a JSON line");
    assert_eq!(down["level"], "WARN");
    assert_eq!(down["upstream"], el.url(), "{down}");
    assert!(
        down["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{down}"
    );
    for line in proxy.logs() {
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["ts", "level", "target", "msg"] {
            assert!(value.get(key).is_some(), "{key} in {line}");
        }
    }
}
