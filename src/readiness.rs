//! `GET /ready`: whether the proxy can do its job right now — a beacon node is followed and at
//! least one execution client is up — as `200`, or `503` with the reasons as JSON.
//!
//! Distinct from `/health`, which is liveness (the process answers and an execution client is
//! reachable): a proxy that no beacon node drives is alive but not ready, and restarting it
//! would not help. Load balancers and Kubernetes readiness probes should use this one. Pure:
//! the facts are passed in; the event loop renders the answer.

use std::time::Instant;

use serde_json::json;

use crate::exchange::Answer;
use crate::execution_client::{ExecutionClient, Health};
use crate::tracker::BeaconTracker;

/// What readiness is judged on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts<'a> {
    /// The beacon node followed, if one is followed and still live.
    pub followed: Option<&'a str>,
    /// Each execution client (not chained proxies): its URL and health.
    pub execution_clients: Vec<(&'a str, Health)>,
    /// A stop signal arrived: the proxy is draining.
    pub shutting_down: bool,
}

/// The verdict on [`Facts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the proxy is ready.
    pub ready: bool,
    /// Why not, one sentence per missing condition; empty when ready.
    pub reasons: Vec<String>,
    /// How many execution clients are up.
    pub execution_clients_up: usize,
}

/// Judges readiness.
pub fn assess(facts: &Facts<'_>) -> Verdict {
    let mut reasons = Vec::new();
    if facts.shutting_down {
        reasons.push("shutting down: draining queues, not accepting connections".to_owned());
    }
    if facts.followed.is_none() {
        reasons.push(
            "no beacon node followed: none has sent a request within --beacon-timeout".to_owned(),
        );
    }
    let up = facts
        .execution_clients
        .iter()
        .filter(|(_, health)| *health == Health::Up)
        .count();
    if up == 0 {
        let states: Vec<String> = facts
            .execution_clients
            .iter()
            .map(|(url, health)| format!("{url} {}", health_name(*health)))
            .collect();
        reasons.push(format!(
            "no execution client up for engine calls ({})",
            states.join(", ")
        ));
    }
    Verdict {
        ready: reasons.is_empty(),
        reasons,
        execution_clients_up: up,
    }
}

/// The `/ready` answer for the proxy's state at `now`.
pub fn answer(
    tracker: &BeaconTracker,
    upstreams: &[ExecutionClient],
    shutting_down: bool,
    now: Instant,
) -> Answer {
    let followed = tracker
        .beacons()
        .find(|b| b.is_best && b.is_live(now))
        .map(|b| b.id);
    let facts = Facts {
        followed,
        execution_clients: upstreams
            .iter()
            .filter(|u| !u.is_proxy())
            .map(|u| (&*u.config.url, u.health))
            .collect(),
        shutting_down,
    };
    let verdict = assess(&facts);
    let body = json!({
        "ready": verdict.ready,
        "reason": verdict.reasons.join("; "),
        "reasons": verdict.reasons,
        "followed_beacon": facts.followed,
        "execution_clients_up": verdict.execution_clients_up,
        "execution_clients": facts.execution_clients.len(),
        "shutting_down": shutting_down,
    });
    let status = if verdict.ready { 200 } else { 503 };
    Answer::json(status, body.to_string().into_bytes())
}

/// How `/status` and `/ready` name a health state.
pub fn health_name(health: Health) -> &'static str {
    match health {
        Health::Unknown => "unknown",
        Health::Up => "up",
        Health::Demoted { .. } => "demoted",
        Health::Down { .. } => "down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Health {
        let now = Instant::now();
        Health::Down {
            since: now,
            retry_at: now,
        }
    }

    fn facts(followed: Option<&'static str>, healths: &[Health]) -> Facts<'static> {
        const URLS: [&str; 3] = ["http://el-0:8551", "http://el-1:8551", "http://el-2:8551"];
        Facts {
            followed,
            execution_clients: URLS.iter().copied().zip(healths.iter().copied()).collect(),
            shutting_down: false,
        }
    }

    #[test]
    fn followed_beacon_and_one_client_up_is_ready() {
        let verdict = assess(&facts(Some("bn-1"), &[down(), Health::Up, Health::Unknown]));
        assert!(verdict.ready);
        assert!(verdict.reasons.is_empty());
        assert_eq!(verdict.execution_clients_up, 1);
    }

    #[test]
    fn no_followed_beacon_is_not_ready() {
        let verdict = assess(&facts(None, &[Health::Up]));
        assert!(!verdict.ready);
        assert_eq!(verdict.reasons.len(), 1);
        assert!(verdict.reasons[0].contains("no beacon node followed"));
    }

    #[test]
    fn no_client_up_is_not_ready_and_names_each_state() {
        let verdict = assess(&facts(Some("bn-1"), &[down(), Health::Unknown]));
        assert!(!verdict.ready);
        assert_eq!(
            verdict.reasons,
            [
                "no execution client up for engine calls (http://el-0:8551 down, http://el-1:8551 unknown)"
            ]
        );
    }

    #[test]
    fn shutting_down_is_not_ready_whatever_else_holds() {
        let mut facts = facts(Some("bn-1"), &[Health::Up]);
        facts.shutting_down = true;
        let verdict = assess(&facts);
        assert!(!verdict.ready);
        assert!(verdict.reasons[0].starts_with("shutting down"));
    }

    #[test]
    fn every_missing_condition_is_a_reason() {
        let verdict = assess(&facts(None, &[]));
        assert_eq!(verdict.reasons.len(), 2, "{:?}", verdict.reasons);
    }
}
