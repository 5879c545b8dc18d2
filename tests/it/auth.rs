//! JWT: beacon nodes verified with `--jwt-secret`, each execution client sent a fresh token
//! signed with its own secret.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::mock_el::MockEl;
use crate::support::{
    Client, ProxyProcess, WAIT, bearer_line, get, metric, new_payload, post_with, rpc, secret_file,
    secret_hex, token, token_raw, unix_now,
};

/// The metric series of requests refused for want of a valid token.
const UNAUTHORIZED: &str = "sync_proxy_refused_total{reason=\"unauthorized\"}";

#[test]
fn bad_tokens_are_401_with_the_request_id() {
    let el = MockEl::start("el-0");
    let (secret, path) = secret_file("inbound-bad", 0x11);
    let (other, _) = secret_file("inbound-other", 0x22);
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--jwt-secret", &path]);
    let now = unix_now();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let none_header = json!({"alg": "none", "typ": "JWT"});
    let unsigned = {
        let signed = token(&secret, &none_header, &json!({"iat": now}));
        let mut parts: Vec<&str> = signed.split('.').collect();
        parts[2] = "";
        parts.join(".")
    };
    let cases: Vec<(&str, String)> = vec![
        ("missing", String::new()),
        ("not bearer", "Authorization: Basic dXNlcjpwYXNz\r\n".into()),
        ("malformed", "Authorization: Bearer abc.def\r\n".into()),
        ("wrong secret", bearer_line(&other, now, None)),
        ("alg none", format!("Authorization: Bearer {unsigned}\r\n")),
        (
            "alg none signed",
            format!(
                "Authorization: Bearer {}\r\n",
                token(&secret, &none_header, &json!({"iat": now}))
            ),
        ),
        ("expired", bearer_line(&secret, now - 120, None)),
        ("future", bearer_line(&secret, now + 120, None)),
        (
            "no iat",
            format!(
                "Authorization: Bearer {}\r\n",
                token(&secret, &hs256, &json!({"id": "x"}))
            ),
        ),
    ];
    for (what, header) in cases {
        let answer = post_with(
            proxy.addr(),
            "/",
            &rpc(json!(41), "engine_exchangeCapabilities", json!([[]])),
            &header,
        );
        assert_eq!(answer.status, 401, "{what}");
        let body = answer.json();
        assert_eq!(body["id"], 41, "{what}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unauthorized"),
            "{what}: {body}"
        );
    }
    assert!(
        el.received().is_empty(),
        "nothing unauthenticated was forwarded"
    );
    // GET endpoints stay open.
    assert_eq!(get(proxy.addr(), "/status").status, 200);
    // A valid token passes.
    let answer = post_with(
        proxy.addr(),
        "/",
        &rpc(json!(42), "eth_chainId", json!([])),
        &bearer_line(&secret, now, None),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(el.wait_for(1, WAIT).len(), 1);
}

/// Issue 11, item 8: input that different readers could take differently is refused, not
/// resolved by taking the last one.
#[test]
fn ambiguous_credentials_are_refused() {
    let el = MockEl::start("el-0");
    let (secret, path) = secret_file("ambiguous", 0x12);
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--jwt-secret", &path]);
    let now = unix_now();
    let body = rpc(json!(7), "eth_chainId", json!([]));
    let valid = bearer_line(&secret, now, None);
    let twice = post_with(proxy.addr(), "/", &body, &format!("{valid}{valid}"));
    assert_eq!(twice.status, 400, "two Authorization headers");
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let repeated = token_raw(&secret, hs256, &format!(r#"{{"iat":{now},"iat":{now}}}"#));
    let answer = post_with(
        proxy.addr(),
        "/",
        &body,
        &format!("Authorization: Bearer {repeated}\r\n"),
    );
    assert_eq!(answer.status, 401, "iat twice");
    assert!(answer.text().contains("twice"), "{}", answer.text());
    assert!(el.received().is_empty(), "nothing ambiguous was forwarded");
}

/// Issue 11, item 1: the token is checked when the head arrives, so a peer without the secret
/// cannot make the proxy hold its body. Six connections each sending 64 MiB without a token:
/// before, the proxy buffered all of it (384 MiB) before answering 401.
#[test]
fn bodies_without_a_token_are_never_read() {
    const CONNECTIONS: usize = 6;
    const BODY_MIB: usize = 64;
    /// The runtime's own few MiB plus a read buffer per connection; far below one body.
    const RSS_BOUND_MIB: u64 = 24;
    let el = MockEl::start("el-0");
    let (_, path) = secret_file("unread-bodies", 0x13);
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--jwt-secret", &path]);
    let addr = proxy.addr();
    let uploads: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
                stream.set_write_timeout(Some(WAIT)).unwrap();
                let head = format!(
                    "POST / HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\n\r\n",
                    BODY_MIB << 20
                );
                stream.write_all(head.as_bytes()).unwrap();
                let chunk = vec![b' '; 1 << 20];
                // Stops at the first error: the proxy answers and closes after the head.
                (0..BODY_MIB)
                    .take_while(|_| stream.write_all(&chunk).is_ok())
                    .count()
            })
        })
        .collect();
    let sent: Vec<usize> = uploads.into_iter().map(|u| u.join().unwrap()).collect();
    proxy.assert_peak_rss_below(
        RSS_BOUND_MIB,
        &format!("{CONNECTIONS} x {BODY_MIB} MiB without a token (MiB sent: {sent:?})"),
    );
    assert!(el.received().is_empty());
    assert_eq!(metric(proxy.addr(), UNAUTHORIZED), Some(CONNECTIONS as u64));
}

/// `Expect: 100-continue` without a token: the client is told 401 at once, never invited to
/// send the body.
#[test]
fn expect_continue_without_a_token_gets_401_and_no_interim_answer() {
    let el = MockEl::start("el-0");
    let (_, path) = secret_file("no-continue", 0x14);
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--jwt-secret", &path]);
    let mut client = Client::connect(proxy.addr());
    client.send(
        b"POST / HTTP/1.1\r\nHost: p\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n",
    );
    let answer = client.read_response();
    assert_eq!(
        answer.status, 401,
        "the first answer is the refusal, not 100"
    );
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.json()["id"], Value::Null, "the body was not read");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unauthorized"))
    );
    assert!(client.is_closed());
}

/// Issue 11, item 3: a flood without a token wrote a WARN line per request (66,686 in 10 s).
/// The first refusal per peer is logged, then one summary per 10 s; the metric counts all.
#[test]
fn refusal_flood_logs_a_bounded_number_of_lines() {
    const FLOOD: u64 = 1000;
    let el = MockEl::start("el-0");
    let (_, path) = secret_file("flood", 0x15);
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--jwt-secret", &path]);
    let started = Instant::now();
    let body = rpc(json!(1), "eth_chainId", json!([]));
    for _ in 0..FLOOD {
        // Each refusal closes its connection.
        assert_eq!(post_with(proxy.addr(), "/", &body, "").status, 401);
    }
    let elapsed = started.elapsed();
    assert_eq!(
        metric(proxy.addr(), UNAUTHORIZED),
        Some(FLOOD),
        "the metric counts every refusal"
    );
    assert!(proxy.wait_log("refused request from", WAIT).is_some());
    let lines = proxy
        .logs()
        .into_iter()
        .filter(|l| l.contains("refused request from") || l.contains("unauthorized: "))
        .count() as u64;
    // The first line, then at most one summary per 10 s interval begun during the flood.
    let allowed = 2 + elapsed.as_secs() / 10;
    eprintln!("{FLOOD} refusals in {elapsed:?}: {lines} log lines");
    assert!(lines <= allowed, "{lines} log lines for {FLOOD} refusals");
    // The interval's end reports the rest, by the loop's own timer (nothing else happens).
    let summary = proxy
        .wait_log("unauthorized: ", Duration::from_secs(10) + WAIT)
        .expect("a summary line at the end of the interval");
    assert!(
        summary.contains(&format!("unauthorized: {} more from 127.0.0.1", FLOOD - 1))
            || elapsed > Duration::from_secs(10),
        "{summary}"
    );
}

#[test]
fn each_el_gets_a_fresh_token_signed_with_its_own_secret() {
    let el0 = MockEl::start("el-0");
    let el1 = MockEl::start("el-1");
    let (secret0, path0) = secret_file("el0", 0x33);
    let (secret1, path1) = secret_file("el1", 0x44);
    el0.verify_jwt(secret0);
    el1.verify_jwt(secret1);
    let url0 = format!("{}#jwt-secret={path0}", el0.url());
    let url1 = format!("{}#jwt-secret={path1}", el1.url());
    let proxy = ProxyProcess::start(&["--el", &url0, "--el", &url1]);
    let before = unix_now();
    let answer = post_with(
        proxy.addr(),
        "/",
        &new_payload(1, 0x81, before),
        "Authorization: Bearer from-the-beacon\r\n",
    );
    assert_eq!(answer.status, 200);
    for el in [&el0, &el1] {
        el.wait_for(1, WAIT);
        let iats = el.token_iats();
        assert!(!iats.is_empty());
        for iat in iats {
            let iat = iat.expect("token verifies with this EL's own secret");
            assert!(iat >= before && iat <= unix_now(), "fresh iat");
        }
    }
    // The URL's secret path never shows in /status.
    let status = get(proxy.addr(), "/status").text();
    assert!(
        !status.contains(&path0) && !status.contains("jwt-secret"),
        "{status}"
    );
}

#[test]
fn el_without_secret_receives_the_beacon_authorization_unchanged() {
    let el = MockEl::start("el-0");
    let proxy = ProxyProcess::start(&["--el", &el.url()]);
    post_with(
        proxy.addr(),
        "/",
        &rpc(json!(1), "eth_chainId", json!([])),
        "Authorization: Bearer opaque.token.value\r\n",
    );
    let received = el.wait_for(1, WAIT);
    assert_eq!(
        received[0].header("authorization").as_deref(),
        Some("Bearer opaque.token.value")
    );
}

#[test]
fn queued_request_is_signed_when_sent_not_when_received() {
    let (secret, path) = secret_file("queued", 0x55);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}#jwt-secret={path}");
    let proxy = ProxyProcess::start(&["--el", &url, "--ack", "immediate"]);
    let received_at = unix_now();
    let answer = post_with(proxy.addr(), "/", &new_payload(1, 0x91, received_at), "");
    assert_eq!(answer.json()["result"]["status"], "SYNCING");
    assert!(proxy.wait_log("is down", WAIT).is_some());
    // The EL comes back two seconds later; the queued call must carry a token from then.
    std::thread::sleep(Duration::from_secs(2));
    let el = MockEl::start_on(&format!("127.0.0.1:{port}"), "el-0");
    el.verify_jwt(secret);
    let came_back = unix_now();
    let received = el.wait_for(1, WAIT);
    assert_eq!(received.len(), 1);
    let iat = el.token_iats()[0].clone().expect("valid token");
    assert!(
        iat >= came_back,
        "iat {iat} is from send time (EL back at {came_back}), not {received_at}"
    );
}

#[test]
fn jwt_id_claim_names_the_beacon() {
    let el = MockEl::start("el-0");
    let (secret, path) = secret_file("id-claim", 0x66);
    let proxy = ProxyProcess::start(&["--el", &el.url(), "--jwt-secret", &path]);
    post_with(
        proxy.addr(),
        "/",
        &new_payload(1, 0xa7, unix_now()),
        &bearer_line(&secret, unix_now(), Some("lighthouse-7")),
    );
    let status = get(proxy.addr(), "/status").json();
    assert_eq!(status["followed_beacon"], "lighthouse-7", "{status}");
    let beacons: Vec<&Value> = status["beacons"].as_array().unwrap().iter().collect();
    assert_eq!(beacons.len(), 1);
}

#[test]
fn trace_logs_never_contain_a_secret() {
    let el = MockEl::start("el-0");
    let (secret, path) = secret_file("trace-in", 0x77);
    let (el_secret, el_path) = secret_file("trace-el", 0x78);
    el.verify_jwt(el_secret);
    let url = format!("{}#jwt-secret={el_path}", el.url());
    let proxy = ProxyProcess::start(&["--el", &url, "--jwt-secret", &path, "--log-level", "trace"]);
    let header = bearer_line(&secret, unix_now(), Some("bn-x"));
    post_with(
        proxy.addr(),
        "/",
        &new_payload(1, 0xb7, unix_now()),
        &header,
    );
    post_with(
        proxy.addr(),
        "/",
        &new_payload(2, 0xb8, unix_now()),
        "Authorization: Bearer wrong\r\n",
    );
    el.wait_for(1, WAIT);
    get(proxy.addr(), "/status");
    get(proxy.addr(), "/metrics");
    let logs = proxy.logs().join("\n");
    assert!(logs.contains("TRACE"), "trace level is on");
    for leak in [secret_hex(&secret), secret_hex(&el_secret)] {
        assert!(!logs.contains(&leak), "secret in logs");
    }
    let token = header.trim().trim_start_matches("Authorization: Bearer ");
    assert!(!logs.contains(token), "token in logs");
    let startup = Config::failure(&["--el", "127.0.0.1:1", "--jwt-secret", "/nonexistent/secret"]);
    assert!(startup.contains("/nonexistent/secret"), "{startup}");
}

/// Start-up failures as a user sees them.
struct Config;

impl Config {
    fn failure(args: &[&str]) -> String {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sync-proxy"))
            .args(args)
            .output()
            .expect("run sync-proxy");
        assert_eq!(output.status.code(), Some(2));
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}
