//! One beacon-node request waiting for its answer: collects the outcome of each upstream leg
//! and decides, as soon as it can, which answer the beacon node gets.
//!
//! The rules (README, "Answers"): a final verdict (`VALID`, `INVALID`, `INVALID_BLOCK_HASH`,
//! or the result of a call without a payload status) beats a tentative one (`SYNCING`,
//! `ACCEPTED`, a fork choice with attributes but no `payloadId`); the primary's final answer
//! stands; once the primary failed, answered only tentatively, or has not answered within the
//! hedging grace, the first final answer of another upstream does; at the deadline the best
//! answer in hand goes, and with nothing usable a JSON-RPC error with the request's id in
//! HTTP 200. Under `--ack majority` a strict majority of final verdicts decides, and a
//! `VALID`/`INVALID` disagreement is answered `SYNCING`.
//!
//! Pure: outcomes and `now` in, an [`Answer`] out. It never touches sockets or queues; legs keep
//! travelling after the beacon node has its answer, and their outcomes are then ignored here.

use std::fmt;
use std::rc::Rc;
use std::time::Instant;

use crate::engine::Method;
use crate::http::write::JSON;
use crate::outbound::{Response, UpstreamError};
use crate::rpc::{self, Call, PayloadStatus};

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
    /// The primary's final answer; another's when the primary cannot give one in time.
    Primary,
    /// `engine_getClientVersionV1`: every answer's list, concatenated (the spec's multiplexer rule).
    Concatenate,
    /// `engine_exchangeCapabilities`: the methods every upstream supports.
    Intersect,
    /// The final verdict a strict majority gives; `SYNCING` when final verdicts disagree.
    Majority,
}

/// Why an answer is not one (the upstream is not healthy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakage {
    /// An HTTP status other than 2xx (401, 5xx…).
    Http(u16),
    /// A JSON-RPC server error (`-32000`, `-32603`…): the upstream could not do its job.
    ServerError(i64),
    /// Not valid JSON-RPC: unparsable, empty, no `result` or payload status.
    Malformed,
    /// The answer carries another request's `id`.
    WrongId,
}

impl fmt::Display for Breakage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Breakage::Http(status) => write!(f, "HTTP {status}"),
            Breakage::ServerError(code) => write!(f, "JSON-RPC server error {code}"),
            Breakage::Malformed => f.write_str("not a JSON-RPC answer"),
            Breakage::WrongId => f.write_str("an answer with another request's id"),
        }
    }
}

/// How one upstream's answer counts toward the beacon node's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A final verdict, or the result of a call without a payload status.
    Final,
    /// `SYNCING` or `ACCEPTED`, or a fork choice with attributes that brought no `payloadId`.
    Tentative,
    /// A JSON-RPC error that is the call's answer (unknown payload, invalid params, unsupported
    /// fork, method not found): passed on as is.
    Refusal,
    /// Not an answer at all.
    Broken(Breakage),
}

impl Class {
    /// The upstream answered properly (its health is earned).
    pub fn is_answer(self) -> bool {
        !matches!(self, Class::Broken(_))
    }
}

/// JSON-RPC errors that answer a call rather than report a broken server: Engine API errors
/// (`-38001` unknown payload … `-38005` unsupported fork) and the request's own faults.
fn is_refusal(code: i64) -> bool {
    matches!(code, -38005..=-38001) || code == rpc::code::INVALID_PARAMS || code == -32601
}

/// How `response` to `call` (`None`: a batch) counts.
pub fn classify(call: Option<&Call>, response: &Response) -> Class {
    classify_read(call, response).0
}

/// How `response` to `call` counts, and what was read from it (the default when it was not
/// read: an HTTP error, or a batch), so no one reads the same answer again.
pub fn classify_read(call: Option<&Call>, response: &Response) -> (Class, rpc::AnswerFacts) {
    if !(200..300).contains(&response.status) {
        return (
            Class::Broken(Breakage::Http(response.status)),
            rpc::AnswerFacts::default(),
        );
    }
    let Some(call) = call else {
        return (Class::Final, rpc::AnswerFacts::default());
    };
    let answer = rpc::inspect_answer(call.method, &response.body);
    (class_of(call, &answer), answer)
}

fn class_of(call: &Call, answer: &rpc::AnswerFacts) -> Class {
    if answer.id_digest != Some(rpc::id_digest(&call.id)) {
        return match answer.id_digest {
            Some(_) => Class::Broken(Breakage::WrongId),
            None => Class::Broken(Breakage::Malformed),
        };
    }
    if let Some(code) = answer.error_code {
        return match is_refusal(code) {
            true => Class::Refusal,
            false => Class::Broken(Breakage::ServerError(code)),
        };
    }
    if !answer.has_result {
        return Class::Broken(Breakage::Malformed);
    }
    match call.method {
        Method::NewPayload(_) | Method::ForkchoiceUpdated(_) => match answer.status {
            None => Class::Broken(Breakage::Malformed),
            Some(PayloadStatus::Syncing | PayloadStatus::Accepted) => Class::Tentative,
            Some(PayloadStatus::Valid)
                if call.has_payload_attributes && answer.payload_id.is_none() =>
            {
                Class::Tentative
            }
            Some(_) => Class::Final,
        },
        _ => Class::Final,
    }
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
    /// The answer was no answer (HTTP error, server error, malformed, another id).
    Broken(Breakage),
}

impl fmt::Display for LegFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegFailure::Upstream(e) => e.fmt(f),
            LegFailure::Unavailable => f.write_str("execution client unavailable"),
            LegFailure::Dropped => f.write_str("dropped: execution client queue full"),
            LegFailure::Broken(breakage) => breakage.fmt(f),
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
    /// It answered; the payload status is read only where the policy weighs it (majority).
    Answered(Response, Class, Option<PayloadStatus>),
    /// It failed.
    Failed(LegFailure),
}

/// What an exchange decided, beyond the answer: for logs and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Final verdicts disagreed (`VALID` against `INVALID`) under `--ack majority`.
    pub disagreement: bool,
    /// The answer came from an upstream other than the primary.
    pub hedged: bool,
}

/// A request waiting for its answer.
#[derive(Debug)]
pub struct Exchange {
    /// Where the answer goes.
    pub reply_to: ReplyTo,
    /// How the answer is chosen.
    pub policy: AnswerPolicy,
    /// What the decision was, once made.
    pub decision: Decision,
    id: Box<[u8]>,
    method: Method,
    names: Rc<[Box<str>]>,
    /// Upstream indexes in preference order: the primary first, then configured order.
    order: Vec<usize>,
    outcomes: Vec<Outcome>,
    /// The primary had its grace: another upstream's final answer may go first.
    hedged: bool,
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
            decision: Decision::default(),
            id: id.into(),
            method,
            names,
            order,
            outcomes,
            hedged: false,
        }
    }

    /// The request's raw JSON-RPC id.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// Records an upstream's answer and how it counts.
    pub fn on_answer(&mut self, upstream: usize, response: Response, class: Class) {
        match class {
            Class::Broken(breakage) => self.on_failure(upstream, LegFailure::Broken(breakage)),
            class => {
                // Majority weighs every final verdict at each decision: read each once, here.
                let status = match (class, self.effective_policy()) {
                    (Class::Final, AnswerPolicy::Majority) => {
                        rpc::inspect_answer(self.method, &response.body).status
                    }
                    _ => None,
                };
                self.set(upstream, Outcome::Answered(response, class, status))
            }
        }
    }

    /// Records an upstream's failure.
    pub fn on_failure(&mut self, upstream: usize, failure: LegFailure) {
        self.set(upstream, Outcome::Failed(failure));
    }

    /// The primary's grace is over: another upstream's final answer may go first.
    pub fn hedge(&mut self) {
        self.hedged = true;
    }

    /// The answer, once the outcomes so far decide it. Answers only once: the chosen
    /// response is moved out, not copied.
    pub fn decide(&mut self) -> Option<Answer> {
        let settled = !self.order.iter().any(|&i| self.is_pending(i));
        match self.effective_policy() {
            AnswerPolicy::Concatenate | AnswerPolicy::Intersect if settled => Some(self.conclude()),
            AnswerPolicy::Concatenate | AnswerPolicy::Intersect => None,
            AnswerPolicy::Primary => self.decide_primary(settled),
            AnswerPolicy::Majority => self.decide_majority(settled),
        }
    }

    /// The deadline passed: answer with the best in hand.
    pub fn on_timeout(&mut self) -> Answer {
        self.conclude()
    }

    fn decide_primary(&mut self, settled: bool) -> Option<Answer> {
        let primary = *self.order.first()?;
        if matches!(self.class(primary), Some(Class::Final | Class::Refusal)) {
            return self.take(primary);
        }
        if self.hedged || !self.is_pending(primary) {
            if let Some(other) = self.first(Class::Final) {
                return self.take(other);
            }
        }
        settled.then(|| self.conclude())
    }

    fn decide_majority(&mut self, settled: bool) -> Option<Answer> {
        let finals: Vec<(PayloadStatus, usize)> = self
            .order
            .iter()
            .filter(|&&i| self.class(i) == Some(Class::Final))
            .filter_map(|&i| Some((self.status(i)?, i)))
            .collect();
        let valid = finals.iter().any(|(s, _)| *s == PayloadStatus::Valid);
        let invalid = finals
            .iter()
            .any(|(s, _)| matches!(s, PayloadStatus::Invalid | PayloadStatus::InvalidBlockHash));
        if valid && invalid {
            // An INVALID is permanent in the beacon node: one faulty execution client must not
            // split the operator off the chain. SYNCING is non-committal; it asks again.
            self.decision.disagreement = true;
            return rpc::syncing_body(self.method, &self.id).map(|body| Answer::json(200, body));
        }
        let asked = self.order.len();
        for (status, upstream) in &finals {
            let votes = finals.iter().filter(|(s, _)| s == status).count();
            // Past the grace, the upstreams that answered decide among themselves.
            let settled_count = self.order.iter().filter(|&&i| !self.is_pending(i)).count();
            let electorate = if self.hedged { settled_count } else { asked };
            if 2 * votes > electorate {
                return self.take(*upstream);
            }
        }
        settled.then(|| self.conclude())
    }

    /// The best answer in hand: a final one, the primary's refusal, a tentative one; else a
    /// JSON-RPC error with the request's id, in HTTP 200 (as an execution client answers it).
    fn conclude(&mut self) -> Answer {
        match self.effective_policy() {
            AnswerPolicy::Concatenate => {
                let bodies = self.final_bodies();
                if let Some(body) = rpc::concat_results(&self.id, &bodies) {
                    return Answer::json(200, body);
                }
            }
            AnswerPolicy::Intersect => {
                let bodies = self.final_bodies();
                if let Some(body) = rpc::intersect_capabilities(&self.id, &bodies) {
                    return Answer::json(200, body);
                }
            }
            AnswerPolicy::Primary | AnswerPolicy::Majority => {}
        }
        let chosen = self
            .first(Class::Final)
            .or_else(|| self.first(Class::Refusal))
            .or_else(|| self.first(Class::Tentative));
        if let Some(answer) = chosen.and_then(|i| self.take(i)) {
            return answer;
        }
        self.failure_answer()
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

    fn class(&self, upstream: usize) -> Option<Class> {
        match self.outcomes.get(upstream) {
            Some(Outcome::Answered(_, class, _)) => Some(*class),
            _ => None,
        }
    }

    fn status(&self, upstream: usize) -> Option<PayloadStatus> {
        match self.outcomes.get(upstream) {
            Some(Outcome::Answered(_, _, status)) => *status,
            _ => None,
        }
    }

    /// The first upstream in preference order whose answer is of `class`.
    fn first(&self, class: Class) -> Option<usize> {
        self.order
            .iter()
            .copied()
            .find(|&i| self.class(i) == Some(class))
    }

    /// Moves an upstream's answer out, leaving it counted as answered with an empty body.
    fn take(&mut self, upstream: usize) -> Option<Answer> {
        let primary = self.order.first().copied();
        let Some(Outcome::Answered(response, ..)) = self.outcomes.get_mut(upstream) else {
            return None;
        };
        self.decision.hedged = Some(upstream) != primary;
        Some(Answer {
            status: response.status,
            content_type: response.content_type.take().unwrap_or_else(|| JSON.into()),
            body: std::mem::take(&mut response.body),
        })
    }

    fn final_bodies(&self) -> Vec<&[u8]> {
        self.order
            .iter()
            .filter_map(|&i| match self.outcomes.get(i) {
                Some(Outcome::Answered(response, Class::Final, _)) => {
                    Some(response.body.as_slice())
                }
                _ => None,
            })
            .collect()
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

    /// No upstream answered usefully: `-32603` naming each cause, in HTTP 200 as execution
    /// clients answer errors (a non-2xx makes Teku mark the execution layer offline).
    fn failure_answer(&mut self) -> Answer {
        let mut causes = Vec::new();
        for &index in &self.order {
            let name = self.names.get(index).map_or("?", |n| &**n);
            match self.outcomes.get(index) {
                Some(Outcome::Failed(failure)) => causes.push(format!("{name}: {failure}")),
                Some(Outcome::Pending) => causes.push(format!("{name}: no answer in time")),
                Some(Outcome::Answered(..) | Outcome::NotAsked) | None => {}
            }
        }
        let message = if causes.is_empty() {
            "no execution client available".to_owned()
        } else {
            format!("no execution client answered: {}", causes.join("; "))
        };
        Answer::json(
            200,
            rpc::error_body(&self.id, rpc::code::INTERNAL_ERROR, &message),
        )
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn names(n: usize) -> Rc<[Box<str>]> {
        (0..n).map(|i| format!("el-{i}").into()).collect()
    }

    fn exchange(policy: AnswerPolicy, method: Method, order: Vec<usize>, n: usize) -> Exchange {
        let reply_to = ReplyTo::new(0, 0, 0, Instant::now());
        Exchange::new(reply_to, policy, b"7", method, order, names(n))
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

    fn text(answer: Answer) -> String {
        String::from_utf8(answer.body).unwrap()
    }

    #[test]
    fn primary_final_answers_waits_for_nobody_else() {
        let mut x = exchange(
            AnswerPolicy::Primary,
            Method::NewPayload(3),
            vec![0, 1, 2],
            3,
        );
        assert_eq!(x.decide(), None);
        x.on_answer(0, status("VALID"), Class::Final);
        assert!(text(x.decide().unwrap()).contains("VALID"));
        assert!(!x.decision.hedged);
    }

    #[test]
    fn primary_syncing_waits_for_another_final_verdict() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0, 1], 2);
        x.on_answer(0, status("SYNCING"), Class::Tentative);
        assert_eq!(x.decide(), None, "el-1 may know better");
        x.on_answer(1, status("VALID"), Class::Final);
        let answer = x.decide().unwrap();
        assert!(text(answer).contains("\"VALID\""));
        assert!(x.decision.hedged);
    }

    #[test]
    fn primary_syncing_stands_when_nobody_knows_better() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0, 1], 2);
        x.on_answer(0, status("SYNCING"), Class::Tentative);
        x.on_failure(1, LegFailure::Unavailable);
        assert!(text(x.decide().unwrap()).contains("SYNCING"));
    }

    #[test]
    fn hedged_primary_yields_to_the_first_other_final_verdict() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0, 1], 2);
        x.on_answer(1, status("VALID"), Class::Final);
        assert_eq!(x.decide(), None, "the primary still has its grace");
        x.hedge();
        assert!(text(x.decide().unwrap()).contains("VALID"));
    }

    #[test]
    fn broken_primary_answer_counts_as_a_failure() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0, 1], 2);
        let error = ok(r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"x"}}"#);
        x.on_answer(0, error, Class::Broken(Breakage::ServerError(-32000)));
        assert_eq!(x.decide(), None);
        x.on_answer(1, status("VALID"), Class::Final);
        assert!(text(x.decide().unwrap()).contains("VALID"));
    }

    #[test]
    fn everyone_failed_is_an_error_in_http_200_naming_causes() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0, 1], 2);
        x.on_failure(0, LegFailure::Upstream(UpstreamError::Closed));
        x.on_failure(1, LegFailure::Dropped);
        let answer = x.decide().unwrap();
        assert_eq!(answer.status, 200);
        let text = text(answer);
        assert!(text.contains("el-0: connection closed"), "{text}");
        assert!(text.contains("\"id\":7"), "{text}");
        assert!(text.contains("-32603"), "{text}");
    }

    #[test]
    fn timeout_answers_the_best_in_hand() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0, 1], 2);
        x.on_answer(1, status("SYNCING"), Class::Tentative);
        assert_eq!(x.decide(), None);
        assert!(text(x.on_timeout()).contains("SYNCING"));
    }

    #[test]
    fn refusal_is_passed_on() {
        let mut x = exchange(AnswerPolicy::Primary, Method::GetPayload(4), vec![0, 1], 2);
        let unknown =
            ok(r#"{"jsonrpc":"2.0","id":7,"error":{"code":-38001,"message":"Unknown payload"}}"#);
        x.on_answer(0, unknown, Class::Refusal);
        assert!(text(x.decide().unwrap()).contains("-38001"));
    }

    #[test]
    fn first_outcome_sticks() {
        let mut x = exchange(AnswerPolicy::Primary, Method::NewPayload(3), vec![0], 1);
        x.on_failure(0, LegFailure::Unavailable);
        x.on_answer(0, status("VALID"), Class::Final);
        assert!(text(x.decide().unwrap()).contains("-32603"));
    }

    #[test]
    fn majority_decides_as_soon_as_a_strict_majority_exists() {
        let mut x = exchange(
            AnswerPolicy::Majority,
            Method::NewPayload(3),
            vec![0, 1, 2],
            3,
        );
        x.on_answer(0, status("VALID"), Class::Final);
        assert_eq!(x.decide(), None);
        x.on_answer(1, status("VALID"), Class::Final);
        assert!(text(x.decide().unwrap()).contains("\"VALID\""));
    }

    #[test]
    fn majority_disagreement_is_syncing() {
        let mut x = exchange(
            AnswerPolicy::Majority,
            Method::NewPayload(3),
            vec![0, 1, 2],
            3,
        );
        x.on_answer(0, status("VALID"), Class::Final);
        x.on_answer(1, status("INVALID"), Class::Final);
        assert!(text(x.decide().unwrap()).contains("SYNCING"));
        assert!(x.decision.disagreement);
    }

    #[test]
    fn majority_after_grace_counts_who_answered() {
        let mut x = exchange(
            AnswerPolicy::Majority,
            Method::NewPayload(3),
            vec![0, 1, 2],
            3,
        );
        x.on_answer(1, status("VALID"), Class::Final);
        assert_eq!(x.decide(), None);
        x.hedge();
        assert!(text(x.decide().unwrap()).contains("\"VALID\""));
    }

    #[test]
    fn majority_for_reads_is_primary() {
        let mut x = exchange(AnswerPolicy::Majority, Method::GetPayload(4), vec![0, 1], 2);
        x.on_answer(0, ok("p"), Class::Final);
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
        let ge = ok(r#"{"jsonrpc":"2.0","id":7,"result":[{"code":"GE"}]}"#);
        x.on_answer(0, ge, Class::Final);
        assert_eq!(x.decide(), None);
        let nm = ok(r#"{"jsonrpc":"2.0","id":7,"result":[{"code":"NM"}]}"#);
        x.on_answer(1, nm, Class::Final);
        let body: serde_json::Value = serde_json::from_slice(&x.decide().unwrap().body).unwrap();
        assert_eq!(body["result"].as_array().unwrap().len(), 2);
        assert_eq!(body["id"], 7);
    }

    #[test]
    fn concatenate_at_the_deadline_uses_the_answers_in_hand() {
        let mut x = exchange(
            AnswerPolicy::Concatenate,
            Method::GetClientVersion(1),
            vec![0, 1],
            2,
        );
        let ge = ok(r#"{"jsonrpc":"2.0","id":7,"result":[{"code":"GE"}]}"#);
        x.on_answer(0, ge, Class::Final);
        let body: serde_json::Value = serde_json::from_slice(&x.on_timeout().body).unwrap();
        assert_eq!(body["result"].as_array().unwrap().len(), 1);
    }

    fn call(method: Method, attributes: bool) -> Call {
        Call {
            id: b"7".to_vec().into(),
            method,
            method_name: "m".into(),
            timestamp: None,
            slot: None,
            block_number: None,
            block_hash: None,
            head_block_hash: None,
            has_payload_attributes: attributes,
            payload_id: None,
            params_digest: 0,
        }
    }

    #[test]
    fn classify_reads_status_id_and_errors() {
        let np = call(Method::NewPayload(3), false);
        assert_eq!(classify(Some(&np), &status("VALID")), Class::Final);
        assert_eq!(classify(Some(&np), &status("SYNCING")), Class::Tentative);
        let other_id = ok(r#"{"jsonrpc":"2.0","id":8,"result":{"status":"VALID"}}"#);
        assert_eq!(
            classify(Some(&np), &other_id),
            Class::Broken(Breakage::WrongId)
        );
        assert_eq!(
            classify(Some(&np), &ok("")),
            Class::Broken(Breakage::Malformed)
        );
        let server = ok(r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"x"}}"#);
        assert_eq!(
            classify(Some(&np), &server),
            Class::Broken(Breakage::ServerError(-32000))
        );
        let fork = ok(r#"{"jsonrpc":"2.0","id":7,"error":{"code":-38005,"message":"x"}}"#);
        assert_eq!(classify(Some(&np), &fork), Class::Refusal);
        let unavailable = Response {
            status: 503,
            content_type: None,
            body: b"{}".to_vec(),
        };
        assert_eq!(
            classify(Some(&np), &unavailable),
            Class::Broken(Breakage::Http(503))
        );
    }

    #[test]
    fn classify_fork_choice_with_attributes_needs_a_payload_id() {
        let fcu = call(Method::ForkchoiceUpdated(3), true);
        let no_id = ok(
            r#"{"jsonrpc":"2.0","id":7,"result":{"payloadStatus":{"status":"VALID"},"payloadId":null}}"#,
        );
        assert_eq!(classify(Some(&fcu), &no_id), Class::Tentative);
        let with_id = ok(
            r#"{"jsonrpc":"2.0","id":7,"result":{"payloadStatus":{"status":"VALID"},"payloadId":"0x0102030405060708"}}"#,
        );
        assert_eq!(classify(Some(&fcu), &with_id), Class::Final);
    }
}
