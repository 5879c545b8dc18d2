//! The Engine API method table: which kind of call a JSON-RPC method name is, which delivery
//! lane it travels on and how long an execution client may take to answer it.
//!
//! Classification is by prefix and version suffix only (`engine_newPayloadV<n>` for any `n`),
//! so a new fork's method versions need no release. This module does not read request bodies
//! (see `crate::rpc`) and does not decide routing (the policy does).

use std::time::Duration;

/// The kind of a JSON-RPC method, as far as the proxy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `engine_newPayloadV<n>`.
    NewPayload(u16),
    /// `engine_forkchoiceUpdatedV<n>`.
    ForkchoiceUpdated(u16),
    /// `engine_getPayloadV<n>`.
    GetPayload(u16),
    /// `engine_getClientVersionV<n>`.
    GetClientVersion(u16),
    /// `engine_exchangeCapabilities` (the one engine method without a version suffix).
    ExchangeCapabilities,
    /// `engine_getPayloadBodiesByHashV<n>` and `engine_getPayloadBodiesByRangeV<n>`.
    GetPayloadBodies,
    /// `engine_getBlobsV<n>`.
    GetBlobs,
    /// Any other `engine_*` method, including malformed versions such as `engine_newPayloadV0`.
    OtherEngine,
    /// `builder_payloadAttributes`, sent by the Flashbots prysm fork.
    BuilderPayloadAttributes,
    /// Any other `builder_*` method.
    OtherBuilder,
    /// Anything outside the `engine_` and `builder_` namespaces (`eth_*`, `net_*`, `web3_*`…).
    Other,
}

/// How a call is delivered to an execution client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// State-changing calls: delivered in the order received, one at a time per client.
    State,
    /// Reads: may use their own connection so they never wait behind a slow state call.
    Read,
}

impl Lane {
    /// Connections a lane may have per upstream. State-changing calls go one at a time, in
    /// order (the Engine API's rule), so one. Reads get a small pool: one beacon node's slow
    /// `getPayloadBodiesByRange` or `eth_getLogs` must not hold another's `getPayload` (a
    /// proposal) behind it, and a pool serves any mix of slow reads without deciding which
    /// ones are critical; three bounds what a flood of reads can open.
    pub fn max_links(self) -> usize {
        match self {
            Lane::State => 1,
            Lane::Read => 3,
        }
    }
}

impl Method {
    /// Classifies a method name; unknown or malformed engine versions become `OtherEngine`.
    pub fn classify(name: &str) -> Method {
        if let Some(rest) = name.strip_prefix("engine_") {
            return classify_engine(rest);
        }
        if let Some(rest) = name.strip_prefix("builder_") {
            return match rest {
                "payloadAttributes" => Method::BuilderPayloadAttributes,
                _ => Method::OtherBuilder,
            };
        }
        Method::Other
    }

    /// The delivery lane: payloads, fork choice and builder calls change state, the rest reads.
    pub fn lane(self) -> Lane {
        match self {
            Method::NewPayload(_)
            | Method::ForkchoiceUpdated(_)
            | Method::BuilderPayloadAttributes
            | Method::OtherBuilder => Lane::State,
            Method::GetPayload(_)
            | Method::GetClientVersion(_)
            | Method::ExchangeCapabilities
            | Method::GetPayloadBodies
            | Method::GetBlobs
            | Method::OtherEngine
            | Method::Other => Lane::Read,
        }
    }

    /// How long an execution client may take to answer, per the Engine API specification.
    ///
    /// Sources (ethereum/execution-apis, `src/engine/`): `paris.md` gives `newPayloadV1` and
    /// `forkchoiceUpdatedV1` 8 s and `getPayloadV1` 1 s; `shanghai.md` gives
    /// `getPayloadBodiesBy{Hash,Range}V1` 10 s; `cancun.md`, `prague.md`, `osaka.md` and
    /// `amsterdam.md` keep 8 s for `forkchoiceUpdatedV3`/`V4` and 1 s for `getPayloadV3`–`V6`
    /// and `getBlobsV1`/`V2`. For `newPayload` from V5 on the product design asks for 6 s
    /// (the copy of `amsterdam.md` we read declares no timeout for `newPayloadV5`, which would
    /// inherit 8 s, while `bogota.md` gives `newPayloadV6` 6 s); a shorter wait only makes the
    /// fallback to another execution client come sooner. `common.md` gives `exchangeCapabilities` 1 s and `identification.md`
    /// `getClientVersionV1` 1 s. Everything else (builder calls, `eth_*`, unknown engine
    /// methods) gets 8 s, the longest state-call timeout.
    pub fn default_timeout(self) -> Duration {
        match self {
            Method::NewPayload(version) if version >= FIRST_FAST_NEW_PAYLOAD_VERSION => {
                Duration::from_secs(6)
            }
            Method::NewPayload(_) | Method::ForkchoiceUpdated(_) => Duration::from_secs(8),
            // The spec gives 1 s; Lighthouse and Teku wait 2 s, so an execution client may too.
            Method::GetPayload(_) | Method::GetBlobs => Duration::from_secs(2),
            Method::ExchangeCapabilities | Method::GetClientVersion(_) => Duration::from_secs(1),
            Method::GetPayloadBodies => Duration::from_secs(10),
            Method::OtherEngine
            | Method::BuilderPayloadAttributes
            | Method::OtherBuilder
            | Method::Other => Duration::from_secs(8),
        }
    }

    /// How long the most patient consensus client waits for this call, less a margin for the
    /// answer's trip (ARCHITECTURE.md, "What consensus clients do with an answer"): Lighthouse, Teku, Prysm and Nimbus wait 8 s for payloads
    /// and fork choices, Lighthouse and Teku 2 s for `getPayload` and `getBlobs`, everyone 1 s
    /// for `exchangeCapabilities` and `getClientVersion` (answered with the answers in hand).
    pub fn answer_deadline(self) -> Duration {
        match self {
            Method::NewPayload(_) | Method::ForkchoiceUpdated(_) => Duration::from_millis(7_500),
            Method::GetPayload(_) | Method::GetBlobs => Duration::from_millis(1_900),
            Method::ExchangeCapabilities | Method::GetClientVersion(_) => {
                Duration::from_millis(800)
            }
            _ => self.default_timeout(),
        }
    }

    /// Whether the method is in the `engine_` namespace.
    pub fn is_engine(self) -> bool {
        match self {
            Method::NewPayload(_)
            | Method::ForkchoiceUpdated(_)
            | Method::GetPayload(_)
            | Method::GetClientVersion(_)
            | Method::ExchangeCapabilities
            | Method::GetPayloadBodies
            | Method::GetBlobs
            | Method::OtherEngine => true,
            Method::BuilderPayloadAttributes | Method::OtherBuilder | Method::Other => false,
        }
    }
}

/// The first `engine_newPayload` version whose timeout is 6 s instead of 8 s (the design card's
/// "newPayloadV5+ 6 s"; see [`Method::default_timeout`]).
const FIRST_FAST_NEW_PAYLOAD_VERSION: u16 = 5;

/// Builds a `Method` from a parsed version.
type MakeMethod = fn(u16) -> Method;

/// Classifies the part of an `engine_` method name after the namespace.
fn classify_engine(rest: &str) -> Method {
    if rest == "exchangeCapabilities" {
        return Method::ExchangeCapabilities;
    }
    let versioned: [(&str, MakeMethod); 7] = [
        ("newPayloadV", Method::NewPayload),
        ("forkchoiceUpdatedV", Method::ForkchoiceUpdated),
        ("getPayloadV", Method::GetPayload),
        ("getClientVersionV", Method::GetClientVersion),
        ("getPayloadBodiesByHashV", |_| Method::GetPayloadBodies),
        ("getPayloadBodiesByRangeV", |_| Method::GetPayloadBodies),
        ("getBlobsV", |_| Method::GetBlobs),
    ];
    for (prefix, make) in versioned {
        if let Some(digits) = rest.strip_prefix(prefix) {
            return match version(digits) {
                Some(version) => make(version),
                None => Method::OtherEngine,
            };
        }
    }
    Method::OtherEngine
}

/// Parses a method version: decimal digits only, no sign, no leading zero, 1 to `u16::MAX`.
///
/// Versions start at 1 in the specification, and `V01` or `V+1` are not names any execution
/// client answers to, so they are not treated as the method they resemble.
fn version(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_versioned_engine_methods_carry_version() {
        assert_eq!(
            Method::classify("engine_newPayloadV1"),
            Method::NewPayload(1)
        );
        assert_eq!(
            Method::classify("engine_newPayloadV4"),
            Method::NewPayload(4)
        );
        assert_eq!(
            Method::classify("engine_newPayloadV99"),
            Method::NewPayload(99)
        );
        assert_eq!(
            Method::classify("engine_forkchoiceUpdatedV3"),
            Method::ForkchoiceUpdated(3)
        );
        assert_eq!(
            Method::classify("engine_getPayloadV5"),
            Method::GetPayload(5)
        );
        assert_eq!(
            Method::classify("engine_getClientVersionV1"),
            Method::GetClientVersion(1)
        );
        assert_eq!(
            Method::classify("engine_newPayloadV65535"),
            Method::NewPayload(u16::MAX)
        );
    }

    #[test]
    fn classify_unversioned_families_ignore_version() {
        assert_eq!(
            Method::classify("engine_exchangeCapabilities"),
            Method::ExchangeCapabilities
        );
        assert_eq!(
            Method::classify("engine_getPayloadBodiesByHashV1"),
            Method::GetPayloadBodies
        );
        assert_eq!(
            Method::classify("engine_getPayloadBodiesByRangeV2"),
            Method::GetPayloadBodies
        );
        assert_eq!(Method::classify("engine_getBlobsV1"), Method::GetBlobs);
        assert_eq!(Method::classify("engine_getBlobsV3"), Method::GetBlobs);
    }

    #[test]
    fn classify_malformed_versions_become_other_engine() {
        for name in [
            "engine_newPayloadV",
            "engine_newPayloadV0",
            "engine_newPayloadV01",
            "engine_newPayloadV4x",
            "engine_newPayloadV+4",
            "engine_newPayloadV-4",
            "engine_newPayloadV 4",
            "engine_newPayloadV65536",
            "engine_newPayloadV99999999999999999999999999",
            "engine_newPayloadv4",
            "engine_newPayload",
            "engine_forkchoiceUpdatedV",
            "engine_getBlobsV",
            "engine_getBlobsV0",
            "engine_getPayloadBodiesByHashV1x",
            "engine_exchangeCapabilitiesV1",
            "engine_exchangeTransitionConfigurationV1",
            "engine_newPayloadV٣",
            "engine_",
        ] {
            assert_eq!(Method::classify(name), Method::OtherEngine, "{name}");
        }
    }

    #[test]
    fn classify_builder_and_other_namespaces() {
        assert_eq!(
            Method::classify("builder_payloadAttributes"),
            Method::BuilderPayloadAttributes
        );
        assert_eq!(
            Method::classify("builder_payloadAttributesV2"),
            Method::OtherBuilder
        );
        assert_eq!(Method::classify("builder_"), Method::OtherBuilder);
        for name in [
            "eth_syncing",
            "net_version",
            "web3_clientVersion",
            "",
            "Engine_newPayloadV1",
        ] {
            assert_eq!(Method::classify(name), Method::Other, "{name}");
        }
    }

    #[test]
    fn lane_state_calls_are_payloads_fork_choice_and_builder() {
        assert_eq!(Method::NewPayload(3).lane(), Lane::State);
        assert_eq!(Method::ForkchoiceUpdated(1).lane(), Lane::State);
        assert_eq!(Method::BuilderPayloadAttributes.lane(), Lane::State);
        assert_eq!(Method::OtherBuilder.lane(), Lane::State);
        for method in [
            Method::GetPayload(4),
            Method::GetClientVersion(1),
            Method::ExchangeCapabilities,
            Method::GetPayloadBodies,
            Method::GetBlobs,
            Method::OtherEngine,
            Method::Other,
        ] {
            assert_eq!(method.lane(), Lane::Read, "{method:?}");
        }
    }

    #[test]
    fn default_timeout_matches_specification() {
        let secs = |method: Method| method.default_timeout().as_secs();
        assert_eq!(secs(Method::NewPayload(1)), 8);
        assert_eq!(secs(Method::NewPayload(4)), 8);
        assert_eq!(secs(Method::NewPayload(5)), 6);
        assert_eq!(secs(Method::NewPayload(6)), 6);
        assert_eq!(secs(Method::NewPayload(40)), 6);
        assert_eq!(secs(Method::ForkchoiceUpdated(1)), 8);
        assert_eq!(secs(Method::ForkchoiceUpdated(5)), 8);
        // The spec's 1 s, raised to the 2 s Lighthouse and Teku wait.
        assert_eq!(secs(Method::GetPayload(1)), 2);
        assert_eq!(secs(Method::GetPayload(6)), 2);
        assert_eq!(secs(Method::GetBlobs), 2);
        assert_eq!(secs(Method::ExchangeCapabilities), 1);
        assert_eq!(secs(Method::GetClientVersion(1)), 1);
        assert_eq!(secs(Method::GetPayloadBodies), 10);
        assert_eq!(secs(Method::OtherEngine), 8);
        assert_eq!(secs(Method::BuilderPayloadAttributes), 8);
        assert_eq!(secs(Method::OtherBuilder), 8);
        assert_eq!(secs(Method::Other), 8);
    }

    #[test]
    fn is_engine_only_for_engine_namespace() {
        assert!(Method::classify("engine_newPayloadV2").is_engine());
        assert!(Method::classify("engine_getBlobsV2").is_engine());
        assert!(Method::classify("engine_whateverV1").is_engine());
        assert!(!Method::classify("builder_payloadAttributes").is_engine());
        assert!(!Method::classify("builder_other").is_engine());
        assert!(!Method::classify("eth_chainId").is_engine());
    }
}
