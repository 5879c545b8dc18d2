//! `GET /status`: the proxy's view of every beacon node and upstream as JSON, for operators,
//! scripts and the `/ui` page. Built with `serde_json`; secrets are never part of it (upstreams
//! are named by URL, and a URL's `#jwt-secret=PATH` fragment is cut off at configuration time).
//!
//! Durations are given as milliseconds ago (`*_ms_ago`) or spans (`*_ms`), never as clock
//! times: the proxy's monotonic clock means nothing to a reader, and its wall clock is given
//! once, as the wall-clock slot the beacon nodes are measured against.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::Lane;
use crate::execution_client::{ExecutionClient, Health, LaneState};
use crate::readiness::health_name;
use crate::time::Clock;
use crate::tracker::{BeaconTracker, RecentSwitch};
use crate::version;

/// The status document.
pub fn render(
    config: &Config,
    clock: Clock,
    upstreams: &[ExecutionClient],
    tracker: &BeaconTracker,
    shutting_down: bool,
) -> Vec<u8> {
    let now = clock.now;
    // Before genesis (a custom chain not started yet) the wall clock is at slot 0.
    let wall_slot = config.chain.slot_of_timestamp(clock.unix_secs).unwrap_or(0);
    let beacons: Vec<Value> = tracker
        .beacons()
        .map(|b| {
            json!({
                "id": b.id,
                "slot": b.slot,
                "lag_slots": b.slot.map(|slot| wall_slot.saturating_sub(slot)),
                "live": b.is_live(now),
                "followed": b.is_best,
                "requests": b.requests,
                "last_seen_ms_ago": millis(now.saturating_duration_since(b.last_seen)),
            })
        })
        .collect();
    let switches: Vec<Value> = tracker
        .recent_switches()
        .map(|s| recent_switch(s, now))
        .collect();
    let upstreams: Vec<Value> = upstreams.iter().map(|u| upstream(u, now)).collect();
    let document = json!({
        "version": version::VERSION,
        "commit": version::COMMIT,
        "listen": config.listen.to_string(),
        "ack": config.ack.name(),
        "network": &*config.chain_name,
        "seconds_per_slot": config.chain.seconds_per_slot,
        "wall_clock_slot": wall_slot,
        "inbound_auth": config.jwt_secret.is_some(),
        "shutting_down": shutting_down,
        "followed_beacon": tracker.best(),
        "beacon_switches": tracker.switches(),
        "recent_switches": switches,
        "beacons": beacons,
        "upstreams": upstreams,
    });
    serde_json::to_vec_pretty(&document).unwrap_or_default()
}

fn recent_switch(recent: &RecentSwitch, now: Instant) -> Value {
    let end = |end: &Option<(Box<str>, Option<u64>)>| match end {
        Some((id, slot)) => (Some(id.to_string()), *slot),
        None => (None, None),
    };
    let (from, from_slot) = end(&recent.switch.from);
    let (to, to_slot) = end(&recent.switch.to);
    json!({
        "ms_ago": millis(now.saturating_duration_since(recent.at)),
        "wall_clock_slot": recent.wall_slot,
        "from": from,
        "from_slot": from_slot,
        "to": to,
        "to_slot": to_slot,
        "reason": recent.switch.reason.to_string(),
    })
}

fn upstream(u: &ExecutionClient, now: Instant) -> Value {
    let down_for_ms = match u.health {
        Health::Down { since, .. } | Health::Demoted { since } => {
            Some(millis(now.saturating_duration_since(since)))
        }
        Health::Unknown | Health::Up => None,
    };
    let verdict = u.observed.last_verdict.as_ref().map(|v| {
        json!({
            "method": &*v.method,
            "outcome": &*v.outcome,
            "ms_ago": millis(now.saturating_duration_since(v.at)),
        })
    });
    let (state, read) = (u.lane(Lane::State), u.lane(Lane::Read));
    json!({
        "url": &*u.config.url,
        "kind": if u.is_proxy() { "proxy" } else { "execution_client" },
        "health": health_name(u.health),
        "down_for_ms": down_for_ms,
        "signs_tokens": u.config.jwt_secret.is_some(),
        "queued": {
            "state": state.len(),
            "read": read.len(),
            "bytes": state.queued_bytes() + read.queued_bytes(),
        },
        "lanes": {
            "state": lane(state),
            "read": lane(read),
        },
        "latency_ms": u.observed.latency.map(millis_f64),
        "probe_latency_ms": u.observed.probe_latency.map(millis_f64),
        "last_verdict": verdict,
        "sent": u.stats.sent,
        "answered": u.stats.answered,
        "failed": u.stats.failed,
        "timeouts": u.stats.timeouts,
        "dropped": u.stats.dropped,
        "retried": u.stats.retried,
        "status_mismatches": u.stats.status_mismatches,
    })
}

fn lane(lane: &LaneState) -> Value {
    json!({
        "queued": lane.len(),
        "bytes": lane.queued_bytes(),
        "connections": lane.links.len(),
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds with microsecond precision: loopback answers take well under one.
fn millis_f64(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
