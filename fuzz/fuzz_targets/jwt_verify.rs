//! Fuzzes the Engine API JWT module with arbitrary text: as a secret file's content
//! (`Secret::from_hex`), as a whole `Authorization` value and as the token after `Bearer `
//! (`verify` at a fixed time), and as the `id` of a `Signer`, whose token must then verify and
//! carry the id exactly when `is_valid_id` accepts it. Nothing may panic and an accepted token
//! must be fresh. It does not reach payload parsing with arbitrary JSON, which needs a valid
//! signature: that path is the unit tests' job.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_proxy::jwt::{MAX_IAT_DRIFT_SECS, Secret, Signer, is_valid_id, verify};

/// Any fixed secret will do; the fuzzer cannot forge a signature, whichever it is.
const SECRET_HEX: &str = "7365637265742d6b65792d666f722d73796e632d70726f78792d74657374732e";
/// A fixed clock, so a run is reproducible.
const NOW_UNIX_SECS: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secret = Secret::from_hex(SECRET_HEX).expect("fuzz secret is valid");

    match Secret::from_hex(text) {
        Ok(parsed) => assert_eq!(format!("{parsed:?}"), "Secret(..)"),
        Err(error) => assert!(!error.to_string().is_empty()),
    }

    for authorization in [text.to_owned(), format!("Bearer {text}")] {
        match verify(Some(&authorization), &secret, NOW_UNIX_SECS) {
            Ok(claims) => assert!(claims.iat.abs_diff(NOW_UNIX_SECS) <= MAX_IAT_DRIFT_SECS),
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }

    let mut signer = Signer::with_id(secret.clone(), text);
    let bearer = signer.bearer(NOW_UNIX_SECS).to_owned();
    let claims = verify(Some(&bearer), &secret, NOW_UNIX_SECS).expect("own token verifies");
    assert_eq!(claims.iat, NOW_UNIX_SECS);
    let expected_id = is_valid_id(text).then_some(text);
    assert_eq!(claims.id.as_deref(), expected_id);
    assert_eq!(signer.bearer(NOW_UNIX_SECS), bearer);
});
