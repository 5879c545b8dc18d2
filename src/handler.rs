//! What to do with one complete request from a beacon node: the JWT verdict (reached by
//! [`crate::inbound`] when the head arrived), operator endpoints, JSON-RPC inspection, identity,
//! beacon tracking and routing, in that order.
//!
//! Returns an [`Action`] and touches no socket; the event loop applies it (answers, queues the
//! legs, opens the exchange). Every refusal is a well-formed answer carrying the request's `id`
//! (`null` when its body was never read). Refusals a peer can repeat at will are logged through
//! [`crate::log_limit`].

use std::net::SocketAddr;
use std::rc::Rc;

use log::{debug, trace};

use crate::config::Config;
use crate::engine::{Lane, Method};
use crate::event_log;
use crate::exchange::Answer;
use crate::http::head::RequestMethod;
use crate::identity::{self, Evidence};
use crate::inbound::{Auth, ParsedRequest};
use crate::jwt::VerifyError;
use crate::log_limit::LogLimiter;
use crate::metrics::{Metrics, Refusal};
use crate::request::Request;
use crate::router::{Plan, Route, Router, UpstreamSet, UpstreamView};
use crate::rpc::{self, Hash32, InspectError, Inspected};
use crate::time::Clock;

/// The log topic of slot claims beyond the wall clock (see [`crate::log_limit`]).
const FUTURE_SLOT_TOPIC: &str = "slot claims beyond the wall clock";

/// Longest chain of sync-proxies a request may pass: deployments chain two or three; a longer
/// trail means a loop through proxies that restarted (new names) or a misconfiguration.
pub const MAX_PROXY_HOPS: usize = 8;

/// Operator endpoints, rendered by the event loop from its whole state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /` and `GET /health`: 200 when an execution client is reachable, else 503.
    Health,
    /// `GET /ready`: 200 when a beacon node is followed and an execution client is up, else
    /// 503 with the reasons.
    Ready,
    /// `GET /status`: JSON of every beacon node and upstream.
    Status,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /ui`: the operator page.
    Ui,
}

/// What the core must do with a request.
#[derive(Debug)]
pub enum Action {
    /// Answer at once; nothing is forwarded.
    Answer(Answer),
    /// Render an operator endpoint.
    Endpoint(Endpoint),
    /// The proxy answers at once with `answer`; `targets` still get the request.
    Local {
        /// The request, shared by all legs.
        request: Rc<Request>,
        /// The proxy's own answer.
        answer: Answer,
        /// Upstreams that get the request anyway.
        targets: UpstreamSet,
    },
    /// Send the request as `plan` says and answer with what the upstreams answer.
    Exchange {
        /// The request, shared by all legs.
        request: Rc<Request>,
        /// Who gets it, whose answers count and how.
        plan: Plan,
    },
    /// As `Exchange`, then restore the followed head: a proposer's build on a node that is not
    /// followed (`Route::Build`).
    Build {
        /// The request, shared by all legs.
        request: Rc<Request>,
        /// Who gets it, whose answers count and how.
        plan: Plan,
    },
    /// Hold the request briefly for the followed node to name `head` (`Route::Hold`).
    Hold {
        /// The request.
        request: Rc<Request>,
        /// The head it names.
        head: Hash32,
    },
}

/// What a handler may read and update.
pub struct Context<'a> {
    /// Configuration.
    pub config: &'a Config,
    /// Forwarding table and beacon tracking.
    pub router: &'a mut Router,
    /// Counters.
    pub metrics: &'a mut Metrics,
    /// Which refusals are logged (a peer can trigger them at will).
    pub log_limit: &'a mut LogLimiter,
    /// The upstreams as routing sees them.
    pub upstreams: &'a [UpstreamView],
    /// The serial number the request gets, if it is forwarded.
    pub serial: u64,
}

/// Decides what to do with `parsed`, received from `peer`.
pub fn handle(
    ctx: &mut Context<'_>,
    parsed: ParsedRequest,
    peer: SocketAddr,
    clock: Clock,
) -> Action {
    // The token was verified when the head arrived (`Inbound`); a refused request comes
    // without its body, whatever its method.
    if let Auth::Refused(error) = parsed.auth {
        return unauthorized(ctx, error, &parsed.body, peer, clock);
    }
    match parsed.head.method {
        RequestMethod::Get | RequestMethod::Head => endpoint(ctx, &parsed.head.path),
        RequestMethod::Post => rpc_request(ctx, parsed, peer, clock),
        RequestMethod::Other => {
            ctx.metrics.on_refusal(Refusal::NotFound);
            refuse(
                405,
                b"null",
                rpc::code::INVALID_REQUEST,
                "only POST (JSON-RPC) and GET are served",
            )
        }
    }
}

fn endpoint(ctx: &mut Context<'_>, path: &str) -> Action {
    match path.split('?').next().unwrap_or("") {
        "/" | "/health" => Action::Endpoint(Endpoint::Health),
        "/ready" => Action::Endpoint(Endpoint::Ready),
        "/status" => Action::Endpoint(Endpoint::Status),
        "/metrics" => Action::Endpoint(Endpoint::Metrics),
        "/ui" | "/ui/" => Action::Endpoint(Endpoint::Ui),
        _ => {
            ctx.metrics.on_refusal(Refusal::NotFound);
            refuse(
                404,
                b"null",
                rpc::code::INVALID_REQUEST,
                "not found: GET serves /, /health, /ready, /status, /metrics and /ui; JSON-RPC is POST",
            )
        }
    }
}

fn rpc_request(
    ctx: &mut Context<'_>,
    parsed: ParsedRequest,
    peer: SocketAddr,
    clock: Clock,
) -> Action {
    let ParsedRequest {
        head, body, auth, ..
    } = parsed;
    let claims = match auth {
        Auth::Verified(claims) => Some(claims),
        // `Inbound` checks every POST when a secret is set; an unchecked one is refused all
        // the same rather than trusted.
        Auth::Open if ctx.config.jwt_secret.is_some() => {
            return unauthorized(ctx, VerifyError::Missing, &body, peer, clock);
        }
        Auth::Open => None,
        Auth::Refused(error) => return unauthorized(ctx, error, &body, peer, clock),
    };
    let inspected = rpc::inspect(&body);
    // Malformed JSON may still show its id before the damage.
    let recovered = match &inspected {
        Err(InspectError::Parse) => rpc::recover_id(&body),
        _ => None,
    };
    let id: &[u8] = match &inspected {
        Ok(Inspected::Call(call)) => &call.id,
        Ok(Inspected::Batch { .. }) => b"null",
        Err(error) => error.id().or(recovered.as_deref()).unwrap_or(b"null"),
    };
    if let Some(via) = &head.via {
        if is_loop(via, &ctx.config.instance) {
            ctx.metrics.on_refusal(Refusal::Loop);
            if ctx
                .log_limit
                .admit(Refusal::Loop.label(), peer.ip(), clock.now)
            {
                event_log::forwarding_loop(peer, via);
            }
            return refuse(
                508,
                id,
                rpc::code::INTERNAL_ERROR,
                "forwarding loop: this request already passed this sync-proxy",
            );
        }
    }
    let call = match inspected {
        Ok(Inspected::Call(call)) => Some(call),
        Ok(Inspected::Batch { .. }) if changes_state(&body) => {
            ctx.metrics.on_refusal(Refusal::InvalidRequest);
            return refuse(
                200,
                b"null",
                rpc::code::INVALID_REQUEST,
                "a batch may not carry state-changing engine calls (newPayload, forkchoiceUpdated, builder_*): send them one by one, in order",
            );
        }
        Ok(Inspected::Batch { .. }) => None,
        Err(error) => {
            let id = error.id().or(recovered.as_deref()).unwrap_or(b"null");
            return refuse_inspection(ctx, &error, id, peer);
        }
    };
    let evidence = Evidence {
        jwt_id: claims.as_ref().and_then(|c| c.id.as_deref()),
        path: &head.path,
        forwarded_for: head.forwarded_for.as_deref(),
        real_ip: head.real_ip.as_deref(),
    };
    let beacon: Rc<str> =
        identity::identify(&evidence, peer.ip(), &ctx.config.trusted_proxies).into();
    ctx.metrics.on_request(call.as_ref().map(|c| c.method));
    let observation = ctx
        .router
        .observe(&beacon, call.as_ref(), clock.now, clock.unix_secs);
    if let Some((claimed, wall_slot)) = observation.ignored_slot {
        ctx.metrics.ignored_slot_claims += 1;
        if ctx.log_limit.admit(FUTURE_SLOT_TOPIC, peer.ip(), clock.now) {
            event_log::ignored_slot(&beacon, claimed, wall_slot);
        }
    }
    if let Some(switch) = observation.switch {
        event_log::switch(&switch);
    }
    let route = ctx.router.route(&beacon, call.as_ref(), ctx.upstreams);
    let method = call.as_ref().map_or(Method::Other, |c| c.method);
    let request = Rc::new(Request {
        body,
        call,
        method,
        authorization: head.authorization,
        beacon,
        via: head.via,
        received_at: clock.now,
        serial: ctx.serial,
    });
    match route {
        Route::Local {
            body,
            targets,
            reason,
        } => {
            ctx.metrics.local_answers += 1;
            debug!(
                "{} from {}: answered by the proxy ({reason})",
                request.describe(),
                request.beacon
            );
            Action::Local {
                request,
                answer: Answer::json(200, body),
                targets,
            }
        }
        Route::Build(plan) => {
            debug!(
                "{} from {}: a build on a validated head; the followed head is restored after it",
                request.describe(),
                request.beacon
            );
            Action::Build { request, plan }
        }
        Route::Hold { head } => {
            debug!(
                "{} from {}: waiting for the followed beacon node to name the same head",
                request.describe(),
                request.beacon
            );
            Action::Hold { request, head }
        }
        Route::Exchange(plan) => {
            trace!(
                "{} from {}: to {:?}, answer by {:?} of {:?}",
                request.describe(),
                request.beacon,
                plan.targets,
                plan.policy,
                plan.order
            );
            Action::Exchange { request, plan }
        }
    }
}

/// Whether a batch carries a state-changing call. Such calls must reach every execution client
/// in order, one at a time, and answer from the best of them; a batch goes as one unit to the
/// primary only. No consensus client batches them, so a batch that does is refused. Batches
/// are rare and small: a full parse here costs nothing on the hot path.
fn changes_state(body: &[u8]) -> bool {
    let Ok(calls) = serde_json::from_slice::<Vec<serde_json::Value>>(body) else {
        return false;
    };
    calls.iter().any(|call| {
        let name = call.get("method").and_then(serde_json::Value::as_str);
        name.is_some_and(|name| Method::classify(name).lane() == Lane::State)
    })
}

/// Whether a `Via` trail shows this proxy already, or more hops than any sane chain has.
fn is_loop(via: &str, instance: &str) -> bool {
    let mut hops = 0;
    for hop in via.split(',') {
        let name = hop.split_whitespace().nth(1).unwrap_or("");
        if name == instance {
            return true;
        }
        hops += usize::from(name.starts_with("sync-proxy-"));
    }
    hops >= MAX_PROXY_HOPS
}

fn refuse_inspection(
    ctx: &mut Context<'_>,
    error: &InspectError,
    id: &[u8],
    peer: SocketAddr,
) -> Action {
    let refusal = match error {
        InspectError::Parse => Refusal::Parse,
        InspectError::InvalidRequest { .. } => Refusal::InvalidRequest,
        InspectError::InvalidParams { .. } => Refusal::InvalidParams,
    };
    ctx.metrics.on_refusal(refusal);
    event_log::refused(log::Level::Debug, peer, error);
    refuse(400, id, error.code(), &error.to_string())
}

/// `401` for a request without a valid token. Its body was read only when it came whole with
/// the head; then its id is echoed, else the id is `null`.
fn unauthorized(
    ctx: &mut Context<'_>,
    error: VerifyError,
    body: &[u8],
    peer: SocketAddr,
    clock: Clock,
) -> Action {
    ctx.metrics.on_refusal(Refusal::Unauthorized);
    if ctx
        .log_limit
        .admit(Refusal::Unauthorized.label(), peer.ip(), clock.now)
    {
        event_log::refused(log::Level::Warn, peer, &error);
    }
    let id = match rpc::inspect(body) {
        Ok(Inspected::Call(call)) => Some(call.id),
        Ok(Inspected::Batch { .. }) => None,
        Err(InspectError::Parse) => rpc::recover_id(body),
        Err(error) => error.id().map(Box::from),
    };
    refuse(
        401,
        id.as_deref().unwrap_or(b"null"),
        rpc::code::INVALID_REQUEST,
        &format!("unauthorized: {error}"),
    )
}

fn refuse(status: u16, id: &[u8], code: i64, message: &str) -> Action {
    Action::Answer(Answer::json(status, rpc::error_body(id, code, message)))
}
