//! `sync-proxy demo`: the real proxy loop on loopback, with built-in execution clients and
//! simulated beacon nodes replaying realistic Engine API traffic, so a newcomer can watch the
//! selection rules work without an Ethereum node at hand.
//!
//! The story, one line per slot: bn-a leads; bn-b overtakes and is followed; bn-b goes silent and
//! bn-a is followed again; el-2 crashes while bn-c joins; el-2 comes back and is caught up with
//! the payloads it missed while bn-a falls behind and bn-c takes over. The proxy's own log lines
//! show each switch and each execution client going down, coming up and catching up; the demo
//! prints what each beacon node sent and got back, then what every execution client received,
//! and stops the proxy with SIGTERM (its real shutdown path). Everything stays on 127.0.0.1 and
//! ends by itself within a minute.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::cli::{Args, DemoArgs};
use crate::config::Config;
use crate::event_loop::Proxy;

/// A real captured `engine_newPayloadV4` (Prague, EthereumJS devnet): the shape every simulated
/// block takes, with its hash, number, parent and timestamp rewritten.
const PAYLOAD_TEMPLATE: &str = include_str!(
    "../tests/fixtures/engine/minicl_to_ethereumjs-0.10.5_prague/05_newPayloadV4_b1.json"
);

/// Execution clients the demo starts.
const EXECUTION_CLIENTS: usize = 3;

/// Slots of history before the demo starts, so slot numbers look like a running chain.
const HISTORY_SLOTS: u64 = 1000;

/// Longest the demo may run whatever the slot length: it must end by itself.
const MAX_DEMO_TIME: Duration = Duration::from_secs(60);

/// What one simulated beacon node does in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Imports the block of this slot and moves its head there.
    Follow,
    /// Imports the block from `lag` slots ago and moves its head there.
    Lag(u64),
    /// Keeps re-sending its old head (it stalled, but is alive).
    Stall,
    /// Sends nothing.
    Silent,
}

/// What happens to the demo's last execution client, el-2, in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outage {
    /// Nothing changes.
    None,
    /// It crashes: every connection to it is cut, new ones are closed at once.
    Crash,
    /// It is back and answers again.
    Restart,
}

/// One slot of the script: the narration, what bn-a, bn-b and bn-c do, and el-2's fate.
struct Step {
    narration: &'static str,
    acts: [Act; 3],
    outage: Outage,
}

const fn step(narration: &'static str, acts: [Act; 3], outage: Outage) -> Step {
    Step {
        narration,
        acts,
        outage,
    }
}

/// The script, one step per slot.
const SCRIPT: &[Step] = &[
    step(
        "bn-a leads; bn-b is two slots behind",
        [Act::Follow, Act::Lag(2), Act::Silent],
        Outage::None,
    ),
    step("", [Act::Follow, Act::Lag(2), Act::Silent], Outage::None),
    step("", [Act::Follow, Act::Lag(2), Act::Silent], Outage::None),
    step(
        "bn-a stalls; bn-b catches up and overtakes",
        [Act::Stall, Act::Follow, Act::Silent],
        Outage::None,
    ),
    step("", [Act::Stall, Act::Follow, Act::Silent], Outage::None),
    step("", [Act::Stall, Act::Follow, Act::Silent], Outage::None),
    step(
        "bn-b goes silent; bn-a re-imports the blocks it missed",
        [Act::Lag(2), Act::Silent, Act::Silent],
        Outage::None,
    ),
    step("", [Act::Lag(2), Act::Silent, Act::Silent], Outage::None),
    step("", [Act::Lag(2), Act::Silent, Act::Silent], Outage::None),
    step("", [Act::Lag(2), Act::Silent, Act::Silent], Outage::None),
    step(
        "bn-a is back at the head; bn-c joins; el-2 crashes (its connections are cut): the proxy \
         marks it down, keeps its state-changing calls queued, and the other two carry on",
        [Act::Follow, Act::Silent, Act::Follow],
        Outage::Crash,
    ),
    step("", [Act::Follow, Act::Silent, Act::Follow], Outage::None),
    step(
        "el-2 restarts: the proxy's probe finds it up and delivers, in order, what it missed; \
         bn-a falls behind, bn-c keeps up",
        [Act::Stall, Act::Silent, Act::Follow],
        Outage::Restart,
    ),
    step("", [Act::Stall, Act::Silent, Act::Follow], Outage::None),
    step("", [Act::Stall, Act::Silent, Act::Follow], Outage::None),
    step("", [Act::Stall, Act::Silent, Act::Follow], Outage::None),
];

/// The execution client the script crashes and restarts.
const FAILING_EXECUTION_CLIENT: usize = EXECUTION_CLIENTS - 1;

/// Longest the demo waits, after the script, for the restarted execution client to have every
/// block the others have (reconnect backoff is at most 5 s; catch-up takes milliseconds).
const MAX_CATCH_UP_WAIT: Duration = Duration::from_secs(8);

/// Beacon nodes of the demo, named by the path they post to.
const BEACONS: [&str; 3] = ["bn-a", "bn-b", "bn-c"];

/// Runs the demo.
pub fn run(args: &DemoArgs) -> io::Result<()> {
    let slot = Duration::from_secs(args.slot_seconds.clamp(1, 3));
    let slot_secs = slot.as_secs();
    let deadline = Instant::now() + MAX_DEMO_TIME;
    let els: Vec<DemoExecutionClient> = (0..EXECUTION_CLIENTS)
        .map(|i| DemoExecutionClient::start(&format!("el-{i}")))
        .collect::<io::Result<_>>()?;
    let genesis = unix_now().saturating_sub(HISTORY_SLOTS * slot_secs);
    let mut cli = Args {
        listen: Some("127.0.0.1:0".into()),
        el: els.iter().map(|el| format!("http://{}", el.addr)).collect(),
        genesis_time: Some(genesis.to_string()),
        seconds_per_slot: Some(slot_secs.to_string()),
        beacon_timeout: Some(format!("{}ms", slot.as_millis() * 5 / 2)),
        switch_margin: Some("1".into()),
        ..Args::default()
    };
    cli.log_level = Some("info".into());
    let config = Config::from_args(&cli)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;

    println!(
        "sync-proxy demo: 3 execution clients, 3 beacon nodes, {slot_secs} s slots, all on 127.0.0.1"
    );
    println!(
        "The demo's execution clients always answer VALID: a SYNCING below is the proxy's own\n\
         answer to a beacon node it does not follow whose head differs from the followed one\n\
         (only one beacon node may move the execution clients' head).\n"
    );
    let (addr_tx, addr_rx) = mpsc::channel();
    let proxy_thread = thread::spawn(move || -> io::Result<()> {
        // The proxy is single-threaded and not Send: it lives entirely on this thread.
        let mut proxy = Proxy::bind(config)?;
        let _ = addr_tx.send(proxy.local_addr());
        proxy.run()
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| io::Error::other("the proxy did not start"))?;
    println!("proxy listening on {addr}; beacon nodes post to http://{addr}/bn-a, /bn-b, /bn-c");
    for el in &els {
        println!(
            "{} is http://{} (the proxy's logs name it so)",
            el.name, el.addr
        );
    }
    println!();

    let mut beacons: Vec<SimulatedBeacon> = BEACONS
        .iter()
        .map(|name| SimulatedBeacon::new(name, addr))
        .collect();
    let first_slot = wall_slot(genesis, slot_secs);
    let failing = &els[FAILING_EXECUTION_CLIENT];
    for (index, step) in SCRIPT.iter().enumerate() {
        if Instant::now() >= deadline {
            break;
        }
        let slot_number = first_slot + index as u64;
        if !step.narration.is_empty() {
            println!("--- {}", step.narration);
        }
        match step.outage {
            Outage::None => {}
            Outage::Crash => failing.down.store(true, Ordering::SeqCst),
            Outage::Restart => failing.down.store(false, Ordering::SeqCst),
        }
        let mut line = format!("slot {slot_number}:");
        for (beacon, act) in beacons.iter_mut().zip(&step.acts) {
            if let Some(report) = beacon.act(*act, slot_number, genesis, slot_secs) {
                line.push_str(&format!("  {report}"));
            }
        }
        println!("{line}");
        sleep_until_slot(genesis, slot_secs, slot_number + 1, deadline);
    }

    let caught_up = wait_for_catch_up(&els, deadline.min(Instant::now() + MAX_CATCH_UP_WAIT));
    println!("\n--- stopping the proxy with SIGTERM (it drains its queues first)");
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM)?;
    proxy_thread
        .join()
        .map_err(|_| io::Error::other("the proxy thread panicked"))??;

    println!("\nWhat each execution client received:");
    for (index, el) in els.iter().enumerate() {
        el.stop.store(true, Ordering::SeqCst);
        let seen = el.seen();
        let summary: Vec<String> = seen
            .counts
            .iter()
            .map(|(m, n)| format!("{m} ×{n}"))
            .collect();
        let note = match (index == FAILING_EXECUTION_CLIENT, caught_up) {
            (false, _) => "",
            (true, true) => " (down for two slots, then caught up by the proxy)",
            (true, false) => " (down for two slots, NOT caught up in time)",
        };
        println!(
            "  {} ({}): {} — {} distinct blocks{note}",
            el.name,
            el.addr,
            summary.join(", "),
            seen.blocks.len()
        );
    }
    println!(
        "Blocks sent by several beacon nodes reached each execution client once; only the followed\n\
         beacon node (or one agreeing with its head) moved their head; the execution client that\n\
         crashed got the blocks it missed without waiting for devp2p sync."
    );
    Ok(())
}

/// Waits until the execution client that crashed has seen every block the first one has, or
/// `until`; returns whether it has.
fn wait_for_catch_up(els: &[DemoExecutionClient], until: Instant) -> bool {
    let (Some(reference), Some(failing)) = (els.first(), els.get(FAILING_EXECUTION_CLIENT)) else {
        return true;
    };
    loop {
        let expected = reference.seen().blocks;
        if failing.seen().blocks.is_superset(&expected) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A beacon node played by the demo: posts to its own path on one keep-alive connection.
struct SimulatedBeacon {
    name: &'static str,
    addr: SocketAddr,
    stream: Option<TcpStream>,
    head_slot: Option<u64>,
    next_id: u64,
}

impl SimulatedBeacon {
    fn new(name: &'static str, addr: SocketAddr) -> SimulatedBeacon {
        SimulatedBeacon {
            name,
            addr,
            stream: None,
            head_slot: None,
            next_id: 1,
        }
    }

    /// Does this slot's part; returns a short report of what it sent and got back.
    fn act(&mut self, act: Act, slot: u64, genesis: u64, slot_secs: u64) -> Option<String> {
        let head = match act {
            Act::Silent => {
                // A silent beacon node is gone: its connection too.
                self.stream = None;
                return None;
            }
            Act::Stall => self.head_slot?,
            Act::Follow => slot,
            Act::Lag(lag) => slot.saturating_sub(lag),
        };
        let mut imported = "";
        if self.head_slot != Some(head) {
            let payload = new_payload(self.next_id, head, genesis + head * slot_secs);
            self.next_id += 1;
            let status = self.call(&payload).map(|v| v["result"]["status"].clone());
            imported = match status.as_ref().and_then(Value::as_str) {
                Some("VALID") => "imported",
                Some("SYNCING") => "import SYNCING (the proxy's answer)",
                Some(_) => "import answered",
                None => "import failed",
            };
            self.head_slot = Some(head);
        }
        let fcu = forkchoice(self.next_id, head);
        self.next_id += 1;
        let answer = self.call(&fcu);
        let fcu_status = answer
            .as_ref()
            .and_then(|v| {
                v["result"]["payloadStatus"]["status"]
                    .as_str()
                    .map(str::to_owned)
            })
            .map(|status| {
                if status == "SYNCING" {
                    // The demo's execution clients never say SYNCING.
                    format!(
                        "{status} (the proxy's own answer: {} is not followed)",
                        self.name
                    )
                } else {
                    status
                }
            })
            .unwrap_or_else(|| "no answer".into());
        let imported = if imported.is_empty() {
            String::new()
        } else {
            format!("{imported}, ")
        };
        Some(format!(
            "[{} head {head}: {imported}fcU {fcu_status}]",
            self.name
        ))
    }

    fn call(&mut self, body: &[u8]) -> Option<Value> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .ok()?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut()?;
        let head = format!(
            "POST /{} HTTP/1.1\r\nHost: sync-proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.name,
            body.len()
        );
        let sent = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        let answer = sent.ok().and_then(|()| read_response(stream));
        if answer.is_none() {
            self.stream = None;
        }
        answer.and_then(|body| serde_json::from_slice(&body).ok())
    }
}

/// A minimal execution client: answers VALID with real HTTP and counts what it gets; while
/// `down` it cuts every connection instead, as a crashed process would.
struct DemoExecutionClient {
    name: String,
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
}

/// What a demo execution client received.
#[derive(Clone, Debug, Default)]
struct Seen {
    counts: BTreeMap<String, u64>,
    blocks: BTreeSet<String>,
}

impl DemoExecutionClient {
    fn start(name: &str) -> io::Result<DemoExecutionClient> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, down2) = (Arc::clone(&seen), Arc::clone(&stop), Arc::clone(&down));
        thread::spawn(move || {
            // Bounded by the demo: `stop` is set at the end, and the demo exits right after.
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    // Crashed: the connection is closed as soon as it is made.
                    Ok(_) if down2.load(Ordering::SeqCst) => {}
                    Ok((stream, _)) => {
                        let (seen, down) = (Arc::clone(&seen2), Arc::clone(&down2));
                        thread::spawn(move || serve(stream, &seen, &down));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(DemoExecutionClient {
            name: name.to_owned(),
            addr,
            seen,
            stop,
            down,
        })
    }

    /// What it received so far.
    fn seen(&self) -> Seen {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Seen>, down: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(MAX_DEMO_TIME));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(body) = read_request(&mut reader) {
        if down.load(Ordering::SeqCst) {
            // Crashed: the request is lost and the connection cut.
            return;
        }
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let method = request["method"].as_str().unwrap_or("?").to_owned();
        if let (true, Ok(mut seen)) = (method != "eth_syncing", seen.lock()) {
            *seen.counts.entry(method.clone()).or_default() += 1;
            if let Some(hash) = request["params"][0]["blockHash"].as_str() {
                seen.blocks.insert(hash.to_owned());
            }
        }
        let status = json!({"status": "VALID", "latestValidHash": null, "validationError": null});
        let result = if method.starts_with("engine_newPayload") {
            status
        } else if method.starts_with("engine_forkchoiceUpdated") {
            json!({"payloadStatus": status, "payloadId": null})
        } else {
            json!(false)
        };
        let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": result}).to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(answer.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// Reads one Content-Length request body (the proxy always frames its requests so).
fn read_request(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// Reads one response body from the proxy (Content-Length framed).
fn read_response(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(stream);
    read_request(&mut reader)
}

/// The simulated block of `slot`: the captured payload with this slot's identity.
fn new_payload(id: u64, slot: u64, timestamp: u64) -> Vec<u8> {
    let mut request: Value = serde_json::from_str::<Value>(PAYLOAD_TEMPLATE)
        .map(|fixture| fixture["request"].clone())
        .unwrap_or(Value::Null);
    request["id"] = json!(id);
    let payload = &mut request["params"][0];
    payload["blockHash"] = json!(block_hash(slot));
    payload["parentHash"] = json!(block_hash(slot.saturating_sub(1)));
    payload["blockNumber"] = json!(format!("0x{slot:x}"));
    payload["timestamp"] = json!(format!("0x{timestamp:x}"));
    serde_json::to_vec(&request).unwrap_or_default()
}

fn forkchoice(id: u64, head_slot: u64) -> Vec<u8> {
    let head = block_hash(head_slot);
    let finalized = block_hash(head_slot.saturating_sub(2));
    serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "engine_forkchoiceUpdatedV3",
        "params": [{"headBlockHash": head, "safeBlockHash": head, "finalizedBlockHash": finalized}, null],
    }))
    .unwrap_or_default()
}

/// A stand-in block hash, the same for every beacon node that imports that slot's block.
fn block_hash(slot: u64) -> String {
    format!("0x{:016x}{}", slot, "d5".repeat(24))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn wall_slot(genesis: u64, slot_secs: u64) -> u64 {
    unix_now().saturating_sub(genesis) / slot_secs.max(1)
}

/// Sleeps until the wall clock reaches `slot` (bounded by the demo's deadline).
fn sleep_until_slot(genesis: u64, slot_secs: u64, slot: u64, deadline: Instant) {
    let target = UNIX_EPOCH + Duration::from_secs(genesis + slot * slot_secs);
    let wait = target.duration_since(SystemTime::now()).unwrap_or_default();
    let wait = wait.min(deadline.saturating_duration_since(Instant::now()));
    // Wake a little after the boundary so the wall-clock slot has certainly moved on.
    thread::sleep(wait + Duration::from_millis(50));
}
