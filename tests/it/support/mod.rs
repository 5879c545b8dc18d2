//! Test support: the built binary as a child process, mock execution clients speaking real HTTP,
//! and a small blocking HTTP client playing the beacon node. Everything on loopback.

#![allow(dead_code)]

pub mod mock_el;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a test waits for anything; generous for a loaded 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// The line the test support adds to a proxy's logs once it closed the log pipe.
pub const LOG_CLOSED: &str = "<test support: log pipe closed>";

/// A running `sync-proxy` process.
pub struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    logs: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl ProxyProcess {
    /// Starts the binary with `args` plus `--listen 127.0.0.1:0`, waiting until it listens.
    pub fn start(args: &[&str]) -> ProxyProcess {
        Self::start_with_env(args, &[])
    }

    /// Like [`ProxyProcess::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ProxyProcess {
        Self::spawn(args, env, None)
    }

    /// Starts the proxy and closes its log pipe after `lines` lines, as `2>&1 | head -2` does
    /// when `head` exits; returns once the pipe is closed.
    pub fn start_closing_log_after(args: &[&str], lines: usize) -> ProxyProcess {
        let proxy = Self::spawn(args, &[], Some(lines));
        assert!(
            proxy.wait_log(LOG_CLOSED, WAIT).is_some(),
            "the test closed the log pipe"
        );
        proxy
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], close_after: Option<usize>) -> ProxyProcess {
        let mut all: Vec<&str> = Vec::new();
        let listens = args.iter().any(|a| {
            ["--listen", "-addr"]
                .iter()
                .any(|flag| a == flag || a.starts_with(&format!("{flag}=")))
        });
        if !listens {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let mut command = Command::new(env!("CARGO_BIN_EXE_sync-proxy"));
        command
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start sync-proxy");
        let logs: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&logs);
        thread::spawn(move || {
            let (lock, condvar) = &*sink;
            for (count, line) in BufReader::new(stderr).lines().enumerate() {
                let Ok(line) = line else { break };
                lock.lock().unwrap().push(line);
                condvar.notify_all();
                if close_after == Some(count + 1) {
                    break;
                }
            }
            // The reader is dropped here: the pipe's read end closes.
            lock.lock().unwrap().push(LOG_CLOSED.to_owned());
            condvar.notify_all();
        });
        let line = wait_line(&logs, "listening on", WAIT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("proxy did not start: {:?}", logs.0.lock().unwrap());
        });
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("listen address in log");
        ProxyProcess { child, addr, logs }
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.0.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        wait_line(&self.logs, needle, timeout)
    }

    /// Sends a signal (e.g. `libc::SIGTERM` as 15) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident set size and its peak, in KiB, from `/proc`.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl ProxyProcess {
    /// Prints the RSS and its peak after `what`, fails when the peak reached `bound_mib`, and
    /// returns both in MiB.
    pub fn assert_peak_rss_below(&self, bound_mib: u64, what: &str) -> (u64, u64) {
        let (rss, peak) = self.rss_kib();
        let (rss, peak) = (rss / 1024, peak / 1024);
        eprintln!("RSS after {what}: {rss} MiB (peak {peak} MiB)");
        assert!(
            peak < bound_mib,
            "peak RSS {peak} MiB after {what}, over the {bound_mib} MiB bound"
        );
        (rss, peak)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_line(
    logs: &Arc<(Mutex<Vec<String>>, Condvar)>,
    needle: &str,
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let (lock, condvar) = &**logs;
    let mut lines = lock.lock().unwrap();
    loop {
        if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
            return Some(line.clone());
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        lines = condvar.wait_timeout(lines, deadline - now).unwrap().0;
    }
}

/// An HTTP answer as a test sees it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection to the proxy (a beacon node, or nginx).
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to proxy");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A second handle on the connection, to write from another thread while this one reads.
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("clone the client's stream")
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to proxy");
    }

    /// Sends a JSON-RPC POST on this connection (keep-alive).
    pub fn post(&mut self, path: &str, body: &[u8], extra_headers: &str) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n",
            body.len()
        );
        let mut message = head.into_bytes();
        message.extend_from_slice(body);
        self.send(&message);
    }

    /// Reads one response (Content-Length framed; the proxy always frames its answers so).
    pub fn read_response(&mut self) -> HttpResponse {
        self.try_read_response().expect("a response from the proxy")
    }

    /// Reads one response, or `None` if the connection closed first.
    pub fn try_read_response(&mut self) -> Option<HttpResponse> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head_len)) = response.parse(&self.buf) {
                let status = response.code.unwrap_or(0);
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= head_len + length {
                    let body = self.buf[head_len..head_len + length].to_vec();
                    self.buf.drain(..head_len + length);
                    return Some(HttpResponse {
                        status,
                        headers,
                        body,
                    });
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading from proxy: {e}"),
            }
        }
    }

    /// Reads whatever bytes arrive next (raw, unparsed).
    pub fn read_some(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read from proxy");
        chunk[..n].to_vec()
    }

    /// Whether the proxy closed the connection (EOF within the wait).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// One POST on a fresh connection; returns the answer.
pub fn post(addr: SocketAddr, body: &[u8]) -> HttpResponse {
    post_with(addr, "/", body, "")
}

/// One POST on a fresh connection with a path and extra header lines (each ending in CRLF).
pub fn post_with(addr: SocketAddr, path: &str, body: &[u8], extra_headers: &str) -> HttpResponse {
    let mut client = Client::connect(addr);
    client.post(path, body, extra_headers);
    client.read_response()
}

/// One GET on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut client = Client::connect(addr);
    client.send(format!("GET {path} HTTP/1.1\r\nHost: proxy\r\n\r\n").as_bytes());
    client.read_response()
}

/// The ids of the beacon nodes a `/status` document lists.
pub fn beacon_ids(status: &serde_json::Value) -> Vec<String> {
    status["beacons"]
        .as_array()
        .map(|beacons| {
            beacons
                .iter()
                .filter_map(|b| b["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of one series (name and labels exactly as exposed, e.g.
/// `sync_proxy_refused_total{reason="unauthorized"}`) in the proxy's `/metrics`.
pub fn metric(addr: SocketAddr, series: &str) -> Option<u64> {
    get(addr, "/metrics").text().lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Waits until `check` holds, polling `/status` or anything cheap; bounded by `timeout`.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A fixture request body (`tests/fixtures/engine/<path>`), compact.
pub fn fixture_request(path: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/engine/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("fixture {path}: {e}"));
    let value: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    serde_json::to_vec(&value["request"]).unwrap()
}

/// A JSON-RPC request body.
pub fn rpc(id: serde_json::Value, method: &str, params: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
    )
    .unwrap()
}

/// A `newPayloadV3` body for a block with this hash byte and timestamp.
pub fn new_payload(id: u64, hash_byte: u8, timestamp: u64) -> Vec<u8> {
    rpc(
        serde_json::json!(id),
        "engine_newPayloadV3",
        serde_json::json!([{
            "parentHash": format!("0x{}", "00".repeat(32)),
            "blockHash": format!("0x{}", format!("{hash_byte:02x}").repeat(32)),
            "blockNumber": "0x1",
            "timestamp": format!("0x{timestamp:x}"),
            "transactions": [],
        }, [], format!("0x{}", "00".repeat(32))]),
    )
}

/// A `forkchoiceUpdatedV3` body with this head hash byte, optionally with payload attributes.
pub fn forkchoice(id: u64, head_byte: u8, attributes_timestamp: Option<u64>) -> Vec<u8> {
    let head = format!("0x{}", format!("{head_byte:02x}").repeat(32));
    let attributes = match attributes_timestamp {
        Some(t) => serde_json::json!({
            "timestamp": format!("0x{t:x}"),
            "prevRandao": format!("0x{}", "00".repeat(32)),
            "suggestedFeeRecipient": format!("0x{}", "00".repeat(20)),
            "withdrawals": [],
            "parentBeaconBlockRoot": format!("0x{}", "00".repeat(32)),
        }),
        None => serde_json::Value::Null,
    };
    rpc(
        serde_json::json!(id),
        "engine_forkchoiceUpdatedV3",
        serde_json::json!([{"headBlockHash": head, "safeBlockHash": head, "finalizedBlockHash": head}, attributes]),
    )
}

/// Now as Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A 32-byte secret written as hex to a temp file; returns (bytes, path).
pub fn secret_file(tag: &str, byte: u8) -> ([u8; 32], String) {
    let secret = [byte; 32];
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let path =
        std::env::temp_dir().join(format!("sync-proxy-test-{}-{tag}.hex", std::process::id()));
    std::fs::write(&path, format!("0x{hex}\n")).expect("write secret");
    (secret, path.to_string_lossy().into_owned())
}

/// The hex text of a secret, as it would leak.
pub fn secret_hex(secret: &[u8; 32]) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// An HS256 token with this header and claims, signed independently of the proxy's code.
pub fn token(secret: &[u8; 32], header: &serde_json::Value, claims: &serde_json::Value) -> String {
    token_raw(secret, &header.to_string(), &claims.to_string())
}

/// An HS256 token over header and claims JSON written as text (e.g. with a member twice).
pub fn token_raw(secret: &[u8; 32], header_json: &str, claims_json: &str) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        engine.encode(header_json),
        engine.encode(claims_json)
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        engine.encode(mac.finalize().into_bytes())
    )
}

/// `Authorization: Bearer <token>` header line for `{"iat": iat}` (+ optional id).
pub fn bearer_line(secret: &[u8; 32], iat: u64, id: Option<&str>) -> String {
    let mut claims = serde_json::json!({"iat": iat});
    if let Some(id) = id {
        claims["id"] = serde_json::json!(id);
    }
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
    format!(
        "Authorization: Bearer {}\r\n",
        token(secret, &header, &claims)
    )
}

/// A real nginx running a configuration made for one test, on loopback; killed on drop.
pub struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx with `server` as the body of its `server { }` block; `{listen}` in it is
    /// replaced by the address nginx must listen on.
    pub fn start(tag: &str, server: &str) -> Nginx {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is required for this test: apt-get install -y nginx (.ci/run does)");
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir =
            std::env::temp_dir().join(format!("sync-proxy-nginx-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
             error_log {dir}/logs/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n client_body_temp_path {dir}/body;\n proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fastcgi;\n uwsgi_temp_path {dir}/uwsgi;\n scgi_temp_path {dir}/scgi;\n\
             server {{\n{server}\n }}\n}}\n",
            dir = dir.display(),
            server = server.replace("{listen}", &addr.to_string()),
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(binary)
            .args([
                "-p",
                &dir.to_string_lossy(),
                "-c",
                &config_path.to_string_lossy(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let up = eventually(WAIT, || TcpStream::connect(addr).is_ok());
        assert!(
            up,
            "nginx did not start: {:?}",
            std::fs::read_to_string(dir.join("logs/error.log"))
        );
        Nginx { child, dir, addr }
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
