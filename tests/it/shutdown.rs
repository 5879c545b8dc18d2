//! Signals: SIGTERM, SIGINT and SIGQUIT stop accepting, deliver what is queued within the grace
//! period and exit 0; SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored.

use std::time::Duration;

use crate::support::mock_el::{Behavior, MockEl};
use crate::support::{Client, ProxyProcess, WAIT, get, new_payload, unix_now};

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

#[test]
fn sighup_and_sigusr_are_logged_and_ignored_then_sigquit_drains() {
    let el = MockEl::start("el-0");
    el.set_behavior(Behavior::Delay(Duration::from_millis(300)));
    let mut proxy = ProxyProcess::start(&["--el", &el.url(), "--ack", "immediate"]);
    for (signal, name) in [("HUP", "SIGHUP"), ("USR1", "SIGUSR1"), ("USR2", "SIGUSR2")] {
        proxy.signal(signal);
        let line = proxy
            .wait_log(&format!("received {name}: ignored"), WAIT)
            .unwrap_or_else(|| panic!("{name} is logged: {:?}", proxy.logs()));
        assert!(line.contains("INFO"), "{line}");
        let status = get(proxy.addr(), "/status").json();
        assert_eq!(status["shutting_down"], false, "still serving after {name}");
    }
    let mut client = Client::connect(proxy.addr());
    for i in 0..3u8 {
        client.post("/", &new_payload(u64::from(i), 0x70 + i, unix_now()), "");
        client.read_response();
    }
    proxy.signal("QUIT");
    assert_eq!(proxy.wait_exit(WAIT), Some(0), "SIGQUIT stops gracefully");
    assert_eq!(
        el.received().len(),
        3,
        "what was queued was delivered first"
    );
    assert!(
        proxy.logs().iter().any(|l| l.contains("shutting down")),
        "{:?}",
        proxy.logs()
    );
}
