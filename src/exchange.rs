//! One beacon-node request waiting for its answer: collects the outcome of each upstream leg
//! and decides, as soon as it can, which answer the beacon node gets.
//!
//! Pure: outcomes and `now` in, an [`Answer`] out. It never touches sockets or queues; legs keep
//! travelling after the beacon node has its answer, and their outcomes are then ignored here.

use std::fmt;
use std::rc::Rc;
use std::time::Instant;

use crate::engine::Method;
use crate::http::write::JSON;
use crate::outbound::{Response, UpstreamError};
use crate::rpc::{self, PayloadStatus};

/// Where an answer goes: a beacon-node connection and the request's place on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTo {
    /// Slab key of the inbound connection.
    pub conn: usize,
    /// The connection's serial number, so a reused slab slot is never answered by mistake.
    pub serial: u64,
    /// The request's sequence number on that connection.
    pub seq: u64,
    /// When the request was read, to measure how long its answer took.
    pub received_at: Instant,
}

impl ReplyTo {
    /// Request `seq` on connection `conn` (with its `serial`), read at `received_at`.
    pub fn new(conn: usize, serial: u64, seq: u64, received_at: Instant) -> ReplyTo {
        ReplyTo {
            conn,
            serial,
            seq,
            received_at,
        }
    }
}

/// How the answer is chosen among the upstreams' answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerPolicy {
    /// The primary's answer; the first other success if it fails.
    Primary,
    /// `engine_getClientVersionV1`: every answer's list, concatenated (the spec's multiplexer rule).
    Concatenate,
    /// `engine_exchangeCapabilities`: the methods every upstream supports.
    Intersect,
    /// The status most upstreams agree on, never `VALID` against an `INVALID`.
    Majority,
}

/// Why a leg brought no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegFailure {
    /// The connection or request failed.
    Upstream(UpstreamError),
    /// The upstream is down; the request stays queued for when it returns.
    Unavailable,
    /// The upstream's queue was full and the request was dropped.
    Dropped,
    /// A newer `forkchoiceUpdated` replaced this one in the queue.
    Superseded,
}

impl LegFailure {
    fn is_timeout(self) -> bool {
        matches!(self, LegFailure::Upstream(e) if e.is_timeout())
    }
}

impl fmt::Display for LegFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegFailure::Upstream(e) => e.fmt(f),
            LegFailure::Unavailable => f.write_str("execution client unavailable"),
            LegFailure::Dropped => f.write_str("dropped: execution client queue full"),
            LegFailure::Superseded => f.write_str("superseded by a newer forkchoiceUpdated"),
        }
    }
}

/// The answer a beacon node gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: Box<str>,
    /// Body, byte for byte as chosen.
    pub body: Vec<u8>,
}

impl Answer {
    /// A JSON answer built by the proxy.
    pub fn json(status: u16, body: Vec<u8>) -> Answer {
        Answer {
            status,
            content_type: JSON.into(),
            body,
        }
    }
}

/// Outcome of one upstream's leg.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// This upstream was not asked.
    NotAsked,
    /// Asked, no outcome yet.
    Pending,
    /// It answered.
    Answered(Response),
    /// It failed.
    Failed(LegFailure),
}

/// A request waiting for its answer.
#[derive(Debug)]
pub struct Exchange {
    /// Where the answer goes.
    pub reply_to: ReplyTo,
    /// How the answer is chosen.
    pub policy: AnswerPolicy,
    /// When the beacon node gets an answer whatever the upstreams do.
    pub deadline: Instant,
    id: Box<[u8]>,
    method: Method,
    names: Rc<[Box<str>]>,
    /// Upstream indexes in preference order: the primary first, then configured order.
    order: Vec<usize>,
    outcomes: Vec<Outcome>,
}

impl Exchange {
    /// A new exchange asking the upstreams in `order` (primary first); `names` names every
    /// upstream by index for error messages.
    pub fn new(
        reply_to: ReplyTo,
        policy: AnswerPolicy,
        id: &[u8],
        method: Method,
        order: Vec<usize>,
        names: Rc<[Box<str>]>,
        deadline: Instant,
    ) -> Exchange {
        let mut outcomes = vec![Outcome::NotAsked; names.len()];
        for &index in &order {
            if let Some(outcome) = outcomes.get_mut(index) {
                *outcome = Outcome::Pending;
            }
        }
        Exchange {
            reply_to,
            policy,
            deadline,
            id: id.into(),
            method,
            names,
            order,
            outcomes,
        }
    }

    /// Records an upstream's answer.
    pub fn on_answer(&mut self, upstream: usize, response: Response) {
        self.set(upstream, Outcome::Answered(response));
    }

    /// Records an upstream's failure.
    pub fn on_failure(&mut self, upstream: usize, failure: LegFailure) {
        self.set(upstream, Outcome::Failed(failure));
    }

    /// The answer, once the outcomes so far decide it. Answers only once: the chosen
    /// response is moved out, not copied.
    pub fn decide(&mut self) -> Option<Answer> {
        if self.order.iter().any(|&i| self.is_pending(i)) && !self.decided_early() {
            return None;
        }
        Some(self.conclude(false))
    }

    /// The deadline passed: answer with whatever is known.
    pub fn on_timeout(&mut self) -> Answer {
        self.conclude(true)
    }

    fn set(&mut self, upstream: usize, outcome: Outcome) {
        if let Some(slot) = self.outcomes.get_mut(upstream) {
            // Only the first outcome counts: a leg reported unavailable may still be delivered
            // later, but the beacon node was already told.
            if *slot == Outcome::Pending {
                *slot = outcome;
            }
        }
    }

    fn is_pending(&self, upstream: usize) -> bool {
        matches!(self.outcomes.get(upstream), Some(Outcome::Pending))
    }

    fn success(&self, upstream: usize) -> Option<&Response> {
        match self.outcomes.get(upstream) {
            Some(Outcome::Answered(response)) if is_success(response) => Some(response),
            _ => None,
        }
    }

    /// Primary policy can answer before everyone has: as soon as the first successful upstream
    /// in preference order is known, with everyone before it failed.
    fn decided_early(&self) -> bool {
        match self.effective_policy() {
            AnswerPolicy::Primary => {
                for &index in &self.order {
                    if self.success(index).is_some() {
                        return true;
                    }
                    if self.is_pending(index) {
                        return false;
                    }
                }
                true
            }
            AnswerPolicy::Concatenate | AnswerPolicy::Intersect | AnswerPolicy::Majority => false,
        }
    }

    fn effective_policy(&self) -> AnswerPolicy {
        match (self.policy, self.method) {
            (AnswerPolicy::Majority, Method::NewPayload(_) | Method::ForkchoiceUpdated(_)) => {
                AnswerPolicy::Majority
            }
            (AnswerPolicy::Majority, _) => AnswerPolicy::Primary,
            (policy, _) => policy,
        }
    }

    fn conclude(&mut self, timed_out: bool) -> Answer {
        let chosen = match self.effective_policy() {
            AnswerPolicy::Primary => {
                let first = self
                    .order
                    .iter()
                    .copied()
                    .find(|&i| self.success(i).is_some());
                first.and_then(|i| self.take_answer(i))
            }
            AnswerPolicy::Concatenate => {
                let bodies = self.successful_bodies();
                rpc::concat_results(&self.id, &bodies).map(|body| Answer::json(200, body))
            }
            AnswerPolicy::Intersect => {
                let bodies = self.successful_bodies();
                rpc::intersect_capabilities(&self.id, &bodies).map(|body| Answer::json(200, body))
            }
            AnswerPolicy::Majority => self.majority().and_then(|i| self.take_answer(i)),
        };
        chosen.unwrap_or_else(|| self.failure_answer(timed_out))
    }

    /// Moves an upstream's answer out, leaving it counted as answered with an empty body.
    fn take_answer(&mut self, upstream: usize) -> Option<Answer> {
        let Some(Outcome::Answered(response)) = self.outcomes.get_mut(upstream) else {
            return None;
        };
        Some(Answer {
            status: response.status,
            content_type: response.content_type.take().unwrap_or_else(|| JSON.into()),
            body: std::mem::take(&mut response.body),
        })
    }

    fn successful_bodies(&self) -> Vec<&[u8]> {
        self.order
            .iter()
            .filter_map(|&i| self.success(i))
            .map(|r| r.body.as_slice())
            .collect()
    }

    /// The upstream whose status most upstreams share; `INVALID` from anyone vetoes `VALID`.
    fn majority(&self) -> Option<usize> {
        let answers: Vec<(PayloadStatus, usize)> = self
            .order
            .iter()
            .filter_map(|&i| {
                let response = self.success(i)?;
                let status = rpc::inspect_answer(self.method, &response.body).status?;
                Some((status, i))
            })
            .collect();
        let any_invalid = answers.iter().any(|(s, _)| *s == PayloadStatus::Invalid);
        let mut best: Option<(usize, usize)> = None;
        for (status, upstream) in &answers {
            if *status == PayloadStatus::Valid && any_invalid {
                continue;
            }
            let votes = answers.iter().filter(|(s, _)| s == status).count();
            // Ties go to the earlier upstream in preference order.
            if best.is_none_or(|(most, _)| votes > most) {
                best = Some((votes, *upstream));
            }
        }
        match best {
            Some((_, upstream)) => Some(upstream),
            // Nobody gave a readable status: fall back to the primary rule.
            None => self
                .order
                .iter()
                .copied()
                .find(|&i| self.success(i).is_some()),
        }
    }

    /// Every upstream failed: the primary's own HTTP error when it sent one, else -32603.
    fn failure_answer(&mut self, timed_out: bool) -> Answer {
        let primary = self.order.first().copied();
        if let Some(answer) = primary.and_then(|i| self.take_answer(i)) {
            return answer;
        }
        let mut causes = Vec::new();
        let mut any_timeout = timed_out;
        for &index in &self.order {
            let name = self.names.get(index).map_or("?", |n| &**n);
            match self.outcomes.get(index) {
                Some(Outcome::Failed(failure)) => {
                    any_timeout |= failure.is_timeout();
                    causes.push(format!("{name}: {failure}"));
                }
                Some(Outcome::Pending) => causes.push(format!("{name}: no answer in time")),
                Some(Outcome::Answered(response)) => {
                    causes.push(format!("{name}: HTTP {}", response.status));
                }
                Some(Outcome::NotAsked) | None => {}
            }
        }
        let message = if causes.is_empty() {
            "no execution client available".to_owned()
        } else {
            format!("no execution client answered: {}", causes.join("; "))
        };
        let status = if any_timeout { 504 } else { 502 };
        Answer::json(
            status,
            rpc::error_body(&self.id, rpc::code::INTERNAL_ERROR, &message),
        )
    }
}

fn is_success(response: &Response) -> bool {
    (200..300).contains(&response.status)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn names(n: usize) -> Rc<[Box<str>]> {
        (0..n).map(|i| format!("el-{i}").into()).collect()
    }

    fn exchange(policy: AnswerPolicy, method: Method, order: Vec<usize>, n: usize) -> Exchange {
        let reply_to = ReplyTo {
            conn: 0,
            serial: 0,
            seq: 0,
            received_at: Instant::now(),
        };
        Exchange::new(
            reply_to,
            policy,
            b"7",
            method,
            order,
            names(n),
            Instant::now() + Duration::from_secs(8),
        )
    }

    fn ok(body: &str) -> Response {
        Response {
            status: 200,
            content_type: Some("application/json".into()),
            body: body.as_bytes().to_vec(),
        }
    }

    fn status(s: &str) -> Response {
        ok(&format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"status":"{s}","latestValidHash":null,"validationError":null}}}}"#
        ))
    }

    #[test]
    fn primary_answers_waits_for_nobody_else() {
        let mut x = exchange(
            AnswerPolicy::Primary,
            Method::NewPayload(3),
            vec![0, 1, 2],
            3,
        );
        assert_eq!(x.decide(), None);
        x.on_answer(0, ok("a"));
        assert_eq!(x.decide().unwrap().body, b"a");
    }

    #[test]
    fn primary_failed_first_other_success_answers() {
        let mut x = exchange(
            AnswerPolicy::Primary,
            Method::NewPayload(3),
            vec![0, 1, 2],
            3,
        );
        x.on_answer(2, ok("c"));
        assert_eq!(x.decide(), None, "el-1 is still ahead of el-2");
        x.on_failure(0, LegFailure::Unavailable);
        assert_eq!(x.decide(), None);
        x.on_failure(1, LegFailure::Upstream(UpstreamError::Closed));
        assert_eq!(x.decide().unwrap().body, b"c");
    }

    #[test]
    fn primary_all_failed_is_502_naming_causes() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0, 1], 2);
        x.on_failure(0, LegFailure::Upstream(UpstreamError::Closed));
        x.on_failure(1, LegFailure::Dropped);
        let answer = x.decide().unwrap();
        assert_eq!(answer.status, 502);
        let text = String::from_utf8(answer.body).unwrap();
        assert!(text.contains("el-0: connection closed"), "{text}");
        assert!(text.contains("\"id\":7"), "{text}");
        assert!(text.contains("-32603"), "{text}");
    }

    #[test]
    fn primary_timeout_is_504() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0, 1], 2);
        x.on_failure(
            0,
            LegFailure::Upstream(UpstreamError::Timeout(Duration::from_secs(8))),
        );
        assert_eq!(x.decide(), None);
        assert_eq!(x.on_timeout().status, 504);
    }

    #[test]
    fn primary_http_error_is_passed_on_when_nobody_succeeds() {
        let mut x = exchange(AnswerPolicy::Primary, Method::Other, vec![0, 1], 2);
        let refused = Response {
            status: 401,
            content_type: None,
            body: b"no".to_vec(),
        };
        x.on_answer(0, refused);
        assert_eq!(x.decide(), None, "el-1 may still succeed");
        x.on_failure(1, LegFailure::Unavailable);
        assert_eq!(x.decide().unwrap().status, 401);
    }

    #[test]
    fn first_outcome_sticks() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0], 1);
        x.on_failure(0, LegFailure::Unavailable);
        x.on_answer(0, ok("late"));
        assert_eq!(x.decide().unwrap().status, 502);
    }

    #[test]
    fn majority_waits_for_all_and_vetoes_valid() {
        let mut x = exchange(
            AnswerPolicy::Majority,
            Method::NewPayload(3),
            vec![0, 1, 2],
            3,
        );
        x.on_answer(0, status("VALID"));
        x.on_answer(1, status("VALID"));
        assert_eq!(x.decide(), None);
        x.on_answer(2, status("INVALID"));
        let body = String::from_utf8(x.decide().unwrap().body).unwrap();
        assert!(body.contains("INVALID"), "{body}");
    }

    #[test]
    fn majority_most_votes_wins() {
        let mut x = exchange(
            AnswerPolicy::Majority,
            Method::NewPayload(3),
            vec![0, 1, 2],
            3,
        );
        x.on_answer(0, status("SYNCING"));
        x.on_answer(1, status("VALID"));
        x.on_answer(2, status("VALID"));
        let body = String::from_utf8(x.decide().unwrap().body).unwrap();
        assert!(body.contains("\"VALID\""), "{body}");
    }

    #[test]
    fn majority_for_reads_is_primary() {
        let mut x = exchange(AnswerPolicy::Majority, Method::GetPayload(4), vec![0, 1], 2);
        x.on_answer(0, ok("p"));
        assert_eq!(x.decide().unwrap().body, b"p");
    }

    #[test]
    fn concatenate_joins_every_list() {
        let mut x = exchange(
            AnswerPolicy::Concatenate,
            Method::GetClientVersion(1),
            vec![0, 1],
            2,
        );
        x.on_answer(
            0,
            ok(r#"{"jsonrpc":"2.0","id":7,"result":[{"code":"GE"}]}"#),
        );
        assert_eq!(x.decide(), None);
        x.on_answer(
            1,
            ok(r#"{"jsonrpc":"2.0","id":7,"result":[{"code":"NM"}]}"#),
        );
        let body: serde_json::Value = serde_json::from_slice(&x.decide().unwrap().body).unwrap();
        assert_eq!(body["result"].as_array().unwrap().len(), 2);
        assert_eq!(body["id"], 7);
    }
}
