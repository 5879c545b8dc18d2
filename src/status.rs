//! `GET /status`: the proxy's view of every beacon node and upstream as JSON, for operators and
//! scripts. Built with `serde_json`; secrets are never part of it (upstreams are named by URL,
//! and a URL's `#jwt-secret=PATH` fragment is cut off at configuration time).

use std::time::Instant;

use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::Lane;
use crate::execution_client::{ExecutionClient, Health};
use crate::tracker::BeaconTracker;

/// The status document.
pub fn render(
    config: &Config,
    now: Instant,
    upstreams: &[ExecutionClient],
    tracker: &BeaconTracker,
    shutting_down: bool,
) -> Vec<u8> {
    let beacons: Vec<Value> = tracker
        .beacons()
        .map(|b| {
            json!({
                "id": b.id,
                "slot": b.slot,
                "live": b.is_live(now),
                "followed": b.is_best,
                "requests": b.requests,
                "last_seen_ms_ago": now.saturating_duration_since(b.last_seen).as_millis() as u64,
            })
        })
        .collect();
    let upstreams: Vec<Value> = upstreams.iter().map(|u| upstream(u, now)).collect();
    let document = json!({
        "listen": config.listen.to_string(),
        "ack": config.ack.name(),
        "network": &*config.chain_name,
        "inbound_auth": config.jwt_secret.is_some(),
        "shutting_down": shutting_down,
        "followed_beacon": tracker.best(),
        "beacon_switches": tracker.switches(),
        "beacons": beacons,
        "upstreams": upstreams,
    });
    serde_json::to_vec_pretty(&document).unwrap_or_default()
}

fn upstream(u: &ExecutionClient, now: Instant) -> Value {
    let (health, down_for_ms) = match u.health {
        Health::Unknown => ("unknown", None),
        Health::Up => ("up", None),
        Health::Down { since, .. } => (
            "down",
            Some(now.saturating_duration_since(since).as_millis() as u64),
        ),
    };
    json!({
        "url": &*u.config.url,
        "kind": if u.is_proxy() { "proxy" } else { "execution_client" },
        "health": health,
        "down_for_ms": down_for_ms,
        "signs_tokens": u.config.jwt_secret.is_some(),
        "queued": {
            "state": u.lane(Lane::State).len(),
            "read": u.lane(Lane::Read).len(),
            "bytes": u.lane(Lane::State).queued_bytes() + u.lane(Lane::Read).queued_bytes(),
        },
        "sent": u.stats.sent,
        "answered": u.stats.answered,
        "failed": u.stats.failed,
        "timeouts": u.stats.timeouts,
        "dropped": u.stats.dropped,
        "superseded": u.stats.superseded,
        "retried": u.stats.retried,
        "status_mismatches": u.stats.status_mismatches,
    })
}
