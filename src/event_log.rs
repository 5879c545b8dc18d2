//! The proxy's notable events as log lines: beacon-node switches, execution clients going down
//! and coming back, catch-up, drops, disagreements and refusals. One function per event, each
//! writing a readable message plus the event's fields as `log` key-values (`beacon`,
//! `upstream`, `method`, `id`, `reason`, …), which `--log-format json` turns into JSON keys so
//! Loki or ELK can filter on them without regexes.
//!
//! Keeping them here gives every event the same field names wherever it is raised. Nothing here
//! decides anything, and nothing here may log a secret: upstreams are named by URL (without any
//! `#jwt-secret=` fragment), requests by method and id, never by header or body.

use std::net::SocketAddr;

use log::{debug, error, info, warn};

use crate::request::Request;
use crate::tracker::Switch;

/// The followed beacon node changed.
pub fn switch(switch: &Switch) {
    let (from, from_slot) = end(switch.from.as_ref());
    let (to, to_slot) = end(switch.to.as_ref());
    info!(
        beacon = to,
        slot = to_slot,
        from_beacon = from,
        from_slot = from_slot,
        reason:% = switch.reason;
        "following beacon: {switch}"
    );
}

/// A beacon node claimed a slot beyond the wall clock; it was not believed.
pub fn ignored_slot(beacon: &str, claimed: u64, wall_slot: u64) {
    warn!(
        beacon = beacon,
        slot = claimed,
        wall_slot = wall_slot,
        reason = "slot beyond the wall clock";
        "beacon {beacon} claims slot {claimed} beyond the wall-clock slot {wall_slot}; ignored"
    );
}

/// An upstream answered after being down or unknown.
pub fn upstream_up(upstream: &str) {
    info!(upstream = upstream; "{upstream} is up");
}

/// An upstream that was down answers probes again; it is not primary until an engine call
/// succeeds, and is caught up meanwhile.
pub fn upstream_reachable(upstream: &str) {
    info!(upstream = upstream; "{upstream} is reachable again; not primary until an engine call succeeds");
}

/// An upstream's engine call timed out or was answered badly: the others answer for it.
pub fn upstream_unhealthy(upstream: &str, cause: &str) {
    warn!(
        upstream = upstream,
        reason = cause;
        "{upstream} is unhealthy: {cause}; other execution clients answer for it"
    );
}

/// An upstream failed; `news` when it was not already known to be down.
pub fn upstream_down(upstream: &str, cause: &str, news: bool) {
    if news {
        warn!(upstream = upstream, reason = cause; "{upstream} is down: {cause}");
    } else {
        debug!(upstream = upstream, reason = cause; "{upstream} still down: {cause}");
    }
}

/// An upstream that came back or fell behind is sent what it missed.
pub fn catch_up(upstream: &str, payloads: usize) {
    info!(
        upstream = upstream,
        count = payloads;
        "{upstream}: catching up with {payloads} recent payloads, then the followed head"
    );
}

/// Queued requests were dropped because an upstream's queue was full; `latest` is the one that
/// triggered this line, when it is logged as it happens.
pub fn dropped(upstream: &str, count: u64, latest: Option<&Request>) {
    let reason = "queue full";
    match latest {
        Some(request) => {
            let (method, id) = method_and_id(request);
            warn!(
                upstream = upstream,
                count = count,
                method = method,
                id = id,
                beacon = &*request.beacon,
                reason = reason;
                "{upstream}: queue full, dropped {count} request(s), latest {} from {}",
                request.describe(),
                request.beacon
            );
        }
        None => warn!(
            upstream = upstream,
            count = count,
            reason = reason;
            "{upstream}: queue full, dropped {count} more request(s) in the last second"
        ),
    }
}

/// An execution client's status for a block or head differs from another's.
pub fn status_mismatch(
    upstream: &str,
    first: &str,
    disagreement: crate::router::Disagreement,
    request: &Request,
) {
    let (method, id) = method_and_id(request);
    let (said, status) = (disagreement.said.as_str(), disagreement.status.as_str());
    warn!(
        upstream = upstream,
        method = method,
        id = id,
        beacon = &*request.beacon,
        status = status,
        other = first,
        other_status = said,
        reason = "status differs from another execution client";
        "{upstream} says {status} on {} where {first} said {said}",
        request.describe()
    );
}

/// A request was refused before routing; `level` is how much an operator should care.
pub fn refused(level: log::Level, peer: SocketAddr, reason: &dyn std::fmt::Display) {
    log::log!(
        level,
        peer:% = peer,
        reason:% = reason;
        "refused request from {peer}: {reason}"
    );
}

/// A request came back through this proxy: the `--proxy` chain has a loop.
pub fn forwarding_loop(peer: SocketAddr, via: &str) {
    error!(
        peer:% = peer,
        via = via,
        reason = "forwarding loop";
        "forwarding loop: a request from {peer} already passed this proxy or too many (Via: {via}); check the --proxy chain"
    );
}

/// A connection was refused at `--max-connections`.
pub fn connection_refused(peer: SocketAddr, max_connections: usize) {
    warn!(
        peer:% = peer,
        reason = "--max-connections reached";
        "refused connection from {peer}: --max-connections {max_connections} reached"
    );
}

fn end(end: Option<&(Box<str>, Option<u64>)>) -> (Option<&str>, Option<u64>) {
    match end {
        Some((id, slot)) => (Some(&**id), *slot),
        None => (None, None),
    }
}

/// The method and id fields of a request: the call's, or what a call-less request is.
fn method_and_id(request: &Request) -> (String, Option<String>) {
    match &request.call {
        Some(call) => (
            call.method_name.to_string(),
            Some(String::from_utf8_lossy(&call.id).into_owned()),
        ),
        None => (request.describe(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::RefCell;
    use std::sync::Once;
    use std::time::{Instant, UNIX_EPOCH};

    use log::{Log, Metadata, Record};
    use serde_json::Value;

    use crate::engine::Method;
    use crate::logger::{Format, format_line};
    use crate::tracker::SwitchReason;

    thread_local! {
        /// The JSON lines logged by this test thread (tests run in parallel threads).
        static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// Renders every record as the JSON logger would, into the logging thread's list.
    struct Capture;

    impl Log for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }

        fn log(&self, record: &Record<'_>) {
            let line = format_line(Format::Json, record, UNIX_EPOCH);
            LINES.with(|lines| lines.borrow_mut().push(line));
        }

        fn flush(&self) {}
    }

    /// The one JSON object `event` logs.
    fn logged(event: impl FnOnce()) -> Value {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            if log::set_boxed_logger(Box::new(Capture)).is_ok() {
                log::set_max_level(log::LevelFilter::Trace);
            }
        });
        LINES.with(|lines| lines.borrow_mut().clear());
        event();
        let lines = LINES.with(|lines| lines.borrow().clone());
        assert_eq!(lines.len(), 1, "{lines:?}");
        serde_json::from_str(&lines[0]).expect("a JSON line")
    }

    fn request_of(body: &[u8]) -> Request {
        let call = match crate::rpc::inspect(body) {
            Ok(crate::rpc::Inspected::Call(call)) => Some(call),
            _ => None,
        };
        Request {
            body: body.into(),
            method: call.as_ref().map_or(Method::Other, |c| c.method),
            call,
            authorization: Some("Bearer secret-token".into()),
            beacon: "bn-7".into(),
            via: None,
            received_at: Instant::now(),
            serial: 0,
        }
    }

    #[test]
    fn switch_names_both_beacons_their_slots_and_the_reason() {
        let line = logged(|| {
            switch(&Switch {
                from: Some(("bn-a".into(), Some(1002))),
                to: Some(("bn-b".into(), Some(1004))),
                reason: SwitchReason::Overtaken,
            });
        });
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["beacon"], "bn-b");
        assert_eq!(line["slot"], 1004);
        assert_eq!(line["from_beacon"], "bn-a");
        assert_eq!(line["from_slot"], 1002);
        assert_eq!(line["reason"], "overtaken by more than the switch margin");
        assert!(
            line["msg"]
                .as_str()
                .unwrap()
                .starts_with("following beacon: bn-a")
        );
        let none = logged(|| {
            switch(&Switch {
                from: Some(("bn-a".into(), None)),
                to: None,
                reason: SwitchReason::NotLive,
            });
        });
        assert_eq!(none["beacon"], Value::Null);
        assert_eq!(none["from_slot"], Value::Null);
    }

    #[test]
    fn upstream_events_carry_the_upstream_and_the_reason() {
        let up = logged(|| upstream_up("http://10.0.0.1:8551"));
        assert_eq!(up["upstream"], "http://10.0.0.1:8551");
        let down = logged(|| upstream_down("http://10.0.0.1:8551", "connect failed", true));
        assert_eq!(down["level"], "WARN");
        assert_eq!(down["reason"], "connect failed");
        let still = logged(|| upstream_down("http://10.0.0.1:8551", "connect failed", false));
        assert_eq!(still["level"], "DEBUG");
        let catching_up = logged(|| catch_up("http://10.0.0.1:8551", 3));
        assert_eq!(catching_up["count"], 3);
    }

    #[test]
    fn request_events_carry_method_id_and_beacon_but_no_secret() {
        let body = br#"{"jsonrpc":"2.0","id":"x-1","method":"engine_newPayloadV4","params":[{}]}"#;
        let request = request_of(body);
        let drop = logged(|| dropped("http://el:8551", 2, Some(&request)));
        assert_eq!(drop["method"], "engine_newPayloadV4");
        assert_eq!(drop["id"], "\"x-1\"");
        assert_eq!(drop["beacon"], "bn-7");
        assert_eq!(drop["count"], 2);
        assert_eq!(drop["reason"], "queue full");
        let disagreement = crate::router::Disagreement {
            first: 0,
            said: crate::rpc::PayloadStatus::Valid,
            status: crate::rpc::PayloadStatus::Syncing,
        };
        let mismatch = logged(|| {
            status_mismatch("http://el:8551", "http://el-a:8551", disagreement, &request)
        });
        assert_eq!(mismatch["method"], "engine_newPayloadV4");
        assert_eq!(mismatch["status"], "SYNCING");
        assert_eq!(mismatch["other"], "http://el-a:8551");
        assert_eq!(mismatch["other_status"], "VALID");
        for line in [&drop, &mismatch] {
            assert!(!line.to_string().contains("secret-token"), "{line}");
        }
        let batch = request_of(b"[]");
        let flushed = logged(|| dropped("http://el:8551", 5, Some(&batch)));
        assert_eq!(flushed["method"], "batch");
        assert_eq!(flushed["id"], Value::Null);
    }

    #[test]
    fn refusals_carry_the_peer_and_the_reason() {
        let peer: SocketAddr = "[::1]:4000".parse().unwrap();
        let refusal = logged(|| refused(log::Level::Warn, peer, &"token expired"));
        assert_eq!(refusal["peer"], "[::1]:4000");
        assert_eq!(refusal["reason"], "token expired");
        let looped = logged(|| forwarding_loop(peer, "1.1 sync-proxy-1"));
        assert_eq!(looped["level"], "ERROR");
        assert_eq!(looped["reason"], "forwarding loop");
        let full = logged(|| connection_refused(peer, 256));
        assert_eq!(full["reason"], "--max-connections reached");
        let slot = logged(|| ignored_slot("bn-1", 2000, 1000));
        assert_eq!(slot["beacon"], "bn-1");
        assert_eq!(slot["wall_slot"], 1000);
    }
}
