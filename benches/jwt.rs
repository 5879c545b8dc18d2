//! Cost of Engine API JWT checks and signing, the per-request auth work of the proxy: `verify` of a
//! beacon node's header (our own header encoding, which skips the header JSON parse, and another
//! key order, which does not), a refused forgery, and `Signer::bearer` cached (same second) and
//! uncached (every call a new second). It does not measure reading the secret file.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sync_proxy::jwt::{Secret, Signer, verify};

/// Any fixed secret: the cost does not depend on it.
const SECRET_HEX: &str = "7365637265742d6b65792d666f722d73796e632d70726f78792d74657374732e";
const NOW_UNIX_SECS: u64 = 1_700_000_000;
/// Header `{"typ":"JWT","alg":"HS256"}`, payload `{"iat":1700000000}`, signed with `SECRET_HEX`.
const REORDERED_HEADER_TOKEN: &str = "Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpYXQiOjE3MDAwMDAwMDB9.SRSq6YJbSf4Sek3tsyB4pWD5Op3jbbjMjFQv2fxnjOU";

fn jwt(c: &mut Criterion) {
    let secret = Secret::from_hex(SECRET_HEX).expect("bench secret is valid");
    let own = Signer::new(secret.clone()).bearer(NOW_UNIX_SECS).to_owned();
    let with_id = Signer::with_id(secret.clone(), "bn-2")
        .bearer(NOW_UNIX_SECS)
        .to_owned();
    assert!(verify(Some(&own), &secret, NOW_UNIX_SECS).is_ok());
    assert!(verify(Some(REORDERED_HEADER_TOKEN), &secret, NOW_UNIX_SECS).is_ok());
    let mut forged = own.clone();
    forged.pop();
    forged.push('A');
    assert!(verify(Some(&forged), &secret, NOW_UNIX_SECS).is_err());

    c.bench_function("jwt/verify", |b| {
        b.iter(|| verify(black_box(Some(&own)), &secret, black_box(NOW_UNIX_SECS)))
    });
    c.bench_function("jwt/verify_with_id", |b| {
        b.iter(|| verify(black_box(Some(&with_id)), &secret, black_box(NOW_UNIX_SECS)))
    });
    c.bench_function("jwt/verify_reordered_header", |b| {
        b.iter(|| {
            verify(
                black_box(Some(REORDERED_HEADER_TOKEN)),
                &secret,
                black_box(NOW_UNIX_SECS),
            )
        })
    });
    c.bench_function("jwt/verify_bad_signature", |b| {
        b.iter(|| verify(black_box(Some(&forged)), &secret, black_box(NOW_UNIX_SECS)))
    });

    let mut signer = Signer::new(secret.clone());
    c.bench_function("jwt/sign_cached", |b| {
        b.iter(|| signer.bearer(black_box(NOW_UNIX_SECS)).len())
    });
    let mut signer = Signer::new(secret);
    let mut now_unix_secs = NOW_UNIX_SECS;
    c.bench_function("jwt/sign_uncached", |b| {
        b.iter(|| {
            now_unix_secs += 1;
            signer.bearer(black_box(now_unix_secs)).len()
        })
    });
}

criterion_group!(benches, jwt);
criterion_main!(benches);
