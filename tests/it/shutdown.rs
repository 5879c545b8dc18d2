//! Signals: stop accepting, deliver what is queued within the grace period, exit 0.

use std::time::Duration;

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{Client, ProxyProcess, WAIT, new_payload, unix_now};

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
