//! Fuzzes JSON-RPC request and answer inspection with arbitrary bytes: nothing may panic, and
//! every body the proxy builds from what it read must itself read back as valid JSON-RPC.
//!
//! It does not compare against another JSON parser; `rpc`'s unit tests do that with serde_json.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_proxy::engine::Method;
use sync_proxy::rpc::{self, Inspected};

fuzz_target!(|data: &[u8]| {
    match rpc::inspect(data) {
        Ok(Inspected::Call(call)) => {
            assert_eq!(Method::classify(&call.method_name), call.method);
            let error = rpc::error_body(&call.id, rpc::code::INTERNAL_ERROR, &call.method_name);
            let answer = rpc::inspect_answer(call.method, &error);
            assert_eq!(answer.error_code, Some(rpc::code::INTERNAL_ERROR));
            let immediate = rpc::immediate_body(&call);
            let answer = rpc::inspect_answer(call.method, &immediate);
            assert!(answer.has_result || answer.error_code.is_some());
            if let Some(syncing) = rpc::syncing_body(call.method, &call.id) {
                let answer = rpc::inspect_answer(call.method, &syncing);
                assert_eq!(answer.status, Some(rpc::PayloadStatus::Syncing));
            }
        }
        Ok(Inspected::Batch { len }) => assert!(len > 0),
        Err(error) => {
            let answer = rpc::inspect_answer(Method::Other, &error.body());
            assert_eq!(answer.error_code, Some(error.code()));
            // An id recovered from broken JSON must make a valid error answer.
            if let Some(id) = rpc::recover_id(data) {
                let body = rpc::error_body(&id, error.code(), "x");
                let value: serde_json::Value =
                    serde_json::from_slice(&body).expect("recovered id builds valid JSON");
                assert!(!value["id"].is_object() && !value["id"].is_array());
            }
        }
    }

    // The same bytes as an execution client's answer.
    for method in [
        Method::NewPayload(4),
        Method::ForkchoiceUpdated(3),
        Method::GetPayload(4),
    ] {
        let answer = rpc::inspect_answer(method, data);
        assert!(!(answer.has_result && answer.error_code.is_some()));
    }
    if let Some(body) = rpc::concat_results(b"1", &[data, data]) {
        assert!(rpc::inspect_answer(Method::GetClientVersion(1), &body).has_result);
    }
    if let Some(body) = rpc::intersect_capabilities(b"1", &[data, data]) {
        assert!(rpc::inspect_answer(Method::ExchangeCapabilities, &body).has_result);
    }
    if let Some(body) = rpc::rewrite_id(data, b"\"fuzz\"") {
        assert!(rpc::rewrite_id(&body, b"7").is_some());
    }
});
