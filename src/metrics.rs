//! Counters of the proxy as a whole, and their Prometheus text exposition (`GET /metrics`).
//!
//! Labels come from closed sets (method classes, error kinds, configured upstream URLs), or are
//! capped: beacon-node identities are chosen by peers (a path, an address), so at most
//! [`MAX_BEACON_LABELS`] get a label of their own and the rest are folded into
//! `beacon="other"`; a peer cannot blow up the number of series. Label values are escaped as
//! the text format requires. Per-upstream counters live with each upstream
//! ([`crate::execution_client::UpstreamStats`]) and are read at render time.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::engine::Method;
use crate::execution_client::{ExecutionClient, Health};
use crate::tracker::BeaconTracker;

/// Method classes used as the `method` label.
pub const METHOD_LABELS: [&str; 12] = [
    "newPayload",
    "forkchoiceUpdated",
    "getPayload",
    "getClientVersion",
    "exchangeCapabilities",
    "getPayloadBodies",
    "getBlobs",
    "engine_other",
    "builder_payloadAttributes",
    "builder_other",
    "other",
    "batch",
];

/// Beacon nodes with a `beacon` label of their own; the rest are summed up as `other`. Fleets
/// run 2–8 beacon nodes; without JWT any client can claim new identities, and each label is a
/// series Prometheus keeps for weeks. The followed one always has its own label; the others are
/// chosen by how many requests they sent, so real beacon nodes keep theirs during a flood of
/// one-shot identities.
pub const MAX_BEACON_LABELS: usize = 16;

/// The `beacon` label of the beacon nodes beyond [`MAX_BEACON_LABELS`]. No identity can collide
/// with it unnoticed: a beacon node really named `other` is folded in with them.
pub const OTHER_BEACONS: &str = "other";

/// Upper bounds (seconds) of the answer-latency histogram: from loopback microseconds to the
/// spec's 8 s timeouts.
pub const LATENCY_BUCKETS_SECS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Why a request was refused before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed JSON (-32700).
    Parse,
    /// Not a JSON-RPC request (-32600).
    InvalidRequest,
    /// Malformed parameters (-32602).
    InvalidParams,
    /// Missing or bad JWT (401).
    Unauthorized,
    /// Bad HTTP method or path.
    NotFound,
    /// A forwarding loop between chained proxies.
    Loop,
}

impl Refusal {
    const ALL: [Refusal; 6] = [
        Refusal::Parse,
        Refusal::InvalidRequest,
        Refusal::InvalidParams,
        Refusal::Unauthorized,
        Refusal::NotFound,
        Refusal::Loop,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Parse => "parse_error",
            Refusal::InvalidRequest => "invalid_request",
            Refusal::InvalidParams => "invalid_params",
            Refusal::Unauthorized => "unauthorized",
            Refusal::NotFound => "not_found",
            Refusal::Loop => "forwarding_loop",
        }
    }
}

/// Process-wide counters.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    requests: [u64; METHOD_LABELS.len()],
    refusals: [u64; Refusal::ALL.len()],
    /// Requests the proxy answered itself (non-followed fork choice, known block, immediate…).
    pub local_answers: u64,
    /// Slot claims not believed (beyond the wall clock).
    pub ignored_slot_claims: u64,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused at the connection limit.
    pub connections_refused: u64,
    /// Answers taken from an execution client other than the primary (it failed, answered
    /// only SYNCING, or was slower than the hedging grace).
    pub hedged_answers: u64,
    /// `--ack majority`: final verdicts that disagreed (VALID against INVALID), answered SYNCING.
    pub verdict_disagreements: u64,
    /// Connections closed for answers left unread beyond `--max-unsent-answer-bytes`.
    pub connections_shed: u64,
    /// Answers to beacon nodes by class: 2xx, 4xx, 5xx.
    answers_by_class: [u64; 3],
    latency_buckets: [u64; LATENCY_BUCKETS_SECS.len()],
    latency_count: u64,
    latency_sum_secs: f64,
}

impl Metrics {
    /// Fresh counters.
    pub fn new(now: Instant) -> Metrics {
        Metrics {
            started: now,
            requests: [0; METHOD_LABELS.len()],
            refusals: [0; Refusal::ALL.len()],
            local_answers: 0,
            ignored_slot_claims: 0,
            connections_accepted: 0,
            connections_refused: 0,
            hedged_answers: 0,
            verdict_disagreements: 0,
            connections_shed: 0,
            answers_by_class: [0; 3],
            latency_buckets: [0; LATENCY_BUCKETS_SECS.len()],
            latency_count: 0,
            latency_sum_secs: 0.0,
        }
    }

    /// Counts a JSON-RPC request by method class (`None` for a batch).
    pub fn on_request(&mut self, method: Option<Method>) {
        let index = method.map_or(METHOD_LABELS.len() - 1, method_index);
        if let Some(count) = self.requests.get_mut(index) {
            *count += 1;
        }
    }

    /// Counts a refused request.
    pub fn on_refusal(&mut self, refusal: Refusal) {
        if let Some(at) = Refusal::ALL.iter().position(|r| *r == refusal) {
            self.refusals[at] += 1;
        }
    }

    /// Counts an answer to a beacon node and how long it took from the request's last byte.
    pub fn on_answer(&mut self, status: u16, latency: Duration) {
        let class = match status {
            200..=299 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.answers_by_class[class] += 1;
        let secs = latency.as_secs_f64();
        self.latency_count += 1;
        self.latency_sum_secs += secs;
        for (bucket, bound) in self.latency_buckets.iter_mut().zip(LATENCY_BUCKETS_SECS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(
        &self,
        now: Instant,
        upstreams: &[ExecutionClient],
        tracker: &BeaconTracker,
        open_connections: usize,
        exchanges_in_flight: usize,
    ) -> String {
        let mut out = String::with_capacity(4096);
        gauge(
            &mut out,
            "sync_proxy_uptime_seconds",
            "Seconds since start.",
            now.duration_since(self.started).as_secs_f64(),
        );
        header(
            &mut out,
            "sync_proxy_requests_total",
            "counter",
            "JSON-RPC requests received, by method class.",
        );
        for (label, count) in METHOD_LABELS.iter().zip(self.requests) {
            let _ = writeln!(
                out,
                "sync_proxy_requests_total{{method=\"{label}\"}} {count}"
            );
        }
        header(
            &mut out,
            "sync_proxy_refused_total",
            "counter",
            "Requests refused before routing, by reason.",
        );
        for (refusal, count) in Refusal::ALL.iter().zip(self.refusals) {
            let _ = writeln!(
                out,
                "sync_proxy_refused_total{{reason=\"{}\"}} {count}",
                refusal.label()
            );
        }
        counter(
            &mut out,
            "sync_proxy_local_answers_total",
            "Requests answered by the proxy itself.",
            self.local_answers,
        );
        counter(
            &mut out,
            "sync_proxy_hedged_answers_total",
            "Answers taken from an execution client other than the primary.",
            self.hedged_answers,
        );
        counter(
            &mut out,
            "sync_proxy_verdict_disagreements_total",
            "Final verdicts that disagreed (VALID against INVALID), answered SYNCING.",
            self.verdict_disagreements,
        );
        counter(
            &mut out,
            "sync_proxy_ignored_slot_claims_total",
            "Slot claims beyond the wall clock, not believed.",
            self.ignored_slot_claims,
        );
        counter(
            &mut out,
            "sync_proxy_connections_accepted_total",
            "Beacon-node connections accepted.",
            self.connections_accepted,
        );
        counter(
            &mut out,
            "sync_proxy_connections_refused_total",
            "Connections refused at --max-connections.",
            self.connections_refused,
        );
        counter(
            &mut out,
            "sync_proxy_connections_shed_total",
            "Connections closed for answers left unread beyond --max-unsent-answer-bytes.",
            self.connections_shed,
        );
        gauge(
            &mut out,
            "sync_proxy_connections_open",
            "Open beacon-node connections.",
            open_connections as f64,
        );
        gauge(
            &mut out,
            "sync_proxy_exchanges_in_flight",
            "Requests waiting for an upstream answer.",
            exchanges_in_flight as f64,
        );
        header(
            &mut out,
            "sync_proxy_answers_total",
            "counter",
            "Answers to beacon nodes, by HTTP status class.",
        );
        for (class, count) in ["2xx", "4xx", "5xx"].iter().zip(self.answers_by_class) {
            let _ = writeln!(out, "sync_proxy_answers_total{{class=\"{class}\"}} {count}");
        }
        header(
            &mut out,
            "sync_proxy_answer_seconds",
            "histogram",
            "Time from a request's last byte to its answer being queued.",
        );
        for (bound, count) in LATENCY_BUCKETS_SECS.iter().zip(self.latency_buckets) {
            let _ = writeln!(
                out,
                "sync_proxy_answer_seconds_bucket{{le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "sync_proxy_answer_seconds_bucket{{le=\"+Inf\"}} {}",
            self.latency_count
        );
        let _ = writeln!(
            out,
            "sync_proxy_answer_seconds_sum {}",
            self.latency_sum_secs
        );
        let _ = writeln!(
            out,
            "sync_proxy_answer_seconds_count {}",
            self.latency_count
        );
        counter(
            &mut out,
            "sync_proxy_log_write_failures_total",
            "Log lines dropped because stderr refused them (closed pipe, full disk).",
            crate::logger::write_failures(),
        );
        render_upstreams(&mut out, upstreams);
        render_beacons(&mut out, now, tracker);
        out
    }
}

fn method_index(method: Method) -> usize {
    match method {
        Method::NewPayload(_) => 0,
        Method::ForkchoiceUpdated(_) => 1,
        Method::GetPayload(_) => 2,
        Method::GetClientVersion(_) => 3,
        Method::ExchangeCapabilities => 4,
        Method::GetPayloadBodies => 5,
        Method::GetBlobs => 6,
        Method::OtherEngine => 7,
        Method::BuilderPayloadAttributes => 8,
        Method::OtherBuilder => 9,
        Method::Other => 10,
    }
}

fn render_upstreams(out: &mut String, upstreams: &[ExecutionClient]) {
    type Field = (&'static str, &'static str, fn(&ExecutionClient) -> u64);
    let fields: [Field; 8] = [
        (
            "sync_proxy_upstream_sent_total",
            "Requests sent to the upstream.",
            |u| u.stats.sent,
        ),
        (
            "sync_proxy_upstream_answered_total",
            "Answers received from the upstream.",
            |u| u.stats.answered,
        ),
        (
            "sync_proxy_upstream_failed_total",
            "Requests or connections that failed.",
            |u| u.stats.failed,
        ),
        (
            "sync_proxy_upstream_timeouts_total",
            "Requests that timed out.",
            |u| u.stats.timeouts,
        ),
        (
            "sync_proxy_upstream_dropped_total",
            "Queued requests dropped because the queue was full.",
            |u| u.stats.dropped,
        ),
        (
            "sync_proxy_upstream_retried_total",
            "Requests retried on a fresh connection.",
            |u| u.stats.retried,
        ),
        (
            "sync_proxy_upstream_status_mismatch_total",
            "Answers whose status differed from another upstream's.",
            |u| u.stats.status_mismatches,
        ),
        (
            "sync_proxy_upstream_connects_total",
            "Connections opened.",
            |u| u.stats.connects,
        ),
    ];
    for (name, help, read) in fields {
        header(out, name, "counter", help);
        for upstream in upstreams {
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\"}} {}",
                label_value(&upstream.config.url),
                read(upstream)
            );
        }
    }
    header(
        out,
        "sync_proxy_upstream_up",
        "gauge",
        "1 when the upstream answers engine calls properly, 0 when demoted, down or unknown.",
    );
    for upstream in upstreams {
        let up = u8::from(upstream.health == Health::Up);
        let _ = writeln!(
            out,
            "sync_proxy_upstream_up{{upstream=\"{}\"}} {up}",
            label_value(&upstream.config.url)
        );
    }
    header(
        out,
        "sync_proxy_upstream_queued",
        "gauge",
        "Requests waiting in the upstream's queues.",
    );
    for upstream in upstreams {
        let queued = upstream.lane(crate::engine::Lane::State).len()
            + upstream.lane(crate::engine::Lane::Read).len();
        let _ = writeln!(
            out,
            "sync_proxy_upstream_queued{{upstream=\"{}\"}} {queued}",
            label_value(&upstream.config.url)
        );
    }
    header(
        out,
        "sync_proxy_upstream_queued_bytes",
        "gauge",
        "Body bytes waiting in the upstream's queues.",
    );
    for upstream in upstreams {
        let bytes = upstream.lane(crate::engine::Lane::State).queued_bytes()
            + upstream.lane(crate::engine::Lane::Read).queued_bytes();
        let _ = writeln!(
            out,
            "sync_proxy_upstream_queued_bytes{{upstream=\"{}\"}} {bytes}",
            label_value(&upstream.config.url)
        );
    }
}

fn render_beacons(out: &mut String, now: Instant, tracker: &BeaconTracker) {
    counter(
        out,
        "sync_proxy_beacon_switches_total",
        "Changes of the followed beacon node.",
        tracker.switches(),
    );
    counter(
        out,
        "sync_proxy_beacon_untracked_total",
        "Requests from beacon nodes left untracked: the table was full of live ones ranking as high.",
        tracker.untracked(),
    );
    let rows = beacon_rows(now, tracker);
    gauge(
        out,
        "sync_proxy_beacons_tracked",
        "Beacon nodes tracked (at most 64; labelled ones plus those folded into \"other\").",
        tracker.beacons().count() as f64,
    );
    header(
        out,
        "sync_proxy_beacon_slot",
        "gauge",
        "Highest slot seen from each beacon node (\"other\": the highest of the unlabelled ones).",
    );
    for row in &rows {
        if let Some(slot) = row.slot {
            let _ = writeln!(
                out,
                "sync_proxy_beacon_slot{{beacon=\"{}\"}} {slot}",
                label_value(&row.label)
            );
        }
    }
    header(
        out,
        "sync_proxy_beacon_live",
        "gauge",
        "1 while the beacon node sends requests (\"other\": how many unlabelled ones do).",
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "sync_proxy_beacon_live{{beacon=\"{}\"}} {}",
            label_value(&row.label),
            row.live
        );
    }
    header(
        out,
        "sync_proxy_beacon_followed",
        "gauge",
        "1 for the followed beacon node.",
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "sync_proxy_beacon_followed{{beacon=\"{}\"}} {}",
            label_value(&row.label),
            u8::from(row.followed)
        );
    }
}

/// One `beacon` label's values.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BeaconRow {
    label: String,
    slot: Option<u64>,
    live: u64,
    followed: bool,
}

/// The labelled beacon nodes (followed first, then by requests sent, ties by id) and, when
/// more are tracked than [`MAX_BEACON_LABELS`], one `other` row summing up the rest.
fn beacon_rows(now: Instant, tracker: &BeaconTracker) -> Vec<BeaconRow> {
    let mut beacons: Vec<_> = tracker.beacons().collect();
    beacons.sort_by(|a, b| {
        (b.is_best, b.requests)
            .cmp(&(a.is_best, a.requests))
            .then_with(|| a.id.cmp(b.id))
    });
    let mut rows = Vec::with_capacity(MAX_BEACON_LABELS + 1);
    let mut other: Option<BeaconRow> = None;
    for (rank, beacon) in beacons.iter().enumerate() {
        let live = u64::from(beacon.is_live(now));
        if rank < MAX_BEACON_LABELS && beacon.id != OTHER_BEACONS {
            rows.push(BeaconRow {
                label: beacon.id.to_owned(),
                slot: beacon.slot,
                live,
                followed: beacon.is_best,
            });
            continue;
        }
        let folded = other.get_or_insert_with(|| BeaconRow {
            label: OTHER_BEACONS.to_owned(),
            slot: None,
            live: 0,
            followed: false,
        });
        folded.slot = folded.slot.max(beacon.slot);
        folded.live += live;
        folded.followed |= beacon.is_best;
    }
    rows.extend(other);
    rows
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
pub fn label_value(text: &str) -> Cow<'_, str> {
    if !text.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tracker::TrackerConfig;

    const WALL: u64 = 1000;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("http://a:1/x"), "http://a:1/x");
        assert!(matches!(label_value("plain"), Cow::Borrowed(_)));
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn few_beacons_each_have_a_label() {
        let now = Instant::now();
        let mut tracker = BeaconTracker::new(TrackerConfig::default());
        tracker.observe("bn-1", Some(WALL), now, WALL);
        tracker.observe("bn-2", Some(WALL - 1), now, WALL);
        let rows = beacon_rows(now, &tracker);
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["bn-1", "bn-2"]);
        assert!(rows[0].followed);
    }

    #[test]
    fn beacons_beyond_the_cap_fold_into_other_and_the_followed_keeps_its_label() {
        let now = Instant::now();
        let mut tracker = BeaconTracker::new(TrackerConfig::default());
        // The real beacon nodes send many requests; a flood of identities one each.
        for _ in 0..5 {
            tracker.observe("bn-real-1", Some(WALL - 1), now, WALL);
            tracker.observe("bn-real-2", Some(WALL - 2), now, WALL);
        }
        for i in 0..40 {
            tracker.observe(&format!("flood-{i:02}"), Some(WALL - 3), now, WALL);
        }
        let rows = beacon_rows(now, &tracker);
        assert_eq!(rows.len(), MAX_BEACON_LABELS + 1);
        assert_eq!(rows[0].label, "bn-real-1");
        assert!(rows[0].followed);
        assert_eq!(rows[1].label, "bn-real-2");
        let other = rows.last().unwrap();
        assert_eq!(other.label, OTHER_BEACONS);
        assert_eq!(other.slot, Some(WALL - 3));
        assert_eq!(other.live, 40 + 2 - MAX_BEACON_LABELS as u64);
        assert!(!other.followed);
        let mut labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        labels.dedup();
        assert_eq!(labels.len(), rows.len(), "one row per label");
    }

    #[test]
    fn a_beacon_named_other_is_folded_not_duplicated() {
        let now = Instant::now();
        let mut tracker = BeaconTracker::new(TrackerConfig::default());
        tracker.observe("bn-1", Some(WALL), now, WALL);
        tracker.observe(OTHER_BEACONS, Some(WALL - 1), now, WALL);
        let rows = beacon_rows(now, &tracker);
        let others = rows.iter().filter(|r| r.label == OTHER_BEACONS).count();
        assert_eq!(others, 1);
        assert_eq!(rows.len(), 2);
    }
}
