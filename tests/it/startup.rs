//! Start-up: a bad flag stops the proxy with one line naming it; flags also come from the
//! environment and from the Go original's names.

use std::process::Command;

use serde_json::json;

use crate::support::mock_el::MockEl;
use crate::support::{ProxyProcess, WAIT, post, rpc};

fn start_failure(args: &[&str]) -> String {
    start_failure_with_env(args, &[])
}

fn start_failure_with_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sync-proxy"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run sync-proxy");
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn bad_values_stop_startup_with_one_line_naming_the_flag() {
    for (args, flag) in [
        (
            &["--el", "127.0.0.1:1", "--max-body", "huge"][..],
            "--max-body",
        ),
        (&["--el", "127.0.0.1:1", "--ack", "sometimes"][..], "--ack"),
        (&["--el", "ftp://127.0.0.1:1"][..], "--el"),
        (
            &["--el", "127.0.0.1:1", "--listen", "localhost"][..],
            "--listen",
        ),
        (
            &["--el", "127.0.0.1:1", "--network", "goerli"][..],
            "--network",
        ),
        (
            &["--el", "127.0.0.1:1", "--beacon-timeout", "soon"][..],
            "--beacon-timeout",
        ),
        (&[][..], "--el"),
        (&["--el", "127.0.0.1:1", "--frobnicate"][..], "--frobnicate"),
    ] {
        let line = start_failure(args);
        assert!(line.contains(flag), "{args:?}: {line}");
    }
}

#[test]
fn listen_address_in_use_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_sync-proxy"))
        .args(["--el", "127.0.0.1:1", "--listen", &addr])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--listen") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[test]
fn environment_and_go_flag_names_configure_the_proxy() {
    let el = MockEl::start("el-0");
    let proxy =
        ProxyProcess::start_with_env(&[], &[("SYNC_PROXY_EL", &el.url()), ("LOG_LEVEL", "debug")]);
    assert_eq!(
        post(proxy.addr(), &rpc(json!(1), "eth_chainId", json!([]))).json()["result"],
        "el-0"
    );
    assert!(
        proxy.wait_log("DEBUG", WAIT).is_some(),
        "LOG_LEVEL=debug took effect"
    );
    drop(proxy);
    let legacy = ProxyProcess::start(&[
        "-builders",
        &format!("{},{}", el.url(), el.url()),
        "-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(
        post(legacy.addr(), &rpc(json!(2), "eth_chainId", json!([]))).status,
        200
    );
    assert!(
        legacy.wait_log("execution client:", WAIT).is_some(),
        "two execution clients configured"
    );
}

/// Issue 11, item 8: a credential in an execution client's URL (user-info, or a key in the path)
/// appears neither in the start-up log, `/status`, `/metrics`, nor a start-up error.
#[test]
fn execution_client_url_credentials_are_redacted() {
    let el = MockEl::start("el-0");
    let url = format!("{}/abc123secret?key=hunter2", el.url());
    let proxy = ProxyProcess::start(&["--el", &url]);
    let answer = post(proxy.addr(), &rpc(json!(1), "eth_chainId", json!([])));
    assert_eq!(answer.json()["result"], "el-0");
    let received = el.wait_for(1, WAIT);
    assert!(
        received[0]
            .head
            .starts_with("POST /abc123secret?key=hunter2 "),
        "the execution client still gets its path: {}",
        received[0].head
    );
    let shown = format!("{}/…redacted…", el.url());
    let status = crate::support::get(proxy.addr(), "/status").text();
    let metrics = crate::support::get(proxy.addr(), "/metrics").text();
    let logs = proxy.logs().join("\n");
    for (what, text) in [
        ("/status", &status),
        ("/metrics", &metrics),
        ("logs", &logs),
    ] {
        assert!(
            !text.contains("abc123secret") && !text.contains("hunter2"),
            "{what}: {text}"
        );
        assert!(text.contains(&shown), "{what} names the client: {text}");
    }
    let line = start_failure(&["--el", "http://user:hunter2@127.0.0.1:1"]);
    assert!(!line.contains("hunter2"), "{line}");
}

#[test]
fn environment_errors_name_the_variable_and_the_value_given() {
    for (var, value) in [("BEACON_EXPIRY_MS", "abc"), ("SYNC_PROXY_ACK", "bogus")] {
        let line = start_failure_with_env(&["--el", "127.0.0.1:1"], &[(var, value)]);
        assert!(
            line.starts_with(&format!("sync-proxy: invalid {var} \"{value}\": ")),
            "{line}"
        );
    }
}

#[test]
fn flags_written_with_equals_and_go_spellings_start_the_proxy() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&[
        &format!("--el={}", el.url()),
        "--listen=127.0.0.1:0",
        "-json",
        "-proxy-request-timeout=500",
    ]);
    assert_eq!(
        post(proxy.addr(), &rpc(json!(1), "eth_chainId", json!([]))).json()["result"],
        "el-0"
    );
    let first = proxy.logs().into_iter().next().unwrap_or_default();
    assert!(first.starts_with('{'), "-json gives JSON lines: {first}");
    assert!(
        first.contains("(--ack primary,"),
        "the mode as the flag spells it: {first}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_sync-proxy"))
        .arg("-help")
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--el"));
}

#[test]
fn version_prints_version_commit_target_and_profile() {
    for args in [
        &["--version"][..],
        &["version"],
        &["--el", "127.0.0.1:1", "-V"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_sync-proxy"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0],
            format!("sync-proxy {}", env!("CARGO_PKG_VERSION"))
        );
        for (line, key) in lines[1..].iter().zip(["commit:", "target:", "profile:"]) {
            let value = line.strip_prefix(key).map(str::trim).unwrap_or_default();
            assert!(!value.is_empty(), "{key} in {text}");
        }
        assert!(
            text.contains("x86_64-") || text.contains("aarch64-"),
            "{text}"
        );
    }
}
